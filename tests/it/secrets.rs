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
