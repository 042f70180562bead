//! MQTT publishing with rumqttc: topics under `<prefix>/<device_id>/`, retained status with a Last
//! Will, and thin glue between rumqttc's event loop and the connection [`Policy`] (offline queue,
//! backoff, in-flight accounting, counters), which does no I/O and is tested on its own.

mod cause;
#[cfg(test)]
mod fake_broker;
mod redact;

pub use redact::{redact_url, redact_userinfo_in};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{Client, Connection, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

use super::policy::{Policy, PolicyConfig, Retry};
use super::{Identity, Outgoing, Prediction, PublishCounters, Publisher, Status};
use cause::LogLimit;

/// Everything needed to connect, resolved from config and environment.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub url: String,
    pub qos: u8,
    pub topic_prefix: String,
    /// Must fit MQTT's 16-bit field (at most 65535); 0 turns keep-alive off (MQTT allows it, the
    /// config does not: without pings a dead link is noticed only when a publish fails).
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
    /// The URL (credentials redacted by [`redact_url`]) and what is wrong.
    #[error("mqtt.url {0:?}: {1}")]
    Url(String, String),
    #[error("cannot read {0}: {1}; check mqtt.ca_file / client_cert / client_key")]
    Tls(PathBuf, std::io::Error),
    #[error("mqtt.keep_alive_s {0} does not fit MQTT's 16-bit keep-alive; use at most 65535 seconds")]
    KeepAlive(u64),
}

impl MqttError {
    fn url(url: &str, why: &str) -> MqttError {
        MqttError::Url(redact_url(url), why.to_string())
    }
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
    policy: Mutex<Policy<Prediction>>,
    /// Set before our own DISCONNECT, so the closed connection that follows is not reported as a loss.
    closing: AtomicBool,
    /// The DISCONNECT packet went out (the broker will not publish the Last Will).
    disconnect_sent: AtomicBool,
    stop: AtomicBool,
    /// The latest status, republished as `online` on every (re)connect.
    status: Mutex<Option<Status>>,
    last_poll: Mutex<Instant>,
}

impl Shared {
    fn policy(&self) -> MutexGuard<'_, Policy<Prediction>> {
        self.policy.lock().unwrap()
    }
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
    client: Client,
}

impl MqttPublisher {
    /// Starts the client and its event thread; connecting happens in the background, so an absent
    /// broker is a reported state, not an error.
    pub fn start(settings: &MqttSettings, identity: Identity, offline: &Status) -> Result<MqttPublisher, MqttError> {
        let topics = Topics::new(&settings.topic_prefix, &identity.device_id);
        let options = options(settings, &identity.device_id, &topics, offline)?;
        let (client, connection) = Client::new(options, 64);
        let ctx = Arc::new(Ctx { topics, qos: qos(settings.qos), identity, client: client.clone() });
        let shared = Arc::new(Shared {
            policy: Mutex::new(Policy::new(PolicyConfig::new(settings.queue_capacity, seed()))),
            closing: AtomicBool::new(false),
            disconnect_sent: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            status: Mutex::new(None),
            last_poll: Mutex::new(Instant::now()),
        });
        let events = {
            let (shared, ctx) = (shared.clone(), ctx.clone());
            std::thread::Builder::new()
                .name("mqtt-events".into())
                .spawn(move || event_loop(connection, &shared, &ctx))
                .expect("spawn mqtt thread")
        };
        Ok(MqttPublisher { client, shared, ctx, events: Some(events) })
    }

    pub fn topics(&self) -> &Topics {
        &self.ctx.topics
    }
}

/// Differs between devices and restarts, so a fleet's retries do not line up.
fn seed() -> u64 {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    nanos ^ (std::process::id() as u64) << 32
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
    // A clean session: rumqttc then drops what it held for resending, and the policy resends instead.
    o.set_clean_session(true);
    let will = serde_json::to_vec(offline).expect("status serializes");
    o.set_last_will(LastWill::new(&topics.status, will, QoS::AtLeastOnce, true));
    Ok(o)
}

/// Broker address, keep-alive, credentials and TLS from the settings: what every connection of
/// sonoedge's (the publisher's, `check`'s probe) shares.
pub fn connect_options(s: &MqttSettings, client_id: &str) -> Result<MqttOptions, MqttError> {
    let (tls, host, port) = parse_url(&s.url)?;
    // rumqttc would truncate a longer keep-alive to 16 bits (65536 s reaches the broker as 0: off).
    let keep_alive_s = u16::try_from(s.keep_alive_s).map_err(|_| MqttError::KeepAlive(s.keep_alive_s))?;
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(keep_alive_s.into()));
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
    let bad = |why: &str| MqttError::url(url, why);
    let (tls, rest) = match url.split_once("://") {
        Some(("mqtt", r)) => (false, r),
        Some(("mqtts", r)) => (true, r),
        _ => return Err(bad("must start with mqtt:// or mqtts://")),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') {
        return Err(bad("expected mqtt://host:port (credentials go in mqtt.username and a password file)"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("the port is not a number 1-65535"))?),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() || host.contains('/') {
        return Err(bad("expected mqtt://host:port"));
    }
    Ok((tls, host.trim_matches(['[', ']']).to_string(), port))
}

fn tls_config(s: &MqttSettings, url: &str) -> Result<TlsConfiguration, MqttError> {
    // ring is the process-wide rustls provider; a second install attempt is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| MqttError::Tls(p.clone(), e));
    let Some(ca_path) = &s.ca_file else {
        return Err(MqttError::url(url, "mqtts:// needs mqtt.ca_file (the CA that signed the broker's certificate)"));
    };
    let client_auth = match (&s.client_cert, &s.client_key) {
        (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
        (None, None) => None,
        _ => return Err(MqttError::url(url, "mqtt.client_cert and mqtt.client_key go together")),
    };
    Ok(TlsConfiguration::Simple { ca: read(ca_path)?, alpn: None, client_auth })
}

/// What the event thread remembers between events, for its log lines.
#[derive(Default)]
struct EventLog {
    limit: LogLimit,
    /// The last loss was logged, so the reconnect that ends it is logged too.
    loss_logged: bool,
    ever_connected: bool,
}

fn event_loop(mut connection: Connection, shared: &Shared, ctx: &Ctx) {
    let mut log = EventLog::default();
    while !shared.stop.load(Ordering::Relaxed) {
        *shared.last_poll.lock().unwrap() = Instant::now();
        // A blocking receive: recv_timeout drops rumqttc's poll future whenever the timeout fires,
        // and nothing here should depend on that being cancel-safe. Shutdown wakes this loop with
        // the DISCONNECT request; keep-alive pings bound an idle wait.
        match connection.recv() {
            Err(_) => break, // every client handle is gone
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) => {
                // Polling on would make rumqttc reconnect (and later die without DISCONNECT: Last Will).
                shared.disconnect_sent.store(true, Ordering::Relaxed);
                break;
            }
            Ok(Ok(event)) => on_event(event, shared, ctx, &mut log),
            Ok(Err(e)) => {
                if !on_connection_error(&e, &mut connection.eventloop, shared, &mut log) {
                    break;
                }
            }
        }
    }
}

fn on_event(event: Event, shared: &Shared, ctx: &Ctx, log: &mut EventLog) {
    match event {
        Event::Incoming(Packet::ConnAck(_)) => on_connected(shared, ctx, log),
        // QoS 0 goes out with packet id 0 and is never acknowledged.
        Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => written_then_flush(shared, ctx, (pkid != 0).then_some(pkid)),
        Event::Incoming(Packet::PubAck(ack)) => acked_then_flush(shared, ctx, ack.pkid),
        Event::Incoming(Packet::PubComp(comp)) => acked_then_flush(shared, ctx, comp.pkid),
        _ => {}
    }
}

/// Every publish we hand over yields one `Outgoing::Publish`, in hand-over order (rumqttc takes
/// requests from its channel in order and holds the next one back while an id collides).
fn written_then_flush(shared: &Shared, ctx: &Ctx, pkid: Option<u16>) {
    let mut policy = shared.policy();
    policy.written(pkid);
    // The client's channel has room again.
    policy.flush(|p| hand_prediction(ctx, p));
}

fn acked_then_flush(shared: &Shared, ctx: &Ctx, pkid: u16) {
    let mut policy = shared.policy();
    policy.acked(pkid);
    policy.flush(|p| hand_prediction(ctx, p));
}

fn on_connected(shared: &Shared, ctx: &Ctx, log: &mut EventLog) {
    if !log.ever_connected || log.loss_logged {
        log::info!("mqtt connected; publishing under {}", ctx.topics.status.trim_end_matches("/status"));
    }
    log.ever_connected = true;
    let status = shared.status.lock().unwrap().clone();
    let mut policy = shared.policy();
    policy.connected(Instant::now());
    if let Some(status) = status {
        policy.send_live(|| send_status(ctx, &status));
    }
    policy.flush(|p| hand_prediction(ctx, p));
}

/// Waits as the policy says before the next attempt; false when shutting down (no reconnect then).
fn on_connection_error(e: &ConnectionError, eventloop: &mut EventLoop, shared: &Shared, log: &mut EventLog) -> bool {
    // The policy is told first: from here on nothing is handed to the client until the next CONNACK.
    let retry = shared.policy().connection_error(Instant::now());
    forget_client_copies(eventloop);
    if shared.closing.load(Ordering::Relaxed) {
        return false;
    }
    log_loss(e, &retry, shared, log);
    let until = Instant::now() + retry.delay;
    while Instant::now() < until && !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// rumqttc keeps unacknowledged publishes to resend, but drops them anyway when the broker starts a
/// clean session (ours always is); the policy has re-queued them. Forgetting rumqttc's copies now,
/// including requests handed over after rumqttc noticed the loss, means nothing is sent twice and
/// every later `Outgoing::Publish` matches the policy's order.
fn forget_client_copies(eventloop: &mut EventLoop) {
    eventloop.clean();
    eventloop.pending.clear();
    // A publish held back by an id collision would otherwise block the next session's requests.
    eventloop.state.collision = None;
}

fn log_loss(e: &ConnectionError, retry: &Retry, shared: &Shared, log: &mut EventLog) {
    let stable = shared.policy().config().stable_after;
    let cause = cause::explain(e, retry.up_for, stable);
    log.loss_logged = false;
    let Some(quiet) = log.limit.admit(cause.kind, Instant::now()) else { return };
    log.loss_logged = true;
    let quiet = if quiet > 0 { format!(" ({quiet} similar failures not logged)") } else { String::new() };
    log::warn!("mqtt {}; retrying in {:.1} s, predictions are queued{quiet}", cause.text, retry.delay.as_secs_f64());
}

fn send_status(ctx: &Ctx, status: &Status) -> bool {
    let payload = serde_json::to_vec(status).expect("status serializes");
    ctx.client.try_publish(&ctx.topics.status, QoS::AtLeastOnce, true, payload).is_ok()
}

/// Hands one prediction to the client; false if the client's channel is full.
fn hand_prediction(ctx: &Ctx, p: &Prediction) -> bool {
    let payload = p.to_json(&ctx.identity, Instant::now()).to_string();
    ctx.client.try_publish(&ctx.topics.prediction, ctx.qos, false, payload).is_ok()
}

impl Publisher for MqttPublisher {
    fn publish(&mut self, msg: Outgoing) {
        let ctx = &*self.ctx;
        match msg {
            Outgoing::Status(status) => {
                *self.shared.status.lock().unwrap() = Some(status.clone());
                // Not connected: it goes out on the next CONNACK, as the latest status.
                self.shared.policy().send_live(|| send_status(ctx, &status));
            }
            // Stats describe the moment they are made; a stale one is not worth queueing.
            Outgoing::Stats(v) => {
                self.shared.policy().send_live(|| ctx.client.try_publish(&ctx.topics.stats, ctx.qos, false, v.to_string()).is_ok());
            }
            Outgoing::Prediction(p) => {
                let mut policy = self.shared.policy();
                policy.push(p);
                policy.flush(|p| hand_prediction(ctx, p));
            }
        }
    }

    fn counters(&self) -> PublishCounters {
        self.shared.policy().counters()
    }

    fn shutdown(&mut self, last: Status, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if self.shared.policy().is_connected() {
            let ctx = &*self.ctx;
            self.shared.policy().flush(|p| hand_prediction(ctx, p));
            self.shared.policy().send_live(|| send_status(ctx, &last));
            // Wait for the broker to acknowledge what was handed over, the final status included.
            while Instant::now() < deadline && self.shared.policy().outstanding() > 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            // DISCONNECT tells the broker not to publish the Last Will: `stopped` stays retained.
            self.shared.closing.store(true, Ordering::Relaxed);
            let _ = self.client.try_disconnect();
            let until = Instant::now() + Duration::from_secs(2);
            let events_running = |t: &Option<JoinHandle<()>>| t.as_ref().is_some_and(|t| !t.is_finished());
            while !self.shared.disconnect_sent.load(Ordering::Relaxed) && events_running(&self.events) && Instant::now() < until {
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
    use crate::publish::LatencyMs;

    fn settings(url: &str) -> MqttSettings {
        MqttSettings {
            url: url.into(),
            qos: 1,
            topic_prefix: "sonoedge".into(),
            keep_alive_s: 15,
            queue_capacity: 8,
            username: None,
            password: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }

    fn identity() -> Identity {
        Identity { device_id: "unit".into(), model_sha256: "0".into(), preprocess_digest: "0".into() }
    }

    #[test]
    fn urls_give_tls_host_and_default_ports() {
        assert_eq!(parse_url("mqtt://localhost").unwrap(), (false, "localhost".into(), 1883));
        assert_eq!(parse_url("mqtts://broker.lan:8884").unwrap(), (true, "broker.lan".into(), 8884));
        assert_eq!(parse_url("mqtt://[::1]:1884").unwrap(), (false, "::1".into(), 1884));
        assert!(parse_url("tcp://x:1").is_err());
        assert!(parse_url("mqtt://user:pw@host:1883").is_err());
    }

    #[test]
    fn an_error_for_a_url_with_a_password_never_contains_the_password() {
        for url in ["mqtt://user:secret@host:1883", "mqtts://user:secret@host", "tcp://user:secret@host", "mqtt://user:secret@host:x"] {
            let e = parse_url(url).unwrap_err();
            let (shown, debug) = (e.to_string(), format!("{e:?}"));
            assert!(!shown.contains("secret") && !debug.contains("secret"), "{shown} / {debug}");
            assert!(shown.contains("***@host"), "{shown}");
        }
        let e = connect_options(&settings("mqtt://user:secret@host"), "id").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn keep_alive_past_16_bits_is_an_error_naming_the_key() {
        let mut s = settings("mqtt://localhost");
        s.keep_alive_s = 65536;
        let e = connect_options(&s, "id").unwrap_err();
        assert!(e.to_string().contains("mqtt.keep_alive_s 65536"), "{e}");
        s.keep_alive_s = 65535;
        assert_eq!(connect_options(&s, "id").unwrap().keep_alive(), Duration::from_secs(65535));
    }

    #[test]
    fn a_broker_that_closes_right_after_connack_gets_backoff_not_a_storm() {
        let (port, broker) = fake_broker::closing_after_connack(Duration::from_secs(5));
        let status = Status::new(&identity(), crate::state::DaemonState::Offline, "test");
        let mut p = MqttPublisher::start(&settings(&format!("mqtt://127.0.0.1:{port}")), identity(), &status).unwrap();
        let connections = broker.join().unwrap();
        // Waits of 0.5, 1, 2, 4 s (+ up to 25%): attempts near 0, 0.5, 1.5 and 3.5 s within 5 s.
        assert!((3..=5).contains(&connections), "{connections} connections in 5 s");
        // Every session after the first is one reconnect; the last may not have been seen yet.
        let c = p.counters();
        let sessions_after_first = connections as u64 - 1;
        assert!(c.reconnects == sessions_after_first || c.reconnects + 1 == sessions_after_first, "{c:?} for {connections}");
        p.shutdown(status, Duration::from_millis(100));
    }

    fn prediction(frame: u64) -> Prediction {
        let now = Instant::now();
        Prediction {
            frame,
            generation: 0,
            source_sequence: frame,
            captured_wall: SystemTime::now(),
            captured_monotonic: Duration::ZERO,
            captured_at: now,
            inferred_at: now,
            label: "a".into(),
            probs: vec![("a".into(), 1.0)],
            latency: LatencyMs::default(),
        }
    }

    fn wait_for(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
        let until = Instant::now() + timeout;
        while !ok() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        ok()
    }

    #[test]
    fn predictions_unacknowledged_when_the_link_drops_are_resent_after_the_reconnect_and_counted_once() {
        let (port, broker) = fake_broker::unacking_then_acking(3, Duration::from_secs(6));
        let status = Status::new(&identity(), crate::state::DaemonState::Offline, "test");
        let mut p = MqttPublisher::start(&settings(&format!("mqtt://127.0.0.1:{port}")), identity(), &status).unwrap();
        assert!(wait_for(Duration::from_secs(3), || p.counters().connected), "never connected");
        for frame in 1..=3 {
            p.publish(Outgoing::Prediction(prediction(frame)));
        }
        assert!(wait_for(Duration::from_secs(5), || p.counters().predictions_sent == 3), "{:?}", p.counters());
        let c = p.counters();
        assert_eq!(
            (c.acked, c.requeued_unacked, c.dropped_offline_queue_full, c.queue_depth, c.in_flight, c.reconnects),
            (3, 3, 0, 0, 0, 1)
        );
        let [first, second] = broker.join().unwrap();
        let frames = |s: &[serde_json::Value]| s.iter().map(|v| v["frame"].as_u64().unwrap()).collect::<Vec<_>>();
        assert_eq!((frames(&first), frames(&second)), (vec![1, 2, 3], vec![1, 2, 3]));
        p.shutdown(status, Duration::from_millis(100));
    }
}
