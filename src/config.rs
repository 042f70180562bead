//! The daemon's configuration: one TOML file, unknown keys rejected, every value checked at start.
//!
//! A bad value is a [`ConfigError`] naming the key and what is allowed (exit 78). A device or broker
//! that is absent is not a config error: the daemon starts, retries and reports it in `status`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::capture::convert::Deinterlace;
use crate::capture::fan::Fan;
use crate::capture::v4l2::negotiate::parse_fourcc;
use crate::capture::v4l2::DeviceSpec;
use crate::publish::mqtt::parse_url;

mod ranges;
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Topics live under `sonoedge/<device_id>/`; default: derived from /etc/machine-id.
    pub device_id: Option<String>,
    pub model: ModelConfig,
    pub source: SourceConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
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

/// Where frames come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    /// The built-in ultrasound phantom (no hardware).
    Synthetic {
        #[serde(default)]
        seed: u64,
        #[serde(default = "fifteen")]
        fps: f64,
        #[serde(default)]
        roi: Option<[u32; 4]>,
        #[serde(default)]
        fan: Option<Fan>,
    },
    /// Image files replayed at `fps`: `path` is a folder (sorted) or a single file.
    Images {
        path: PathBuf,
        #[serde(default = "fifteen")]
        fps: f64,
        #[serde(default = "yes", rename = "loop")]
        looping: bool,
        #[serde(default)]
        roi: Option<[u32; 4]>,
        #[serde(default)]
        fan: Option<Fan>,
    },
    /// A V4L2 capture device: the grabber on the cart's video output.
    V4l2 {
        /// `/dev/video0`, a stable `/dev/v4l/by-id/...` link, `card:NAME` or `bus:INFO`.
        device: String,
        /// A fourcc (YUYV, UYVY, NV12, YU12, RGB3, BGR3, GREY, MJPG) or `auto` (best offered).
        #[serde(default = "auto")]
        format: String,
        /// Both or neither; neither = the largest size offered up to 1920x1080.
        width: Option<u32>,
        height: Option<u32>,
        /// Frames per second to ask for; absent = the driver's current rate.
        fps: Option<f64>,
        #[serde(default = "four")]
        buffers: u32,
        /// Interlaced input: `top_field` (default), `blend` or `weave` (as delivered).
        #[serde(default)]
        interlace: Deinterlace,
        #[serde(default)]
        roi: Option<[u32; 4]>,
        #[serde(default)]
        fan: Option<Fan>,
    },
}

impl SourceConfig {
    /// The ROI `[x, y, width, height]` in source pixels; `None` = the whole frame.
    pub fn roi(&self) -> Option<[u32; 4]> {
        match self {
            SourceConfig::Synthetic { roi, .. } | SourceConfig::Images { roi, .. } | SourceConfig::V4l2 { roi, .. } => *roi,
        }
    }

    /// The fan mask, if one is configured.
    pub fn fan(&self) -> Option<Fan> {
        match self {
            SourceConfig::Synthetic { fan, .. } | SourceConfig::Images { fan, .. } | SourceConfig::V4l2 { fan, .. } => *fan,
        }
    }

    /// How interlaced frames are taken (only grabbers deliver them).
    pub fn deinterlace(&self) -> Deinterlace {
        match self {
            SourceConfig::V4l2 { interlace, .. } => *interlace,
            _ => Deinterlace::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// At most this many inferences per second (0 = as fast as the model runs).
    pub max_fps: f64,
    /// A frame whose mean luma (0-255) is below this is "no signal": nothing is inferred.
    pub no_signal_luma: f64,
    /// A frame whose mean absolute difference to the last inferred one is below this is "frozen".
    pub frozen_mad: f64,
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
        PipelineConfig { max_fps: 10.0, no_signal_luma: 8.0, frozen_mad: 0.5 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port`; env SONOEDGE_MQTT_URL overrides.
    pub url: String,
    pub qos: u8,
    pub topic_prefix: String,
    /// Seconds between `stats` messages (0 = off).
    pub stats_interval_s: u64,
    /// Results held while the broker is unreachable; the oldest is dropped (and counted) when full.
    pub queue_capacity: usize,
    pub keep_alive_s: u64,
    /// env SONOEDGE_MQTT_USERNAME overrides.
    pub username: Option<String>,
    /// A file holding the password (never on the command line); env SONOEDGE_MQTT_PASSWORD overrides.
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl MqttConfig {
    /// Time between `stats` messages (zero = off).
    pub fn stats_interval(&self) -> Duration {
        Duration::from_secs(self.stats_interval_s)
    }

    /// The broker URL with any `user:password@` replaced, for messages and logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// A URL with its userinfo replaced, for messages and logs (one implementation: the MQTT client's).
pub use crate::publish::mqtt::redact_url;

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".into(),
            qos: 1,
            topic_prefix: "sonoedge".into(),
            stats_interval_s: 10,
            queue_capacity: 256,
            keep_alive_s: 15,
            username: None,
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }
}

/// Provisional on ARM, where nothing could be timed: `sonoedge bench --sweep` on the board decides.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(4)
}
fn fifteen() -> f64 {
    15.0
}
fn yes() -> bool {
    true
}
fn auto() -> String {
    "auto".into()
}
fn four() -> u32 {
    4
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
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(origin.to_path_buf(), e.to_string()))?;
        cfg.apply_env();
        cfg.check(origin)?;
        Ok(cfg)
    }

    fn apply_env(&mut self) {
        if let Ok(url) = std::env::var("SONOEDGE_MQTT_URL") {
            self.mqtt.url = url;
        }
        if let Ok(user) = std::env::var("SONOEDGE_MQTT_USERNAME") {
            self.mqtt.username = Some(user);
        }
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |(key, why): (&'static str, String)| ConfigError::Invalid(path.to_path_buf(), key, why);
        self.check_top().map_err(invalid)?;
        self.check_mqtt().map_err(invalid)?;
        self.check_source().map_err(invalid)
    }

    fn check_top(&self) -> Result<(), (&'static str, String)> {
        if let Some(id) = &self.device_id {
            if !valid_topic_level(id) {
                return Err(("device_id", format!("{id:?} must be 1-64 characters of a-z, A-Z, 0-9, '-' or '_'")));
            }
        }
        if self.model.path.as_os_str().is_empty() {
            return Err(("model.path", "must name an .onnx file or an export folder".into()));
        }
        ranges::within(self.model.threads, &ranges::THREADS).map_err(|e| ("model.threads", e))?;
        if let Some(labels) = &self.model.labels {
            ranges::labels(labels).map_err(|e| ("model.labels", e))?;
        }
        let p = &self.pipeline;
        ranges::min_interval(p.max_fps).map_err(|e| ("pipeline.max_fps", e))?;
        ranges::within(p.no_signal_luma, &ranges::NO_SIGNAL_LUMA).map_err(|e| ("pipeline.no_signal_luma", e))?;
        ranges::within(p.frozen_mad, &ranges::FROZEN_MAD).map_err(|e| ("pipeline.frozen_mad", e))?;
        Ok(())
    }

    fn check_mqtt(&self) -> Result<(), (&'static str, String)> {
        let m = &self.mqtt;
        let (_, _, port) = parse_url(&m.url).map_err(|e| ("mqtt.url", e.to_string()))?;
        if port == 0 {
            return Err(("mqtt.url", format!("{:?}: the port must be 1-65535", m.redacted_url())));
        }
        ranges::within(m.qos, &(0..=2)).map_err(|e| ("mqtt.qos", e))?;
        if !valid_topic_level(&m.topic_prefix) {
            return Err(("mqtt.topic_prefix", format!("{:?} must be one topic level of a-z, A-Z, 0-9, '-' or '_'", m.topic_prefix)));
        }
        ranges::within(m.stats_interval_s, &ranges::STATS_INTERVAL_S).map_err(|e| ("mqtt.stats_interval_s", e))?;
        ranges::within(m.queue_capacity, &ranges::QUEUE_CAPACITY).map_err(|e| ("mqtt.queue_capacity", e))?;
        ranges::within(m.keep_alive_s, &ranges::KEEP_ALIVE_S).map_err(|e| ("mqtt.keep_alive_s", e))?;
        if let Some(user) = &m.username {
            ranges::username(user).map_err(|e| ("mqtt.username", e))?;
        }
        if m.client_cert.is_some() != m.client_key.is_some() {
            return Err(("mqtt.client_cert", "mqtt.client_cert and mqtt.client_key: give both or neither".into()));
        }
        Ok(())
    }

    fn check_source(&self) -> Result<(), (&'static str, String)> {
        match &self.source {
            SourceConfig::Synthetic { fps, .. } => ranges::frame_interval(*fps).map(drop).map_err(|e| ("source.fps", e))?,
            SourceConfig::Images { fps, path, .. } => {
                if path.as_os_str().is_empty() {
                    return Err(("source.path", "must name a folder or an image file".into()));
                }
                ranges::frame_interval(*fps).map(drop).map_err(|e| ("source.fps", e))?
            }
            SourceConfig::V4l2 { .. } => self.check_v4l2()?,
        }
        if let Some(roi) = self.source.roi() {
            ranges::roi(roi).map_err(|e| ("source.roi", e))?;
        }
        if let Some(fan) = self.source.fan() {
            ranges::fan(fan).map_err(|e| ("source.fan", e))?;
        }
        Ok(())
    }

    fn check_v4l2(&self) -> Result<(), (&'static str, String)> {
        let SourceConfig::V4l2 { device, format, width, height, fps, buffers, .. } = &self.source else { return Ok(()) };
        DeviceSpec::parse(device).map_err(|e| ("source.device", e))?;
        parse_fourcc(format).map_err(|e| ("source.format", e))?;
        ranges::size(*width, *height).map_err(|e| ("source.width", e))?;
        if let Some(fps) = fps {
            ranges::frame_interval(*fps).map_err(|e| ("source.fps", e))?;
        }
        ranges::within(*buffers, &ranges::BUFFERS).map_err(|e| ("source.buffers", e))?;
        Ok(())
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
        assert_eq!((c.mqtt.qos, c.mqtt.stats_interval_s, c.pipeline.max_fps), (1, 10, 10.0));
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
            (format!("[model]\npath = \"m\"\n[source]\nkind = \"images\"\npath = \"d\"\nfps = 1e-300\n"), "source.fps"),
            (format!("{MINIMAL}[mqtt]\nqueue_capacity = 1000000000\n"), "mqtt.queue_capacity"),
            (synthetic("roi = [0, 0, 100000, 100000]\n"), "source.roi"),
            (format!("{MINIMAL}[mqtt]\nstats_interval_s = 9223372036854775807\n"), "mqtt.stats_interval_s"),
            (format!("{MINIMAL}[mqtt]\nkeep_alive_s = 65536\n"), "mqtt.keep_alive_s"),
            (format!("{MINIMAL}[pipeline]\nno_signal_luma = 1e9\n"), "pipeline.no_signal_luma"),
            (format!("{MINIMAL}[pipeline]\nfrozen_mad = nan\n"), "pipeline.frozen_mad"),
            (format!("{MINIMAL}[pipeline]\nno_signal_luma = -1\n"), "pipeline.no_signal_luma"),
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
}
