//! The daemon assembled in one place: [`assemble`] builds the parts from a checked config,
//! [`serve`] starts the pipeline, tells systemd it is ready, feeds the watchdog while every thread
//! turns, and stops cleanly on a signal. `run`, `demo` and `check` are thin callers of this.

pub mod assemble;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capture::region::Region;
use crate::config::Config;
use crate::pipeline::{self, Parts, Running, Thread};
use crate::publish::mqtt::MqttPublisher;
use crate::publish::Status;
use crate::state::{DaemonState, Gate, SourceState};
pub use assemble::{build_source, device_id, identity, load_model, mqtt_settings, v4l2_settings};

/// Exit code for a bad configuration or unusable model (EX_CONFIG): systemd does not restart on it.
pub const EXIT_CONFIG: i32 = 78;
/// Exit code for a pipeline thread that ended on its own (EX_SOFTWARE): systemd restarts.
pub const EXIT_SOFTWARE: i32 = 70;

/// How long a thread may go without turning its loop before the watchdog is no longer fed.
const LIVENESS: Duration = Duration::from_secs(10);

/// A failure of the daemon: `Config` ones exit 78 so systemd does not restart in a loop.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("the {} thread ended unexpectedly; exiting so the Last Will is published and systemd restarts the service", .0.name())]
    ThreadEnded(Thread),
    #[error("{0:#}")]
    Other(anyhow::Error),
}

impl StartError {
    pub fn config(e: impl std::fmt::Display) -> StartError {
        StartError::Config(e.to_string())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => EXIT_CONFIG,
            StartError::ThreadEnded(_) => EXIT_SOFTWARE,
            StartError::Other(_) => 1,
        }
    }
}

/// Sets the returned flag on SIGTERM, SIGINT, SIGHUP, SIGUSR1 or SIGUSR2: each is a clean stop
/// (final stats, retained `stopped`); there is no reload, systemd restarts the unit instead.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>, StartError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| StartError::Other(anyhow::anyhow!("installing signal handlers: {e}")))?;
    }
    Ok(stop)
}

/// Starts the pipeline for `cfg` and blocks until `stop` is set (or `duration` passes).
pub fn serve(cfg: &Config, stop: Arc<AtomicBool>, duration: Option<Duration>) -> Result<(), StartError> {
    let model = Arc::new(load_model(cfg)?);
    let identity = identity(cfg, &model)?;
    let source = build_source(&cfg.source)?;
    let mut offline = Status::new(&identity, DaemonState::Offline, &source.describe());
    (offline.source_state, offline.gate) = (SourceState::Unknown, Gate::Offline);
    let publisher = MqttPublisher::start(&mqtt_settings(&cfg.mqtt)?, identity.clone(), &offline).map_err(StartError::config)?;
    log::info!("publishing to {} under {}/{}/", cfg.mqtt.redacted_urls(), cfg.mqtt.topic_prefix, identity.device_id);
    let parts = Parts {
        source,
        model,
        publisher: Box::new(publisher),
        region: Region::new(cfg.source.roi(), cfg.source.fan()),
        deinterlace: cfg.source.deinterlace(),
        config: cfg.pipeline.clone(),
        identity,
        stats_interval: cfg.mqtt.stats_interval(),
        system_facts: crate::sysinfo::system_facts,
    };
    let running = pipeline::start(parts, stop.clone());
    crate::sysinfo::notify_ready();
    supervise(&running, &stop, duration.map(|d| Instant::now() + d))?;
    stop.store(true, Ordering::Relaxed);
    log::info!("stopping: finishing the frame in flight and publishing the final status");
    running.join().map_err(|panicked| StartError::ThreadEnded(panicked[0]))
}

/// Feeds the watchdog while every thread turns; returns at `stop` or the deadline, or with an error
/// as soon as a thread has ended on its own (the caller exits without a clean DISCONNECT, so the
/// broker publishes the Last Will `offline`).
fn supervise(running: &Running, stop: &AtomicBool, deadline: Option<Instant>) -> Result<(), StartError> {
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(100));
        // A thread that ended because the stop was asked for while this one slept is no failure.
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(thread) = running.ended_thread() {
            let error = StartError::ThreadEnded(thread);
            log::error!("{error}");
            return Err(error);
        }
        match running.heartbeats.stalled(LIVENESS) {
            None => {
                crate::sysinfo::notify_watchdog();
                warned = false;
            }
            Some(thread) if !warned => {
                log::warn!("the {} thread has not turned for {:?}; the watchdog is not fed", thread.name(), running.heartbeats.age(thread));
                warned = true;
            }
            Some(_) => {}
        }
    }
    Ok(())
}
