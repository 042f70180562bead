//! The demo model through the whole daemon against a real mosquitto: on phantom sequences from seeds
//! disjoint from training, published labels follow the ground truth, and nothing is published while
//! the screen shows no signal or the probe is lifted. A wrong stage (ROI, channel order, normalisation, labels) fails here.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use sonoedge::capture::synthetic::{Phantom, PhantomConfig, Truth, DEFAULT_ROI};

/// Predictions on labelled segments wanted per seed before the daemon is stopped (natively it
/// makes ~10x more in the first `seconds`).
const MIN_PER_SEED: usize = 30;

fn labelled(phantom: &Phantom, m: &Msg) -> bool {
    phantom.segment_of(m.payload["source_sequence"].as_u64().unwrap()).label().is_some()
}

fn run_seed(seed: u64, phantom: &Phantom, seconds: u64) -> (Vec<Msg>, Vec<Msg>) {
    let dir = scratch(&format!("demo-{seed}"));
    let broker = Broker::start(&dir, "");
    let device = format!("demo-{seed}");
    let sub = Subscriber::start(broker.port, &format!("sonoedge/{device}/#"));
    let (x, y, w, h) = DEFAULT_ROI;
    let config = format!(
        "device_id = \"{device}\"\n[model]\npath = \"{}\"\n[source]\nkind = \"synthetic\"\nseed = {seed}\nfps = 30\nroi = [{x}, {y}, {w}, {h}]\n[pipeline]\nmax_fps = 0\n[mqtt]\nurl = \"{}\"\nstats_interval_s = 2\n",
        repo("models/demo/int8").display(), broker.url()
    );
    let mut d = Daemon::spawn(&dir, &config);
    // At least `seconds`; under an emulator (time scale > 1) longer, until enough frames were judged.
    std::thread::sleep(Duration::from_secs(seconds));
    wait_for(Duration::from_secs(seconds), || sub.on("/prediction").iter().filter(|m| labelled(phantom, m)).count() >= MIN_PER_SEED);
    d.signal(15);
    assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0), "log:\n{}", d.log_text());
    std::thread::sleep(Duration::from_millis(300));
    (sub.on("/prediction"), sub.on("/stats"))
}

#[test]
fn published_labels_follow_phantom_ground_truth_on_unseen_seeds() {
    let mut per_class: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    let mut during_no_signal = 0;
    for seed in [11, 12] {
        let phantom = Phantom::new(&PhantomConfig { seed, ..PhantomConfig::default() });
        let (predictions, stats) = run_seed(seed, &phantom, 20);
        assert!(!stats.is_empty());
        for m in &predictions {
            assert_schema("prediction.v1.schema.json", &m.payload);
            let probs: f64 = m.payload["probs"].as_object().unwrap().values().map(|p| p.as_f64().unwrap()).sum();
            assert!((probs - 1.0).abs() < 1e-9, "{}", m.payload);
            let truth = phantom.segment_of(m.payload["source_sequence"].as_u64().unwrap());
            match truth {
                Truth::NoSignal | Truth::NoContact => during_no_signal += 1,
                Truth::Frozen => {} // the frozen image is inferred once, for its freeze finding
                t => {
                    let e = per_class.entry(t.label().unwrap()).or_default();
                    e.1 += 1;
                    e.0 += u32::from(m.payload["label"] == t.label().unwrap());
                }
            }
        }
    }
    let (right, total) = per_class.values().fold((0, 0), |a, (r, t)| (a.0 + r, a.1 + t));
    eprintln!("per class (right, total): {per_class:?}; overall {right}/{total}");
    assert_eq!(during_no_signal, 0, "predictions published during no-signal or probe-lifted segments");
    assert!(total >= 60, "too few valid predictions to judge: {total}");
    assert!(per_class.len() >= 2, "the seeds covered too few classes: {per_class:?}");
    assert!(right as f64 >= 0.9 * total as f64, "accuracy {right}/{total} below 90%: {per_class:?}");
}
