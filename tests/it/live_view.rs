//! The live view (view/index.html with its bundled view.js) in a real headless Chromium, driven over
//! the DevTools protocol on a pipe, against mosquitto's websockets listener and the daemon on the
//! synthetic source: the page shows the test's device_id, an input state change, a finding and a
//! freeze captured after the test started, the cart marked stale once it goes quiet (SIGSTOP: its
//! connection stays open, keep-alive 30 s) and offline (its Last Will) once the daemon is SIGKILLed.
//! Screenshots go to the test's scratch dir (paths printed).
//!
//! Ignored by a plain `cargo test` (it needs Chromium, and would run once more per ARM target):
//! tests/run-all.sh's live-view stage installs Chromium and runs it with `--ignored`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::daemon_mqtt::{config, SYNTHETIC};
use super::fleet_doc::{GuideBroker, PASSWORD};
use crate::common::*;

const SIGKILL: i32 = 9;
const SIGSTOP: i32 = 19;
/// Upper bounds on a loaded 2-core machine; each is polled, never slept.
const APPEAR: Duration = Duration::from_secs(90);
const EVENTS: Duration = Duration::from_secs(90);
const STALE: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs Chromium (apt-get install chromium): tests/run-all.sh's live-view stage runs it"]
fn the_live_view_shows_the_cart_a_state_change_a_new_finding_and_marks_it_stale_after_sigkill() {
    let t0 = Instant::now();
    let dir = scratch("live-view");
    let ws = free_port();
    let broker = Broker::start(&dir, &format!("listener {ws} 127.0.0.1\nprotocol websockets"));
    let device = format!("view-{}", std::process::id());
    let mut browser = Browser::launch(&dir, &page_url(ws), &[]);
    let started = browser.eval("new Date().toISOString()").as_str().unwrap().to_string();
    let mut d = Daemon::spawn(&dir, &config(&broker.url(), &device, SYNTHETIC, "keep_alive_s = 30"));
    let log = |d: &Daemon| format!("daemon log:\n{}\nchromium log: {}", d.log_text(), dir.join("chromium.log").display());

    let cart = browser.wait_cart(&device, APPEAR, |c| !c.is_null());
    assert!(cart.is_object(), "the page never showed {device}: {}; {}", browser.state(), log(&d));
    assert_eq!(browser.eval(&format!("document.querySelector('article[data-device=\"{device}\"] h2').textContent")), json!(device));
    let changed = browser.wait_cart(&device, EVENTS, |c| c["input_changes"].as_u64() >= Some(1));
    assert!(changed["input_changes"].as_u64() >= Some(1), "no input state change shown: {changed}; {}", log(&d));
    let newer = |c: &Value, event: &str| {
        let after = |f: &Value| f["captured_at"].as_str() >= Some(started.as_str()) && (event.is_empty() || f["event"] == event);
        c["findings"].as_array().is_some_and(|f| f.iter().any(after))
    };
    let found = browser.wait_cart(&device, EVENTS, |c| newer(c, ""));
    assert!(newer(&found, ""), "no finding captured after {started} shown: {found}; {}", log(&d));
    // The synthetic source freezes every few segments: the freeze event is shown too.
    let found = browser.wait_cart(&device, EVENTS, |c| newer(c, "freeze") && c["inputs_seen"].as_array().is_some_and(|s| s.len() >= 3));
    assert!(newer(&found, "freeze"), "no freeze captured after {started} shown: {found}; {}", log(&d));
    assert_eq!(found["stale"], false, "a live cart shown as stale: {found}");
    eprintln!("live view, live: {found}");
    let live_png = browser.screenshot(&dir.join("live-view-live.png"));
    let tablet_png = tablet_portrait_fits(&mut browser, &device, &dir);

    // Frozen, its connection open (keep-alive 30 s: no Last Will yet): stale because it went quiet.
    d.signal(SIGSTOP);
    let quiet = browser.wait_cart(&device, STALE, |c| c["health"] == "stale");
    assert_eq!(quiet["health"], "stale", "a cart gone quiet (SIGSTOP) was not marked stale: {quiet}");
    eprintln!("live view, quiet after SIGSTOP: {quiet}");
    let quiet_png = browser.screenshot(&dir.join("live-view-quiet.png"));
    d.signal(SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    let stale = browser.wait_cart(&device, STALE, |c| c["health"] == "offline");
    assert_eq!(stale["health"], "offline", "the cart was not marked offline (its Last Will) after SIGKILL: {stale}");
    assert_eq!(stale["stale"], true, "an offline cart not marked stale: {stale}");
    let badge = browser.eval(&format!("document.querySelector('article[data-device=\"{device}\"] .badge').textContent"));
    assert!(badge.as_str().is_some_and(|b| b.contains("OFFLINE") || b.contains("STALE")), "badge {badge}");
    eprintln!("live view, after SIGKILL: {stale} (badge {badge})");
    let stale_png = browser.screenshot(&dir.join("live-view-stale.png"));
    eprintln!("screenshots: {} {} {} {}", live_png.display(), tablet_png.display(), quiet_png.display(), stale_png.display());
    eprintln!("live view test took {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
#[ignore = "needs Chromium (apt-get install chromium): tests/run-all.sh's live-view stage runs it"]
fn the_live_view_reads_the_fleet_guides_wss_listener_with_the_views_password_and_shows_why_a_wrong_one_fails() {
    let dir = scratch("live-view-wss");
    let g = GuideBroker::start(&dir);
    // The desk machine trusts the broker's certificate: here by its key (the guide installs the CA).
    let trust = format!("--ignore-certificate-errors-spki-list={}", spki_sha256(&dir.join("broker.crt")));
    let url = format!("{}?url=wss://localhost:{}&prefix=sonoedge&username=view", page_file(), g.ws);
    let mut browser = Browser::launch(&dir, &url, &[trust]);
    let d = Daemon::spawn(&dir, &g.cart(&dir, "cart-a", Some("cart-a")));

    // As the user does it: the password typed into the form (never in the URL), Connect pressed.
    let press_connect = |b: &mut Browser, password: &str| {
        b.eval(&format!(
            "document.getElementById('f-pass').value = {}; document.getElementById('settings').requestSubmit(); true",
            json!(password)
        ));
    };
    // (The page target starts as about:blank; the form is there once index.html has loaded.)
    let loaded = wait_for(APPEAR, || browser.eval("location.protocol === 'file:' && document.readyState === 'complete'") == json!(true));
    assert!(loaded, "the page did not load");
    press_connect(&mut browser, "not-the-password");
    let mut detail = Value::Null;
    let refused = wait_for(APPEAR, || {
        detail = browser.eval("document.getElementById('conn-detail').textContent");
        detail.as_str().is_some_and(|t| t.to_lowercase().contains("not authorized"))
    });
    assert!(refused, "a wrong password: the page did not say the broker refused it: {detail}; state {}", browser.state());
    assert_ne!(browser.state()["connection"], "connected", "connected with a wrong password");
    assert!(browser.state()["carts"]["cart-a"].is_null(), "a cart shown without a session");
    eprintln!("live view over wss, wrong password: {detail}");

    press_connect(&mut browser, PASSWORD);
    let cart = browser.wait_cart("cart-a", APPEAR, |c| c["status"] == "online");
    assert_eq!(
        cart["status"],
        "online",
        "over wss with the view's password the page never showed cart-a online: {}; daemon log:\n{}",
        browser.state(),
        d.log_text()
    );
    assert_eq!(browser.state()["connection"], "connected");
    eprintln!("live view over wss as user view: {cart}");
    let png = browser.screenshot(&dir.join("live-view-wss.png"));
    eprintln!("screenshot: {}", png.display());
}

/// The base64 SHA-256 of a certificate's public key (SPKI), as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it.
fn spki_sha256(cert: &Path) -> String {
    let cmd = format!(
        "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        cert.display()
    );
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "openssl: the SPKI hash of {}", cert.display());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// At a tablet's portrait width (800 x 1280, touch) the page has no horizontal scroll and the cart's
/// card fits the width; back to the desk size after. Returns the screenshot.
fn tablet_portrait_fits(browser: &mut Browser, device: &str, dir: &Path) -> PathBuf {
    let tablet = json!({"width": 800, "height": 1280, "deviceScaleFactor": 1, "mobile": true});
    browser.call("Emulation.setDeviceMetricsOverride", tablet, true);
    let card = format!("document.querySelector('article[data-device=\"{device}\"]').getBoundingClientRect().right");
    let fits = browser.eval(&format!("[document.documentElement.scrollWidth, window.innerWidth, {card}]"));
    let [scroll, width, right] = [0, 1, 2].map(|i| fits[i].as_f64().unwrap_or(f64::MAX));
    assert!(scroll <= width && right <= width, "at 800 px wide the page scrolls sideways or the card overflows: {fits}");
    let png = browser.screenshot(&dir.join("live-view-tablet.png"));
    browser.call("Emulation.clearDeviceMetricsOverride", json!({}), true);
    png
}

fn page_url(ws: u16) -> String {
    format!("{}?url=ws://127.0.0.1:{ws}&prefix=sonoedge&connect=1", page_file())
}

fn page_file() -> String {
    assert!(repo("view/view.js").exists(), "view/view.js is missing: run view/build.sh");
    format!("file://{}", repo("view/index.html").display())
}

fn chromium_bin() -> PathBuf {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/snap/bin/chromium"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("Chromium is not installed: apt-get install -y chromium (tests/run-all.sh's live-view stage installs it)");
}

/// Headless Chromium with one page, driven over `--remote-debugging-pipe` (fd 3 in, fd 4 out,
/// NUL-terminated JSON); killed on drop.
struct Browser {
    child: Child,
    to_browser: File,
    from_browser: Receiver<Value>,
    session: String,
    next_id: u64,
}

impl Browser {
    fn launch(dir: &Path, url: &str, flags: &[String]) -> Browser {
        let (cmd_r, cmd_w) = pipe();
        let (resp_r, resp_w) = pipe();
        let mut cmd = Command::new(chromium_bin());
        cmd.args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars", "--remote-debugging-pipe"])
            .arg("--window-size=1280,1200")
            .arg(format!("--user-data-dir={}", dir.join("chromium-profile").display()))
            .args(flags)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("chromium.log")).unwrap());
        // SAFETY: only dup2(2) between fork and exec; dup2 clears close-on-exec on fds 3 and 4.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(cmd_r, 3) < 0 || libc::dup2(resp_w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start chromium");
        // SAFETY: the fds are ours (from pipe()), each wrapped once.
        let (to_browser, from) = unsafe {
            libc::close(cmd_r);
            libc::close(resp_w);
            (File::from_raw_fd(cmd_w), File::from_raw_fd(resp_r))
        };
        let mut b = Browser { child, to_browser, from_browser: reader(from), session: String::new(), next_id: 0 };
        b.session = b.attach_page();
        b
    }

    /// Attaches to the page target Chromium opened for the URL.
    fn attach_page(&mut self) -> String {
        let mut target = None;
        wait_for(APPEAR, || {
            let targets = self.call("Target.getTargets", json!({}), false);
            target = targets["targetInfos"].as_array().and_then(|t| t.iter().find(|t| t["type"] == "page").cloned());
            target.is_some()
        });
        let target = target.expect("Chromium opened no page: see chromium.log in the test's scratch dir");
        let r = self.call("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true}), false);
        r["sessionId"].as_str().expect("a session id").to_string()
    }

    /// Sends one DevTools command and waits for its answer; panics with the protocol's error.
    fn call(&mut self, method: &str, params: Value, on_page: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if on_page {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to_browser.write_all(&bytes).expect("write to Chromium's debugging pipe (did it exit? see chromium.log)");
        let until = Instant::now() + Duration::from_secs(60) * time_scale();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let m = self.from_browser.recv_timeout(left).unwrap_or_else(|_| panic!("Chromium did not answer {method} within 60 s"));
            if m["id"] == id {
                assert!(m["error"].is_null(), "{method}: {}", m["error"]);
                return m["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page; its value as JSON.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": expr, "returnByValue": true}), true);
        assert!(r["exceptionDetails"].is_null(), "{expr}: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    /// What the page shows, from its `<pre id="state">` (see view/src/app.js `exportState`).
    fn state(&mut self) -> Value {
        let text = self.eval("document.getElementById('state')?.textContent ?? 'null'");
        serde_json::from_str(text.as_str().unwrap_or("null")).unwrap_or(Value::Null)
    }

    /// Polls the page until the cart's exported record satisfies `ok`; returns the last one seen.
    fn wait_cart(&mut self, device: &str, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        wait_for(timeout, || {
            last = self.state()["carts"][device].clone();
            std::thread::sleep(Duration::from_millis(200));
            ok(&last)
        });
        last
    }

    fn screenshot(&mut self, path: &Path) -> PathBuf {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}), true);
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "Chromium's screenshot is not a PNG");
        std::fs::write(path, png).unwrap();
        path.to_path_buf()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipe whose two ends are above fd 4 (so dup2 onto 3 and 4 never meets them) and close on exec.
fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array; fcntl duplicates fds we own.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0, "pipe2");
        let high = fds.map(|fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10));
        for fd in fds {
            libc::close(fd);
        }
        (high[0], high[1])
    }
}

/// Reads NUL-terminated JSON messages from Chromium into a channel.
fn reader(from: File) -> Receiver<Value> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(from);
        let mut buf = Vec::new();
        while r.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
            if buf.last() == Some(&0) {
                buf.pop();
            }
            if let Ok(v) = serde_json::from_slice(&buf) {
                if tx.send(v).is_err() {
                    return;
                }
            }
            buf.clear();
        }
    });
    rx
}

/// Standard base64 (the screenshot's encoding), padding ignored.
fn base64_decode(s: &str) -> Vec<u8> {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ABC.iter().position(|&a| a == c).expect("base64 character") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
