//! `sonoedge demo`: the whole path on one machine with nothing installed. The synthetic phantom, the
//! committed demo model (embedded in the binary, loaded through the same checks as any model) and
//! an embedded MQTT broker on a free loopback port; prints what a subscriber receives, one JSON line
//! per message.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use sonoedge::capture::synthetic::DEFAULT_ROI;
use sonoedge::config::Config;
use sonoedge::daemon::{serve, stop_on_signals, StartError};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Phantom seed (the demo model was trained on other seeds).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// The demo model: tiny ViT trained on phantom frames by models/train_demo.py, dynamic int8.
const DEMO_MODEL: [(&str, &[u8]); 3] = [
    ("model.onnx", include_bytes!("../../models/demo/int8/model.onnx")),
    ("config.json", include_bytes!("../../models/demo/int8/config.json")),
    ("preprocessor_config.json", include_bytes!("../../models/demo/int8/preprocessor_config.json")),
];

pub fn run(args: &DemoArgs) -> Result<(), StartError> {
    // Removed when `dir` is dropped, at the end of this function.
    let dir = unpack_model().map_err(StartError::Other)?;
    let port = free_port().map_err(StartError::Other)?;
    start_broker(port);
    let cfg = demo_config(dir.path(), port, args.seed)?;
    let stop = stop_on_signals()?;
    eprintln!("sonoedge demo: broker on 127.0.0.1:{port}, synthetic seed {}, model {}", args.seed, dir.path().display());
    eprintln!("sonoedge demo: assistive output on a phantom, never a diagnosis; Ctrl-C to stop");
    print_messages(port, stop.clone());
    let result = serve(&cfg, stop, args.duration_s.map(Duration::from_secs));
    std::thread::sleep(Duration::from_millis(300)); // let the subscriber print the final status
    result
}

/// The embedded model in a fresh private folder: created with a random name and mode 0700 (no
/// other user can create it first or put a link in it), removed when the returned value drops.
fn unpack_model() -> anyhow::Result<tempfile::TempDir> {
    // tempfile's own default is 0777 less the umask (0755 here): other users could read it.
    let owner_only = std::fs::Permissions::from_mode(0o700);
    let dir = tempfile::Builder::new().prefix("sonoedge-demo-model-").permissions(owner_only).tempdir()?;
    for (name, bytes) in DEMO_MODEL {
        std::fs::write(dir.path().join(name), bytes)?;
    }
    Ok(dir)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn demo_config(model: &Path, port: u16, seed: u64) -> Result<Config, StartError> {
    let (x, y, w, h) = DEFAULT_ROI;
    let text = format!(
        "device_id = \"demo\"\n[model]\npath = \"{}\"\nthreads = 1\n[source]\nkind = \"synthetic\"\nseed = {seed}\nfps = 15\nroi = [{x}, {y}, {w}, {h}]\n[pipeline]\nmax_fps = 5\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nstats_interval_s = 5\n",
        model.display()
    );
    Config::parse(&text).map_err(StartError::config)
}

fn start_broker(port: u16) {
    let cfg = format!(
        r#"id = 0
[router]
max_connections = 16
max_outgoing_packet_count = 200
max_segment_size = 1048576
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 65536
max_inflight_count = 100
dynamic_filters = true
"#
    );
    let cfg: rumqttd::Config = toml::from_str(&cfg).expect("built-in broker config parses");
    std::thread::Builder::new()
        .name("demo-broker".into())
        .spawn(move || {
            if let Err(e) = rumqttd::Broker::new(cfg).start() {
                log::error!("embedded broker stopped: {e}");
            }
        })
        .expect("spawn broker");
    // The broker binds asynchronously; wait until it accepts.
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Subscribes to the demo's topics and prints `{"topic", "retained", "payload"}` lines on stdout.
fn print_messages(port: u16, stop: Arc<AtomicBool>) {
    let mut o = MqttOptions::new("sonoedge-demo-viewer", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(15));
    let (client, mut connection) = Client::new(o, 16);
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe("sonoedge/demo/#", QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let payload: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or(serde_json::Value::Null);
                    let line = serde_json::json!({"topic": p.topic, "retained": p.retain, "payload": payload});
                    let _ = writeln!(std::io::stdout().lock(), "{line}");
                }
                Ok(_) => {}
                Err(_) if stop.load(Ordering::Relaxed) => break,
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_model_goes_to_a_fresh_private_folder_that_is_removed_when_dropped() {
        let (a, b) = (unpack_model().unwrap(), unpack_model().unwrap());
        assert_ne!(a.path(), b.path(), "two runs got the same folder name");
        assert_eq!(std::fs::metadata(a.path()).unwrap().permissions().mode() & 0o777, 0o700, "{}", a.path().display());
        assert!(DEMO_MODEL.iter().all(|(name, bytes)| std::fs::read(a.path().join(name)).unwrap() == *bytes));
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists(), "{} outlived the demo", path.display());
    }
}
