//! The one checked conversion from the raw config (what serde read) to the typed [`Config`]: every
//! value is range-checked (src/config/ranges.rs) and parsed here, and nowhere else.

use std::time::Duration;

use super::raw::{RawConfig, RawInput, RawMqtt, RawSource};
use super::{ranges, valid_topic_level, BrokerUrl, Config, MqttConfig, SourceConfig, SourceKind};
use crate::capture::v4l2::negotiate::{parse_fourcc, Want};
use crate::capture::v4l2::{DeviceSpec, InputSpec, V4l2Settings};
use crate::publish::mqtt::parse_url;
use crate::publish::mqtt::wire::Protocol;

/// A bad value: the key and what is allowed.
type Bad = (&'static str, String);

/// Tags a range message with its key.
fn at(key: &'static str) -> impl FnOnce(String) -> Bad {
    move |why| (key, why)
}

impl RawConfig {
    /// SONOEDGE_MQTT_URL (one URL, or several separated by commas) replaces `mqtt.url` and
    /// `mqtt.urls`, SONOEDGE_MQTT_USERNAME `mqtt.username`; then they are checked like the file's.
    pub(super) fn apply_env(&mut self) {
        if let Ok(url) = std::env::var("SONOEDGE_MQTT_URL") {
            (self.mqtt.url, self.mqtt.urls) = match url.contains(',') {
                true => (None, Some(url.split(',').map(|u| u.trim().to_string()).collect())),
                false => (Some(url), None),
            };
        }
        if let Ok(user) = std::env::var("SONOEDGE_MQTT_USERNAME") {
            self.mqtt.username = Some(user);
        }
    }

    /// Checks every value and parses it into its type.
    pub(super) fn into_config(self) -> Result<Config, Bad> {
        self.check_top()?;
        Ok(Config {
            source: self.source.into_checked()?,
            mqtt: self.mqtt.into_checked()?,
            device_id: self.device_id,
            model: self.model,
            pipeline: self.pipeline,
        })
    }

    fn check_top(&self) -> Result<(), Bad> {
        if let Some(id) = &self.device_id {
            if !valid_topic_level(id) {
                return Err(("device_id", format!("{id:?} must be 1-64 characters of a-z, A-Z, 0-9, '-' or '_'")));
            }
        }
        if self.model.path.as_os_str().is_empty() {
            return Err(("model.path", "must name an .onnx file or an export folder".into()));
        }
        ranges::within(self.model.threads, &ranges::THREADS).map_err(at("model.threads"))?;
        if let Some(labels) = &self.model.labels {
            ranges::labels(labels).map_err(at("model.labels"))?;
        }
        let p = &self.pipeline;
        ranges::min_interval(p.max_fps).map_err(at("pipeline.max_fps"))?;
        ranges::within(p.no_signal_luma, &ranges::NO_SIGNAL_LUMA).map_err(at("pipeline.no_signal_luma"))?;
        ranges::within(p.frozen_mad, &ranges::FROZEN_MAD).map_err(at("pipeline.frozen_mad"))?;
        self.check_signals()
    }

    /// The clinical-signal keys of `[pipeline]`.
    fn check_signals(&self) -> Result<(), Bad> {
        let p = &self.pipeline;
        ranges::within(p.no_contact_texture, &ranges::NO_CONTACT_TEXTURE).map_err(at("pipeline.no_contact_texture"))?;
        ranges::within(p.state_dwell_frames, &ranges::STATE_DWELL_FRAMES).map_err(at("pipeline.state_dwell_frames"))?;
        ranges::within(p.state_dwell_ms, &ranges::STATE_DWELL_MS).map_err(at("pipeline.state_dwell_ms"))?;
        ranges::within(p.freeze_min_ms, &ranges::FREEZE_MIN_MS).map_err(at("pipeline.freeze_min_ms"))?;
        ranges::within(p.abstain_min_top, &ranges::ABSTAIN).map_err(at("pipeline.abstain_min_top"))?;
        ranges::within(p.abstain_min_margin, &ranges::ABSTAIN).map_err(at("pipeline.abstain_min_margin"))?;
        ranges::within(p.finding_window_frames, &ranges::FINDING_FRAMES).map_err(at("pipeline.finding_window_frames"))?;
        ranges::within(p.finding_hold_frames, &ranges::FINDING_FRAMES).map_err(at("pipeline.finding_hold_frames"))?;
        Ok(())
    }
}

impl RawMqtt {
    fn into_checked(self) -> Result<MqttConfig, Bad> {
        let brokers = self.brokers()?;
        let protocol = match self.protocol.as_str() {
            "3.1.1" => Protocol::V311,
            "5" => Protocol::V5,
            other => return Err(("mqtt.protocol", format!("{other:?} must be \"3.1.1\" or \"5\""))),
        };
        let qos = ranges::within(self.qos, &(0..=2)).map_err(at("mqtt.qos"))?;
        ranges::topic_prefix(&self.topic_prefix).map_err(at("mqtt.topic_prefix"))?;
        let stats_s = ranges::within(self.stats_interval_s, &ranges::STATS_INTERVAL_S).map_err(at("mqtt.stats_interval_s"))?;
        let queue_capacity = ranges::within(self.queue_capacity, &ranges::QUEUE_CAPACITY).map_err(at("mqtt.queue_capacity"))?;
        let keep_alive_s = ranges::within(self.keep_alive_s, &ranges::KEEP_ALIVE_S).map_err(at("mqtt.keep_alive_s"))?;
        if let Some(user) = &self.username {
            ranges::username(user).map_err(at("mqtt.username"))?;
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(("mqtt.client_cert", "mqtt.client_cert and mqtt.client_key: give both or neither".into()));
        }
        Ok(MqttConfig {
            brokers,
            protocol,
            qos,
            topic_prefix: self.topic_prefix,
            stats_interval: std::time::Duration::from_secs(stats_s),
            queue_capacity,
            keep_alive_s: u16::try_from(keep_alive_s).map_err(|e| ("mqtt.keep_alive_s", e.to_string()))?,
            username: self.username,
            password_file: self.password_file,
            ca_file: self.ca_file,
            client_cert: self.client_cert,
            client_key: self.client_key,
        })
    }
}

impl RawMqtt {
    /// `url` as a list of one, or `urls`; neither: the default broker on this machine.
    fn brokers(&self) -> Result<Vec<BrokerUrl>, Bad> {
        match (&self.url, &self.urls) {
            (Some(_), Some(_)) => Err(("mqtt.urls", "give mqtt.url (one broker) or mqtt.urls (several), not both".into())),
            (Some(url), None) => Ok(vec![broker_url(url).map_err(at("mqtt.url"))?]),
            (None, Some(urls)) => broker_list(urls).map_err(at("mqtt.urls")),
            (None, None) => Ok(vec![broker_url("mqtt://127.0.0.1:1883").expect("the default URL parses")]),
        }
    }
}

/// 1-[`ranges::MAX_BROKERS`] URLs, each valid, no broker twice, one scheme for all: a list mixing
/// mqtts and mqtt would fail over from an encrypted link to a plain one without a word.
fn broker_list(urls: &[String]) -> Result<Vec<BrokerUrl>, String> {
    if !(1..=ranges::MAX_BROKERS).contains(&urls.len()) {
        return Err(format!("{} URLs; give 1 to {}", urls.len(), ranges::MAX_BROKERS));
    }
    let mut brokers: Vec<BrokerUrl> = Vec::with_capacity(urls.len());
    for (i, url) in urls.iter().enumerate() {
        let b = broker_url(url).map_err(|e| format!("entry {}: {e}", i + 1))?;
        if let Some(same) = brokers.iter().find(|o| (&o.host, o.port) == (&b.host, b.port)) {
            return Err(format!(
                "entry {}: {:?} names the broker of {:?} twice",
                i + 1,
                super::redact_url(url),
                super::redact_url(&same.url)
            ));
        }
        if brokers.first().is_some_and(|first| first.tls != b.tls) {
            return Err("mixes mqtts:// and mqtt://: give all URLs one scheme (failover must not drop TLS)".into());
        }
        brokers.push(b);
    }
    Ok(brokers)
}

/// One broker URL, parsed (its user info, if any, shown only redacted).
fn broker_url(url: &str) -> Result<BrokerUrl, String> {
    let (tls, host, port) = parse_url(url).map_err(|e| e.to_string())?;
    if port == 0 {
        return Err(format!("{:?}: the port must be 1-65535", super::redact_url(url)));
    }
    Ok(BrokerUrl { url: url.to_string(), tls, host, port })
}

impl RawSource {
    fn into_checked(self) -> Result<SourceConfig, Bad> {
        let (roi, fan, deinterlace) = match &self {
            RawSource::Synthetic { roi, fan, .. } | RawSource::Images { roi, fan, .. } => (*roi, *fan, Default::default()),
            RawSource::V4l2 { roi, fan, interlace, .. } => (*roi, *fan, *interlace),
        };
        let roi = roi.map(ranges::roi).transpose().map_err(at("source.roi"))?;
        let fan = fan.map(ranges::fan).transpose().map_err(at("source.fan"))?;
        Ok(SourceConfig { kind: self.into_kind()?, roi, fan, deinterlace })
    }

    fn into_kind(self) -> Result<SourceKind, Bad> {
        Ok(match self {
            RawSource::Synthetic { seed, fps, .. } => SourceKind::Synthetic { seed, fps: checked_fps(fps)? },
            RawSource::Images { path, fps, looping, .. } => {
                if path.as_os_str().is_empty() {
                    return Err(("source.path", "must name a folder or an image file".into()));
                }
                SourceKind::Images { path, fps: checked_fps(fps)?, looping }
            }
            RawSource::V4l2 { device, format, width, height, fps, buffers, input, stall_s, .. } => {
                let device = DeviceSpec::parse(&device).map_err(at("source.device"))?;
                let fourcc = parse_fourcc(&format).map_err(at("source.format"))?;
                let size = ranges::size(width, height).map_err(at("source.width"))?;
                let fps = fps.map(checked_fps).transpose()?;
                let buffers = ranges::within(buffers, &ranges::BUFFERS).map_err(at("source.buffers"))?;
                let input = input.map(checked_input).transpose()?;
                let stall = ranges::within(stall_s, &ranges::STALL_S).map_err(at("source.stall_s"))?;
                let stall = Duration::from_secs_f64(stall);
                SourceKind::V4l2(V4l2Settings { device, want: Want { fourcc, size, fps }, buffers, input, stall })
            }
        })
    }
}

fn checked_input(raw: RawInput) -> Result<InputSpec, Bad> {
    match raw {
        RawInput::Index(n) => ranges::within(n, &ranges::INPUT_INDEX).map(|n| InputSpec::Index(n as u32)).map_err(at("source.input")),
        RawInput::Name(name) if !name.trim().is_empty() && name.len() <= ranges::MAX_INPUT_NAME => Ok(InputSpec::Name(name)),
        RawInput::Name(_) => {
            Err(("source.input", format!("an input name has 1-{} bytes (or give the input's index)", ranges::MAX_INPUT_NAME)))
        }
    }
}

/// A source frame rate whose interval is a valid Duration.
fn checked_fps(fps: f64) -> Result<f64, Bad> {
    ranges::frame_interval(fps).map(|_| fps).map_err(at("source.fps"))
}
