//! `sonoedge check --config FILE`: validates config and model, tries the source once, and for each
//! broker URL connects and proves delivery with a probe (src/publish/probe.rs); one verdict line per
//! part. Exit 0 all good (delivery seen, or not verifiable and said so), 78 config/model unusable,
//! 69 source or broker unreachable now (which `run` would tolerate and retry) or delivery failing
//! (QoS refused, publish denied, size limit: what `run` would count as sent and lose).

use std::time::{Duration, Instant, SystemTime};

use super::run::RunArgs;
use sonoedge::capture::convert::Roi;
use sonoedge::config::Config;
use sonoedge::daemon::{build_source, identity, load_model, mqtt_settings, StartError};
use sonoedge::pipeline::stats::{Counters, StatsReporter};
use sonoedge::publish::mqtt::wire::Protocol;
use sonoedge::publish::mqtt::{probe_options, redact_url};
use sonoedge::publish::probe::{Attempt, Probe, Verdict, ECHO_WAIT, SMALL_BYTES, STEP_WAIT};
use sonoedge::publish::signals::{CurrentFinding, Finding, FindingEvent, StateMessage};
use sonoedge::publish::{Identity, LatencyMs, Prediction, PublishCounters, Refusal};
use sonoedge::state::InputState;
use sonoedge::sysinfo::system_facts;

pub const EXIT_UNAVAILABLE: i32 = 69;

pub fn run(args: &RunArgs) -> Result<i32, StartError> {
    let cfg = Config::load(&args.config).map_err(StartError::config)?;
    println!("config  ok: {}", args.config.display());
    let model = load_model(&cfg)?;
    println!(
        "model   ok: {} ({}, labels {:?}, sha256 {})",
        model.contract.onnx.display(),
        model.info.format.as_str(),
        model.labels(),
        model.sha256
    );
    let id = identity(&cfg, &model)?;
    println!("device  ok: topics under {}/{}/", cfg.mqtt.topic_prefix, id.device_id);
    let source_ok = try_source(&cfg);
    let broker_ok = try_brokers(&cfg, &id, model.labels())?;
    Ok(if source_ok && broker_ok { 0 } else { EXIT_UNAVAILABLE })
}

fn try_source(cfg: &Config) -> bool {
    let mut source = match build_source(&cfg.source) {
        Ok(s) => s,
        Err(e) => {
            println!("source  UNUSABLE: {e}");
            return false;
        }
    };
    let name = source.describe();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match source.next_frame() {
            Ok(Some(f)) => {
                let (w, h) = (f.meta.width, f.meta.height);
                if let Some(roi) = cfg.source.roi().map(Roi::from_array).filter(|r| !r.fits(w, h)) {
                    println!("source  ROI MISMATCH: {name} gives {w}x{h}, source.roi {roi:?} does not fit (nothing would be published; `sonoedge snapshot` shows the frame)");
                    return false;
                }
                println!("source  ok: {name} gives {w}x{h} {:?}", f.meta.format);
                return true;
            }
            Ok(None) => continue,
            Err(e) => {
                println!("source  UNAVAILABLE: {name}: {e} (the daemon would keep retrying)");
                return false;
            }
        }
    }
    println!("source  UNAVAILABLE: {}: no frame within 5 s", source.describe());
    false
}

fn try_brokers(cfg: &Config, id: &Identity, labels: &[String]) -> Result<bool, StartError> {
    let settings = mqtt_settings(&cfg.mqtt)?;
    // Validates TLS files and the like for every URL before anything is tried.
    for url in &settings.urls {
        probe_options(&settings, url, "sonoedge-check").map_err(StartError::config)?;
    }
    let topic = format!("{}/{}/check", cfg.mqtt.topic_prefix, id.device_id);
    let bytes = largest_message_bytes(id, labels);
    let mut all_ok = true;
    for url in &settings.urls {
        let verdict = Probe { settings: &settings, url, topic: topic.clone(), qos: cfg.mqtt.qos, bytes }.run();
        let version = if settings.protocol == Protocol::V5 { "MQTT 5" } else { "MQTT 3.1.1" };
        for line in verdict_lines(&verdict, &redact_url(url), version, &topic, cfg.mqtt.qos, bytes) {
            println!("{line}");
        }
        all_ok &= !verdict.fails();
    }
    Ok(all_ok)
}

/// The biggest of a prediction, a finding and a state for this model's labels and a stats message,
/// with every number at its longest, plus room for topic-length differences: what the probe must match in size.
fn largest_message_bytes(id: &Identity, labels: &[String]) -> usize {
    let now = Instant::now();
    let probs = labels.iter().map(|l| (l.clone(), 0.123_456_789_012_345_67)).collect();
    let latency = LatencyMs { capture_to_preprocess: 12345.678, preprocess: 12345.678, inference: 12345.678, to_mqtt: 12345.678 };
    let p = Prediction {
        frame: u64::MAX,
        generation: 0,
        source_sequence: u64::MAX,
        captured_wall: SystemTime::now(),
        captured_monotonic: Duration::from_secs(u32::MAX.into()),
        captured_at: now,
        inferred_at: now,
        label: labels.iter().max_by_key(|l| l.len()).cloned().unwrap_or_default(),
        uncertain: false, // "false" is the longer
        probs,
        latency,
    };
    let prediction = p.to_json(id, now).to_string().len();
    let (label, probs) = (p.label.clone(), p.probs.clone());
    let finding = Finding {
        event: FindingEvent::Unfreeze, // the longest event name
        label: Some(label.clone()),
        probs: Some(probs.clone()),
        frame: u64::MAX,
        captured_wall: SystemTime::now(),
        frames_used: usize::MAX,
    };
    let current = Some(CurrentFinding { label, probs, since_frame: u64::MAX });
    let state = StateMessage { input: InputState::SourceWaiting, frame: u64::MAX, since: SystemTime::now(), finding: current };
    let signals = finding.to_json(id).to_string().len().max(state.to_json(id).to_string().len());
    let stats = StatsReporter::new().report(&Counters::default(), &PublishCounters::default(), &id.device_id, system_facts());
    // Stats counters are small at start; at u64::MAX each of its ~25 numbers takes up to 19 more digits.
    prediction.max(signals).max(stats.to_string().len() + 25 * 19) + 16
}

/// What to print for one broker (probed over `version`): its reachability, then what delivery did.
fn verdict_lines(v: &Verdict, url: &str, version: &str, topic: &str, qos: u8, bytes: usize) -> Vec<String> {
    match v {
        Verdict::Unreachable(why) => vec![format!("broker  UNAVAILABLE: {url}: {why} (the daemon would keep retrying)")],
        _ => vec![format!("broker  ok: {url} ({version})"), delivery_line(v, topic, qos, bytes)],
    }
}

/// The delivery line of a broker that was reached.
fn delivery_line(v: &Verdict, topic: &str, qos: u8, bytes: usize) -> String {
    match v {
        Verdict::Unreachable(_) => unreachable!("verdict_lines prints an unreachable broker's line"),
        Verdict::Delivered { ms, granted, acked_as } => {
            let mut notes = Vec::new();
            if *acked_as < qos {
                notes.push(format!("the broker acknowledged it as QoS {acked_as}: at least once, a duplicate is possible"));
            }
            if *granted < qos {
                notes.push(format!("the broker grants subscribers at most QoS {granted}"));
            }
            let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
            format!("delivery ok: a {bytes}-byte probe at QoS {qos} on {topic} came back in {ms} ms{notes}")
        }
        Verdict::Unverified { .. } => format!(
            "delivery UNVERIFIED: the broker acknowledged a {bytes}-byte probe at QoS {qos} on {topic} but refuses this user a \
             subscription to it, so delivery cannot be seen from here (MQTT 3.1.1 brokers acknowledge denied publishes too); \
             let the user read its own topics, or watch {topic} with a subscriber of yours"
        ),
        Verdict::QosRefused { works, announced: true } => format!(
            "delivery ok at QoS {works}: the broker allows at most QoS {works} (the Maximum QoS in its CONNACK) and mqtt.qos is \
             {qos}, so the daemon publishes at QoS {works}; a {bytes}-byte probe at QoS {works} on {topic} came back (set \
             mqtt.qos = {works} to say so in the config)"
        ),
        Verdict::QosRefused { works, announced: false } => format!(
            "delivery QOS REFUSED: the broker closed the connection or dropped a QoS {qos} publish on {topic}; QoS {works} got \
             through: set mqtt.qos = {works} (NATS supports QoS 0 and 1 only)"
        ),
        Verdict::SizeLimit { announced: Some(max) } => format!(
            "delivery SIZE LIMIT: the broker's Maximum Packet Size is {max} bytes (its CONNACK), a {bytes}-byte message (the \
             largest the daemon sends) on {topic} would not fit: raise it (mosquitto: max_packet_size); the daemon counts \
             such messages as refused (packet_too_large)"
        ),
        Verdict::SizeLimit { announced: None } => format!(
            "delivery SIZE LIMIT: a {SMALL_BYTES}-byte probe on {topic} came back, a {bytes}-byte one (the largest message the \
             daemon sends) did not: raise the broker's maximum packet or message size"
        ),
        Verdict::Refused(why) => refused(*why, topic, qos, bytes),
        Verdict::Denied { first } => denied(first, topic, qos, bytes),
    }
}

/// An MQTT 5 PUBACK (or PUBREC) with a failure reason code.
fn refused(why: Refusal, topic: &str, qos: u8, bytes: usize) -> String {
    let own = topic.trim_end_matches("/check");
    let what = match why {
        Refusal::NotAuthorized => format!("its ACL denies this user publishing there; let it publish to {own}/#"),
        Refusal::QuotaExceeded => "a quota of the broker's; check its limits for this user".to_string(),
        Refusal::TopicNameInvalid => "the broker refuses the topic name; check mqtt.topic_prefix and device_id".to_string(),
        _ => "see the broker's log".to_string(),
    };
    let name = why.name();
    format!(
        "delivery REFUSED: the broker answered a {bytes}-byte probe at QoS {qos} on {topic} with reason code {name} (MQTT 5): \
         {what}; the daemon counts such messages as refused ({name}), never as sent"
    )
}

fn denied(first: &Attempt, topic: &str, qos: u8, bytes: usize) -> String {
    let own = topic.trim_end_matches("/check");
    match first {
        // mosquitto grants a subscription its ACL will not serve: a denied read looks the same.
        Attempt::Lost => format!(
            "delivery FAILED: the broker acknowledged a {bytes}-byte probe at QoS {qos} on {topic} and never delivered it \
             (waited {} s; a {SMALL_BYTES}-byte one fared no better): its ACL denies this user publishing there, and \
             predictions would be counted as sent and lost, or denies reading it back (mosquitto grants such a subscription \
             and delivers nothing, so the two look alike). Let the user publish to {own}/# and read {topic}",
            ECHO_WAIT.as_secs()
        ),
        Attempt::Closed { why, .. } if why.starts_with("on SUBSCRIBE") => format!(
            "delivery FAILED: the broker closed the connection when the probe subscribed to {topic} ({why}), at QoS {qos} \
             and for a {SMALL_BYTES}-byte probe too (RabbitMQ does so when this user may not read there; its publishing \
             could not be tried): let it publish to {own}/# and read {topic}"
        ),
        Attempt::Closed { why, .. } => format!(
            "delivery FAILED: the broker closed the connection on a QoS {qos} publish to {topic} ({why}), and on a \
             {SMALL_BYTES}-byte one too: its ACL denies this user publishing there; let it publish to {own}/#"
        ),
        Attempt::QosAbove { max } => format!(
            "delivery FAILED: the broker allows at most QoS {max} (its CONNACK), and a probe at QoS {max} on {topic} did not \
             get through either: check its ACL for {own}/# and its log"
        ),
        _ => format!(
            "delivery FAILED: the broker did not acknowledge a QoS {qos} publish to {topic} within {} s: check its ACL \
             for {own}/# and its log",
            STEP_WAIT.as_secs()
        ),
    }
}
