//! The daemon's side of systemd's notify protocol, checked without systemd: the test owns
//! NOTIFY_SOCKET (a Unix datagram socket in a scratch folder) and reads what `Type=notify` and
//! `WatchdogSec=` would see. READY=1 and WATCHDOG=1 report that the daemon and its threads run,
//! not that frames or a broker are there: a cart switched off overnight must not be a restart loop.

use std::collections::VecDeque;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{self, *};

const SIGTERM: i32 = 15;
const READY: &str = "READY=1";
const WATCHDOG: &str = "WATCHDOG=1";

/// What systemd would receive: every state line the daemon sent, in order.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    pending: VecDeque<String>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("binding {}: {e}", path.display()));
        NotifySocket { socket, path, pending: VecDeque::new() }
    }

    /// The next state line (e.g. `READY=1`), or None when `timeout` passes first.
    fn next(&mut self, timeout: Duration) -> Option<String> {
        let until = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while self.pending.is_empty() {
            let left = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
            self.socket.set_read_timeout(Some(left)).unwrap();
            // A timeout (WouldBlock / TimedOut) ends the loop at the next check of `left`.
            let Ok(n) = self.socket.recv(&mut buf) else { continue };
            let text = String::from_utf8_lossy(&buf[..n]);
            self.pending.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
        }
        self.pending.pop_front()
    }

    /// Every line received until `timeout` passes.
    fn collect_for(&mut self, timeout: Duration) -> Vec<String> {
        let until = Instant::now() + timeout;
        let mut lines = Vec::new();
        while let Some(l) = self.next(until.saturating_duration_since(Instant::now())) {
            lines.push(l);
        }
        lines
    }
}

fn config(url: &str, device: &str, source: &str, mqtt_extra: &str) -> String {
    format!(
        "device_id = \"{device}\"\n[model]\npath = \"{model}\"\n[source]\n{source}\n[pipeline]\nmax_fps = 0\n[mqtt]\nurl = \"{url}\"\nstats_interval_s = 1\n{mqtt_extra}\n",
        model = repo("models/tiny-random/int8").display()
    )
}

const SYNTHETIC: &str = "kind = \"synthetic\"\nseed = 3\nfps = 20\n";

/// A broker URL on a loopback port nobody listens on.
fn absent_broker() -> String {
    format!("mqtt://127.0.0.1:{}", free_port())
}

/// `sonoedge run` as systemd starts it: NOTIFY_SOCKET and WATCHDOG_USEC in the environment.
fn spawn_notified(dir: &Path, notify: &NotifySocket, config: &str) -> Daemon {
    let cfg = dir.join("sonoedge.toml");
    std::fs::write(&cfg, config).unwrap();
    let log = dir.join("daemon.log");
    let child = common::sonoedge()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "2000000")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Daemon { child, log }
}

/// READY=1 first, within 30 s (systemd's TimeoutStartSec is 180 s on the Pi), then WATCHDOG=1
/// at least 5 times in 3 s (the daemon pets every 100 ms; WatchdogSec is 30 s).
fn assert_ready_then_watchdog(notify: &mut NotifySocket, d: &Daemon) {
    let first = notify.next(Duration::from_secs(30));
    assert_eq!(first.as_deref(), Some(READY), "READY=1 must come first; log:\n{}", d.log_text());
    let lines = notify.collect_for(Duration::from_secs(3));
    let pets = lines.iter().filter(|l| *l == WATCHDOG).count();
    assert!(pets >= 5, "{pets} WATCHDOG=1 in 3 s: {lines:?}; log:\n{}", d.log_text());
    assert!(lines.iter().all(|l| l == WATCHDOG), "only watchdog pets after READY: {lines:?}");
}

fn assert_sigterm_exits_0(d: &mut Daemon) {
    d.signal(SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0), "log:\n{}", d.log_text());
}

#[test]
fn ready_and_watchdog_arrive_while_the_broker_is_down_and_sigterm_exits_0() {
    let dir = scratch("notify-nobroker");
    let mut notify = NotifySocket::bind(&dir);
    let mut d = spawn_notified(&dir, &notify, &config(&absent_broker(), "notify-nobroker", SYNTHETIC, ""));
    assert_ready_then_watchdog(&mut notify, &d);
    assert_sigterm_exits_0(&mut d);
}

#[test]
fn ready_and_watchdog_arrive_while_the_source_and_the_broker_are_both_absent() {
    let dir = scratch("notify-nosource");
    let mut notify = NotifySocket::bind(&dir);
    let source = format!("kind = \"images\"\npath = \"{}\"\nfps = 10\n", dir.join("absent").display());
    let mut d = spawn_notified(&dir, &notify, &config(&absent_broker(), "notify-nosource", &source, ""));
    assert_ready_then_watchdog(&mut notify, &d);
    // Still petting well past the first seconds: a lost source is a state, not a stalled loop.
    std::thread::sleep(Duration::from_secs(2));
    let pets = notify.collect_for(Duration::from_secs(2)).iter().filter(|l| *l == WATCHDOG).count();
    assert!(pets >= 5, "{pets} WATCHDOG=1 in 2 s after 5 s without a source; log:\n{}", d.log_text());
    assert_sigterm_exits_0(&mut d);
}

#[test]
fn a_bad_config_exits_78_and_never_tells_systemd_it_is_ready() {
    let dir = scratch("notify-badcfg");
    let mut notify = NotifySocket::bind(&dir);
    let mut d = spawn_notified(&dir, &notify, &config(&absent_broker(), "notify-badcfg", SYNTHETIC, "qos = 7"));
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(78), "log:\n{}", d.log_text());
    assert!(d.log_text().contains("mqtt.qos"), "the message must name the key: {}", d.log_text());
    // The process is gone, so whatever it sent is already queued on the socket.
    let lines = notify.collect_for(Duration::from_millis(200));
    assert!(lines.is_empty(), "a process that exits 78 must send nothing: {lines:?}");
}
