//! A password given where it does not belong (inside the broker URL, in the config or through
//! SONOEDGE_MQTT_URL) never appears in anything the binary prints, on any path, at trace level.

use std::process::Output;

use crate::common::{repo, scratch, sonoedge};

const SECRET: &str = "Sup3rS3cretPw";

fn config(url: &str) -> String {
    format!(
        "device_id = \"secrets\"\n[model]\npath = \"{}\"\nthreads = 1\n[source]\nkind = \"synthetic\"\n[mqtt]\nurl = \"{url}\"\n",
        repo("models/tiny-random/int8").display()
    )
}

fn run(args: &[&str], env_url: Option<&str>) -> Output {
    let mut cmd = sonoedge();
    cmd.args(args).env("RUST_LOG", "trace");
    match env_url {
        Some(u) => cmd.env("SONOEDGE_MQTT_URL", u),
        None => cmd.env_remove("SONOEDGE_MQTT_URL"),
    };
    cmd.output().expect("sonoedge runs")
}

fn assert_no_secret(what: &str, out: &Output) {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains(SECRET), "{what} printed the password:\n{text}");
    assert!(!text.is_empty(), "{what} printed nothing, so nothing was checked");
}

#[test]
fn a_password_in_the_broker_url_is_never_printed_by_run_check_or_an_env_override() {
    let dir = scratch("secrets");
    let url = format!("mqtt://operator:{SECRET}@127.0.0.1:1");
    let in_file = dir.join("in-url.toml");
    std::fs::write(&in_file, config(&url)).unwrap();
    let clean = dir.join("clean.toml");
    std::fs::write(&clean, config("mqtt://127.0.0.1:1")).unwrap();
    let bad_scheme = dir.join("bad-scheme.toml");
    std::fs::write(&bad_scheme, config(&format!("tcp://operator:{SECRET}@127.0.0.1:1"))).unwrap();
    for (what, args, env) in [
        ("run, URL in the file", vec!["run", "--config", in_file.to_str().unwrap()], None),
        ("check, URL in the file", vec!["check", "--config", in_file.to_str().unwrap()], None),
        ("run, URL from the environment", vec!["run", "--config", clean.to_str().unwrap()], Some(url.as_str())),
        ("check, URL from the environment", vec!["check", "--config", clean.to_str().unwrap()], Some(url.as_str())),
        ("run, a refused scheme", vec!["run", "--config", bad_scheme.to_str().unwrap()], None),
    ] {
        let out = run(&args, env);
        assert_ne!(out.status.code(), Some(0), "{what}: a URL with credentials must be refused");
        assert_no_secret(what, &out);
    }
}

#[test]
fn a_password_quoted_by_a_toml_syntax_key_or_type_error_is_never_printed() {
    let dir = scratch("secrets-quoted");
    let url = format!("mqtt://operator:{SECRET}@127.0.0.1:1");
    let head = "[model]\npath = \"m\"\n[source]\nkind = \"synthetic\"\n[mqtt]\n";
    for (what, mqtt) in [
        ("an unterminated string", format!("url = \"{url}\n")),
        ("an unknown key", format!("broker = \"{url}\"\n")),
        ("a string where a number belongs", format!("qos = \"{url}\"\n")),
        ("a duplicate key", format!("url = \"{url}\"\nurl = \"{url}\"\n")),
        ("no scheme, wrong type", format!("url = [\"operator:{SECRET}@127.0.0.1\"]\n")),
    ] {
        let file = dir.join("quoted.toml");
        std::fs::write(&file, format!("{head}{mqtt}")).unwrap();
        for command in ["check", "run"] {
            let out = run(&[command, "--config", file.to_str().unwrap()], None);
            assert_eq!(out.status.code(), Some(78), "{command} with {what}");
            assert_no_secret(&format!("{command} with {what}"), &out);
        }
    }
}
