//! docs/fleet.md's mosquitto ACL, read out of the markdown (its ```acl block) so the guide as it stands
//! is what is tested: a cart publishes under its own prefix (`check` proves delivery), not under
//! another cart's (`check` exits 69); the view reads every cart and cannot publish.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use super::daemon_mqtt::{config, SYNTHETIC};
use crate::common::*;

const PASSWORD: &str = "fleet-doc-pw";

#[test]
fn the_fleet_guides_mosquitto_acl_keeps_each_cart_under_its_own_prefix_and_the_view_read_only() {
    let dir = scratch("fleet-acl");
    let acl = dir.join("sonoedge.acl");
    std::fs::write(&acl, doc_block("docs/fleet.md", "acl")).unwrap();
    let passwd = password_file(&dir, &["cart-a", "cart-b", "view"]);
    let broker = Broker::start(&dir, &format!("allow_anonymous false\npassword_file {}\nacl_file {}", passwd.display(), acl.display()));
    std::fs::write(dir.join("pw"), PASSWORD).unwrap();
    let cart = |device: &str, user: &str| {
        let auth = format!("username = \"{user}\"\npassword_file = \"{}\"", dir.join("pw").display());
        config(&broker.url(), device, SYNTHETIC, &auth)
    };

    let (code, text) = check(&dir, "own", &cart("cart-a", "cart-a"));
    assert_eq!(code, Some(0), "cart-a under its own prefix: {text}");
    let (code, text) = check(&dir, "other", &cart("cart-b", "cart-a"));
    assert_eq!(code, Some(69), "cart-a's credentials under cart-b's prefix must not deliver: {text}");

    let view = AuthSub::start(broker.port, "view", "sonoedge/#");
    let d = Daemon::spawn(&dir, &cart("cart-a", "cart-a"));
    let online = |t: &str, p: &str| t == "sonoedge/cart-a/status" && p.contains("\"online\"");
    assert!(wait_for(Duration::from_secs(30), || view.any(online)), "the view never read cart-a's status; log:\n{}", d.log_text());
    view.publish("sonoedge/cart-a/status", "{\"forged\":true}");
    let stats_after = view.count(|t, _| t.ends_with("/stats")) + 2;
    assert!(
        wait_for(Duration::from_secs(30), || view.count(|t, _| t.ends_with("/stats")) >= stats_after),
        "no stats; log:\n{}",
        d.log_text()
    );
    assert!(!view.any(|_, p| p.contains("forged")), "the view could publish under a cart's prefix");
}

/// The body of the first fenced block in `file` whose info string is `lang`.
fn doc_block(file: &str, lang: &str) -> String {
    let text = std::fs::read_to_string(repo(file)).unwrap();
    let fence = format!("```{lang}\n");
    let start = text.find(&fence).unwrap_or_else(|| panic!("{file} has no ```{lang} block")) + fence.len();
    let len = text[start..].find("```").unwrap_or_else(|| panic!("{file}: the ```{lang} block is not closed"));
    text[start..start + len].to_string()
}

fn password_file(dir: &std::path::Path, users: &[&str]) -> std::path::PathBuf {
    let file = dir.join("passwd");
    for (i, user) in users.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let st = cmd.arg("-b").arg(&file).args([user, PASSWORD]).status();
        assert!(st.is_ok_and(|s| s.success()), "mosquitto_passwd failed (it comes with the mosquitto package)");
    }
    file
}

fn check(dir: &std::path::Path, name: &str, cfg: &str) -> (Option<i32>, String) {
    let path = dir.join(format!("check-{name}.toml"));
    std::fs::write(&path, cfg).unwrap();
    let out = sonoedge().args(["check", "--config"]).arg(&path).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

/// A subscriber with credentials that also publishes; records (topic, payload) as text.
struct AuthSub {
    client: Client,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl AuthSub {
    fn start(port: u16, user: &str, filter: &str) -> AuthSub {
        let mut o = MqttOptions::new(format!("fleet-doc-{user}-{}", free_port()), "127.0.0.1", port);
        o.set_credentials(user, PASSWORD);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(o, 64);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (sink, sub, filter) = (seen.clone(), client.clone(), filter.to_string());
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub.subscribe(&filter, QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock().unwrap().push((p.topic.clone(), String::from_utf8_lossy(&p.payload).to_string()));
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        AuthSub { client, seen }
    }

    fn publish(&self, topic: &str, payload: &str) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).unwrap();
    }

    fn count(&self, pred: impl Fn(&str, &str) -> bool) -> usize {
        self.seen.lock().unwrap().iter().filter(|(t, p)| pred(t, p)).count()
    }

    fn any(&self, pred: impl Fn(&str, &str) -> bool) -> bool {
        self.count(pred) > 0
    }
}
