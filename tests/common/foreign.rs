//! Brokers other than mosquitto for the interop tests: RabbitMQ's MQTT plugin and NATS's MQTT
//! gateway from their Debian packages, each a private instance on free loopback ports with its
//! state in a scratch folder, and a TCP proxy that counts the connections made through it.
//!
//! Opt-in by availability: a broker that is not installed gives `None` (the test says it skipped),
//! unless SONOEDGE_INTEROP_REQUIRED=1 (tests/run-all.sh's interop stage), where it is a failure.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::free_port;

/// A broker process (and its helpers, in one process group); killed on drop.
pub struct Foreign {
    pub name: &'static str,
    /// The Debian package's version, e.g. `3.10.8-1.1+deb12u1`.
    pub version: String,
    pub port: u16,
    /// How long the last start took until its MQTT port accepted connections.
    pub started_in: Duration,
    command: Vec<(String, String)>,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    helpers: Vec<Child>,
}

/// The first of `paths` that exists; `None` (and a note) if none does and the test is not required.
fn installed(paths: &[&str], package: &str) -> Option<PathBuf> {
    let found = paths.iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        let program = paths[0];
        let required = std::env::var("SONOEDGE_INTEROP_REQUIRED").is_ok_and(|v| v == "1");
        assert!(!required, "{program} is not installed: apt-get install {package} (SONOEDGE_INTEROP_REQUIRED=1)");
        eprintln!("SKIPPED: {program} is not installed (apt-get install {package}); this interop test checked nothing");
    }
    found
}

pub fn package_version(package: &str) -> String {
    let out = Command::new("dpkg-query").args(["-W", "-f", "${Version}", package]).output();
    out.ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).filter(|v| !v.is_empty()).unwrap_or("unknown".into())
}

impl Foreign {
    /// RabbitMQ with the MQTT plugin, anonymous logins as guest (allowed from loopback), every
    /// listener (AMQP, MQTT, Erlang distribution, its own epmd) on 127.0.0.1.
    pub fn rabbitmq(dir: &Path) -> Option<Foreign> {
        Foreign::rabbitmq_node(dir, None)
    }

    /// A second RabbitMQ node, in `dir`, joined to `first`'s cluster (its epmd and Erlang cookie,
    /// then `rabbitmqctl join_cluster`); its own MQTT port.
    pub fn rabbitmq_joined(dir: &Path, first: &Foreign) -> Foreign {
        let cookie = ".erlang.cookie";
        std::fs::copy(first.dir().join(cookie), dir.join(cookie)).expect("the first node's Erlang cookie");
        let node = Foreign::rabbitmq_node(dir, Some(first)).expect("RabbitMQ is installed: the first node runs");
        let join = format!("rabbitmqctl stop_app && rabbitmqctl join_cluster {} && rabbitmqctl start_app", first.env("RABBITMQ_NODENAME"));
        node.rabbitmqctl(dir, &join);
        let up = super::wait_for(Duration::from_secs(60), || TcpStream::connect(("127.0.0.1", node.port)).is_ok());
        assert!(up, "the joined node's MQTT listener did not come back; its log:\n{}", node.log_text());
        node
    }

    /// The first node of a cluster (`join` None: its own epmd), or a later one (`join`: the first's
    /// epmd; the caller joins it).
    fn rabbitmq_node(dir: &Path, join: Option<&Foreign>) -> Option<Foreign> {
        // The script itself, not /usr/sbin's wrapper (which switches to the rabbitmq user and its files).
        let program = installed(&["/usr/lib/rabbitmq/bin/rabbitmq-server"], "rabbitmq-server")?;
        let epmd_bin = installed(&["/usr/bin/epmd"], "erlang-base")?;
        let (amqp, mqtt, dist) = (free_port(), free_port(), free_port());
        let epmd = join.map_or_else(free_port, |f| f.env("ERL_EPMD_PORT").parse().expect("an epmd port"));
        let conf = dir.join("rabbitmq.conf");
        let text = format!(
            "listeners.tcp.default = 127.0.0.1:{amqp}\nmqtt.listeners.tcp.default = 127.0.0.1:{mqtt}\nmqtt.allow_anonymous = true\n"
        );
        std::fs::write(&conf, text).unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[rabbitmq_mqtt].\n").unwrap();
        let d = |p: &str| dir.join(p).display().to_string();
        let env = [
            ("HOME", d("")),
            ("RABBITMQ_NODENAME", format!("sonoedge-test-{mqtt}@localhost")),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
            ("RABBITMQ_NODE_PORT", amqp.to_string()),
            ("RABBITMQ_DIST_PORT", dist.to_string()),
            ("ERL_EPMD_ADDRESS", "127.0.0.1".into()),
            ("ERL_EPMD_PORT", epmd.to_string()),
            ("RABBITMQ_MNESIA_BASE", d("mnesia")),
            ("RABBITMQ_LOG_BASE", d("log")),
            ("RABBITMQ_CONFIG_FILE", conf.display().to_string()),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins")),
            ("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}".into()),
        ];
        let mut f = Foreign::new("RabbitMQ", package_version("rabbitmq-server"), mqtt, program, vec![], dir);
        f.command = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        if join.is_none() {
            let mut daemon = Command::new(epmd_bin);
            daemon.args(["-port", &epmd.to_string(), "-address", "127.0.0.1"]).stdout(Stdio::null()).stderr(Stdio::null());
            f.helpers.push(daemon.spawn().expect("start epmd"));
        }
        f.restart(Duration::from_secs(120));
        Some(f)
    }

    /// NATS with JetStream (which its MQTT support needs) and a server_name, on 127.0.0.1.
    pub fn nats(dir: &Path) -> Option<Foreign> {
        let store = dir.join("jetstream");
        Foreign::nats_with(dir, |mqtt| {
            format!(
                "jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 256MB }}\n\
                 mqtt {{ listen: 127.0.0.1:{mqtt} }}\n",
                store.display()
            )
        })
    }

    /// NATS with the configuration `conf(mqtt_port)` gives (JetStream and an `mqtt` block listening
    /// on 127.0.0.1 at that port), a server_name and its client port on 127.0.0.1.
    pub fn nats_with(dir: &Path, conf: impl FnOnce(u16) -> String) -> Option<Foreign> {
        let program = installed(&["/usr/bin/nats-server", "/usr/sbin/nats-server"], "nats-server")?;
        let (client, mqtt) = (free_port(), free_port());
        let path = dir.join("nats.conf");
        std::fs::write(&path, format!("server_name: sonoedge_test\nlisten: 127.0.0.1:{client}\n{}", conf(mqtt))).unwrap();
        let conf = path;
        let args = vec!["-c".to_string(), conf.display().to_string()];
        let mut f = Foreign::new("NATS", package_version("nats-server"), mqtt, program, args, dir);
        f.restart(Duration::from_secs(30));
        Some(f)
    }

    fn new(name: &'static str, version: String, port: u16, program: PathBuf, args: Vec<String>, dir: &Path) -> Foreign {
        let log = dir.join(format!("{}.log", name.to_lowercase()));
        Foreign { name, version, port, started_in: Duration::ZERO, command: vec![], program, args, log, child: None, helpers: vec![] }
    }

    /// Starts the broker and waits up to `within` for its MQTT port.
    pub fn restart(&mut self, within: Duration) {
        let t0 = Instant::now();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.command.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group: RabbitMQ's script starts the Erlang VM as a child.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
        let up = super::wait_for(within, || TcpStream::connect(("127.0.0.1", self.port)).is_ok());
        assert!(up, "{} did not listen within {within:?}; its log:\n{}", self.name, self.log_text());
        self.started_in = t0.elapsed();
        eprintln!("{} {} listening for MQTT after {:.1} s", self.name, self.version, self.started_in.as_secs_f64());
    }

    /// Kills the broker's process group (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the process group of a child this harness started in a group of its own.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of one of the node's environment variables (RabbitMQ: its name, epmd port...).
    fn env(&self, key: &str) -> &str {
        self.command.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("{} has no {key}", self.name))
    }

    /// The scratch folder the broker's state and log are in.
    pub fn dir(&self) -> PathBuf {
        self.log.parent().expect("the log is in the broker's folder").to_path_buf()
    }

    /// Runs a shell line that calls `rabbitmqctl` (as the fleet guide writes it) against this node:
    /// in `dir`, with the node's environment (its name, epmd port and cookie's home), so the line
    /// needs no `-n`. Panics with rabbitmqctl's words if it fails.
    pub fn rabbitmqctl(&self, dir: &Path, line: &str) {
        let path = format!("/usr/lib/rabbitmq/bin:{}", std::env::var("PATH").unwrap_or_default());
        let out = Command::new("sh")
            .args(["-c", line])
            .current_dir(dir)
            .envs(self.command.iter().map(|(k, v)| (k, v)))
            .env("PATH", path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{line}: {said}");
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        self.kill();
        for h in &mut self.helpers {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

/// A loopback TCP proxy to `target` that counts the connections accepted.
pub struct CountingProxy {
    pub port: u16,
    connections: Arc<AtomicUsize>,
}

impl CountingProxy {
    pub fn start(target: u16) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::Relaxed);
                if let Ok(server) = TcpStream::connect(("127.0.0.1", target)) {
                    pipe(client, server);
                }
            }
        });
        CountingProxy { port, connections }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

/// Copies both ways; when one side closes, both are shut.
fn pipe(a: TcpStream, b: TcpStream) {
    for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    }
}
