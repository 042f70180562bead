//! docs/fleet.md's mosquitto ACL, read out of the markdown (its ```acl block) so the guide as it stands
//! is what is tested: a cart publishes under its own prefix (`check` proves delivery), not under
//! another cart's (`check` exits 69); the view reads every cart and cannot publish. The guide's
//! RabbitMQ and NATS permissions are run by tests/it/interop.rs with these helpers.

use std::process::Command;
use std::time::Duration;

use super::daemon_mqtt::{config, SYNTHETIC};
use crate::common::*;

pub const PASSWORD: &str = "fleet-doc-pw";

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

    let d = Daemon::spawn(&dir, &cart("cart-a", "cart-a"));
    view_reads_and_cannot_publish(broker.port, &d);
}

/// The view (user `view`) reads cart-a's status while `daemon` runs as cart-a, and its publish
/// under cart-a's prefix never arrives: a second reader with the view's login then sees two more
/// stats and no forged message (RabbitMQ disconnects the view for that publish, so the view's own
/// subscription may stop reading).
pub fn view_reads_and_cannot_publish(port: u16, daemon: &Daemon) {
    let view = Subscriber::start_as(port, "sonoedge/#", Some(("view", PASSWORD)));
    let online = || view.on("sonoedge/cart-a/status").iter().any(|m| m.payload["state"] == "online");
    assert!(wait_for(Duration::from_secs(30), online), "the view never read cart-a's status; log:\n{}", daemon.log_text());
    view.publish("sonoedge/cart-a/status", "{\"forged\":true}");
    let reader = Subscriber::start_as(port, "sonoedge/cart-a/#", Some(("view", PASSWORD)));
    let stats_after = reader.on("/stats").len() + 2;
    assert!(wait_for(Duration::from_secs(30), || reader.on("/stats").len() >= stats_after), "no stats; log:\n{}", daemon.log_text());
    let forged = view.all().iter().chain(reader.all().iter()).any(|m| m.payload["forged"] == true);
    assert!(!forged, "the view could publish under a cart's prefix");
}

/// The body of the first fenced block in `file` whose info string is `lang`.
fn doc_block(file: &str, lang: &str) -> String {
    doc_block_under(file, "", lang)
}

/// The body of the first fenced block whose info string is `lang` after the line `heading` (from
/// the top if empty): the guide as it stands is what the tests run.
pub fn doc_block_under(file: &str, heading: &str, lang: &str) -> String {
    let text = std::fs::read_to_string(repo(file)).unwrap();
    let from = if heading.is_empty() {
        0
    } else {
        text.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("{file} has no heading {heading:?}"))
    };
    let fence = format!("```{lang}\n");
    let start = from + text[from..].find(&fence).unwrap_or_else(|| panic!("{file} has no ```{lang} block after {heading:?}")) + fence.len();
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

/// `sonoedge check` with the config text `cfg`: its exit code, stdout and stderr.
pub fn check(dir: &std::path::Path, name: &str, cfg: &str) -> (Option<i32>, String) {
    let path = dir.join(format!("check-{name}.toml"));
    std::fs::write(&path, cfg).unwrap();
    let out = sonoedge().args(["check", "--config"]).arg(&path).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

/// The guide's fleet CA and cart-a's certificate (its ```sh block under "TLS", run as written in
/// `dir`), and a broker certificate for localhost from that CA, as its text asks for.
pub fn guide_certificates(dir: &std::path::Path) {
    let block = doc_block_under("docs/fleet.md", "## TLS: one client certificate per cart", "sh");
    let broker = "openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj /CN=localhost 2>/dev/null\n\
                  openssl x509 -req -in broker.csr -CA fleet-ca.crt -CAkey fleet-ca.key -CAcreateserial -days 2 -out broker.crt \
                  -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n') 2>/dev/null\n\
                  chmod 644 *.key *.crt";
    let out = Command::new("bash").arg("-c").arg(format!("set -e\n{block}\n{broker}")).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "the guide's openssl commands failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// `text` with each (from, to) replaced; every `from` must be there (the guide changed otherwise).
pub fn substituted(mut text: String, pairs: &[(&str, String)]) -> String {
    for (from, to) in pairs {
        assert!(text.contains(from), "the guide's block no longer has {from:?}:\n{text}");
        text = text.replace(from, to);
    }
    text
}

/// The guide's mosquitto.conf and ACL (its "mosquitto" section, run as written but for ports and
/// paths) with its certificates in `dir`: `tls` is the carts' listener (8883), `ws` the view's
/// websockets listener with TLS (8081), `broker.port` a plain listener for the tests' readers.
pub struct GuideBroker {
    pub broker: Broker,
    pub tls: u16,
    pub ws: u16,
}

impl GuideBroker {
    pub fn start(dir: &std::path::Path) -> GuideBroker {
        guide_certificates(dir);
        std::fs::write(dir.join("sonoedge.acl"), doc_block("docs/fleet.md", "acl")).unwrap();
        let passwd = password_file(dir, &["view"]);
        let (tls, ws) = (free_port(), free_port());
        let d = |f: &str| dir.join(f).display().to_string();
        let conf = substituted(
            doc_block_under("docs/fleet.md", "## mosquitto (2.0, Debian 12)", "conf"),
            &[
                ("/etc/mosquitto/passwd", passwd.display().to_string()),
                ("/etc/mosquitto/sonoedge.acl", d("sonoedge.acl")),
                ("/etc/mosquitto/ca/fleet-ca.crt", d("fleet-ca.crt")),
                ("/etc/mosquitto/certs/broker.crt", d("broker.crt")),
                ("/etc/mosquitto/certs/broker.key", d("broker.key")),
                ("listener 8883", format!("listener {tls} 127.0.0.1")),
                ("listener 8081", format!("listener {ws} 127.0.0.1")),
                ("persistence true", "persistence false".into()),
            ],
        );
        let broker = Broker::start_with_conf(dir, &conf);
        assert!(wait_for(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", tls)).is_ok()), "no TLS listener");
        GuideBroker { broker, tls, ws }
    }

    /// A cart's config for the TLS listener, with the certificate `cert` (its .crt and .key in `dir`).
    pub fn cart(&self, dir: &std::path::Path, device: &str, cert: Option<&str>) -> String {
        let d = |f: &str| dir.join(f).display().to_string();
        let mut mqtt = format!("ca_file = \"{}\"", d("fleet-ca.crt"));
        if let Some(c) = cert {
            mqtt += &format!("\nclient_cert = \"{}\"\nclient_key = \"{}\"", d(&format!("{c}.crt")), d(&format!("{c}.key")));
        }
        config(&format!("mqtts://localhost:{}", self.tls), device, SYNTHETIC, &mqtt)
    }
}

/// A client certificate from the guide's fleet CA (made by [`guide_certificates`]) with CN `cn`:
/// `cn.crt` and `cn.key` in `dir`.
pub fn client_certificate(dir: &std::path::Path, cn: &str) {
    let cmd = format!(
        "openssl req -newkey rsa:2048 -nodes -keyout {cn}.key -out {cn}.csr -subj /CN={cn} 2>/dev/null && \
         openssl x509 -req -in {cn}.csr -CA fleet-ca.crt -CAkey fleet-ca.key -CAcreateserial -days 2 -out {cn}.crt 2>/dev/null && \
         chmod 644 {cn}.key {cn}.crt"
    );
    assert!(Command::new("bash").arg("-c").arg(cmd).current_dir(dir).status().unwrap().success(), "openssl: certificate for {cn}");
}

#[test]
fn the_fleet_guides_mosquitto_tls_listener_takes_one_certificate_per_cart_as_its_username() {
    let dir = scratch("fleet-tls");
    let g = GuideBroker::start(&dir);
    let (code, text) = check(&dir, "own", &g.cart(&dir, "cart-a", Some("cart-a")));
    assert_eq!(code, Some(0), "cart-a with its certificate: {text}");
    let (code, text) = check(&dir, "other", &g.cart(&dir, "cart-b", Some("cart-a")));
    assert_eq!(code, Some(69), "cart-a's certificate under cart-b's prefix must not deliver: {text}");
    let (code, text) = check(&dir, "none", &g.cart(&dir, "cart-a", None));
    assert_eq!(code, Some(69), "no client certificate, no session: {text}");
    assert!(text.contains("broker  UNAVAILABLE"), "{text}");
    // The view reads over the plain listener with its password; the carts' certificates are theirs.
    let view = Subscriber::start_as(g.broker.port, "sonoedge/#", Some(("view", PASSWORD)));
    let daemon = Daemon::spawn(&dir, &g.cart(&dir, "cart-a", Some("cart-a")));
    let online = || view.on("sonoedge/cart-a/status").iter().any(|m| m.payload["state"] == "online");
    assert!(wait_for(Duration::from_secs(30), online), "the view never read cart-a's status; log:\n{}", daemon.log_text());
}

#[test]
fn the_fleet_guides_bridge_forwards_status_state_findings_and_stats_to_the_central_broker_not_predictions() {
    let dir = scratch("fleet-bridge");
    guide_certificates(&dir);
    // The central broker: TLS with client certificates; the bridge's CN is its username and, as the
    // guide says, it may write hospital/ward3/# only.
    client_certificate(&dir, "ward3-bridge");
    // (The first line, before any `user`, is for anonymous clients: the test's reader below.)
    std::fs::write(dir.join("central.acl"), "topic read hospital/#\nuser ward3-bridge\ntopic readwrite hospital/ward3/#\n").unwrap();
    let d = |f: &str| dir.join(f).display().to_string();
    let central_tls = free_port();
    let central = Broker::start(
        &dir,
        &format!(
            "listener {central_tls} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\nacl_file {}",
            d("fleet-ca.crt"),
            d("broker.crt"),
            d("broker.key"),
            d("central.acl")
        ),
    );
    // The ward broker: the guide's bridge block, pointed at the central one.
    let bridge = substituted(
        doc_block_under("docs/fleet.md", "## A ward broker bridged to a central broker", "conf"),
        &[
            ("central.hospital.example:8883", format!("localhost:{central_tls}")),
            ("/etc/mosquitto/ca/central-ca.crt", d("fleet-ca.crt")),
            ("/etc/mosquitto/certs/ward3-bridge.crt", d("ward3-bridge.crt")),
            ("/etc/mosquitto/certs/ward3-bridge.key", d("ward3-bridge.key")),
        ],
    );
    let ward = Broker::start(&dir, &bridge);
    // Anonymous on the central broker's plain listener, read-only.
    let sub = Subscriber::start(central.port, "hospital/ward3/#");
    let daemon = Daemon::spawn(&dir, &config(&ward.url(), "cart-a", SYNTHETIC, ""));
    let central_has = |leaf: &str| !sub.on(&format!("hospital/ward3/sonoedge/cart-a/{leaf}")).is_empty();
    let forwarded = || ["status", "state", "stats"].iter().all(|l| central_has(l));
    assert!(
        wait_for(Duration::from_secs(30), forwarded),
        "the central broker did not get status, state and stats: {:?}; log:\n{}",
        sub.all().iter().map(|m| m.topic.clone()).collect::<std::collections::BTreeSet<_>>(),
        daemon.log_text()
    );
    let ward_sub = Subscriber::start(ward.port, "sonoedge/cart-a/prediction");
    assert!(ward_sub.wait(Duration::from_secs(20), "/prediction", |_| true).is_some(), "the cart made no predictions in the ward");
    std::thread::sleep(Duration::from_secs(1));
    assert!(!central_has("prediction"), "predictions left the ward");
    assert!(sub.on("hospital/ward3/bridge-state").iter().any(|m| m.payload == 1), "the bridge's own notification topic");
    // A late reader on the central broker gets the cart's retained status.
    let late = Subscriber::start(central.port, "hospital/ward3/sonoedge/cart-a/status");
    let m = late.wait(Duration::from_secs(10), "/status", |_| true).expect("the retained status at the central broker");
    assert!(m.retained, "{m:?}");
}

#[test]
fn the_fleet_guides_shared_subscription_gives_each_live_finding_to_one_archiver_and_a_retained_one_to_each() {
    const FINDING: &str = "sonoedge/cart-a/finding";
    let dir = scratch("fleet-share");
    let g = GuideBroker::start(&dir);
    client_certificate(&dir, "archiver");
    let consumer = substituted(
        doc_block_under("docs/fleet.md", "## Consumers with shared subscriptions", "sh"),
        &[("-h broker", "-h localhost".into()), ("-p 8883", format!("-p {}", g.tls))],
    )
    .trim()
    .to_string();
    // A finding retained before anyone subscribes: mosquitto 2.0 sends it to every member as it
    // subscribes (as to a plain subscription), live ones to one member each.
    publish_as_cart_a(&dir, g.tls, FINDING, "-r", "{\"n\":0}\n");
    let members = [Lines::spawn(&dir, &consumer), Lines::spawn(&dir, &consumer)];
    let plain = Lines::spawn(&dir, &consumer.replace("$share/archivers/", ""));
    let retained = wait_for(Duration::from_secs(20), || plain.got().iter().any(|l| l == "{\"n\":0}"));
    assert!(retained, "a plain subscription as the archiver did not get the retained finding: {:?}", plain.got());
    // Until both members are subscribed, messages go to one only: publish until each got one.
    let mut warm = 0;
    let both = wait_for(Duration::from_secs(20), || {
        warm += 1;
        publish_as_cart_a(&dir, g.tls, FINDING, "", &format!("{{\"warm\":{warm}}}\n"));
        members.iter().all(|m| m.got().iter().any(|l| l.contains("warm")))
    });
    assert!(both, "both members never got a message: {:?} / {:?}", members[0].got(), members[1].got());
    let batch: String = (1..=20).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    publish_as_cart_a(&dir, g.tls, FINDING, "", &batch);
    let numbered = |m: &Lines| m.got().into_iter().filter(|l| l.starts_with("{\"n\":") && l != "{\"n\":0}").collect::<Vec<_>>();
    let all_in = wait_for(Duration::from_secs(20), || members.iter().map(|m| numbered(m).len()).sum::<usize>() >= 20);
    assert!(all_in, "the members got {:?} / {:?} of 20", numbered(&members[0]), numbered(&members[1]));
    std::thread::sleep(Duration::from_millis(500)); // a duplicate would be in by now
    let (a, b) = (numbered(&members[0]), numbered(&members[1]));
    let mut got: Vec<String> = a.iter().chain(&b).cloned().collect();
    let mut want: Vec<String> = batch.lines().map(String::from).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "each of the 20 live findings to exactly one member (members: {a:?} / {b:?})");
    assert!(!a.is_empty() && !b.is_empty(), "one member got everything: {a:?} / {b:?}");
    let retained_to = members.iter().map(|m| m.got().iter().filter(|l| *l == "{\"n\":0}").count()).collect::<Vec<_>>();
    assert_eq!(retained_to, [1, 1], "the retained finding, once to each member as it subscribed");
    eprintln!("shared subscription: 20 live findings split {} / {}; the retained one to each member once", a.len(), b.len());
    // The archiver may read findings only. mosquitto 2.0 grants a subscription outside the read ACL
    // (SUBACK QoS 1) and then delivers nothing on it: nothing fails where the consumer can see it.
    // (stdbuf: mosquitto_sub buffers its debug lines when stdout is a pipe)
    let status = Lines::spawn(&dir, &format!("stdbuf -oL {} -d", consumer.replace("/finding", "/status")));
    let granted = wait_for(Duration::from_secs(20), || status.got().iter().any(|l| l.starts_with("Subscribed (mid: 1): 1")));
    assert!(granted, "mosquitto_sub's SUBACK for a topic outside the archiver's ACL: {:?}", status.got());
    publish_as_cart_a(&dir, g.tls, "sonoedge/cart-a/status", "", "{\"state\":\"online\"}\n");
    std::thread::sleep(Duration::from_secs(1));
    let leaked = status.got().into_iter().filter(|l| l.contains("online")).collect::<Vec<_>>();
    assert!(leaked.is_empty(), "the archiver read a status outside its ACL: {leaked:?}");
}

/// `mosquitto_pub` as cart-a (its certificate, the TLS listener): each line of `lines` one message
/// on `topic` at QoS 1, with `flags` (e.g. `-r`).
fn publish_as_cart_a(dir: &std::path::Path, tls: u16, topic: &str, flags: &str, lines: &str) {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "mosquitto_pub -h localhost -p {tls} --cafile fleet-ca.crt --cert cart-a.crt --key cart-a.key -t {topic} -q 1 {flags} -l"
        ))
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), lines.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "mosquitto_pub as cart-a failed");
}

/// A shell command (run in `dir`) whose stdout lines are collected as they come; killed on drop.
struct Lines {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Lines {
    fn spawn(dir: &std::path::Path, cmd: &str) -> Lines {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(format!("exec {cmd}"))
            .current_dir(dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (sink, out) = (lines.clone(), child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Lines { child, lines }
    }

    fn got(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
