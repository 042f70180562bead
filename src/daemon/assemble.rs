//! Builds the daemon's parts from a checked config: the model, the device identity, the frame
//! source and the MQTT settings. `run`, `check`, `demo` and `snapshot` all build them here.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::StartError;
use crate::capture::images::ImageSource;
use crate::capture::synthetic::{PhantomConfig, SyntheticSource};
use crate::capture::v4l2::{V4l2Settings, V4l2Source};
use crate::capture::FrameSource;
use crate::config::{valid_topic_level, Config, MqttConfig, SourceConfig, SourceKind};
use crate::infer::{LoadOptions, Model, Overrides};
use crate::publish::mqtt::MqttSettings;
use crate::publish::Identity;

/// Loads the model named by the config.
pub fn load_model(cfg: &Config) -> Result<Model, StartError> {
    let overrides = Overrides { labels: cfg.model.labels.clone(), preprocessor: cfg.model.preprocessor.clone() };
    Model::load(&cfg.model.path, &overrides, &LoadOptions { threads: cfg.model.threads, ..LoadOptions::default() })
        .map_err(StartError::config)
}

/// `device_id` from config, else derived from /etc/machine-id (hashed: the raw id is not published).
pub fn device_id(cfg: &Config) -> Result<String, StartError> {
    if let Some(id) = &cfg.device_id {
        return Ok(id.clone());
    }
    let machine_id = std::fs::read_to_string("/etc/machine-id").map_err(|e| {
        StartError::Config(format!("device_id is not set and /etc/machine-id is unreadable ({e}); set device_id in the config"))
    })?;
    let digest = Sha256::digest(format!("sonoedge:{}", machine_id.trim()).as_bytes());
    let id: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    debug_assert!(valid_topic_level(&id));
    Ok(id)
}

/// What every payload says about who sent it and with which model.
pub fn identity(cfg: &Config, model: &Model) -> Result<Identity, StartError> {
    Ok(Identity { device_id: device_id(cfg)?, model_sha256: model.sha256.clone(), preprocess_digest: model.preprocess_digest.clone() })
}

/// The configured frame source. Absent folders or devices are reported by the source at run time.
pub fn build_source(cfg: &SourceConfig) -> Result<Box<dyn FrameSource>, StartError> {
    Ok(match &cfg.kind {
        SourceKind::Synthetic { seed, fps } => {
            Box::new(SyntheticSource::new(PhantomConfig { seed: *seed, fps: *fps, ..PhantomConfig::default() }))
        }
        SourceKind::Images { path, fps, looping } => Box::new(ImageSource::new(path.clone(), *fps, *looping)),
        SourceKind::V4l2(settings) => Box::new(V4l2Source::new(settings.clone())),
    })
}

/// The grabber settings of a `kind = "v4l2"` source (parsed when the config was loaded).
pub fn v4l2_settings(cfg: &SourceConfig) -> Result<V4l2Settings, StartError> {
    match &cfg.kind {
        SourceKind::V4l2(settings) => Ok(settings.clone()),
        _ => Err(StartError::Config("source.kind is not \"v4l2\"".into())),
    }
}

/// MQTT settings with the password read from SONOEDGE_MQTT_PASSWORD or `password_file`.
pub fn mqtt_settings(m: &MqttConfig) -> Result<MqttSettings, StartError> {
    let password = match (std::env::var("SONOEDGE_MQTT_PASSWORD").ok(), &m.password_file) {
        (Some(p), _) => Some(p),
        (None, Some(file)) => Some(read_secret(file)?),
        (None, None) => None,
    };
    Ok(m.settings(password))
}

fn read_secret(file: &Path) -> Result<String, StartError> {
    std::fs::read_to_string(file)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|e| StartError::Config(format!("mqtt.password_file {}: {e}", file.display())))
}
