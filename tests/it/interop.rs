//! The daemon and `check` against the brokers hospitals already run, besides mosquitto: RabbitMQ's
//! MQTT plugin and NATS's MQTT gateway (Debian 12 packages, private instances on loopback). Each
//! test covers connect, `check` at QoS 0, 1 and 2, the retained status, every prediction counted
//! end to end, the Last Will, `protocol = "5"` refused with a log line naming the fix, a broker
//! restart under a running daemon, QoS 2 over 20 s through a counting proxy (no reconnect storm),
//! and docs/fleet.md's permissions for that broker run as written: own prefix delivers, another
//! cart's is reported (and, where the broker disconnects, backed off from).
//!
//! Ignored by a plain `cargo test` (RabbitMQ alone takes ~15 s to start, and these would run once
//! more per ARM target): tests/run-all.sh's interop stage runs them with `--ignored` and
//! SONOEDGE_INTEROP_REQUIRED=1, so a broker that is not installed fails there instead of skipping.
//! Each prints `MATRIX` lines: the broker, its version, and what `check` said.

use std::path::Path;
use std::time::{Duration, Instant};

use super::daemon_mqtt::{assert_every_prediction_counted, config, config_mqtt, SYNTHETIC};
use super::fleet_doc::{check as check_config, doc_block_under, view_reads_and_cannot_publish, PASSWORD};
use crate::common::foreign::{CountingProxy, Foreign};
use crate::common::*;

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;
/// How long a refusing broker is watched for a reconnect storm.
const WATCH: Duration = Duration::from_secs(20);

#[test]
#[ignore = "starts RabbitMQ (~15 s): tests/run-all.sh's interop stage runs it"]
fn rabbitmq_keeps_status_counts_and_the_last_will_takes_qos_2_as_qos_1_and_reports_an_acl_denial_without_a_storm() {
    let dir = scratch("interop-rabbitmq");
    let Some(mut broker) = Foreign::rabbitmq(&dir) else { return };
    common_scenario(&broker, &dir);
    rabbitmq_fleet_guide_permissions(&broker, &dir);
    broker_restart(&mut broker);
    let (code, text) = check(&dir, &broker, "rmq-q2", 2);
    // RabbitMQ 3.10 answers a QoS 2 publish with a PUBACK and delivers at QoS 1.
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("delivery ok") && text.contains("at most QoS 1"), "{text}");
    let connections = connections_with_qos_2(&broker, "rmq-q2");
    assert_eq!(connections, 1, "one connection that stays up");
}

#[test]
#[ignore = "starts NATS: tests/run-all.sh's interop stage runs it"]
fn nats_keeps_status_counts_and_the_last_will_and_its_qos_2_refusal_is_reported_without_a_storm() {
    let dir = scratch("interop-nats");
    let Some(mut broker) = Foreign::nats(&dir) else { return };
    common_scenario(&broker, &dir);
    broker_restart(&mut broker);
    if let Some(guide) = nats_with_the_fleet_guides_permissions(&scratch("interop-nats-acl")) {
        nats_fleet_guide_permissions(&guide);
    }
    let (code, text) = check(&dir, &broker, "nats-q2", 2);
    assert_eq!(code, Some(69), "{text}");
    assert!(text.contains("QOS REFUSED") && text.contains("mqtt.qos = 1"), "{text}");
    // NATS closes the connection at each QoS 2 publish. Backoff 0.5, 1, 2, 4, 8 s (+0-25%) from the
    // first connection: attempts near 0, 0.5, 1.5, 3.5, 7.5 and 15.5 s; the old reset-on-CONNACK loop
    // made about 35 in 20 s.
    let connections = connections_with_qos_2(&broker, "nats-q2");
    assert!((4..=7).contains(&connections), "{connections} connections in {WATCH:?}");
}

#[test]
#[ignore = "watches two daemons for about 45 s: tests/run-all.sh's interop stage runs it"]
fn two_daemons_sharing_a_device_id_on_mosquitto_back_off_instead_of_taking_each_other_over_in_a_storm() {
    let dir = scratch("interop-takeover");
    let broker = Broker::start(&dir, "");
    let (p1, p2) = (CountingProxy::start(broker.port), CountingProxy::start(broker.port));
    let sub = Subscriber::start(broker.port, "sonoedge/twin/status");
    // A cloned SD card: one device_id, so one client id; each session takes the other's over.
    let twins = [&p1, &p2].map(|p| Daemon::spawn(&scratch(&format!("twin-{}", p.port)), &config(&p.url(), "twin", SYNTHETIC, "")));
    std::thread::sleep(WATCH);
    let (c1, c2) = (p1.connections(), p2.connections());
    let flips = sub.on("/status").windows(2).filter(|w| w[0].payload["state"] != w[1].payload["state"]).count();
    let version = crate::common::foreign::package_version("mosquitto");
    eprintln!("MATRIX mosquitto {version} takeover: {c1} + {c2} connections in {WATCH:?}, status changed {flips} times");
    let log = twins[0].log_text();
    assert!(log.contains("duplicate device_id"), "the log names the likely cause:\n{log}");
    // Each escalates 0.5, 1, 2, 4, 8 s (+0-25%) as the other keeps taking its session: about 6 each
    // in 20 s (the old reset-on-CONNACK loop made 18 each).
    assert!(c1 <= 8 && c2 <= 8, "{c1} and {c2} connections in {WATCH:?}");
    // Each twin says online at most twice; its takeovers end sessions early, so later ones never
    // say it (the old loop: 35 changes in 20 s).
    assert!(flips <= 8, "status changed {flips} times in {WATCH:?}");
    // The clone is taken away: the twin left says online once its session has stayed up 20 s.
    let [first, mut second] = twins;
    second.signal(SIGKILL);
    second.wait_exit(Duration::from_secs(5));
    let gone = std::time::Instant::now();
    let online_since = || sub.on("/status").into_iter().find(|m| m.at > gone && m.payload["state"] == "online");
    assert!(
        wait_for(Duration::from_secs(45), || online_since().is_some()),
        "the twin left never said online again; log:\n{}",
        first.log_text()
    );
    eprintln!("MATRIX mosquitto {version} takeover ended: online again {:?} after the clone was killed", online_since().unwrap().at - gone);
}

#[test]
#[ignore = "starts a two-node RabbitMQ cluster (~45 s): tests/run-all.sh's interop stage runs it"]
fn a_rabbitmq_cluster_keeps_a_retained_status_on_one_node_and_a_graceful_node_stop_sends_no_last_will() {
    let dir = scratch("interop-rabbitmq-cluster");
    let (dir_a, dir_b) = (dir.join("a"), dir.join("b"));
    for d in [&dir_a, &dir_b] {
        std::fs::create_dir_all(d).unwrap();
    }
    let Some(a) = Foreign::rabbitmq(&dir_a) else { return };
    let b = Foreign::rabbitmq_joined(&dir_b, &a);
    let version = &a.version;
    // The cart lists both nodes and connects to the first; keep-alive 5 s, so a will is due soon.
    let urls = format!("urls = [\"{}\", \"{}\"]\nkeep_alive_s = 5", a.url(), b.url());
    let mut d = Daemon::spawn(&dir, &config_mqtt(&urls, "cart-c", SYNTHETIC));
    let watch_b = Subscriber::start(b.port, "sonoedge/cart-c/#");
    let live = wait_for(Duration::from_secs(60), || watch_b.on("/stats").len() >= 2);
    assert!(live, "a reader on node B never got cart-c's stats from node A; log:\n{}", d.log_text());

    // Retained status: where it is kept, and for which filters.
    let retained = |port: u16, filter: &str| {
        let sub = Subscriber::start(port, filter);
        let m = sub.wait(Duration::from_secs(5), "/status", |p| p["state"] == "online");
        m.is_some_and(|m| m.retained)
    };
    let (on_a, on_b, wild_a) =
        (retained(a.port, "sonoedge/cart-c/status"), retained(b.port, "sonoedge/cart-c/status"), retained(a.port, "sonoedge/+/status"));
    eprintln!("MATRIX RabbitMQ {version} cluster retained status: exact filter on the cart's node {on_a}, on the other node {on_b}; wildcard filter on the cart's node {wild_a}");

    // A graceful stop of node A: is the Last Will sent, and where does the cart go?
    let stop = Instant::now();
    a.rabbitmqctl(&dir_a, "rabbitmqctl stop_app");
    let since = |state: &str| watch_b.on("/status").into_iter().find(|m| m.at > stop && m.payload["state"] == state);
    let back = wait_for(Duration::from_secs(60), || since("online").is_some());
    assert!(back, "cart-c did not come back online on node B after node A stopped; log:\n{}", d.log_text());
    std::thread::sleep(Duration::from_secs(2));
    let will = since("offline").map(|m| format!("{:.1?} after stop_app", m.at - stop)).unwrap_or("none".into());
    let online = since("online").unwrap();
    eprintln!(
        "MATRIX RabbitMQ {version} cluster graceful stop_app of the cart's node: Last Will on the other node: {will}; online there again {:.1?} after",
        online.at - stop
    );
    let on_b_now = retained(b.port, "sonoedge/cart-c/status");
    eprintln!("MATRIX RabbitMQ {version} cluster after the move: retained online on node B {on_b_now}");
    d.signal(SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0), "log:\n{}", d.log_text());
    // The fleet guide's statements, as measured here.
    assert!(on_a, "no retained status on the cart's own node for an exact filter");
    assert!(!on_b, "a retained status on the other node: the guide says retained messages are per node");
    assert!(!wild_a, "a retained status for a wildcard filter: the guide says none is sent");
    assert_eq!(will, "none", "a Last Will on a graceful stop_app: the guide says none is sent");
    assert!(on_b_now, "the cart's new online is not retained on its new node");
}

/// What both brokers must do alike: `check` at QoS 0 and 1, status, counts, Last Will.
fn common_scenario(broker: &Foreign, dir: &Path) {
    for qos in [0, 1] {
        let (code, text) = check(dir, broker, &format!("{}-q{qos}", broker.name.to_lowercase()), qos);
        assert_eq!(code, Some(0), "{text}");
        assert!(text.contains("delivery ok"), "{text}");
    }
    status_and_counts(broker);
    last_will(broker);
    mqtt5_is_refused_and_the_log_names_the_fix(broker);
}

/// Debian 12's RabbitMQ and NATS speak MQTT 3.1.1 only: a daemon set to 5 retries with backoff
/// and its log says to set `mqtt.protocol = "3.1.1"`.
fn mqtt5_is_refused_and_the_log_names_the_fix(broker: &Foreign) {
    let device = format!("{}-v5", broker.name.to_lowercase());
    let d = Daemon::spawn(&scratch(&format!("{device}-run")), &config(&broker.url(), &device, SYNTHETIC, "protocol = \"5\""));
    let named = wait_for(Duration::from_secs(20), || d.log_text().contains("mqtt.protocol = \"3.1.1\""));
    let line = d.log_text().lines().find(|l| l.contains("WARN")).unwrap_or("(no warning)").to_string();
    eprintln!("MATRIX {} {} protocol=5 daemon: {line}", broker.name, broker.version);
    assert!(named, "log:\n{}", d.log_text());
}

/// `sonoedge check` at `qos`: its exit code and output, also printed as a MATRIX line.
fn check(dir: &Path, broker: &Foreign, device: &str, qos: u8) -> (Option<i32>, String) {
    let t0 = Instant::now();
    let (code, text) = check_config(dir, device, &config(&broker.url(), device, SYNTHETIC, &format!("qos = {qos}")));
    let delivery = text.lines().find(|l| l.starts_with("delivery") || l.starts_with("broker  UNAVAILABLE")).unwrap_or("(no verdict)");
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("MATRIX {} {} check qos={qos}: exit {code:?} in {secs:.1} s: {delivery}", broker.name, broker.version);
    (code, text)
}

/// Online retained for a late subscriber, predictions, a clean stop with `stopped` retained, and
/// every prediction made seen by the subscriber.
fn status_and_counts(broker: &Foreign) {
    let device = format!("{}-counts", broker.name.to_lowercase());
    let sub = Subscriber::start(broker.port, &format!("sonoedge/{device}/#"));
    let mut d = Daemon::spawn(&scratch(&format!("{device}-run")), &config(&broker.url(), &device, SYNTHETIC, ""));
    assert!(wait_for(Duration::from_secs(30), || sub.on("/prediction").len() >= 10), "{}: log:\n{}", broker.name, d.log_text());
    let late = Subscriber::start(broker.port, &format!("sonoedge/{device}/status"));
    let m = late.wait(Duration::from_secs(10), "/status", |_| true).expect("a retained status");
    assert!(m.retained && m.payload["state"] == "online", "{m:?}");
    assert_schema("status.v1.schema.json", &m.payload);
    d.signal(SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0), "log:\n{}", d.log_text());
    assert!(sub.wait(Duration::from_secs(5), "/status", |p| p["state"] == "stopped").is_some());
    std::thread::sleep(Duration::from_millis(500));
    let stats = sub.on("/stats").last().expect("stats").payload.clone();
    assert_every_prediction_counted(&stats, &[&sub]);
}

/// The broker killed and started again under a running daemon: predictions resume, the daemon
/// counts the reconnect, and its next `online` says why the session ended.
fn broker_restart(broker: &mut Foreign) {
    let device = format!("{}-restart", broker.name.to_lowercase());
    let sub = Subscriber::start(broker.port, &format!("sonoedge/{device}/#"));
    let mut d = Daemon::spawn(&scratch(&format!("{device}-run")), &config(&broker.url(), &device, SYNTHETIC, ""));
    assert!(wait_for(Duration::from_secs(30), || sub.on("/prediction").len() >= 5), "no predictions; log:\n{}", d.log_text());
    broker.kill();
    std::thread::sleep(Duration::from_secs(2));
    broker.restart(Duration::from_secs(120));
    let back = Instant::now();
    let resumed = || sub.on("/prediction").into_iter().find(|m| m.at > back);
    assert!(wait_for(Duration::from_secs(40), || resumed().is_some()), "no prediction after the restart; log:\n{}", d.log_text());
    let after = resumed().unwrap().at - back;
    eprintln!("MATRIX {} {} broker restart: predictions again {after:.1?} after it listened", broker.name, broker.version);
    let said = |p: &serde_json::Value| p["state"] == "online" && p["last_disconnect"].is_string();
    let online = sub.wait(Duration::from_secs(30), "/status", said);
    assert!(online.is_some(), "no online status naming the loss after the restart; log:\n{}", d.log_text());
    d.signal(SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0), "log:\n{}", d.log_text());
    let stats = sub.wait(Duration::from_secs(10), "/stats", |p| p["reconnects"].as_u64() >= Some(1));
    assert!(stats.is_some(), "no stats counted the reconnect; log:\n{}", d.log_text());
}

/// A daemon killed with SIGKILL: the broker publishes its Last Will, `offline`.
fn last_will(broker: &Foreign) {
    let device = format!("{}-will", broker.name.to_lowercase());
    let sub = Subscriber::start(broker.port, &format!("sonoedge/{device}/status"));
    let mut d = Daemon::spawn(&scratch(&format!("{device}-run")), &config(&broker.url(), &device, SYNTHETIC, "keep_alive_s = 5"));
    assert!(sub.wait(Duration::from_secs(30), "/status", |p| p["state"] == "online").is_some(), "log:\n{}", d.log_text());
    d.signal(SIGKILL);
    d.wait_exit(Duration::from_secs(5));
    let offline = sub.wait(Duration::from_secs(20), "/status", |p| p["state"] == "offline").expect("the Last Will");
    assert_schema("status.v1.schema.json", &offline.payload);
}

/// Runs a daemon with `qos = 2` through a counting proxy for [`WATCH`]; the connections it made.
fn connections_with_qos_2(broker: &Foreign, device: &str) -> usize {
    let sub = Subscriber::start(broker.port, &format!("sonoedge/{device}/status"));
    let (connections, _) = watched_daemon(broker.port, &format!("{device}-run"), |url| config(url, device, SYNTHETIC, "qos = 2"));
    let flips = sub.on("/status").windows(2).filter(|w| w[0].payload["state"] != w[1].payload["state"]).count();
    let rate = match connections {
        1 => "one session, kept".to_string(),
        n => format!("{n} in the first {} s of backoff; the 8 s cap bounds the steady state to 450/h", WATCH.as_secs()),
    };
    eprintln!("MATRIX {} {} qos=2 daemon: {connections} connections ({rate}), status changed {flips} times", broker.name, broker.version);
    // online at most twice (after one short session the next may be a failover), the Last Will
    // offline after each, stopped at the end: no flapping, as each later session must stay up 20 s
    // before it says online again.
    assert!(
        flips <= 5,
        "status changed {flips} times in {WATCH:?}: {:?}",
        sub.on("/status").iter().map(|m| &m.payload["state"]).collect::<Vec<_>>()
    );
    connections
}

/// A daemon with config `cfg` through a counting proxy to `port` for [`WATCH`]: its connections
/// and its log. `cfg` is given the proxy's URL.
fn watched_daemon(port: u16, name: &str, cfg: impl FnOnce(&str) -> String) -> (usize, String) {
    let proxy = CountingProxy::start(port);
    let mut d = Daemon::spawn(&scratch(name), &cfg(&proxy.url()));
    std::thread::sleep(WATCH);
    let connections = proxy.connections();
    d.signal(SIGTERM);
    d.wait_exit(Duration::from_secs(15));
    (connections, d.log_text())
}

/// The fleet guide's RabbitMQ commands (its ```sh block, run as written): cart-a delivers under
/// its own prefix; with cart-a's login under cart-b's prefix `check` exits 69, and a daemon, which
/// RabbitMQ disconnects at each denied publish, backs off and names the ACL in its log; the view
/// reads cart-a and cannot publish.
fn rabbitmq_fleet_guide_permissions(broker: &Foreign, dir: &Path) {
    for user in ["cart-a", "view"] {
        std::fs::write(dir.join(format!("{user}.password")), PASSWORD).unwrap();
    }
    let block = doc_block_under("docs/fleet.md", "## RabbitMQ (3.10, MQTT plugin)", "sh");
    for line in block.lines().filter(|l| l.starts_with("rabbitmqctl")) {
        broker.rabbitmqctl(dir, line);
    }
    let pw = dir.join("cart-a.password");
    let cart =
        |url: &str, device: &str| config(url, device, SYNTHETIC, &format!("username = \"cart-a\"\npassword_file = \"{}\"", pw.display()));
    let (code, text) = check_config(dir, "rmq-own", &cart(&broker.url(), "cart-a"));
    assert_eq!(code, Some(0), "cart-a under its own prefix: {text}");
    let (code, text) = check_config(dir, "rmq-other", &cart(&broker.url(), "cart-b"));
    let verdict = text.lines().find(|l| l.starts_with("delivery")).unwrap_or("(no verdict)").to_string();
    eprintln!("MATRIX {} {} ACL denies publish, check: exit {code:?}: {verdict}", broker.name, broker.version);
    assert_eq!(code, Some(69), "cart-a's login under cart-b's prefix must not deliver: {text}");
    let (connections, log) = watched_daemon(broker.port, "rmq-acl-run", |url| cart(url, "cart-b"));
    eprintln!("MATRIX {} {} ACL denies publish, daemon: {connections} connections in {WATCH:?}", broker.name, broker.version);
    assert!(log.contains("the ACL"), "the log names the likely cause:\n{log}");
    // Backoff 0.5, 1, 2, 4, 8 s (+0-25%): about 6 in 20 s; reset-on-CONNACK made a few hundred.
    assert!((2..=7).contains(&connections), "{connections} connections in {WATCH:?}");
    let d = Daemon::spawn(&scratch("rmq-acl-view"), &cart(&broker.url(), "cart-a"));
    view_reads_and_cannot_publish(broker.port, &d);
}

/// NATS with the fleet guide's `nats-server.conf` block, on loopback: its TLS files made here
/// (the guide's CA commands, a broker certificate for localhost, cart-a's), the view's hashed
/// password replaced by a plain one (NATS takes both).
fn nats_with_the_fleet_guides_permissions(dir: &Path) -> Option<Foreign> {
    super::fleet_doc::guide_certificates(dir);
    let d = |f: &str| dir.join(f).display().to_string();
    let block = doc_block_under("docs/fleet.md", "## NATS (2.9, MQTT gateway)", "conf");
    Foreign::nats_with(dir, |mqtt| {
        super::fleet_doc::substituted(
            block,
            &[
                ("store_dir: /var/lib/nats", format!("store_dir: \"{}\"", d("jetstream"))),
                ("port: 8883", format!("listen: 127.0.0.1:{mqtt}")),
                ("/etc/nats/broker.crt", d("broker.crt")),
                ("/etc/nats/broker.key", d("broker.key")),
                ("/etc/nats/fleet-ca.crt", d("fleet-ca.crt")),
                ("\"$2a$11$...\"", format!("\"{PASSWORD}\"")),
            ],
        )
    })
}

/// Through the guide's NATS permissions with cart-a's certificate: its own prefix delivers; under
/// cart-b's, NATS acknowledges the denied publish (and drops it) and refuses the probe's
/// subscription, so `check` says delivery is UNVERIFIED (exit 0: it cannot see from there), and a
/// daemon keeps its one session, its predictions acknowledged and lost: on NATS only a subscriber
/// with read access finds such a loss.
fn nats_fleet_guide_permissions(broker: &Foreign) {
    let dir = broker.dir();
    let d = |f: &str| dir.join(f).display().to_string();
    let cart = |port: u16, device: &str| {
        let tls =
            format!("ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"", d("fleet-ca.crt"), d("cart-a.crt"), d("cart-a.key"));
        config(&format!("mqtts://localhost:{port}"), device, SYNTHETIC, &tls)
    };
    let (code, text) = check_config(&dir, "nats-own", &cart(broker.port, "cart-a"));
    assert_eq!(code, Some(0), "cart-a under its own prefix: {text}\nNATS log:\n{}", broker.log_text());
    let (code, text) = check_config(&dir, "nats-other", &cart(broker.port, "cart-b"));
    let verdict = text.lines().find(|l| l.starts_with("delivery")).unwrap_or("(no verdict)").to_string();
    eprintln!("MATRIX {} {} ACL denies publish, check: exit {code:?}: {verdict}", broker.name, broker.version);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("delivery UNVERIFIED"), "cart-a's certificate under cart-b's prefix must not be called delivered: {text}");
    let (connections, _) =
        watched_daemon(broker.port, "nats-acl-run", |url| cart(url.rsplit(':').next().unwrap().parse().unwrap(), "cart-b"));
    eprintln!(
        "MATRIX {} {} ACL denies publish, daemon: {connections} connections in {WATCH:?} (acknowledged and dropped)",
        broker.name, broker.version
    );
    assert_eq!(connections, 1, "one session, kept");
}
