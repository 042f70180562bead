//! The clinic on made-up input changes and predictions: the order and content of what it publishes.

use std::time::{Duration, Instant, SystemTime};

use super::input::{Change, FrozenImage, InputChange, Purpose, Stretch};
use super::*;
use crate::publish::signals::FindingEvent;
use crate::publish::LatencyMs;

const LABELS: [&str; 3] = ["benign", "malignant", "normal"];

fn clinic() -> Clinic {
    let labels = LABELS.iter().map(|l| l.to_string()).collect();
    Clinic::new(labels, Abstention { min_top: 0.6, min_margin: 0.2 }, Smoothing { window: 5, hold: 3 })
}

fn stretch(state: InputState, frame: u64, number: u64) -> Stretch {
    Stretch { state, frame, at: Instant::now(), wall: SystemTime::UNIX_EPOCH + Duration::from_secs(frame), number }
}

/// The change to `now` after `ended`.
fn change(now: Stretch, ended: Option<Stretch>, ended_freeze: bool) -> InputChange {
    InputChange { change: Change { now, ended }, ended_freeze }
}

fn prediction(frame: u64, probs: [f64; 3]) -> Prediction {
    let now = Instant::now();
    Prediction {
        frame,
        generation: 0,
        source_sequence: frame,
        captured_wall: SystemTime::UNIX_EPOCH + Duration::from_secs(frame),
        captured_monotonic: Duration::ZERO,
        captured_at: now,
        inferred_at: now,
        label: String::new(),
        uncertain: false,
        probs: LABELS.iter().map(|l| l.to_string()).zip(probs).collect(),
        latency: LatencyMs::default(),
    }
}

/// (event, label, frame) of each finding and (input, frame, finding label) of each state message.
fn summary(out: &[Outgoing]) -> Vec<String> {
    out.iter()
        .map(|m| match m {
            Outgoing::Finding(f) => format!("{:?} {} @{}", f.event, f.label.as_deref().unwrap_or("-"), f.frame),
            Outgoing::State(s) => format!("state {:?} @{} {}", s.input, s.frame, s.finding.as_ref().map_or("-", |f| f.label.as_str())),
            other => panic!("the clinic publishes only findings and states: {other:?}"),
        })
        .collect()
}

const BENIGN: [f64; 3] = [0.9, 0.05, 0.05];
const SPLIT: [f64; 3] = [0.40, 0.35, 0.25];

#[test]
fn a_held_live_label_becomes_a_change_finding_and_the_state_carries_it() {
    let mut c = clinic();
    let live = stretch(InputState::Live, 1, 1);
    let mut out = c.on_input(change(live, None, false));
    for f in 2..=4 {
        out.extend(c.on_prediction(&prediction(f, BENIGN), Purpose::Live { stretch: 1 }));
    }
    assert_eq!(summary(&out), ["state Live @1 -", "Change benign @4", "state Live @1 benign"]);
}

#[test]
fn a_freeze_is_announced_once_with_the_frozen_images_frame_and_unfreeze_follows() {
    let mut c = clinic();
    let (live, frozen, again) = (stretch(InputState::Live, 1, 1), stretch(InputState::Frozen, 10, 2), stretch(InputState::Live, 30, 3));
    let mut out = c.on_input(change(live, None, false));
    out.extend(c.on_input(change(frozen, Some(live), false)));
    let image = FrozenImage { stretch: 2, frame: 10, wall: frozen.wall };
    out.extend(c.on_prediction(&prediction(17, SPLIT), Purpose::Freeze(image)));
    out.extend(c.on_input(change(again, Some(frozen), true)));
    assert_eq!(summary(&out), ["state Live @1 -", "state Frozen @10 -", "Freeze uncertain @10", "Unfreeze - @30", "state Live @30 -"]);
    let Outgoing::Finding(freeze) = &out[2] else { unreachable!() };
    assert_eq!((freeze.frames_used, freeze.captured_wall), (1, frozen.wall));
    assert_eq!(freeze.probs.as_ref().unwrap()[0], ("benign".to_string(), 0.40), "probabilities as the model gave them");
}

#[test]
fn a_freeze_inferred_after_it_ended_still_comes_before_its_unfreeze() {
    let mut c = clinic();
    let (frozen, live) = (stretch(InputState::Frozen, 10, 2), stretch(InputState::Live, 30, 3));
    let mut out = c.on_input(change(live, Some(frozen), true));
    let image = FrozenImage { stretch: 2, frame: 10, wall: frozen.wall };
    out.extend(c.on_prediction(&prediction(17, BENIGN), Purpose::Freeze(image)));
    assert_eq!(summary(&out), ["state Live @30 -", "Freeze benign @10", "Unfreeze - @30"]);
}

#[test]
fn predictions_of_an_ended_live_stretch_move_nothing() {
    let mut c = clinic();
    let (live, lifted) = (stretch(InputState::Live, 1, 1), stretch(InputState::NoContact, 5, 2));
    c.on_input(change(live, None, false));
    c.on_input(change(lifted, Some(live), false));
    let out: Vec<Outgoing> = (2..8).flat_map(|f| c.on_prediction(&prediction(f, BENIGN), Purpose::Live { stretch: 1 })).collect();
    assert!(out.is_empty(), "{:?}", summary(&out));
}

#[test]
fn a_split_that_holds_is_an_uncertain_change_with_its_probabilities_unrounded() {
    let mut c = clinic();
    c.on_input(change(stretch(InputState::Live, 1, 1), None, false));
    let out: Vec<Outgoing> = (2..=4).flat_map(|f| c.on_prediction(&prediction(f, SPLIT), Purpose::Live { stretch: 1 })).collect();
    let Outgoing::Finding(f) = &out[0] else { panic!("{:?}", summary(&out)) };
    assert_eq!((f.event, f.label.as_deref(), f.frames_used), (FindingEvent::Change, Some("uncertain"), 3));
    let probs: Vec<f64> = f.probs.as_ref().unwrap().iter().map(|(_, p)| *p).collect();
    assert!(probs.iter().zip(SPLIT).all(|(a, b)| (a - b).abs() < 1e-12), "{probs:?}");
}
