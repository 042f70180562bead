//! The daemon against a real mosquitto: retained status and Last Will, clean stop, surviving a
//! broker restart with every lost frame counted, failover between two brokers, TLS, `check`'s
//! delivery probe (an ACL that denies publishing, size limits), and errors that name what to fix.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::{self, *};

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;
const SIGHUP: i32 = 1;
const SIGUSR1: i32 = 10;

pub fn config(url: &str, device: &str, source: &str, mqtt_extra: &str) -> String {
    config_mqtt(&format!("url = \"{url}\"\n{mqtt_extra}"), device, source)
}

/// A config whose `[mqtt]` section is `mqtt` (plus stats every second).
pub fn config_mqtt(mqtt: &str, device: &str, source: &str) -> String {
    format!(
        "device_id = \"{device}\"\n[model]\npath = \"{model}\"\n[source]\n{source}\n[pipeline]\nmax_fps = 0\n[mqtt]\nstats_interval_s = 1\n{mqtt}\n",
        model = repo("models/tiny-random/int8").display()
    )
}

pub const SYNTHETIC: &str = "kind = \"synthetic\"\nseed = 3\nfps = 20\n";

#[test]
fn status_is_online_retained_then_offline_after_sigkill_and_stopped_after_sigterm() {
    let dir = scratch("lwt");
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::start(broker.port, "sonoedge/lwt-dev/#");
    let mut d = Daemon::spawn(&dir, &config(&broker.url(), "lwt-dev", SYNTHETIC, "keep_alive_s = 5"));
    let online = sub.wait(Duration::from_secs(30), "/status", |p| p["state"] == "online");
    let online = online.unwrap_or_else(|| panic!("no online status; log:\n{}", d.log_text()));
    assert_schema("status.v1.schema.json", &online.payload);
    d.signal(SIGKILL);
    d.wait_exit(Duration::from_secs(5));
    // mosquitto publishes the will once it notices the dead connection (socket closed: at once).
    let offline = sub.wait(Duration::from_secs(20), "/status", |p| p["state"] == "offline").expect("Last Will");
    assert_schema("status.v1.schema.json", &offline.payload);

    let mut d = Daemon::spawn(&dir, &config(&broker.url(), "lwt-dev", SYNTHETIC, ""));
    let n_online = sub.on("/status").iter().filter(|m| m.payload["state"] == "online").count();
    assert!(wait_for(Duration::from_secs(30), || sub.on("/status").iter().filter(|m| m.payload["state"] == "online").count() > n_online));
    d.signal(SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0), "log:\n{}", d.log_text());
    assert!(sub.wait(Duration::from_secs(5), "/status", |p| p["state"] == "stopped").is_some());
    // A new subscriber sees `stopped` retained (the clean DISCONNECT suppressed the will).
    let late = Subscriber::start(broker.port, "sonoedge/lwt-dev/status");
    let m = late.wait(Duration::from_secs(10), "/status", |_| true).expect("retained status");
    assert!(m.retained && m.payload["state"] == "stopped", "{:?}", m);
}

#[test]
fn sighup_and_sigusr1_each_stop_the_daemon_cleanly_with_the_retained_stopped_status() {
    let dir = scratch("hup");
    let broker = Broker::start(&dir, "");
    for (name, sig) in [("hup", SIGHUP), ("usr1", SIGUSR1)] {
        let device = format!("sig-{name}");
        let sub = Subscriber::start(broker.port, &format!("sonoedge/{device}/status"));
        let mut d = Daemon::spawn(&dir, &config(&broker.url(), &device, SYNTHETIC, ""));
        let online = sub.wait(Duration::from_secs(30), "/status", |p| p["state"] == "online");
        online.unwrap_or_else(|| panic!("SIG{name}: no online status; log:\n{}", d.log_text()));
        d.signal(sig);
        assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0), "SIG{name}; log:\n{}", d.log_text());
        let late = Subscriber::start(broker.port, &format!("sonoedge/{device}/status"));
        let m = late.wait(Duration::from_secs(10), "/status", |_| true).expect("retained status");
        assert!(m.retained && m.payload["state"] == "stopped", "SIG{name}: {m:?}");
    }
}

#[test]
fn a_broker_restart_is_survived_and_every_missing_frame_is_a_counted_drop() {
    let dir = scratch("restart");
    let mut broker = Broker::start(&dir, "");
    let sub = Subscriber::start(broker.port, "sonoedge/restart-dev/#");
    let mut d = Daemon::spawn(&dir, &config(&broker.url(), "restart-dev", SYNTHETIC, "queue_capacity = 8"));
    assert!(wait_for(Duration::from_secs(30), || sub.on("/prediction").len() >= 5), "no predictions; log:\n{}", d.log_text());
    broker.kill();
    // Long enough for more than 8 results at this run's speed (emulated runs infer ~20x slower).
    std::thread::sleep(Duration::from_secs(4) * time_scale().min(5));
    broker.restart();
    let before = sub.on("/prediction").len();
    assert!(
        wait_for(Duration::from_secs(40), || sub.on("/prediction").len() >= before + 10),
        "no predictions after restart; log:\n{}",
        d.log_text()
    );
    d.signal(SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0));
    let last_stats = sub.wait(Duration::from_secs(5), "/stats", |p| p["reconnects"].as_u64() >= Some(1)).expect("stats after reconnect");
    // The status after the reconnect says why the session ended.
    let after = sub.on("/status").into_iter().find(|m| m.payload["last_disconnect"].as_str().is_some_and(|r| r.contains("connection")));
    let statuses: Vec<_> = sub.on("/status").iter().map(|m| (m.payload["state"].clone(), m.payload["last_disconnect"].clone())).collect();
    assert!(after.is_some_and(|m| m.payload["state"] != "offline"), "no status after the restart named the loss: {statuses:?}");
    let frames: BTreeSet<u64> = sub.on("/prediction").iter().map(|m| m.payload["frame"].as_u64().unwrap()).collect();
    let stats = sub.on("/stats").last().unwrap().payload.clone();
    assert_schema("stats.v1.schema.json", &stats);
    sub.on("/prediction").iter().for_each(|m| assert_schema("prediction.v1.schema.json", &m.payload));
    let (first, last) = (*frames.first().unwrap(), *frames.last().unwrap());
    let inferred_in_range = frames.len() as u64;
    let dropped = stats["dropped"]["offline_queue_full"].as_u64().unwrap();
    // Frames between the first and last received that never arrived must be matched by counted drops
    // (or were never inferred: gated or replaced while inference was busy, also counted; or were
    // withheld because the phantom's next segment had turned the input to no signal).
    let skipped = &stats["skipped"];
    let skips: u64 = ["no_signal", "no_contact", "frozen", "dwell", "max_fps"].iter().map(|k| skipped[k].as_u64().unwrap()).sum();
    let not_inferred = stats["dropped"]["inference_busy"].as_u64().unwrap() + stats["dropped"]["source_lost"].as_u64().unwrap() + skips;
    let gaps = (last - first + 1) - inferred_in_range;
    assert!(dropped >= 1, "the broker was down for 4 s (x time scale) with an 8-deep queue: drops must be counted; {stats}");
    assert!(gaps <= dropped + not_inferred, "gaps {gaps} > counted drops {dropped} + not inferred {not_inferred}; {last_stats:?}");
}

#[test]
fn a_missing_broker_keeps_the_daemon_up_until_one_appears() {
    let dir = scratch("nobroker");
    let port = free_port();
    let mut d = Daemon::spawn(&dir, &config(&format!("mqtt://127.0.0.1:{port}"), "late-dev", SYNTHETIC, ""));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(d.child.try_wait().unwrap(), None, "the daemon must not exit without a broker; log:\n{}", d.log_text());
    let broker = Broker::start_on(&dir, port, "");
    let sub = Subscriber::start(broker.port, "sonoedge/late-dev/#");
    assert!(sub.wait(Duration::from_secs(45), "/prediction", |_| true).is_some(), "log:\n{}", d.log_text());
}

#[test]
fn a_missing_image_folder_is_reported_in_status_not_fatal() {
    let dir = scratch("nofolder");
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::start(broker.port, "sonoedge/nofolder-dev/#");
    let source = format!("kind = \"images\"\npath = \"{}\"\nfps = 10\n", dir.join("absent").display());
    let d = Daemon::spawn(&dir, &config(&broker.url(), "nofolder-dev", &source, ""));
    let m = sub.wait(Duration::from_secs(30), "/status", |p| p["source_state"] == "waiting");
    let m = m.unwrap_or_else(|| panic!("no waiting status; log:\n{}", d.log_text()));
    assert!(m.payload["detail"].as_str().unwrap().contains("absent"), "{:?}", m.payload);
}

#[test]
fn bad_config_and_unusable_model_exit_78_naming_the_problem() {
    let dir = scratch("badcfg");
    let cases = [
        ("[model]\npath = \"m\"\n[source]\nkind = \"webcam\"\n", "webcam"),
        (&config("mqtt://127.0.0.1:1", "d", SYNTHETIC, "qos = 5") as &str, "mqtt.qos"),
        (&config("mqtt://127.0.0.1:1", "d", SYNTHETIC, "").replace("tiny-random/int8", "tiny-random/qdq") as &str, "statically quantized"),
        (&config("mqtt://127.0.0.1:1", "bad/id", SYNTHETIC, "") as &str, "device_id"),
    ];
    for (text, needle) in cases {
        let mut d = Daemon::spawn(&dir, text);
        assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(78), "{needle}: {}", d.log_text());
        assert!(d.log_text().contains(needle), "{needle} not in: {}", d.log_text());
    }
}

#[test]
fn tls_accepts_the_right_ca_and_rejects_a_wrong_one_while_retrying() {
    let dir = scratch("tls");
    let certs = make_certs(&dir);
    let tls = format!("cafile {0}/ca.crt\ncertfile {0}/server.crt\nkeyfile {0}/server.key\n", certs.display());
    let broker = Broker::start(&dir, &tls);
    let url = format!("mqtts://localhost:{}", broker.port);
    let good =
        Daemon::spawn(&scratch("tls-good"), &config(&url, "tls-dev", SYNTHETIC, &format!("ca_file = \"{}/ca.crt\"", certs.display())));
    let wrong_dir = scratch("tls-wrong");
    let mut wrong =
        Daemon::spawn(&wrong_dir, &config(&url, "tls-wrong", SYNTHETIC, &format!("ca_file = \"{}/other-ca.crt\"", certs.display())));
    // The subscriber can only listen over TLS here; check with the daemon's own log and a TLS-free probe
    // instead: the good daemon logs "mqtt connected", the wrong one logs a certificate error and keeps running.
    assert!(wait_for(Duration::from_secs(30), || good.log_text().contains("mqtt connected")), "good:\n{}", good.log_text());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(wrong.child.try_wait().unwrap(), None, "the daemon must keep retrying");
    let log = wrong.log_text();
    assert!(!log.contains("mqtt connected"), "{log}");
    assert!(
        wait_for(Duration::from_secs(20), || {
            let l = wrong.log_text();
            l.contains("certificate") || l.contains("UnknownIssuer")
        }),
        "{}",
        wrong.log_text()
    );
    wrong.signal(SIGTERM);
    assert_eq!(wrong.wait_exit(Duration::from_secs(15)), Some(0));
}

/// A CA, a server certificate for localhost signed by it, and an unrelated second CA (openssl CLI).
fn make_certs(dir: &std::path::Path) -> std::path::PathBuf {
    let c = dir.join("certs");
    std::fs::create_dir_all(&c).unwrap();
    let sh = format!(
        "set -e; cd {}; \
         openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.crt 2>/dev/null; \
         openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca -keyout other-ca.key -out other-ca.crt 2>/dev/null; \
         openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null; \
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf; \
         openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out server.crt 2>/dev/null; \
         chmod 644 *.key *.crt",
        c.display()
    );
    let ok = std::process::Command::new("sh").arg("-c").arg(sh).status().unwrap().success();
    assert!(ok, "openssl failed");
    c
}

#[test]
fn check_gives_a_verdict_per_part_and_exit_69_when_the_broker_is_unreachable() {
    let dir = scratch("check");
    let broker = Broker::start(&dir, "");
    let run_check = |url: &str| {
        let cfg = dir.join(format!("check-{}.toml", url.len()));
        std::fs::write(&cfg, config(url, "check-dev", SYNTHETIC, "")).unwrap();
        common::sonoedge().args(["check", "--config"]).arg(&cfg).output().unwrap()
    };
    let ok = run_check(&broker.url());
    let text = String::from_utf8_lossy(&ok.stdout).to_string();
    assert_eq!(ok.status.code(), Some(0), "{text}");
    for part in ["config  ok", "model   ok", "source  ok", "broker  ok", "delivery ok: a "] {
        assert!(text.contains(part), "{part} missing in {text}");
    }
    let down = run_check(&format!("mqtt://127.0.0.1:{}", free_port()));
    assert_eq!(down.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&down.stdout).contains("broker  UNAVAILABLE"));
}

#[test]
fn with_the_first_broker_stopped_the_second_takes_over_within_the_backoff_and_every_prediction_is_counted() {
    let dir = scratch("failover");
    let (mut a, b) = (Broker::start(&dir, ""), Broker::start(&dir, ""));
    let topics = "sonoedge/failover-dev/#";
    let (sub_a, sub_b) = (Subscriber::start(a.port, topics), Subscriber::start(b.port, topics));
    let mqtt = format!("urls = [\"{}\", \"{}\"]", a.url(), b.url());
    let mut d = Daemon::spawn(&dir, &config_mqtt(&mqtt, "failover-dev", SYNTHETIC));
    assert!(wait_for(Duration::from_secs(30), || sub_a.on("/prediction").len() >= 5), "nothing on A; log:\n{}", d.log_text());
    let stopped = std::time::Instant::now();
    a.kill();
    let online = sub_b.wait(Duration::from_secs(20), "/status", |p| p["state"] == "online");
    let online = online.unwrap_or_else(|| panic!("B never took over; log:\n{}", d.log_text()));
    let took = online.at - stopped;
    eprintln!("failover: online on the second broker {took:?} after the first was killed");
    // The connection was up less than STABLE_AFTER and never failed: the first delay, 0.5-0.625 s.
    assert!(took < Duration::from_secs(3) * time_scale(), "failover took {took:?}");
    assert!(wait_for(Duration::from_secs(30), || sub_b.on("/prediction").len() >= 10), "log:\n{}", d.log_text());
    d.signal(SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0), "log:\n{}", d.log_text());
    assert!(sub_b.wait(Duration::from_secs(5), "/status", |p| p["state"] == "stopped").is_some());
    let stats = sub_b.on("/stats").last().expect("stats on B").payload.clone();
    assert_every_prediction_counted(&stats, &[&sub_a, &sub_b]);
}

/// The final stats' identity (made = sent + dropped + refused + queued + in flight), and every
/// prediction made and not refused seen by a subscriber once the daemon stopped cleanly (nothing
/// was dropped on the way).
pub fn assert_every_prediction_counted(stats: &serde_json::Value, subs: &[&Subscriber]) {
    assert_schema("stats.v1.schema.json", stats);
    let n = |k: &str| stats.pointer(k).and_then(|v| v.as_u64()).unwrap_or_else(|| panic!("{k} in {stats}"));
    assert_eq!((n("/dropped/source_lost"), n("/dropped/inference_error")), (0, 0), "{stats}");
    let made = n("/inferred");
    let refused: u64 = stats["refused"].as_object().expect("refused counts").values().map(|v| v.as_u64().unwrap()).sum();
    let accounted = n("/predictions_sent") + n("/dropped/offline_queue_full") + refused + n("/queue_depth") + n("/in_flight");
    assert_eq!(made, accounted, "made = sent + dropped + refused + queued + in flight: {stats}");
    assert_eq!(n("/dropped/offline_queue_full"), 0, "a failover of well under a second fills no queue: {stats}");
    let all: Vec<u64> = subs.iter().flat_map(|s| s.on("/prediction")).map(|m| m.payload["frame"].as_u64().unwrap()).collect();
    let seen: BTreeSet<u64> = all.iter().copied().collect();
    eprintln!("{made} made, {refused} refused, {} seen, {} seen twice (re-sent after a loss)", seen.len(), all.len() - seen.len());
    assert_eq!(seen.len() as u64, made - refused, "every prediction made and not refused reached a subscriber: {stats}");
}

#[test]
fn check_exits_69_when_an_acl_denies_publishing_that_the_broker_acknowledges_anyway() {
    let dir = scratch("check-acl");
    // Anonymous clients may read the device's topics but not write them: mosquitto acknowledges
    // the publish and drops it.
    let acl = dir.join("acl");
    std::fs::write(&acl, "topic read sonoedge/#\n").unwrap();
    let broker = Broker::start(&dir, &format!("acl_file {}", acl.display()));
    let cfg = dir.join("check.toml");
    std::fs::write(&cfg, config(&broker.url(), "acl-dev", SYNTHETIC, "")).unwrap();
    let out = common::sonoedge().args(["check", "--config"]).arg(&cfg).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(69), "{text}");
    assert!(text.contains("broker  ok") && text.contains("delivery FAILED: the broker acknowledged"), "{text}");
    // mosquitto grants subscriptions it will not serve, so a denied read is named as the other cause.
    assert!(text.contains("publish to sonoedge/acl-dev/#") && text.contains("read sonoedge/acl-dev/check"), "{text}");
}

#[test]
fn check_exits_69_naming_a_size_limit_when_the_broker_drops_messages_as_large_as_the_daemon_sends() {
    for limit in ["message_size_limit 500", "max_packet_size 600"] {
        // message_size_limit: acknowledged and dropped; max_packet_size: the connection is closed.
        let dir = scratch(&format!("check-size-{}", limit.len()));
        let broker = Broker::start(&dir, limit);
        let cfg = dir.join("check.toml");
        std::fs::write(&cfg, config(&broker.url(), "size-dev", SYNTHETIC, "")).unwrap();
        let out = common::sonoedge().args(["check", "--config"]).arg(&cfg).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(69), "{limit}: {text}");
        assert!(text.contains("delivery SIZE LIMIT: a 64-byte probe"), "{limit}: {text}");
    }
}

#[test]
fn a_multi_level_topic_prefix_carries_every_topic() {
    let dir = scratch("prefix");
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::start(broker.port, "site/ward-3/sonoedge/prefix-dev/#");
    let d = Daemon::spawn(&dir, &config(&broker.url(), "prefix-dev", SYNTHETIC, "topic_prefix = \"site/ward-3/sonoedge\""));
    assert!(sub.wait(Duration::from_secs(30), "/prediction", |_| true).is_some(), "log:\n{}", d.log_text());
    let status = sub.wait(Duration::from_secs(5), "/status", |p| p["state"] == "online").expect("status under the prefix");
    assert_eq!(status.topic, "site/ward-3/sonoedge/prefix-dev/status");
}

#[test]
fn a_topic_prefix_with_a_wildcard_exits_78_naming_the_key() {
    let dir = scratch("prefix-bad");
    let mut d = Daemon::spawn(&dir, &config("mqtt://127.0.0.1:1", "d", SYNTHETIC, "topic_prefix = \"site/+/sonoedge\""));
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(78), "{}", d.log_text());
    assert!(d.log_text().contains("mqtt.topic_prefix") && d.log_text().contains("wildcard"), "{}", d.log_text());
}
