//! `sonoedge run --config FILE`: the long-running service, and the pieces `check` and `demo` share
//! with it (identity, source, MQTT settings).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sha2::{Digest, Sha256};

use crate::capture::images::ImageSource;
use crate::capture::region::Region;
use crate::capture::synthetic::{PhantomConfig, SyntheticSource};
use crate::capture::v4l2::{negotiate, DeviceSpec, V4l2Settings, V4l2Source, Want};
use crate::capture::FrameSource;
use crate::config::{valid_topic_level, Config, MqttConfig, SourceConfig};
use crate::infer::{LoadOptions, Model, Overrides};
use crate::pipeline::{self, Parts};
use crate::publish::mqtt::{MqttPublisher, MqttSettings};
use crate::publish::{Identity, Status};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The TOML configuration (see deploy/sonoedge.toml).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// A failure before the daemon runs: `Config` ones exit 78 so systemd does not restart in a loop.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("{0:#}")]
    Other(anyhow::Error),
}

impl StartError {
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => super::EXIT_CONFIG,
            StartError::Other(_) => 1,
        }
    }
}

fn config_err(e: impl std::fmt::Display) -> StartError {
    StartError::Config(e.to_string())
}

/// Loads the model named by the config.
pub fn load_model(cfg: &Config) -> Result<Model, StartError> {
    let overrides = Overrides { labels: cfg.model.labels.clone(), preprocessor: cfg.model.preprocessor.clone() };
    Model::load(&cfg.model.path, &overrides, &LoadOptions { threads: cfg.model.threads, ..LoadOptions::default() }).map_err(config_err)
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

pub fn identity(cfg: &Config, model: &Model) -> Result<Identity, StartError> {
    Ok(Identity { device_id: device_id(cfg)?, model_sha256: model.sha256.clone(), preprocess_digest: model.preprocess_digest.clone() })
}

/// The configured frame source. Absent folders or devices are reported by the source at run time.
pub fn build_source(cfg: &SourceConfig) -> Box<dyn FrameSource> {
    match cfg {
        SourceConfig::Synthetic { seed, fps, .. } => {
            Box::new(SyntheticSource::new(PhantomConfig { seed: *seed, fps: *fps, ..PhantomConfig::default() }))
        }
        SourceConfig::Images { path, fps, looping, .. } => Box::new(ImageSource::new(path.clone(), *fps, *looping)),
        SourceConfig::V4l2 { .. } => Box::new(V4l2Source::new(v4l2_settings(cfg).expect("checked when the config was loaded"))),
    }
}

/// The grabber settings of a `kind = "v4l2"` source; `None` for other kinds.
pub fn v4l2_settings(cfg: &SourceConfig) -> Option<V4l2Settings> {
    let SourceConfig::V4l2 { device, format, width, height, fps, buffers, .. } = cfg else { return None };
    let device = DeviceSpec::parse(device).ok()?;
    let fourcc = negotiate::parse_fourcc(format).ok()?;
    let size = width.zip(*height);
    Some(V4l2Settings { device, want: Want { fourcc, size, fps: *fps }, buffers: *buffers })
}

/// MQTT settings with the password read from SONOEDGE_MQTT_PASSWORD or `password_file`.
pub fn mqtt_settings(m: &MqttConfig) -> Result<MqttSettings, StartError> {
    let password = match (std::env::var("SONOEDGE_MQTT_PASSWORD").ok(), &m.password_file) {
        (Some(p), _) => Some(p),
        (None, Some(file)) => Some(read_secret(file)?),
        (None, None) => None,
    };
    Ok(MqttSettings {
        url: m.url.clone(),
        qos: m.qos,
        topic_prefix: m.topic_prefix.clone(),
        keep_alive_s: m.keep_alive_s,
        queue_capacity: m.queue_capacity,
        username: m.username.clone(),
        password,
        ca_file: m.ca_file.clone(),
        client_cert: m.client_cert.clone(),
        client_key: m.client_key.clone(),
    })
}

fn read_secret(file: &Path) -> Result<String, StartError> {
    std::fs::read_to_string(file)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|e| StartError::Config(format!("mqtt.password_file {}: {e}", file.display())))
}

/// Sets `stop` on SIGTERM or SIGINT.
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(args: &RunArgs) -> Result<(), StartError> {
    let cfg = Config::load(&args.config).map_err(config_err)?;
    let stop = stop_on_signals().map_err(StartError::Other)?;
    serve(&cfg, stop, None)
}

/// Starts the pipeline for `cfg` and blocks until `stop` is set (or `duration` passes).
pub fn serve(cfg: &Config, stop: Arc<AtomicBool>, duration: Option<Duration>) -> Result<(), StartError> {
    let model = Arc::new(load_model(cfg)?);
    let identity = identity(cfg, &model)?;
    let source = build_source(&cfg.source);
    let mut offline = Status::new(&identity, "offline", &source.describe());
    (offline.source_state, offline.gate) = ("unknown".into(), "offline".into());
    let publisher = MqttPublisher::start(&mqtt_settings(&cfg.mqtt)?, identity.clone(), &offline).map_err(config_err)?;
    log::info!("publishing to {} under {}/{}/", cfg.mqtt.url, cfg.mqtt.topic_prefix, identity.device_id);
    let parts = Parts {
        source,
        model,
        publisher: Box::new(publisher),
        region: Region::new(cfg.source.roi(), cfg.source.fan()),
        deinterlace: cfg.source.deinterlace(),
        config: cfg.pipeline.clone(),
        identity,
        stats_interval_s: cfg.mqtt.stats_interval_s,
        system_facts: crate::sysinfo::system_facts,
    };
    let running = pipeline::start(parts, stop.clone());
    crate::sysinfo::notify_ready();
    let deadline = duration.map(|d| std::time::Instant::now() + d);
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| std::time::Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(100));
        if running.alive(Duration::from_secs(10)) {
            crate::sysinfo::notify_watchdog();
        }
    }
    stop.store(true, Ordering::Relaxed);
    log::info!("stopping: finishing the frame in flight and publishing the final status");
    running.join();
    Ok(())
}
