//! `sonoedge check --config FILE`: validates config and model, tries the source and the broker once,
//! and prints one verdict line per part. Exit 0 all good, 78 config/model unusable, 69 source or
//! broker unreachable now (which `run` would tolerate and retry).

use std::time::{Duration, Instant};

use super::run::RunArgs;
use sonoedge::capture::convert::Roi;
use sonoedge::config::Config;
use sonoedge::daemon::{build_source, identity, load_model, mqtt_settings, StartError};
use sonoedge::publish::mqtt::connect_options;

pub const EXIT_UNAVAILABLE: i32 = 69;

pub fn run(args: &RunArgs) -> Result<i32, StartError> {
    let cfg = Config::load(&args.config).map_err(StartError::config)?;
    println!("config  ok: {}", args.config.display());
    let model = load_model(&cfg)?;
    println!(
        "model   ok: {} ({}, labels {:?}, sha256 {})",
        model.contract.onnx.display(),
        model.info.format.as_str(),
        model.labels(),
        model.sha256
    );
    let id = identity(&cfg, &model)?;
    println!("device  ok: topics under {}/{}/", cfg.mqtt.topic_prefix, id.device_id);
    let source_ok = try_source(&cfg);
    let broker_ok = try_broker(&cfg)?;
    Ok(if source_ok && broker_ok { 0 } else { EXIT_UNAVAILABLE })
}

fn try_source(cfg: &Config) -> bool {
    let mut source = match build_source(&cfg.source) {
        Ok(s) => s,
        Err(e) => {
            println!("source  UNUSABLE: {e}");
            return false;
        }
    };
    let name = source.describe();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match source.next_frame() {
            Ok(Some(f)) => {
                let (w, h) = (f.meta.width, f.meta.height);
                if let Some(roi) = cfg.source.roi().map(Roi::from_array).filter(|r| !r.fits(w, h)) {
                    println!("source  ROI MISMATCH: {name} gives {w}x{h}, source.roi {roi:?} does not fit (nothing would be published; `sonoedge snapshot` shows the frame)");
                    return false;
                }
                println!("source  ok: {name} gives {w}x{h} {:?}", f.meta.format);
                return true;
            }
            Ok(None) => continue,
            Err(e) => {
                println!("source  UNAVAILABLE: {name}: {e} (the daemon would keep retrying)");
                return false;
            }
        }
    }
    println!("source  UNAVAILABLE: {}: no frame within 5 s", source.describe());
    false
}

fn try_broker(cfg: &Config) -> Result<bool, StartError> {
    let settings = mqtt_settings(&cfg.mqtt)?;
    // The publisher's own options (TLS with client certificate included), under a probe's client id.
    let options = connect_options(&settings, &format!("sonoedge-check-{}", std::process::id())).map_err(StartError::config)?;
    let (_client, mut connection) = rumqttc::Client::new(options, 4);
    let verdict = match connection.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => Ok(()),
        Ok(Ok(other)) => Err(format!("unexpected first event {other:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    };
    match &verdict {
        Ok(()) => println!("broker  ok: {}", cfg.mqtt.redacted_url()),
        Err(e) => println!("broker  UNAVAILABLE: {}: {e} (the daemon would keep retrying)", cfg.mqtt.redacted_url()),
    }
    Ok(verdict.is_ok())
}
