//! The first stage of the config: what serde reads from the TOML file, unchecked. Nothing outside
//! `config` sees these types; [`super::Config`] is made from them by one checked conversion.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ModelConfig, PipelineConfig};
use crate::capture::convert::Deinterlace;
use crate::capture::fan::Fan;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Topics live under `sonoedge/<device_id>/`; default: derived from /etc/machine-id.
    pub device_id: Option<String>,
    pub model: ModelConfig,
    pub source: RawSource,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub mqtt: RawMqtt,
}

/// Where frames come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum RawSource {
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
        /// The input of a multi-input grabber: its index or its name as `sonoedge devices` shows.
        #[serde(default)]
        input: Option<RawInput>,
        /// Seconds without a buffer (and without "no signal" from the driver) before the grabber
        /// is taken for lost and reopened.
        #[serde(default = "default_stall_s")]
        stall_s: f64,
        /// Interlaced input: `top_field` (default), `blend` or `weave` (as delivered).
        #[serde(default)]
        interlace: Deinterlace,
        #[serde(default)]
        roi: Option<[u32; 4]>,
        #[serde(default)]
        fan: Option<Fan>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMqtt {
    /// `mqtt://host:port` or `mqtts://host:port`: one broker (a one-element `urls`).
    pub url: Option<String>,
    /// Several brokers, tried in turn; either this or `url`. Env SONOEDGE_MQTT_URL (one URL, or
    /// several separated by commas) overrides both.
    pub urls: Option<Vec<String>>,
    /// `"3.1.1"` (default) or `"5"`.
    pub protocol: String,
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

impl Default for RawMqtt {
    fn default() -> Self {
        RawMqtt {
            url: None,
            urls: None,
            protocol: "3.1.1".into(),
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

fn fifteen() -> f64 {
    15.0
}
fn yes() -> bool {
    true
}
fn auto() -> String {
    "auto".into()
}
/// `input = 2` or `input = "HDMI"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawInput {
    Index(i64),
    Name(String),
}

fn default_stall_s() -> f64 {
    crate::capture::v4l2::STALL.as_secs_f64()
}

fn four() -> u32 {
    4
}
