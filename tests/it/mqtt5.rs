//! The daemon with `mqtt.protocol = "5"` against mosquitto 2 (Debian 12's RabbitMQ and NATS speak
//! 3.1.1 only): retained status, counts and Last Will as on 3.1.1; a publish the ACL denies is
//! refused with a reason code, counted as refused and never as sent; the server's Maximum QoS is
//! honoured and reported once; a dead cart's retained `online` expires when no Last Will can come.

use std::time::Duration;

use super::daemon_mqtt::{assert_every_prediction_counted, config, SYNTHETIC};
use crate::common::foreign::CountingProxy;
use crate::common::*;

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;
const V5: &str = "protocol = \"5\"";

/// Stops `d` cleanly and returns the last stats `sub` saw after `stopped`.
fn stop_and_last_stats(mut d: Daemon, sub: &Subscriber) -> serde_json::Value {
    d.signal(SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0), "log:\n{}", d.log_text());
    assert!(sub.wait(Duration::from_secs(5), "/status", |p| p["state"] == "stopped").is_some(), "log:\n{}", d.log_text());
    std::thread::sleep(Duration::from_millis(300));
    sub.on("/stats").last().expect("stats").payload.clone()
}

#[test]
fn on_mqtt5_status_is_retained_every_prediction_is_counted_and_the_last_will_fires() {
    let dir = scratch("mqtt5");
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::start(broker.port, "sonoedge/v5-dev/#");
    let d = Daemon::spawn(&dir, &config(&broker.url(), "v5-dev", SYNTHETIC, V5));
    assert!(wait_for(Duration::from_secs(30), || sub.on("/prediction").len() >= 10), "log:\n{}", d.log_text());
    let late = Subscriber::start(broker.port, "sonoedge/v5-dev/status");
    let m = late.wait(Duration::from_secs(10), "/status", |_| true).expect("a retained status");
    assert!(m.retained && m.payload["state"] == "online", "{m:?}");
    let stats = stop_and_last_stats(d, &sub);
    assert_eq!(stats["refused"]["not_authorized"], 0, "{stats}");
    assert_every_prediction_counted(&stats, &[&sub]);

    let will_dir = scratch("mqtt5-will");
    let sub = Subscriber::start(broker.port, "sonoedge/v5-will/status");
    let mut d = Daemon::spawn(&will_dir, &config(&broker.url(), "v5-will", SYNTHETIC, &format!("{V5}\nkeep_alive_s = 5")));
    assert!(sub.wait(Duration::from_secs(30), "/status", |p| p["state"] == "online").is_some(), "log:\n{}", d.log_text());
    d.signal(SIGKILL);
    d.wait_exit(Duration::from_secs(5));
    assert!(sub.wait(Duration::from_secs(20), "/status", |p| p["state"] == "offline").is_some(), "the Last Will");
}

#[test]
fn on_mqtt5_predictions_the_acl_denies_are_counted_as_refused_not_sent_and_logged_once() {
    let dir = scratch("mqtt5-acl");
    // Status and stats may be written; predictions only read: mosquitto answers their PUBACKs with
    // reason code 0x87 (not authorized) on MQTT 5, where 3.1.1 gets a plain PUBACK.
    let acl = dir.join("acl");
    std::fs::write(&acl, "topic readwrite sonoedge/+/status\ntopic readwrite sonoedge/+/stats\ntopic readwrite sonoedge/+/state\ntopic readwrite sonoedge/+/finding\ntopic read sonoedge/+/prediction\n")
        .unwrap();
    let broker = Broker::start(&dir, &format!("acl_file {}", acl.display()));
    let sub = Subscriber::start(broker.port, "sonoedge/v5-acl/#");
    let d = Daemon::spawn(&dir, &config(&broker.url(), "v5-acl", SYNTHETIC, V5));
    let refused = |p: &serde_json::Value| p["refused"]["not_authorized"].as_u64() >= Some(5);
    assert!(sub.wait(Duration::from_secs(30), "/stats", refused).is_some(), "log:\n{}", d.log_text());
    let log = d.log_text();
    let stats = stop_and_last_stats(d, &sub);
    assert_eq!(stats["predictions_sent"], 0, "a refused prediction is never sent: {stats}");
    assert_every_prediction_counted(&stats, &[&sub]);
    assert!(sub.on("/prediction").is_empty());
    let lines = log.lines().filter(|l| l.contains("the broker refused a prediction")).count();
    assert_eq!(lines, 1, "logged once a minute, not per prediction:\n{log}");
    assert!(!log.contains("PubAck Pkid"), "rumqttc's own line per refusal is filtered out:\n{log}");
    assert!(log.contains("not_authorized") && log.contains("ACL"), "{log}");
}

#[test]
fn on_mqtt5_the_servers_maximum_qos_is_honoured_and_reported_once_without_a_reconnect() {
    let dir = scratch("mqtt5-maxqos");
    let broker = Broker::start(&dir, "max_qos 1");
    let proxy = CountingProxy::start(broker.port);
    let sub = Subscriber::start(broker.port, "sonoedge/v5-maxqos/#");
    // On 3.1.1 mosquitto would disconnect the client at its first QoS 2 publish.
    let d = Daemon::spawn(&dir, &config(&proxy.url(), "v5-maxqos", SYNTHETIC, &format!("{V5}\nqos = 2")));
    assert!(wait_for(Duration::from_secs(30), || sub.on("/prediction").len() >= 10), "log:\n{}", d.log_text());
    let log = d.log_text();
    let stats = stop_and_last_stats(d, &sub);
    assert_eq!((proxy.connections(), stats["reconnects"].as_u64()), (1, Some(0)), "{stats}");
    assert_eq!(log.matches("Maximum QoS is 1").count(), 1, "{log}");
    assert_every_prediction_counted(&stats, &[&sub]);
}

#[test]
fn on_mqtt5_a_retained_online_expires_when_neither_a_refresh_nor_the_last_will_can_come() {
    // A broker restart loses the Last Will of a cart that died meanwhile; a persistent broker
    // keeps the retained `online` across it. The expiry (4 keep-alives) is what ends it.
    let dir = scratch("mqtt5-expiry");
    let db = dir.join("db");
    std::fs::create_dir_all(&db).unwrap();
    // Started as root, mosquitto drops to its own user before it writes the database.
    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let persist = format!("persistence true\npersistence_location {}/\nautosave_interval 1", db.display());
    let mut broker = Broker::start(&dir, &persist);
    let sub = Subscriber::start(broker.port, "sonoedge/v5-expiry/#");
    let mut d = Daemon::spawn(&dir, &config(&broker.url(), "v5-expiry", SYNTHETIC, &format!("{V5}\nkeep_alive_s = 5")));
    let online = sub.wait(Duration::from_secs(30), "/status", |p| p["state"] == "online");
    assert!(online.is_some() && sub.wait(Duration::from_secs(30), "/state", |_| true).is_some(), "log:\n{}", d.log_text());
    std::thread::sleep(Duration::from_secs(3)); // the broker's autosave writes the retained status
    broker.kill();
    let died = std::time::Instant::now();
    d.signal(SIGKILL);
    d.wait_exit(Duration::from_secs(5));
    broker.restart();
    // The retained status' `state` and the retained input state's `input`, if any.
    let retained = |what: &str| {
        let late = Subscriber::start(broker.port, "sonoedge/v5-expiry/#");
        std::thread::sleep(Duration::from_secs(3));
        let kept: Vec<_> = late.all().into_iter().filter(|m| m.retained).collect();
        let field = |leaf: &str, key: &str| kept.iter().find(|m| m.topic.ends_with(leaf)).map(|m| m.payload[key].clone());
        let (status, input) = (field("/status", "state"), field("/state", "input"));
        eprintln!("{what} ({:?} after the cart died): status {status:?}, state {input:?}", died.elapsed());
        (status, input)
    };
    // The control: without the expiry these would stay for good.
    let (status, input) = retained("after the broker restart");
    assert_eq!(status, Some(serde_json::json!("online")), "the persistent broker kept the status");
    assert!(input.is_some(), "the persistent broker kept the input state");
    // Sent at most one refresh (10 s) before the cart died, each expires 20 s after that.
    std::thread::sleep(Duration::from_secs(22).saturating_sub(died.elapsed()));
    assert_eq!(retained("after the expiry"), (None, None), "a dead cart's retained online or input state outlived its 20 s expiry");
}

#[test]
fn on_mqtt5_why_a_session_ended_is_on_the_next_status() {
    // Two carts with one device_id (a cloned image): each takes the other's session over. The status
    // after a loss says why: the DISCONNECT reason (0x8E, session taken over) where rumqttc saw the
    // packet, else the close right after CONNACK with the takeover named as a likely cause
    // (mosquitto 2.0.11 here: the latter, the socket closes with the packet).
    let dir = scratch("mqtt5-twins");
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::start(broker.port, "sonoedge/v5-twin/status");
    let cfg = config(&broker.url(), "v5-twin", SYNTHETIC, V5);
    let _twins = [Daemon::spawn(&scratch("mqtt5-twin-a"), &cfg), Daemon::spawn(&scratch("mqtt5-twin-b"), &cfg)];
    let said = |p: &serde_json::Value| {
        p["last_disconnect"].as_str().is_some_and(|r| r.contains("SessionTakenOver") || r.contains("duplicate device_id"))
    };
    let m = sub.wait(Duration::from_secs(30), "/status", said);
    let reasons: Vec<_> = sub.on("/status").iter().map(|m| m.payload["last_disconnect"].clone()).collect();
    let m = m.unwrap_or_else(|| panic!("no status named the takeover: {reasons:?}"));
    eprintln!("status after a takeover: {}", m.payload["last_disconnect"]);
    assert_schema("status.v1.schema.json", &m.payload);
}

/// `sonoedge check` over MQTT 5 (`extra`: more `[mqtt]` keys) against mosquitto started with
/// `broker_conf`: its exit code and output.
fn check5(name: &str, broker_conf: impl FnOnce(&std::path::Path) -> String, extra: &str) -> (Option<i32>, String) {
    let dir = scratch(&format!("mqtt5-check-{name}"));
    let broker = Broker::start(&dir, &broker_conf(&dir));
    let cfg = config(&broker.url(), &format!("v5-check-{name}"), SYNTHETIC, &format!("{V5}\n{extra}"));
    let (code, text) = super::fleet_doc::check(&dir, name, &cfg);
    eprintln!("check over MQTT 5, {name}: exit {code:?}: {}", text.lines().find(|l| l.starts_with("delivery")).unwrap_or("-"));
    (code, text)
}

#[test]
fn check_over_mqtt5_reads_what_the_broker_says_a_reason_code_its_maximum_qos_and_packet_size() {
    let (code, text) = check5("plain", |_| String::new(), "qos = 1");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("(MQTT 5)") && text.contains("delivery ok: a "), "{text}");
    // On 3.1.1 mosquitto acknowledges a denied publish (check can only see it never arrives); on 5
    // it answers with reason code 0x87, and check names it.
    let acl = |dir: &std::path::Path| {
        std::fs::write(dir.join("acl"), "topic read sonoedge/#\n").unwrap();
        format!("acl_file {}", dir.join("acl").display())
    };
    let (code, text) = check5("acl", acl, "qos = 1");
    assert_eq!(code, Some(69), "{text}");
    assert!(
        text.contains("delivery REFUSED") && text.contains("not_authorized") && text.contains("publish to sonoedge/v5-check-acl/#"),
        "{text}"
    );
    // A Maximum QoS below mqtt.qos: the daemon publishes at it, so delivery is ok at that QoS.
    let (code, text) = check5("maxqos", |_| "max_qos 1".into(), "qos = 2");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("delivery ok at QoS 1") && text.contains("Maximum QoS"), "{text}");
    // A Maximum Packet Size below the largest message: announced in the CONNACK, nothing is sent.
    let (code, text) = check5("maxpacket", |_| "max_packet_size 600".into(), "qos = 1");
    assert_eq!(code, Some(69), "{text}");
    assert!(text.contains("delivery SIZE LIMIT: the broker's Maximum Packet Size is 600 bytes"), "{text}");
}
