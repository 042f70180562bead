//! Generated values thrown at every config key (the loader returns a value or a `ConfigError`,
//! never panics), and accepted configs run by the daemon for a moment (Ok or a `StartError`, never a
//! panic or a thread that dies). Every key of deploy/sonoedge.toml must have a generator here.
//! v4l2 keys are only loaded, not served: serving them needs a grabber.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use sonoedge::config::Config;
use sonoedge::daemon::{serve, StartError};
use toml::{Table, Value};

const EXAMPLE: &str = include_str!("../../deploy/sonoedge.toml");

/// Which base document a key is set in.
#[derive(Clone, Copy, Debug)]
enum Base {
    /// deploy/sonoedge.toml (a v4l2 source) with a fan added.
    Example,
    Synthetic,
    Images,
    /// Synthetic, with a TLS broker and a client certificate (cert and key go together).
    Tls,
    /// Synthetic, with `mqtt.urls` instead of `mqtt.url` (the two exclude each other).
    Brokers,
}

/// Every key with the base it lives in and values near and inside its domain (the hostile values
/// common to all keys are added by [`values`]).
fn generators() -> Vec<(&'static str, Base, BoxedStrategy<Value>)> {
    use Base::*;
    vec![
        ("device_id", Synthetic, prop_oneof!["[a-zA-Z0-9_-]{0,70}".prop_map(Value::String), words()].boxed()),
        ("model.path", Synthetic, words()),
        ("model.threads", Synthetic, int(-2, 100)),
        ("model.labels", Synthetic, prop::collection::vec(words(), 0..4).prop_map(Value::Array).boxed()),
        ("model.preprocessor", Synthetic, words()),
        ("source.kind", Synthetic, prop_oneof![Just(s("synthetic")), Just(s("images")), Just(s("v4l2")), words()].boxed()),
        ("source.seed", Synthetic, int(-1, i64::MAX)),
        ("source.fps", Synthetic, float(-1.0, 300.0)),
        ("source.roi", Synthetic, roi()),
        ("source.fan.origin_px", Synthetic, floats(2, -2e5, 2e5)),
        ("source.fan.angles_deg", Synthetic, floats(2, -200.0, 200.0)),
        ("source.fan.radius_start_px", Synthetic, float(-10.0, 1000.0)),
        ("source.fan.radius_stop_px", Synthetic, float(-10.0, 2e5)),
        ("source.path", Images, words()),
        ("source.fps", Images, float(-1.0, 300.0)),
        ("source.loop", Images, any::<bool>().prop_map(Value::Boolean).boxed()),
        ("source.roi", Images, roi()),
        ("source.device", Example, prop_oneof![Just(s("/dev/video0")), Just(s("card:")), Just(s("bus:x")), words()].boxed()),
        ("source.format", Example, prop_oneof![Just(s("YUYV")), Just(s("mjpg")), Just(s("auto")), words()].boxed()),
        ("source.width", Example, int(-1, 10_000)),
        ("source.height", Example, int(-1, 10_000)),
        ("source.fps", Example, float(-1.0, 300.0)),
        ("source.buffers", Example, int(-1, 12)),
        ("source.input", Example, prop_oneof![int(-1, 70), Just(s("HDMI")), Just(s("")), words()].boxed()),
        ("source.stall_s", Example, float(-1.0, 700.0)),
        ("source.interlace", Example, prop_oneof![Just(s("blend")), Just(s("weave")), Just(s("top_field")), words()].boxed()),
        ("source.roi", Example, roi()),
        ("source.fan.origin_px", Example, floats(2, -2e5, 2e5)),
        ("source.fan.angles_deg", Example, floats(2, -200.0, 200.0)),
        ("source.fan.radius_start_px", Example, float(-10.0, 1000.0)),
        ("source.fan.radius_stop_px", Example, float(-10.0, 2e5)),
        ("pipeline.max_fps", Synthetic, float(-1.0, 1100.0)),
        ("pipeline.no_signal_luma", Synthetic, float(-1.0, 300.0)),
        ("pipeline.frozen_mad", Synthetic, float(-1.0, 300.0)),
        ("pipeline.no_contact_texture", Synthetic, float(-0.1, 1.0)),
        ("pipeline.state_dwell_frames", Synthetic, int(-1, 2000)),
        ("pipeline.state_dwell_ms", Synthetic, int(-1, 20_000)),
        ("pipeline.freeze_min_ms", Synthetic, int(-1, 100_000)),
        ("pipeline.abstain_min_top", Synthetic, float(-0.5, 1.5)),
        ("pipeline.abstain_min_margin", Synthetic, float(-0.5, 1.5)),
        ("pipeline.finding_window_frames", Synthetic, int(-1, 200)),
        ("pipeline.finding_hold_frames", Synthetic, int(-1, 200)),
        ("pipeline.publish_predictions", Synthetic, any::<bool>().prop_map(Value::Boolean).boxed()),
        (
            "mqtt.url",
            Synthetic,
            prop_oneof![Just(s("mqtt://127.0.0.1:0")), Just(s("mqtts://h")), Just(s("mqtt://u:p@h:1")), words()].boxed(),
        ),
        ("mqtt.urls", Brokers, broker_lists()),
        ("mqtt.protocol", Synthetic, prop_oneof![Just(s("3.1.1")), Just(s("5")), words()].boxed()),
        ("mqtt.qos", Synthetic, int(-1, 4)),
        ("mqtt.topic_prefix", Synthetic, prop_oneof!["[a-z0-9_-]{1,12}(/[a-z0-9_-]{1,12}){0,8}".prop_map(Value::String), words()].boxed()),
        ("mqtt.stats_interval_s", Synthetic, int(-1, 100_000)),
        ("mqtt.queue_capacity", Synthetic, int(-1, 20_000)),
        ("mqtt.keep_alive_s", Synthetic, int(-1, 70_000)),
        ("mqtt.username", Synthetic, words()),
        ("mqtt.password_file", Synthetic, words()),
        ("mqtt.ca_file", Synthetic, words()),
        ("mqtt.client_cert", Tls, words()),
        ("mqtt.client_key", Tls, words()),
    ]
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}
fn int(lo: i64, hi: i64) -> BoxedStrategy<Value> {
    (lo..=hi).prop_map(Value::Integer).boxed()
}
fn float(lo: f64, hi: f64) -> BoxedStrategy<Value> {
    (lo..=hi).prop_map(Value::Float).boxed()
}
fn floats(n: usize, lo: f64, hi: f64) -> BoxedStrategy<Value> {
    prop::collection::vec((lo..=hi).prop_map(Value::Float), n).prop_map(Value::Array).boxed()
}
fn words() -> BoxedStrategy<Value> {
    let ch = prop_oneof![4 => prop::char::range('a', 'z'), 1 => Just('-'), 1 => Just('/'), 1 => any::<char>()];
    prop::collection::vec(ch, 0..70).prop_map(|c| Value::String(c.into_iter().collect())).boxed()
}
/// Lists of loopback URLs where nothing listens (ports 1 and 2), duplicates, bad ports and schemes.
fn broker_lists() -> BoxedStrategy<Value> {
    // Mostly valid entries: a list is accepted only if every entry is valid and names another broker.
    let url = prop_oneof![
        3 => Just(s("mqtt://127.0.0.1:1")),
        3 => Just(s("mqtt://127.0.0.1:2")),
        3 => Just(s("mqtt://[::1]:1")),
        1 => Just(s("mqtts://127.0.0.1:1")),
        1 => Just(s("mqtt://127.0.0.1:0")),
        1 => words()
    ];
    prop::collection::vec(url, 0..4).prop_map(Value::Array).boxed()
}
fn roi() -> BoxedStrategy<Value> {
    let side = prop_oneof![8 => 0i64..=4000, 1 => Just(u32::MAX as i64), 1 => Just(-1)];
    prop::collection::vec(side, 4).prop_map(|v| Value::Array(v.into_iter().map(Value::Integer).collect())).boxed()
}

/// The values every key gets besides its own: non-finite, tiny, huge, zero, negative, the
/// maxima of the integer types, and wrong types.
fn hostile() -> BoxedStrategy<Value> {
    prop::sample::select(hostile_list()).boxed()
}

fn hostile_list() -> Vec<Value> {
    let floats = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e-300, -1e-300, 1e300, 0.0, -0.0, -1.0];
    let ints = [0, -1, i64::MAX, i64::MIN, u32::MAX as i64, u16::MAX as i64 + 1, 65_535];
    let others = [s(""), s("x"), Value::Boolean(true), Value::Array(vec![]), Value::Array(vec![s("a"), Value::Integer(1)])];
    let all = floats.map(Value::Float).into_iter().chain(ints.map(Value::Integer)).chain(others);
    all.chain([Value::Table(Table::new())]).collect()
}

fn values(own: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![own, hostile()].boxed()
}

fn base(which: Base, broker_port: u16) -> Table {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/demo/int8");
    let fan = "[source.fan]\norigin_px = [640, 40]\nangles_deg = [-35, 35]\nradius_start_px = 40\nradius_stop_px = 600\n";
    let common =
        format!("device_id = \"props\"\n[model]\npath = \"{model}\"\nthreads = 1\n[mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\n");
    let text = match which {
        Base::Example => format!("{EXAMPLE}{fan}"),
        Base::Synthetic => format!("{common}[source]\nkind = \"synthetic\"\nfps = 30\nroi = [272, 56, 736, 624]\n{fan}"),
        Base::Tls => format!(
            "device_id = \"props\"\n[model]\npath = \"{model}\"\n[source]\nkind = \"synthetic\"\n[mqtt]\n\
             url = \"mqtts://127.0.0.1:{broker_port}\"\nca_file = \"/nonexistent\"\nclient_cert = \"/c\"\nclient_key = \"/k\"\n"
        ),
        Base::Images => format!("{common}[source]\nkind = \"images\"\npath = \"/nonexistent\"\nroi = [0, 0, 64, 64]\n"),
        Base::Brokers => format!(
            "device_id = \"props\"\n[model]\npath = \"{model}\"\nthreads = 1\n[source]\nkind = \"synthetic\"\n[mqtt]\n\
             urls = [\"mqtt://127.0.0.1:{broker_port}\"]\n"
        ),
    };
    text.parse().expect("the base documents are valid TOML")
}

/// `doc` with the dotted `key` set to `value` (tables created on the way).
fn set(mut doc: Table, key: &str, value: Value) -> Table {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap();
    let mut t = &mut doc;
    for p in parts {
        t = t.entry(p).or_insert_with(|| Value::Table(Table::new())).as_table_mut().expect("a table on the way");
    }
    t.insert(last.into(), value);
    doc
}

fn parse(doc: &Table) -> Result<Config, sonoedge::config::ConfigError> {
    Config::parse(&toml::to_string(doc).expect("a table serialises"))
}

/// Keys set in deploy/sonoedge.toml, plus those shown commented out (`# key = value`).
fn example_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut section = String::new();
    for line in EXAMPLE.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{name}.");
        } else if let Some((key, _)) = line.split_once(" = ").filter(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_')) {
            keys.insert(format!("{}{key}", if key == "device_id" { "" } else { &section }));
        }
    }
    keys
}

#[test]
fn every_key_of_the_example_config_has_a_generator() {
    let generated: BTreeSet<String> = generators().iter().map(|(k, _, _)| k.to_string()).collect();
    let missing: Vec<_> = example_keys().into_iter().filter(|k| !generated.contains(k)).collect();
    assert!(missing.is_empty(), "keys of deploy/sonoedge.toml without a generator: {missing:?}");
    assert!(example_keys().len() >= 25, "the example's keys were read: {:?}", example_keys());
}

#[test]
fn every_generated_key_is_a_key_the_loader_knows() {
    for (key, which, _) in generators() {
        let doc = set(base(which, 1), key, Value::Array(vec![Value::Table(Table::new())]));
        let e = parse(&doc).map(drop).unwrap_err().to_string();
        assert!(!e.contains("unknown field"), "{key}: {e}");
    }
}

#[test]
fn the_loader_returns_a_config_or_an_error_for_any_value_of_any_key() {
    let mut one_sided = Vec::new();
    for (key, which, own) in generators() {
        // A runner per key: a runner counts its cases over all its runs.
        let mut runner = TestRunner::new(RunnerConfig { cases: 256, failure_persistence: None, ..RunnerConfig::default() });
        let doc = base(which, 1);
        let (accepted, refused) = (Cell::new(0), Cell::new(0));
        runner
            .run(&values(own), |v| {
                let counter = if parse(&set(doc.clone(), key, v)).is_ok() { &accepted } else { &refused };
                counter.set(counter.get() + 1);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        // A generator that only ever produces refused (or accepted) values tests one side only.
        if accepted.get() == 0 || refused.get() == 0 {
            one_sided.push(format!("{key} in {which:?}: {} accepted, {} refused", accepted.get(), refused.get()));
        }
    }
    assert!(one_sided.is_empty(), "generators that tested one side only: {one_sided:?}");
}

/// A loopback port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

/// Runs the daemon for 300 ms: Ok, or a start error; a panic or a dead thread is the failure.
fn serve_briefly(cfg: &Config) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    match catch_unwind(AssertUnwindSafe(|| serve(cfg, stop, Some(Duration::from_millis(300))))) {
        Err(_) => Err("serve panicked".into()),
        Ok(Err(e @ StartError::ThreadEnded(_))) => Err(e.to_string()),
        Ok(_) => Ok(()),
    }
}

/// Up to `n` accepted values of a key: the hostile values first, then its own, drawn with a fixed seed.
fn accepted_values(doc: &Table, key: &str, own: &BoxedStrategy<Value>, n: usize) -> Vec<(Value, Config)> {
    let mut runner = TestRunner::deterministic();
    let drawn = (0..200).map(|_| own.new_tree(&mut runner).expect("values generate").current());
    let accepted = hostile_list().into_iter().chain(drawn).filter_map(|v| parse(&set(doc.clone(), key, v.clone())).ok().map(|c| (v, c)));
    accepted.take(n).collect()
}

#[test]
fn accepted_values_of_every_served_key_survive_a_short_daemon_start() {
    let t0 = Instant::now();
    let port = closed_port();
    let mut served = 0;
    for (key, which, own) in generators().into_iter().filter(|(_, b, _)| !matches!(b, Base::Example)) {
        let doc = base(which, port);
        let found = accepted_values(&doc, key, &own, 2);
        assert!(!found.is_empty(), "{key} in {which:?}: no accepted value to serve");
        for (v, cfg) in found {
            serve_briefly(&cfg).unwrap_or_else(|e| panic!("{key} = {v} in {which:?}: {e}"));
            served += 1;
        }
    }
    eprintln!("served {served} accepted configs in {:?}", t0.elapsed());
}

#[test]
fn the_extremes_of_every_range_together_survive_a_short_daemon_start() {
    let port = closed_port();
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/demo/int8");
    let extremes = [
        ("0.01", "0.01", "[0, 0, 16, 16]", "[-100000, -100000]", "0", "0", "0", "1", "5", "1"),
        ("240", "1000", "[0, 0, 1280, 720]", "[100000, 100000]", "64", "64", "86400", "10000", "65535", "64"),
        ("240", "0", "[0, 0, 7680, 4320]", "[640, 0]", "0", "0", "1", "10000", "65535", "2"),
    ];
    let signals = [
        "no_contact_texture = 0\nstate_dwell_frames = 1\nstate_dwell_ms = 0\nfreeze_min_ms = 0\nabstain_min_top = 0\nabstain_min_margin = 0\nfinding_window_frames = 1\nfinding_hold_frames = 1",
        "no_contact_texture = 0.5\nstate_dwell_frames = 1000\nstate_dwell_ms = 10000\nfreeze_min_ms = 60000\nabstain_min_top = 1\nabstain_min_margin = 1\nfinding_window_frames = 100\nfinding_hold_frames = 100\npublish_predictions = false",
        "no_contact_texture = 0.06\nstate_dwell_frames = 1\nstate_dwell_ms = 0\nfreeze_min_ms = 0\nabstain_min_top = 1\nabstain_min_margin = 0\nfinding_window_frames = 100\nfinding_hold_frames = 1",
    ];
    for ((fps, max_fps, roi, origin, luma, mad, stats, queue, keep_alive, threads), signals) in extremes.into_iter().zip(signals) {
        let text = format!(
            "device_id = \"props\"\n[model]\npath = \"{model}\"\nthreads = {threads}\n\
             [source]\nkind = \"synthetic\"\nseed = 9223372036854775807\nfps = {fps}\nroi = {roi}\n\
             [source.fan]\norigin_px = {origin}\nangles_deg = [-180, 180]\nradius_start_px = 0\nradius_stop_px = 100000\n\
             [pipeline]\nmax_fps = {max_fps}\nno_signal_luma = {luma}\nfrozen_mad = {mad}\n{signals}\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nqos = 2\nstats_interval_s = {stats}\nqueue_capacity = {queue}\nkeep_alive_s = {keep_alive}\n"
        );
        let cfg = Config::parse(&text).unwrap_or_else(|e| panic!("the extremes are accepted: {e}\n{text}"));
        serve_briefly(&cfg).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}
