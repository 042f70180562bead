//! The allowed range of every config value, in one place: each check returns a message naming the
//! range, chosen so that nothing accepted can panic, overflow or allocate without bound downstream.
//! deploy/sonoedge.toml documents the same ranges.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::capture::fan::Fan;

/// The largest frame any source is expected to deliver (8K UHD): bounds ROI and size buffers.
pub const MAX_FRAME_WIDTH: u32 = 7680;
pub const MAX_FRAME_HEIGHT: u32 = 4320;
/// Below this the model's 224x224 input would be mostly interpolation.
pub const MIN_SIDE_PX: u32 = 16;
/// Source frame rates: above 240 no grabber delivers; below 0.01 (one frame per 100 s) `1/fps`
/// would no longer be a useful (or, near 0, a representable) Duration.
pub const FPS: RangeInclusive<f64> = 0.01..=240.0;
/// `pipeline.max_fps`: 0 = no limit, else within this range (1/max_fps is at most 100 s).
pub const MAX_FPS: RangeInclusive<f64> = 0.01..=1000.0;
/// Mean luma (0-255): above a quarter of full scale even a live, dark ultrasound image would be
/// called "no signal"; 0 turns the check off.
pub const NO_SIGNAL_LUMA: RangeInclusive<f64> = 0.0..=64.0;
/// Mean absolute luma difference: live speckle moves a few levels per frame; above 64 a live image
/// would be called frozen; 0 turns the check off.
pub const FROZEN_MAD: RangeInclusive<f64> = 0.0..=64.0;
/// Fraction of textured steps in the ROI's sample: live tissue has about 0.35 (phantom, and the
/// median of the BUSI images), so above 0.5 most live images would count as no contact; 0 turns
/// the check off.
pub const NO_CONTACT_TEXTURE: RangeInclusive<f64> = 0.0..=0.5;
/// Frames a new input state must hold: 1 follows every frame; beyond 1000 (30 s at 30 fps) a
/// freeze or a lifted probe would be reported after it was over.
pub const STATE_DWELL_FRAMES: RangeInclusive<u32> = 1..=1000;
/// Milliseconds a new input state must hold; 10 s for the same reason.
pub const STATE_DWELL_MS: RangeInclusive<u64> = 0..=10_000;
/// Shortest freeze that is an event: up to a minute.
pub const FREEZE_MIN_MS: RangeInclusive<u64> = 0..=60_000;
/// Abstention thresholds are probabilities (0 = never abstain on this criterion; 1 = always).
pub const ABSTAIN: RangeInclusive<f64> = 0.0..=1.0;
/// Frames averaged into, and held before a change of, the stable finding: 100 is 10 s at the
/// default `max_fps`.
pub const FINDING_FRAMES: RangeInclusive<u32> = 1..=100;
pub const THREADS: RangeInclusive<usize> = 1..=64;
pub const BUFFERS: RangeInclusive<u32> = 2..=8;
/// A V4L2 input index (drivers number their inputs from 0; none has dozens).
pub const INPUT_INDEX: RangeInclusive<i64> = 0..=63;
/// An input name as the driver gives it (32 bytes in `struct v4l2_input`).
pub const MAX_INPUT_NAME: usize = 31;
/// Seconds without a buffer before a grabber counts as lost: a 1 fps stream must not be lost; ten
/// minutes of silence is not a paused stream any more.
pub const STALL_S: RangeInclusive<f64> = 1.0..=600.0;
/// One day; 0 = no stats messages.
pub const STATS_INTERVAL_S: RangeInclusive<u64> = 0..=86_400;
/// Each held prediction is a few hundred bytes: 10000 bounds the queue to a few MB.
pub const QUEUE_CAPACITY: RangeInclusive<usize> = 1..=10_000;
/// MQTT's keep-alive is 16 bits; below 5 s pings would crowd a slow link.
pub const KEEP_ALIVE_S: RangeInclusive<u64> = 5..=65_535;
/// Fan origin and radii in source pixels: well beyond any frame, small enough for exact f64 math.
pub const FAN_PX: f64 = 100_000.0;
/// Labels: at most this many, each 1-256 bytes.
pub const MAX_LABELS: usize = 10_000;
/// MQTT user names: 1-256 bytes without control characters.
pub const MAX_USERNAME: usize = 256;
/// Broker URLs in `mqtt.urls`: a cluster's nodes or a primary and standbys; more would only
/// lengthen a full round of attempts (8 s each once the backoff has grown).
pub const MAX_BROKERS: usize = 16;
/// `mqtt.topic_prefix`: at most this many levels and bytes. Topics add `/<device_id>/<kind>`
/// (at most 76 bytes): well within MQTT's 65535 and within the limits brokers set (RabbitMQ and
/// NATS map levels to routing keys and subjects, whose tools show long ones badly).
pub const MAX_PREFIX_LEVELS: usize = 8;
pub const MAX_PREFIX_BYTES: usize = 128;

/// `v` within `range`, else a message naming the range. Numbers are shown as Rust's `{:?}` does:
/// `1e-300`, not the 300 digits `{}` would print before the range, at the end of a long line.
pub fn within<T: PartialOrd + std::fmt::Debug>(v: T, range: &RangeInclusive<T>) -> Result<T, String> {
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v:?} is not between {:?} and {:?}", range.start(), range.end()))
    }
}

/// A source frame rate and the interval between frames it implies.
pub fn frame_interval(fps: f64) -> Result<Duration, String> {
    within(fps, &FPS)?;
    Duration::try_from_secs_f64(1.0 / fps).map_err(|e| format!("1/{fps:?} s is not a valid interval: {e}"))
}

/// `max_fps` as the shortest interval between inferences (zero = no limit).
pub fn min_interval(max_fps: f64) -> Result<Duration, String> {
    if max_fps == 0.0 {
        return Ok(Duration::ZERO);
    }
    within(max_fps, &MAX_FPS).map_err(|e| format!("{e} (or 0 for no limit)"))?;
    Duration::try_from_secs_f64(1.0 / max_fps).map_err(|e| format!("1/{max_fps:?} s is not a valid interval: {e}"))
}

/// `[x, y, width, height]` inside a frame of at most [`MAX_FRAME_WIDTH`] x [`MAX_FRAME_HEIGHT`].
pub fn roi([x, y, w, h]: [u32; 4]) -> Result<[u32; 4], String> {
    let fits = |start: u32, len: u32, max: u32| (MIN_SIDE_PX..=max).contains(&len) && start as u64 + len as u64 <= max as u64;
    if fits(x, w, MAX_FRAME_WIDTH) && fits(y, h, MAX_FRAME_HEIGHT) {
        Ok([x, y, w, h])
    } else {
        Err(format!(
            "[{x}, {y}, {w}, {h}] must have width and height of at least {MIN_SIDE_PX} and fit a \
             {MAX_FRAME_WIDTH}x{MAX_FRAME_HEIGHT} frame (x + width <= {MAX_FRAME_WIDTH}, y + height <= {MAX_FRAME_HEIGHT})"
        ))
    }
}

/// A requested capture size: both or neither, each side within the maximum frame.
pub fn size(width: Option<u32>, height: Option<u32>) -> Result<Option<(u32, u32)>, String> {
    let side = |v: u32, max: u32| (MIN_SIDE_PX..=max).contains(&v);
    match (width, height) {
        (None, None) => Ok(None),
        (Some(w), Some(h)) if side(w, MAX_FRAME_WIDTH) && side(h, MAX_FRAME_HEIGHT) => Ok(Some((w, h))),
        _ => Err(format!(
            "width {width:?} and height {height:?}: give both or neither, width {MIN_SIDE_PX}-{MAX_FRAME_WIDTH}, \
             height {MIN_SIDE_PX}-{MAX_FRAME_HEIGHT}"
        )),
    }
}

/// The fan's own geometry ([`Fan::validate`]) and coordinates within +-[`FAN_PX`].
pub fn fan(f: Fan) -> Result<Fan, String> {
    f.validate()?;
    let small = |v: f64| v.abs() <= FAN_PX;
    if f.origin_px.iter().all(|&v| small(v)) && small(f.radius_stop_px) {
        Ok(f)
    } else {
        Err(format!("origin_px and radius_stop_px must lie within +-{FAN_PX} pixels"))
    }
}

/// Model labels: 1-[`MAX_LABELS`] of them, each 1-256 bytes.
pub fn labels(labels: &[String]) -> Result<(), String> {
    if labels.is_empty() || labels.len() > MAX_LABELS {
        return Err(format!("{} labels; give 1 to {MAX_LABELS}", labels.len()));
    }
    match labels.iter().find(|l| l.is_empty() || l.len() > 256) {
        Some(l) => Err(format!("label {l:?} must be 1-256 bytes")),
        None => Ok(()),
    }
}

/// An MQTT user name: 1-[`MAX_USERNAME`] bytes, no control characters.
pub fn username(user: &str) -> Result<(), String> {
    if (1..=MAX_USERNAME).contains(&user.len()) && !user.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(format!("must be 1-{MAX_USERNAME} bytes without control characters"))
    }
}

/// A topic prefix of one or more levels (`site/ward/sonoedge`): no MQTT wildcard, no empty level
/// (a leading, trailing or doubled `/`), at most [`MAX_PREFIX_LEVELS`] levels and
/// [`MAX_PREFIX_BYTES`] bytes, each level of a-z, A-Z, 0-9, '-' or '_' (so no `$`: topics starting
/// with it are the broker's own).
pub fn topic_prefix(prefix: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{prefix:?} {why}"));
    if prefix.contains(['+', '#']) {
        return bad("contains an MQTT wildcard ('+' or '#'): a topic to publish to cannot have one");
    }
    if prefix.is_empty() || prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
        return bad("has an empty level: give levels separated by single '/', none leading or trailing (e.g. \"site/ward/sonoedge\")");
    }
    let levels = prefix.split('/').count();
    if levels > MAX_PREFIX_LEVELS || prefix.len() > MAX_PREFIX_BYTES {
        return bad(&format!("is too long: at most {MAX_PREFIX_LEVELS} levels and {MAX_PREFIX_BYTES} bytes"));
    }
    match prefix.split('/').find(|l| !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
        Some(level) => bad(&format!("level {level:?}: each level may hold only a-z, A-Z, 0-9, '-' and '_'")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_and_huge_frame_rates_are_refused_and_valid_ones_give_their_interval() {
        assert!(frame_interval(1e-300).is_err() && frame_interval(f64::NAN).is_err() && frame_interval(241.0).is_err());
        assert_eq!(frame_interval(4.0).unwrap(), Duration::from_millis(250));
        assert_eq!(min_interval(0.0).unwrap(), Duration::ZERO);
        assert!(min_interval(1e-300).is_err() && min_interval(-1.0).is_err() && min_interval(f64::INFINITY).is_err());
    }

    #[test]
    fn a_refused_number_is_shown_in_a_few_characters_whatever_its_magnitude() {
        assert_eq!(within(1e-300, &FPS).unwrap_err(), "1e-300 is not between 0.01 and 240.0");
        assert_eq!(within(1e300, &MAX_FPS).unwrap_err(), "1e300 is not between 0.01 and 1000.0");
        assert_eq!(within(65_536, &KEEP_ALIVE_S).unwrap_err(), "65536 is not between 5 and 65535");
        assert!(frame_interval(f64::NAN).unwrap_err().starts_with("NaN is not between"));
    }

    #[test]
    fn an_roi_must_fit_the_largest_frame_without_overflow() {
        assert!(roi([0, 0, 7680, 4320]).is_ok());
        assert!(roi([0, 0, 100_000, 100_000]).is_err());
        assert!(roi([u32::MAX, 0, 16, 16]).is_err());
        assert!(roi([7665, 0, 16, 16]).is_err());
        assert!(roi([0, 0, 15, 16]).is_err());
    }

    #[test]
    fn a_fan_far_outside_any_frame_is_refused() {
        let f = Fan { origin_px: [960.0, 100.0], angles_deg: [-35.0, 35.0], radius_start_px: 40.0, radius_stop_px: 860.0 };
        assert!(fan(f).is_ok());
        assert!(fan(Fan { radius_stop_px: 1e300, ..f }).is_err());
        assert!(fan(Fan { origin_px: [f64::NEG_INFINITY, 0.0], ..f }).is_err());
    }

    #[test]
    fn a_topic_prefix_may_have_several_levels_but_no_wildcard_empty_level_or_excess() {
        for ok in ["sonoedge", "site/ward/sonoedge", "a-1/b_2", &["l"; MAX_PREFIX_LEVELS].join("/")] {
            assert!(topic_prefix(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("site/+/sonoedge", "wildcard"),
            ("site/#", "wildcard"),
            ("", "empty level"),
            ("/site", "empty level"),
            ("site/", "empty level"),
            ("site//ward", "empty level"),
            (&["l"; MAX_PREFIX_LEVELS + 1].join("/"), "at most 8 levels"),
            (&"x".repeat(MAX_PREFIX_BYTES + 1), "128 bytes"),
            ("$SYS/x", "level \"$SYS\""),
            ("site/w ard", "only a-z"),
        ] {
            let e = topic_prefix(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
