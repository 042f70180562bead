//! The daemon's configuration: one TOML file, unknown keys rejected, every value checked at start.
//! Two stages, like ripgrep's LowArgs -> HiArgs: serde reads [`raw`] values, then one checked
//! conversion ([`checked`]) gives the typed [`Config`] below, so nothing downstream parses again.
//!
//! A bad value is a [`ConfigError`] naming the key and what is allowed (exit 78). A device or broker
//! that is absent is not a config error: the daemon starts, retries and reports it in `status`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::capture::convert::Deinterlace;
use crate::capture::fan::Fan;
use crate::capture::v4l2::V4l2Settings;
use crate::publish::mqtt::wire::Protocol;
use crate::publish::mqtt::MqttSettings;

mod checked;
mod ranges;
mod raw;
pub use ranges::{MAX_FRAME_HEIGHT, MAX_FRAME_WIDTH};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config {0}: {1}")]
    Parse(PathBuf, String),
    #[error("config {0}: `{1}`: {2}")]
    Invalid(PathBuf, &'static str, String),
}

/// A checked config: every value within its range (src/config/ranges.rs), already parsed.
#[derive(Debug, Clone)]
pub struct Config {
    /// Topics live under `sonoedge/<device_id>/`; default: derived from /etc/machine-id.
    pub device_id: Option<String>,
    pub model: ModelConfig,
    pub source: SourceConfig,
    pub pipeline: PipelineConfig,
    pub mqtt: MqttConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// An `.onnx` file or an optimum export folder holding exactly one.
    pub path: PathBuf,
    /// Threads for tract's matrix products; default: the cores, at most 4 (docs/speed.md: on the
    /// 2-core x86-64 build machine 2 threads ran ViT-B int8 1.49x and fp32 1.82x faster than 1).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Labels in output order, instead of config.json's id2label.
    pub labels: Option<Vec<String>>,
    /// A preprocessor_config.json to use instead of the one beside the model.
    pub preprocessor: Option<PathBuf>,
}

/// Where frames come from, and which part of them the model sees.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub kind: SourceKind,
    /// `[x, y, width, height]` within a [`MAX_FRAME_WIDTH`] x [`MAX_FRAME_HEIGHT`] frame.
    pub roi: Option<[u32; 4]>,
    pub fan: Option<Fan>,
    /// How interlaced frames are taken (only grabbers deliver them).
    pub deinterlace: Deinterlace,
}

#[derive(Debug, Clone)]
pub enum SourceKind {
    /// The built-in ultrasound phantom (no hardware); `fps` within `ranges::FPS`.
    Synthetic { seed: u64, fps: f64 },
    /// Image files replayed at `fps` (within `ranges::FPS`): a folder (sorted) or a single file.
    Images { path: PathBuf, fps: f64, looping: bool },
    /// A V4L2 capture device, its spec and format parsed.
    V4l2(V4l2Settings),
}

impl SourceConfig {
    /// The ROI `[x, y, width, height]` in source pixels; `None` = the whole frame.
    pub fn roi(&self) -> Option<[u32; 4]> {
        self.roi
    }

    /// The fan mask, if one is configured.
    pub fn fan(&self) -> Option<Fan> {
        self.fan
    }

    /// How interlaced frames are taken (only grabbers deliver them).
    pub fn deinterlace(&self) -> Deinterlace {
        self.deinterlace
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// At most this many inferences per second (0 = as fast as the model runs).
    pub max_fps: f64,
    /// A frame whose mean luma (0-255) is below this is "no signal": nothing is inferred.
    pub no_signal_luma: f64,
    /// A frame whose ROI has a smaller fraction (0-1) of textured sample steps is "no contact".
    pub no_contact_texture: f64,
    /// A frame whose mean absolute difference to the previous frame is below this is "frozen".
    pub frozen_mad: f64,
    /// A new input state takes effect after this many consecutive frames ...
    pub state_dwell_frames: u32,
    /// ... spanning at least this many milliseconds of capture time.
    pub state_dwell_ms: u64,
    /// A freeze shorter than this is not an event (no `freeze` finding).
    pub freeze_min_ms: u64,
    /// A finding is `uncertain` when its top probability is under this ...
    pub abstain_min_top: f64,
    /// ... or its margin over the second probability is under this.
    pub abstain_min_margin: f64,
    /// Live frames whose probabilities are averaged into the stable finding.
    pub finding_window_frames: u32,
    /// Consecutive live frames a new call must hold before the stable finding changes.
    pub finding_hold_frames: u32,
    /// Publish every inferred frame on `prediction` (the findings and the state go out regardless).
    pub publish_predictions: bool,
}

impl PipelineConfig {
    /// The shortest time between two inferred frames (`max_fps`; zero = no limit).
    pub fn min_interval(&self) -> Duration {
        if self.max_fps > 0.0 {
            Duration::try_from_secs_f64(1.0 / self.max_fps).unwrap_or(Duration::ZERO)
        } else {
            Duration::ZERO
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            max_fps: 10.0,
            no_signal_luma: 8.0,
            no_contact_texture: 0.06,
            frozen_mad: 0.5,
            state_dwell_frames: 3,
            state_dwell_ms: 250,
            freeze_min_ms: 500,
            abstain_min_top: 0.6,
            abstain_min_margin: 0.2,
            finding_window_frames: 5,
            finding_hold_frames: 3,
            publish_predictions: true,
        }
    }
}

/// One broker URL, checked and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// `mqtt://host[:port]` or `mqtts://host[:port]` as given (it parsed; shown only redacted).
    pub url: String,
    pub tls: bool,
    pub host: String,
    /// 1-65535.
    pub port: u16,
}

/// Broker settings, checked; the password is read only when connecting ([`MqttConfig::settings`]).
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// `mqtt.url` as a one-element list, or `mqtt.urls`: 1-16 distinct URLs of one scheme, tried in
    /// turn (src/publish/policy.rs).
    pub brokers: Vec<BrokerUrl>,
    /// MQTT 3.1.1 (default) or 5.
    pub protocol: Protocol,
    /// 0, 1 or 2.
    pub qos: u8,
    /// One or more topic levels (`site/ward/sonoedge`), checked by `ranges::topic_prefix`.
    pub topic_prefix: String,
    /// Time between `stats` messages (zero = off), at most a day.
    pub stats_interval: Duration,
    /// 1-10000.
    pub queue_capacity: usize,
    /// 5-65535: MQTT's 16-bit field.
    pub keep_alive_s: u16,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// Both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl MqttConfig {
    /// Time between `stats` messages (zero = off).
    pub fn stats_interval(&self) -> Duration {
        self.stats_interval
    }

    /// The broker URLs, comma-separated, with any `user:password@` replaced, for messages and logs.
    pub fn redacted_urls(&self) -> String {
        self.brokers.iter().map(|b| redact_url(&b.url)).collect::<Vec<_>>().join(", ")
    }

    /// What the MQTT client needs, with the password read by the caller (never stored here).
    pub fn settings(&self, password: Option<String>) -> MqttSettings {
        MqttSettings {
            urls: self.brokers.iter().map(|b| b.url.clone()).collect(),
            protocol: self.protocol,
            qos: self.qos,
            topic_prefix: self.topic_prefix.clone(),
            keep_alive_s: self.keep_alive_s.into(),
            queue_capacity: self.queue_capacity,
            username: self.username.clone(),
            password,
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }
}

/// A URL with its userinfo replaced, for messages and logs (one implementation: the MQTT client's).
pub use crate::publish::mqtt::{redact_url, redact_userinfo_in};

/// Provisional on ARM, where nothing could be timed: `sonoedge bench --sweep` on the board decides.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(4)
}
impl Config {
    /// Reads, parses and checks the file; environment overrides are applied.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
        Config::parse_named(&text, path)
    }

    /// Parses and checks a config held in memory; environment overrides are applied.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_named(text, Path::new("(inline)"))
    }

    /// [`Config::parse`], naming `origin` in errors.
    fn parse_named(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        // Both kinds of message may quote the file (a TOML error shows the line, serde the value).
        let parse = |e: toml::de::Error| ConfigError::Parse(origin.to_path_buf(), redact_userinfo_in(&e.to_string()));
        let mut raw: raw::RawConfig = toml::from_str(text).map_err(parse)?;
        raw.apply_env();
        raw.into_config().map_err(|(key, why)| ConfigError::Invalid(origin.to_path_buf(), key, redact_userinfo_in(&why)))
    }
}

/// One MQTT topic level of safe characters.
pub fn valid_topic_level(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text)
    }

    const MINIMAL: &str = "[model]\npath = \"m\"\n[source]\nkind = \"synthetic\"\n";

    #[test]
    fn a_minimal_config_takes_documented_defaults() {
        let c = load(MINIMAL).unwrap();
        assert_eq!((c.mqtt.qos, c.mqtt.stats_interval, c.pipeline.max_fps), (1, Duration::from_secs(10), 10.0));
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let e = load(&format!("{MINIMAL}[mqtt]\nbrokr = \"x\"\n")).unwrap_err().to_string();
        assert!(e.contains("brokr"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (extra, key) in [
            ("[mqtt]\nqos = 3\n", "mqtt.qos"),
            ("[mqtt]\nurl = \"tcp://x\"\n", "mqtt.url"),
            ("[pipeline]\nmax_fps = -1\n", "pipeline.max_fps"),
        ] {
            let e = load(&format!("{MINIMAL}{extra}")).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
    }

    #[test]
    fn values_that_crashed_the_daemon_are_refused_at_load_naming_key_and_range() {
        let synthetic = |extra: &str| format!("[model]\npath = \"m\"\n[source]\nkind = \"synthetic\"\n{extra}");
        for (text, key) in [
            (format!("{MINIMAL}[pipeline]\nmax_fps = 1e-300\n"), "pipeline.max_fps"),
            (synthetic("fps = 1e-300\n"), "source.fps"),
            ("[model]\npath = \"m\"\n[source]\nkind = \"images\"\npath = \"d\"\nfps = 1e-300\n".to_string(), "source.fps"),
            (format!("{MINIMAL}[mqtt]\nqueue_capacity = 1000000000\n"), "mqtt.queue_capacity"),
            (synthetic("roi = [0, 0, 100000, 100000]\n"), "source.roi"),
            (format!("{MINIMAL}[mqtt]\nstats_interval_s = 9223372036854775807\n"), "mqtt.stats_interval_s"),
            (format!("{MINIMAL}[mqtt]\nkeep_alive_s = 65536\n"), "mqtt.keep_alive_s"),
            (format!("{MINIMAL}[pipeline]\nno_signal_luma = 1e9\n"), "pipeline.no_signal_luma"),
            (format!("{MINIMAL}[pipeline]\nfrozen_mad = nan\n"), "pipeline.frozen_mad"),
            (format!("{MINIMAL}[pipeline]\nno_signal_luma = -1\n"), "pipeline.no_signal_luma"),
            (format!("{MINIMAL}[pipeline]\nno_contact_texture = 0.6\n"), "pipeline.no_contact_texture"),
            (format!("{MINIMAL}[pipeline]\nstate_dwell_frames = 0\n"), "pipeline.state_dwell_frames"),
            (format!("{MINIMAL}[pipeline]\nstate_dwell_ms = 10001\n"), "pipeline.state_dwell_ms"),
            (format!("{MINIMAL}[pipeline]\nfreeze_min_ms = 60001\n"), "pipeline.freeze_min_ms"),
            (format!("{MINIMAL}[pipeline]\nabstain_min_top = 1.01\n"), "pipeline.abstain_min_top"),
            (format!("{MINIMAL}[pipeline]\nabstain_min_margin = nan\n"), "pipeline.abstain_min_margin"),
            (format!("{MINIMAL}[pipeline]\nfinding_window_frames = 101\n"), "pipeline.finding_window_frames"),
            (format!("{MINIMAL}[pipeline]\nfinding_hold_frames = 0\n"), "pipeline.finding_hold_frames"),
        ] {
            let e = load(&text).unwrap_err();
            assert!(matches!(e, ConfigError::Invalid(_, k, _) if k == key), "{text}: {e}");
            let named = [" between ", "fit a 7680x4320 frame"].iter().any(|r| e.to_string().contains(r));
            assert!(named, "the range is named: {e}");
        }
    }

    #[test]
    fn the_edges_of_each_range_are_accepted() {
        let text = format!(
            "{MINIMAL}roi = [0, 0, 7680, 4320]\nfps = 240\n[pipeline]\nmax_fps = 1000\nno_signal_luma = 64\nfrozen_mad = 0\n\
             [mqtt]\nqueue_capacity = 10000\nkeep_alive_s = 65535\nstats_interval_s = 86400\n"
        );
        let c = load(&text).unwrap();
        assert_eq!((c.mqtt.queue_capacity, c.mqtt.keep_alive_s), (10_000, 65_535));
    }

    #[test]
    fn a_v4l2_source_is_parsed_once_into_device_spec_fourcc_and_size() {
        let text = "[model]\npath = \"m\"\n[source]\nkind = \"v4l2\"\ndevice = \"card:USB3.0 Capture\"\nformat = \"yuyv\"\n\
                    width = 1920\nheight = 1080\nfps = 29.97\n";
        let c = load(text).unwrap();
        let SourceKind::V4l2(v) = &c.source.kind else { panic!("{:?}", c.source.kind) };
        assert_eq!(v.device, crate::capture::v4l2::DeviceSpec::Card("USB3.0 Capture".into()));
        assert_eq!((v.want.fourcc, v.want.size, v.want.fps, v.buffers), (Some(*b"YUYV"), Some((1920, 1080)), Some(29.97), 4));
    }

    #[test]
    fn mqtt_settings_carry_the_checked_values_and_the_given_password() {
        let c = load(&format!("{MINIMAL}[mqtt]\nurl = \"mqtts://broker\"\nkeep_alive_s = 65535\nqueue_capacity = 9\n")).unwrap();
        let b = &c.mqtt.brokers[0];
        assert_eq!((c.mqtt.brokers.len(), b.tls, b.host.as_str(), b.port), (1, true, "broker", 8883));
        let s = c.mqtt.settings(Some("pw".into()));
        assert_eq!((s.keep_alive_s, s.queue_capacity, s.password.as_deref()), (65535, 9, Some("pw")));
    }

    fn urls_of(c: &Config) -> Vec<(&str, u16)> {
        c.mqtt.brokers.iter().map(|b| (b.host.as_str(), b.port)).collect()
    }

    #[test]
    fn several_broker_urls_are_kept_in_order_and_one_url_is_a_list_of_one() {
        let c = load(&format!("{MINIMAL}[mqtt]\nurls = [\"mqtt://a:1884\", \"mqtt://b\", \"mqtt://[::1]:1885\"]\n")).unwrap();
        assert_eq!(urls_of(&c), vec![("a", 1884), ("b", 1883), ("::1", 1885)]);
        assert_eq!(c.mqtt.settings(None).urls, vec!["mqtt://a:1884", "mqtt://b", "mqtt://[::1]:1885"]);
        let c = load(&format!("{MINIMAL}[mqtt]\nurl = \"mqtt://a:1884\"\n")).unwrap();
        assert_eq!(urls_of(&c), vec![("a", 1884)]);
        assert_eq!(urls_of(&load(MINIMAL).unwrap()), vec![("127.0.0.1", 1883)], "the default broker");
    }

    #[test]
    fn broker_lists_that_would_mislead_are_refused_naming_mqtt_urls() {
        let many = format!("[{}]", (0..17).map(|i| format!("\"mqtt://h{i}\"")).collect::<Vec<_>>().join(", "));
        for (mqtt, says) in [
            ("url = \"mqtt://a\"\nurls = [\"mqtt://b\"]", "not both"),
            ("urls = []", "1 to 16"),
            (&format!("urls = {many}") as &str, "1 to 16"),
            ("urls = [\"mqtt://a\", \"mqtt://a:1883\"]", "twice"),
            ("urls = [\"mqtts://a\", \"mqtt://b\"]", "one scheme"),
            ("urls = [\"mqtt://a\", \"tcp://b\"]", "entry 2"),
            ("urls = [\"mqtt://a\", \"mqtt://b:0\"]", "entry 2"),
        ] {
            let e = load(&format!("{MINIMAL}[mqtt]\n{mqtt}\n")).unwrap_err();
            assert!(matches!(&e, ConfigError::Invalid(_, "mqtt.urls", why) if why.contains(says)), "{mqtt}: {e}");
        }
    }

    #[test]
    fn the_protocol_is_3_1_1_unless_5_is_asked_for_and_nothing_else_is_taken() {
        assert_eq!(load(MINIMAL).unwrap().mqtt.protocol, Protocol::V311);
        assert_eq!(load(&format!("{MINIMAL}[mqtt]\nprotocol = \"5\"\n")).unwrap().mqtt.settings(None).protocol, Protocol::V5);
        for bad in ["5.0", "3", "auto", ""] {
            let e = load(&format!("{MINIMAL}[mqtt]\nprotocol = \"{bad}\"\n")).unwrap_err();
            assert!(matches!(e, ConfigError::Invalid(_, "mqtt.protocol", _)), "{bad}: {e}");
        }
    }

    #[test]
    fn a_multi_level_topic_prefix_is_accepted_and_a_bad_one_names_the_key() {
        let c = load(&format!("{MINIMAL}[mqtt]\ntopic_prefix = \"site/ward/sonoedge\"\n")).unwrap();
        assert_eq!(c.mqtt.topic_prefix, "site/ward/sonoedge");
        for bad in ["site/+/x", "site/#", "/site", "site/", "a//b", ""] {
            let e = load(&format!("{MINIMAL}[mqtt]\ntopic_prefix = \"{bad}\"\n")).unwrap_err();
            assert!(matches!(e, ConfigError::Invalid(_, "mqtt.topic_prefix", _)), "{bad}: {e}");
        }
    }
}
