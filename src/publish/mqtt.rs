//! MQTT publishing with rumqttc: topics under `<prefix>/<device_id>/`, retained status with a Last
//! Will, an offline queue that drops its oldest entry (counted) when full, and reconnection with
//! exponential backoff and jitter (rumqttc reconnects immediately on its own).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

use super::{Identity, Outgoing, PublishCounters, Publisher, Status};

/// Everything needed to connect, resolved from config and environment.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub url: String,
    pub qos: u8,
    pub topic_prefix: String,
    pub keep_alive_s: u64,
    pub queue_capacity: usize,
    pub username: Option<String>,
    /// Never logged.
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt.url {0:?}: {1}")]
    Url(String, String),
    #[error("cannot read {0}: {1}; check mqtt.ca_file / client_cert / client_key")]
    Tls(PathBuf, std::io::Error),
}

/// The topics of one device.
#[derive(Debug, Clone)]
pub struct Topics {
    pub status: String,
    pub prediction: String,
    pub stats: String,
}

impl Topics {
    pub fn new(prefix: &str, device_id: &str) -> Topics {
        let base = format!("{prefix}/{device_id}");
        Topics { status: format!("{base}/status"), prediction: format!("{base}/prediction"), stats: format!("{base}/stats") }
    }
}

struct Shared {
    connected: AtomicBool,
    /// Set before our own DISCONNECT, so the closed connection that follows is not reported as a loss.
    closing: AtomicBool,
    /// The DISCONNECT packet went out (the broker will not publish the Last Will).
    disconnect_sent: AtomicBool,
    stop: AtomicBool,
    queue: Mutex<VecDeque<Outgoing>>,
    counters: Mutex<PublishCounters>,
    /// The latest status, republished as `online` on every (re)connect.
    status: Mutex<Option<Status>>,
    last_poll: Mutex<Instant>,
}

pub struct MqttPublisher {
    client: Client,
    shared: Arc<Shared>,
    ctx: Arc<Ctx>,
    events: Option<JoinHandle<()>>,
}

/// Immutable facts the publisher and its event thread share.
struct Ctx {
    topics: Topics,
    qos: QoS,
    identity: Identity,
    capacity: usize,
}

impl MqttPublisher {
    /// Starts the client and its event thread; connecting happens in the background, so an absent
    /// broker is a reported state, not an error.
    pub fn start(settings: &MqttSettings, identity: Identity, offline: &Status) -> Result<MqttPublisher, MqttError> {
        let topics = Topics::new(&settings.topic_prefix, &identity.device_id);
        let options = options(settings, &identity.device_id, &topics, offline)?;
        let (client, connection) = Client::new(options, 64);
        let ctx = Arc::new(Ctx { topics, qos: qos(settings.qos), identity, capacity: settings.queue_capacity });
        let shared = Arc::new(Shared {
            connected: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            disconnect_sent: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::with_capacity(settings.queue_capacity)),
            counters: Mutex::new(PublishCounters::default()),
            status: Mutex::new(None),
            last_poll: Mutex::new(Instant::now()),
        });
        let events = {
            let (client, shared, ctx) = (client.clone(), shared.clone(), ctx.clone());
            std::thread::Builder::new()
                .name("mqtt-events".into())
                .spawn(move || event_loop(connection, &client, &shared, &ctx))
                .expect("spawn mqtt thread")
        };
        Ok(MqttPublisher { client, shared, ctx, events: Some(events) })
    }

    pub fn topics(&self) -> &Topics {
        &self.ctx.topics
    }
}

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

fn options(s: &MqttSettings, device_id: &str, topics: &Topics, offline: &Status) -> Result<MqttOptions, MqttError> {
    let mut o = connect_options(s, &format!("sonoedge-{device_id}"))?;
    o.set_clean_session(true);
    let will = serde_json::to_vec(offline).expect("status serializes");
    o.set_last_will(LastWill::new(&topics.status, will, QoS::AtLeastOnce, true));
    Ok(o)
}

/// Broker address, keep-alive, credentials and TLS from the settings: what every connection of
/// sonoedge's (the publisher's, `check`'s probe) shares.
pub fn connect_options(s: &MqttSettings, client_id: &str) -> Result<MqttOptions, MqttError> {
    let (tls, host, port) = parse_url(&s.url)?;
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(s.keep_alive_s));
    if let Some(user) = &s.username {
        o.set_credentials(user, s.password.clone().unwrap_or_default());
    }
    if tls {
        o.set_transport(Transport::tls_with_config(tls_config(s, &s.url)?));
    }
    Ok(o)
}

/// `mqtt://host[:1883]` or `mqtts://host[:8883]` -> (tls, host, port).
pub fn parse_url(url: &str) -> Result<(bool, String, u16), MqttError> {
    let bad = |why: &str| MqttError::Url(url.to_string(), why.to_string());
    let (tls, rest) = match url.split_once("://") {
        Some(("mqtt", r)) => (false, r),
        Some(("mqtts", r)) => (true, r),
        _ => return Err(bad("must start with mqtt:// or mqtts://")),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("the port is not a number 1-65535"))?),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(bad("expected mqtt://host:port (credentials go in mqtt.username and a password file)"));
    }
    Ok((tls, host.trim_matches(['[', ']']).to_string(), port))
}

fn tls_config(s: &MqttSettings, url: &str) -> Result<TlsConfiguration, MqttError> {
    // ring is the process-wide rustls provider; a second install attempt is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| MqttError::Tls(p.clone(), e));
    let Some(ca_path) = &s.ca_file else {
        return Err(MqttError::Url(url.into(), "mqtts:// needs mqtt.ca_file (the CA that signed the broker's certificate)".into()));
    };
    let client_auth = match (&s.client_cert, &s.client_key) {
        (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
        (None, None) => None,
        _ => return Err(MqttError::Url(url.into(), "mqtt.client_cert and mqtt.client_key go together".into())),
    };
    Ok(TlsConfiguration::Simple { ca: read(ca_path)?, alpn: None, client_auth })
}

/// Reconnect delays: 0.5 s doubling to 30 s, each with up to 25% random jitter.
struct Backoff {
    next: Duration,
    seed: u64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    fn new() -> Backoff {
        let seed = Instant::now().elapsed().as_nanos() as u64 ^ (std::process::id() as u64) << 32 | 1;
        Backoff { next: Self::FIRST, seed }
    }

    fn step(&mut self) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = self.next.mul_f64((self.seed % 1000) as f64 / 4000.0);
        let wait = self.next + jitter;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }
}

fn event_loop(mut connection: Connection, client: &Client, shared: &Shared, ctx: &Ctx) {
    let mut backoff = Backoff::new();
    let mut ever_connected = false;
    let mut failures = Failures::default();
    while !shared.stop.load(Ordering::Relaxed) {
        *shared.last_poll.lock().unwrap() = Instant::now();
        // A blocking receive: recv_timeout drops rumqttc's poll future whenever the timeout fires,
        // and nothing here should depend on that being cancel-safe. Shutdown wakes this loop with
        // the DISCONNECT request; keep-alive pings bound an idle wait.
        match connection.recv() {
            Err(_) => break, // every client handle is gone
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                on_connected(client, shared, ctx, ever_connected);
                ever_connected = true;
                backoff = Backoff::new();
                failures = Failures::default();
            }
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) => {
                // Polling on would make rumqttc reconnect (and later die without DISCONNECT: Last Will).
                shared.disconnect_sent.store(true, Ordering::Relaxed);
                break;
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_)))) => shared.counters.lock().unwrap().acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                failures.log(shared, &e.to_string(), &ctx.topics);
                on_connection_error(shared, &mut backoff);
            }
        }
    }
}

fn on_connected(client: &Client, shared: &Shared, ctx: &Ctx, reconnect: bool) {
    log::info!("mqtt connected; publishing under {}", ctx.topics.status.trim_end_matches("/status"));
    shared.connected.store(true, Ordering::Relaxed);
    if reconnect {
        shared.counters.lock().unwrap().reconnects += 1;
    }
    if let Some(status) = shared.status.lock().unwrap().clone() {
        send_status(client, ctx, &status);
    }
    flush(client, shared, ctx);
}

/// Logs connection failures so an operator sees each new reason once, and a reminder every 20 tries.
#[derive(Default)]
struct Failures {
    count: u64,
    last: String,
}

impl Failures {
    fn log(&mut self, shared: &Shared, error: &str, topics: &Topics) {
        if shared.closing.load(Ordering::Relaxed) {
            return;
        }
        self.count += 1;
        if shared.connected.load(Ordering::Relaxed) {
            log::warn!("mqtt connection lost: {error}; reconnecting with backoff, results are queued");
        } else if error != self.last || self.count % 20 == 1 {
            log::warn!("mqtt cannot connect (attempt {}): {error}; check mqtt.url, the broker, and for mqtts:// the CA file; retrying with backoff ({} not published meanwhile)",
                self.count, topics.prediction);
        }
        self.last = error.to_string();
    }
}

fn on_connection_error(shared: &Shared, backoff: &mut Backoff) {
    shared.connected.store(false, Ordering::Relaxed);
    if shared.closing.load(Ordering::Relaxed) {
        return;
    }
    let until = Instant::now() + backoff.step();
    while Instant::now() < until && !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send_status(client: &Client, ctx: &Ctx, status: &Status) {
    let payload = serde_json::to_vec(status).expect("status serializes");
    if let Err(e) = client.try_publish(&ctx.topics.status, QoS::AtLeastOnce, true, payload) {
        log::warn!("status not published: {e}");
    }
}

/// Hands queued messages to the client, oldest first, until its channel is full.
fn flush(client: &Client, shared: &Shared, ctx: &Ctx) {
    let mut queue = shared.queue.lock().unwrap();
    while shared.connected.load(Ordering::Relaxed) {
        let Some(msg) = queue.pop_front() else { break };
        if let Err(msg) = try_send(client, shared, ctx, msg) {
            queue.push_front(msg);
            break;
        }
    }
    shared.counters.lock().unwrap().queue_depth = queue.len() as u64;
}

/// Hands one message to the client; gives it back if the client's channel is full.
fn try_send(client: &Client, shared: &Shared, ctx: &Ctx, msg: Outgoing) -> Result<(), Outgoing> {
    let (topic, payload) = match &msg {
        Outgoing::Prediction(p) => (&ctx.topics.prediction, p.to_json(&ctx.identity, Instant::now())),
        Outgoing::Stats(v) => (&ctx.topics.stats, v.clone()),
        Outgoing::Status(s) => (&ctx.topics.status, serde_json::to_value(s).expect("status serializes")),
    };
    let retain = matches!(msg, Outgoing::Status(_));
    match client.try_publish(topic, ctx.qos, retain, payload.to_string()) {
        Ok(()) => {
            if matches!(msg, Outgoing::Prediction(_)) {
                shared.counters.lock().unwrap().predictions_sent += 1;
            }
            Ok(())
        }
        Err(_) => Err(msg),
    }
}

impl MqttPublisher {
    fn enqueue(&self, msg: Outgoing) {
        let mut queue = self.shared.queue.lock().unwrap();
        if queue.len() >= self.ctx.capacity {
            // The oldest result is the least useful one to a viewer: drop it, and count it.
            queue.pop_front();
            self.shared.counters.lock().unwrap().dropped_offline_queue_full += 1;
        }
        queue.push_back(msg);
        self.shared.counters.lock().unwrap().queue_depth = queue.len() as u64;
    }
}

impl Publisher for MqttPublisher {
    fn publish(&mut self, msg: Outgoing) {
        match msg {
            Outgoing::Status(status) => {
                *self.shared.status.lock().unwrap() = Some(status.clone());
                if self.shared.connected.load(Ordering::Relaxed) {
                    send_status(&self.client, &self.ctx, &status);
                }
            }
            // Stats describe the moment they are made; a stale one is not worth queueing.
            Outgoing::Stats(_) if !self.shared.connected.load(Ordering::Relaxed) => {}
            msg => {
                self.enqueue(msg);
                flush(&self.client, &self.shared, &self.ctx);
            }
        }
    }

    fn counters(&self) -> PublishCounters {
        let mut c = *self.shared.counters.lock().unwrap();
        c.connected = self.shared.connected.load(Ordering::Relaxed);
        c
    }

    fn shutdown(&mut self, last: Status, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if self.shared.connected.load(Ordering::Relaxed) {
            flush(&self.client, &self.shared, &self.ctx);
            let acked_before = self.shared.counters.lock().unwrap().acked;
            send_status(&self.client, &self.ctx, &last);
            while Instant::now() < deadline && self.shared.counters.lock().unwrap().acked == acked_before {
                std::thread::sleep(Duration::from_millis(20));
            }
            // DISCONNECT tells the broker not to publish the Last Will: `stopped` stays retained.
            self.shared.closing.store(true, Ordering::Relaxed);
            let _ = self.client.try_disconnect();
            let until = Instant::now() + Duration::from_secs(2);
            while !self.shared.disconnect_sent.load(Ordering::Relaxed) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.events.take() {
            let _ = t.join();
        }
    }

    fn alive(&self) -> bool {
        self.shared.last_poll.lock().unwrap().elapsed() < Duration::from_secs(60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_tls_host_and_default_ports() {
        assert_eq!(parse_url("mqtt://localhost").unwrap(), (false, "localhost".into(), 1883));
        assert_eq!(parse_url("mqtts://broker.lan:8884").unwrap(), (true, "broker.lan".into(), 8884));
        assert!(parse_url("tcp://x:1").is_err());
        assert!(parse_url("mqtt://user:pw@host:1883").is_err());
    }

    #[test]
    fn backoff_doubles_to_thirty_seconds_with_bounded_jitter() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..10).map(|_| b.step()).collect();
        assert!(waits[0] >= Duration::from_millis(500) && waits[0] <= Duration::from_millis(625), "{waits:?}");
        assert!(waits[9] >= Duration::from_secs(30) && waits[9] <= Duration::from_millis(37_500), "{waits:?}");
    }
}
