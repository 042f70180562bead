//! Test harness: a real mosquitto on a free loopback port, a subscriber that records what it sees,
//! and the daemon run as a child process, exactly as systemd would run it.
#![allow(dead_code)]

pub mod foreign;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sonoedge-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn mosquitto_bin() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("mosquitto is not installed: run tests/run-all.sh (it installs it) or apt-get install mosquitto");
}

/// A mosquitto process on 127.0.0.1; killed on drop.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    conf: PathBuf,
}

impl Broker {
    /// Plain listener; `extra` is appended to the listener's section (e.g. TLS settings).
    pub fn start(dir: &Path, extra: &str) -> Broker {
        let port = free_port();
        Self::start_on(dir, port, extra)
    }

    /// A whole configuration `conf` (a guide's, say) with a plain listener on 127.0.0.1 appended:
    /// that listener is `port`, and it takes `conf`'s global settings.
    pub fn start_with_conf(dir: &Path, conf: &str) -> Broker {
        let port = free_port();
        let path = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(&path, format!("{conf}\nlistener {port} 127.0.0.1\n")).unwrap();
        let mut b = Broker { port, child: None, conf: path };
        b.restart();
        b
    }

    pub fn start_on(dir: &Path, port: u16, extra: &str) -> Broker {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}\n")).unwrap();
        let mut b = Broker { port, child: None, conf };
        b.restart();
        b
    }

    pub fn restart(&mut self) {
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        wait_for(Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", self.port)).is_ok());
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The sonoedge binary under test. For a cross-built target, CI names the emulator that runs it in
/// SONOEDGE_TEST_RUNNER (e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`): without binfmt_misc a
/// test binary running under qemu-user cannot exec another foreign binary directly.
pub fn sonoedge() -> Command {
    let bin = env!("CARGO_BIN_EXE_sonoedge");
    match std::env::var("SONOEDGE_TEST_RUNNER").ok().filter(|r| !r.trim().is_empty()) {
        Some(runner) => {
            let mut words = runner.split_whitespace();
            let mut cmd = Command::new(words.next().unwrap());
            cmd.args(words).arg(bin);
            // `bench --sweep` runs itself per configuration; under qemu it needs the runner too.
            cmd.env("SONOEDGE_SWEEP_CHILD", format!("{runner} {bin}"));
            cmd
        }
        None => Command::new(bin),
    }
}

/// How much slower than native this run is (SONOEDGE_TEST_TIME_SCALE, set by CI under qemu);
/// every deadline in these tests is multiplied by it. Deadlines are upper bounds, never timings.
pub fn time_scale() -> u32 {
    std::env::var("SONOEDGE_TEST_TIME_SCALE").ok().and_then(|s| s.parse().ok()).filter(|&k| k >= 1).unwrap_or(1)
}

pub fn wait_for(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout * time_scale();
    while Instant::now() < until {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Value,
    pub retained: bool,
    pub at: Instant,
}

/// Subscribes to `filter` and records every message; reconnects by itself if the broker restarts.
/// A payload that is not JSON is recorded as a JSON string.
pub struct Subscriber {
    pub messages: Arc<Mutex<Vec<Msg>>>,
    client: Client,
}

impl Subscriber {
    pub fn start(port: u16, filter: &str) -> Subscriber {
        Subscriber::start_as(port, filter, None)
    }

    /// [`Subscriber::start`] logged in as `(user, password)`.
    pub fn start_as(port: u16, filter: &str, login: Option<(&str, &str)>) -> Subscriber {
        let mut o = MqttOptions::new(format!("test-sub-{}-{}", std::process::id(), free_port()), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        if let Some((user, password)) = login {
            o.set_credentials(user, password);
        }
        let (client, mut connection) = Client::new(o, 64);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (sink, sub, filter) = (messages.clone(), client.clone(), filter.to_string());
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub.subscribe(&filter, QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let text = || Value::String(String::from_utf8_lossy(&p.payload).into_owned());
                        let payload = serde_json::from_slice(&p.payload).unwrap_or_else(|_| text());
                        sink.lock().unwrap().push(Msg { topic: p.topic.clone(), payload, retained: p.retain, at: Instant::now() });
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        Subscriber { messages, client }
    }

    pub fn all(&self) -> Vec<Msg> {
        self.messages.lock().unwrap().clone()
    }

    pub fn on(&self, suffix: &str) -> Vec<Msg> {
        self.all().into_iter().filter(|m| m.topic.ends_with(suffix)).collect()
    }

    /// Waits until a message on a topic ending in `suffix` satisfies `pred`.
    pub fn wait(&self, timeout: Duration, suffix: &str, pred: impl Fn(&Value) -> bool) -> Option<Msg> {
        let mut found = None;
        wait_for(timeout, || {
            found = self.on(suffix).into_iter().find(|m| pred(&m.payload));
            found.is_some()
        });
        found
    }

    /// Publishes at QoS 1 from this client (what a subscriber's ACL lets it write is tested so).
    pub fn publish(&self, topic: &str, payload: &str) {
        let _ = self.client.try_publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec());
    }

    pub fn stop(self) {
        let _ = self.client.disconnect();
    }
}

/// The daemon as a child process.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(dir: &Path, config: &str) -> Daemon {
        let cfg = dir.join("sonoedge.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = dir.join("daemon.log");
        let child = sonoedge()
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let until = Instant::now() + timeout * time_scale();
        while Instant::now() < until {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Checks `value` against a committed schema in src/publish/schemas/; panics with every violation.
pub fn assert_schema(schema: &str, value: &Value) {
    let text = std::fs::read_to_string(repo("src/publish/schemas").join(schema)).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{value} violates {}: {errors:?}", schema["$id"]);
}
