//! MQTT publishing with rumqttc, MQTT 3.1.1 or 5 (`mqtt.protocol`, [`wire`]): topics under
//! `<prefix>/<device_id>/`, retained status with a Last Will, the retained input state and the
//! findings (held, bounded, while the broker is away), and thin glue between rumqttc's event
//! loop ([`events`]) and the connection [`Policy`] (offline queue, backoff, in-flight accounting,
//! counters, which broker URL is next), which does no I/O and is tested on its own. The glue
//! carries the policy's choice of URL out by swapping the event loop's options before its next
//! attempt: one client, one queue, whichever broker serves it.

mod cause;
mod events;
#[cfg(test)]
mod fake_broker;
mod options;
mod redact;
pub mod wire;

pub use redact::{redact_url, redact_userinfo_in};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

pub(crate) use cause::close_reason;
pub use options::{connect_options, parse_url, probe_options};
use wire::{Protocol, WireClient, WireOptions};

use super::policy::{Hand, Policy, PolicyConfig};
use super::{Finding, Identity, Outgoing, Prediction, PublishCounters, Publisher, Refusal, StateMessage, Status};
use crate::state::DaemonState;

/// Everything needed to connect, resolved from config and environment.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Broker URLs, tried in turn (at least one).
    pub urls: Vec<String>,
    /// `mqtt.protocol`: 3.1.1 (default) or 5.
    pub protocol: Protocol,
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
    #[error("broker URL {0:?}: {1}")]
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
    pub state: String,
    pub finding: String,
}

impl Topics {
    pub fn new(prefix: &str, device_id: &str) -> Topics {
        let base = format!("{prefix}/{device_id}");
        let at = |leaf: &str| format!("{base}/{leaf}");
        Topics { status: at("status"), prediction: at("prediction"), stats: at("stats"), state: at("state"), finding: at("finding") }
    }
}

/// The retained `online` status expires (MQTT 5) after this many keep-alive periods unless it is
/// published again, which happens at half of it: so a cart that died without its Last Will being
/// delivered (a broker restart, a cluster node stopped) is not shown `online` for long. 4 x 15 s
/// by default: a minute; the event thread wakes at least once per keep-alive to refresh it.
pub const STATUS_EXPIRY_KEEP_ALIVES: u32 = 4;

/// Findings made while the broker is away, sent after the next CONNACK; beyond this many the
/// oldest go (the retained state still says what the input shows and the current finding).
const HELD_FINDINGS: usize = 64;

struct Shared {
    policy: Mutex<Policy<Prediction>>,
    /// Set before our own DISCONNECT, so the closed connection that follows is not reported as a loss.
    closing: AtomicBool,
    /// The DISCONNECT packet went out (the broker will not publish the Last Will).
    disconnect_sent: AtomicBool,
    stop: AtomicBool,
    /// The latest status, republished as `online` on every (re)connect.
    status: Mutex<Option<Status>>,
    /// When an expiring status last went out (MQTT 5), for its refresh.
    status_sent_at: Mutex<Option<Instant>>,
    /// What the current session's server allows (MQTT 5 CONNACK).
    limits: Mutex<Limits>,
    /// The latest input state, republished (retained) on every (re)connect.
    state: Mutex<Option<StateMessage>>,
    /// When the state last went out with an expiry (MQTT 5), for its refresh.
    state_sent_at: Mutex<Option<Instant>>,
    /// Findings made while disconnected, oldest first.
    held_findings: Mutex<std::collections::VecDeque<Finding>>,
    /// An `online` status waits for the session to prove itself ([`Policy::may_say_online`]).
    online_held: AtomicBool,
    /// Why the last session ended, put on every status sent after it.
    last_disconnect: Mutex<Option<String>>,
    last_poll: Mutex<Instant>,
}

/// The server's Maximum QoS and Maximum Packet Size, as its last CONNACK said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    /// The QoS predictions and stats go out at: `mqtt.qos`, or less if the server allows less.
    qos: u8,
    max_packet_bytes: Option<u32>,
}

impl Shared {
    fn policy(&self) -> MutexGuard<'_, Policy<Prediction>> {
        self.policy.lock().unwrap()
    }

    fn limits(&self) -> Limits {
        *self.limits.lock().unwrap()
    }
}

pub struct MqttPublisher {
    shared: Arc<Shared>,
    ctx: Arc<Ctx>,
    events: Option<JoinHandle<()>>,
}

/// Immutable facts the publisher and its event thread share.
struct Ctx {
    topics: Topics,
    /// `mqtt.qos` as configured.
    qos: u8,
    identity: Identity,
    client: WireClient,
    /// One broker URL per entry: its options (address, TLS, Last Will) and its name for the log.
    brokers: Vec<BrokerOptions>,
    /// MQTT 5: the message expiry of the retained `online` status.
    status_expiry_s: Option<u32>,
}

struct BrokerOptions {
    /// The URL with any user info redacted.
    name: String,
    options: WireOptions,
}

impl MqttPublisher {
    /// Starts the client and its event thread; connecting happens in the background, so an absent
    /// broker is a reported state, not an error.
    pub fn start(settings: &MqttSettings, identity: Identity, offline: &Status) -> Result<MqttPublisher, MqttError> {
        let topics = Topics::new(&settings.topic_prefix, &identity.device_id);
        let brokers = settings
            .urls
            .iter()
            .map(|url| {
                let options = options::publisher_options(settings, url, &identity.device_id, &topics, offline)?;
                Ok(BrokerOptions { name: redact_url(url), options })
            })
            .collect::<Result<Vec<_>, MqttError>>()?;
        let first = brokers.first().ok_or_else(|| MqttError::url("", "no broker URL given"))?;
        let (client, connection) = wire::client(&first.options, 64);
        let status_expiry_s = (settings.protocol == Protocol::V5).then(|| settings.keep_alive_s as u32 * STATUS_EXPIRY_KEEP_ALIVES);
        let ctx = Arc::new(Ctx { topics, qos: settings.qos, identity, client, brokers, status_expiry_s });
        let shared = Arc::new(Shared {
            policy: Mutex::new(Policy::new(PolicyConfig::new(settings.queue_capacity, ctx.brokers.len(), seed()))),
            closing: AtomicBool::new(false),
            disconnect_sent: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            status: Mutex::new(None),
            status_sent_at: Mutex::new(None),
            limits: Mutex::new(Limits { qos: settings.qos, max_packet_bytes: None }),
            state: Mutex::new(None),
            state_sent_at: Mutex::new(None),
            held_findings: Mutex::new(std::collections::VecDeque::new()),
            online_held: AtomicBool::new(false),
            last_disconnect: Mutex::new(None),
            last_poll: Mutex::new(Instant::now()),
        });
        let events = {
            let (shared, ctx) = (shared.clone(), ctx.clone());
            std::thread::Builder::new()
                .name("mqtt-events".into())
                .spawn(move || events::event_loop(connection, &shared, &ctx))
                .expect("spawn mqtt thread")
        };
        Ok(MqttPublisher { shared, ctx, events: Some(events) })
    }

    pub fn topics(&self) -> &Topics {
        &self.ctx.topics
    }

    /// Sends a finding now, or holds it (bounded) for the next connection.
    fn publish_finding(&self, f: Finding) {
        let (ctx, shared) = (&*self.ctx, &*self.shared);
        let mut policy = shared.policy();
        if policy.send_live(|| send_finding(ctx, shared, &f)) {
            return;
        }
        let mut held = shared.held_findings.lock().unwrap();
        held.push_back(f);
        while held.len() > HELD_FINDINGS {
            let lost = held.pop_front().expect("longer than the bound");
            log::warn!("finding {:?} of frame {} dropped: the broker has been away too long", lost.event, lost.frame);
        }
    }
}

/// Differs between devices and restarts, so a fleet's retries do not line up.
fn seed() -> u64 {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    nanos ^ (std::process::id() as u64) << 32
}

/// Sends `status` unless it is an `online` one the policy does not allow yet: that one is held,
/// and sent by the event thread once the session has proved itself.
fn say_status(ctx: &Ctx, shared: &Shared, policy: &mut Policy<Prediction>, status: &Status) {
    let early = status.state == DaemonState::Online && !policy.may_say_online(Instant::now());
    let sent = !early && policy.send_live(|| send_status(ctx, shared, status));
    shared.online_held.store(!sent && status.state == DaemonState::Online, Ordering::Relaxed);
}

/// Publishes `status` retained at QoS 1; an `online` one expires on MQTT 5 (see
/// [`STATUS_EXPIRY_KEEP_ALIVES`]), the final ones (`stopped`) do not.
fn send_status(ctx: &Ctx, shared: &Shared, status: &Status) -> bool {
    let mut status = status.clone();
    status.last_disconnect = shared.last_disconnect.lock().unwrap().clone();
    let payload = serde_json::to_vec(&status).expect("status serializes");
    if !fits(shared.limits(), &ctx.topics.status, &payload) {
        log::warn!("mqtt: a {}-byte status exceeds the broker's Maximum Packet Size; not sent: raise it", payload.len());
        return false;
    }
    let expiry = ctx.status_expiry_s.filter(|_| status.state == DaemonState::Online);
    let sent = ctx.client.try_publish(&ctx.topics.status, 1, true, payload, expiry);
    if sent && expiry.is_some() {
        *shared.status_sent_at.lock().unwrap() = Some(Instant::now());
    }
    sent
}

/// Publishes the input state retained at QoS 1, expiring on MQTT 5.
fn send_state(ctx: &Ctx, shared: &Shared, state: &StateMessage) -> bool {
    let payload = state.to_json(&ctx.identity).to_string().into_bytes();
    if !fits(shared.limits(), &ctx.topics.state, &payload) {
        log::warn!("mqtt: a {}-byte state exceeds the broker's Maximum Packet Size; not sent: raise it", payload.len());
        return false;
    }
    // It expires as the `online` status does: a dead cart's last picture must not outlive it.
    let sent = ctx.client.try_publish(&ctx.topics.state, 1, true, payload, ctx.status_expiry_s);
    if sent && ctx.status_expiry_s.is_some() {
        *shared.state_sent_at.lock().unwrap() = Some(Instant::now());
    }
    sent
}

/// Publishes a finding, not retained, at the configured QoS (or the server's maximum).
fn send_finding(ctx: &Ctx, shared: &Shared, finding: &Finding) -> bool {
    let (limits, payload) = (shared.limits(), finding.to_json(&ctx.identity).to_string().into_bytes());
    if !fits(limits, &ctx.topics.finding, &payload) {
        log::warn!("mqtt: a {}-byte finding exceeds the broker's Maximum Packet Size; not sent: raise it", payload.len());
        return false;
    }
    ctx.client.try_publish(&ctx.topics.finding, limits.qos, false, payload, None)
}

/// The fixed header, topic length, packet id and an empty property length: what a PUBLISH adds to
/// its topic and payload, at most.
const PUBLISH_OVERHEAD_BYTES: usize = 5 + 2 + 2 + 1;

/// The size of a PUBLISH of `payload_bytes` on `topic` as a Maximum Packet Size counts it, at most.
pub(crate) fn publish_packet_bytes(topic: &str, payload_bytes: usize) -> usize {
    topic.len() + payload_bytes + PUBLISH_OVERHEAD_BYTES
}

/// Whether a publish of `payload` on `topic` fits the server's Maximum Packet Size.
fn fits(limits: Limits, topic: &str, payload: &[u8]) -> bool {
    limits.max_packet_bytes.is_none_or(|max| publish_packet_bytes(topic, payload.len()) <= max as usize)
}

/// Hands one prediction to the client: taken, the client's channel is full, or refused as larger
/// than the server allows (sending it would end the session).
fn hand_prediction(ctx: &Ctx, limits: Limits, p: &Prediction) -> Hand {
    let payload = p.to_json(&ctx.identity, Instant::now()).to_string().into_bytes();
    if !fits(limits, &ctx.topics.prediction, &payload) {
        return Hand::Refused(Refusal::PacketTooLarge);
    }
    ctx.client.try_publish(&ctx.topics.prediction, limits.qos, false, payload, None).into()
}

fn flush(shared: &Shared, ctx: &Ctx) {
    let limits = shared.limits();
    shared.policy().flush(|p| hand_prediction(ctx, limits, p));
}

impl Publisher for MqttPublisher {
    fn publish(&mut self, msg: Outgoing) {
        let (ctx, shared) = (&*self.ctx, &*self.shared);
        match msg {
            Outgoing::Status(status) => {
                *shared.status.lock().unwrap() = Some(status.clone());
                // Not connected: it goes out on the next CONNACK, as the latest status.
                say_status(ctx, shared, &mut shared.policy(), &status);
            }
            // Stats describe the moment they are made; a stale one is not worth queueing, nor one
            // the server would not take.
            Outgoing::Stats(v) => {
                let (limits, payload) = (shared.limits(), v.to_string().into_bytes());
                if fits(limits, &ctx.topics.stats, &payload) {
                    shared.policy().send_live(|| ctx.client.try_publish(&ctx.topics.stats, limits.qos, false, payload, None));
                }
            }
            Outgoing::Prediction(p) => {
                shared.policy().push(p);
                flush(shared, ctx);
            }
            Outgoing::State(state) => {
                *shared.state.lock().unwrap() = Some(state.clone());
                // Not connected: it goes out on the next CONNACK, as the latest state.
                shared.policy().send_live(|| send_state(ctx, shared, &state));
            }
            Outgoing::Finding(f) => self.publish_finding(f),
        }
    }

    fn counters(&self) -> PublishCounters {
        self.shared.policy().counters()
    }

    fn shutdown(&mut self, last: Status, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (ctx, shared) = (&*self.ctx, &*self.shared);
        if shared.policy().is_connected() {
            flush(shared, ctx);
            shared.policy().send_live(|| send_status(ctx, shared, &last));
            // Wait for the broker to acknowledge what was handed over, the final status included.
            while Instant::now() < deadline && shared.policy().outstanding() > 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            // DISCONNECT tells the broker not to publish the Last Will: `stopped` stays retained.
            shared.closing.store(true, Ordering::Relaxed);
            let _ = ctx.client.try_disconnect();
            let until = Instant::now() + Duration::from_secs(2);
            let events_running = |t: &Option<JoinHandle<()>>| t.as_ref().is_some_and(|t| !t.is_finished());
            while !shared.disconnect_sent.load(Ordering::Relaxed) && events_running(&self.events) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        shared.stop.store(true, Ordering::Relaxed);
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
            urls: vec![url.into()],
            protocol: Protocol::V311,
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
    fn a_publish_fits_the_maximum_packet_size_counting_topic_and_header() {
        let limits = |max| Limits { qos: 1, max_packet_bytes: max };
        let (topic, payload) = ("a/b", [0u8; 90]);
        assert!(fits(limits(None), topic, &payload));
        assert!(fits(limits(Some(3 + 90 + PUBLISH_OVERHEAD_BYTES as u32)), topic, &payload));
        assert!(!fits(limits(Some(3 + 90 + PUBLISH_OVERHEAD_BYTES as u32 - 1)), topic, &payload));
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
        let e = connect_options(&settings("mqtt://user:secret@host"), "mqtt://user:secret@host", "id").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn keep_alive_past_16_bits_is_an_error_naming_the_key() {
        let mut s = settings("mqtt://localhost");
        s.keep_alive_s = 65536;
        let e = connect_options(&s, "mqtt://localhost", "id").unwrap_err();
        assert!(e.to_string().contains("mqtt.keep_alive_s 65536"), "{e}");
        s.keep_alive_s = 65535;
        assert_eq!(connect_options(&s, "mqtt://localhost", "id").unwrap().keep_alive(), Duration::from_secs(65535));
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
            uncertain: false,
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

    #[test]
    fn when_the_first_broker_drops_the_link_the_next_url_gets_the_unacknowledged_predictions() {
        let (port_a, a) = fake_broker::unacking_then_acking(3, Duration::from_secs(6));
        let (port_b, b) = fake_broker::acking(Duration::from_secs(6));
        let status = Status::new(&identity(), crate::state::DaemonState::Offline, "test");
        let s = MqttSettings { urls: vec![format!("mqtt://127.0.0.1:{port_a}"), format!("mqtt://127.0.0.1:{port_b}")], ..settings("") };
        let mut p = MqttPublisher::start(&s, identity(), &status).unwrap();
        assert!(wait_for(Duration::from_secs(3), || p.counters().connected), "never connected");
        for frame in 1..=3 {
            p.publish(Outgoing::Prediction(prediction(frame)));
        }
        assert!(wait_for(Duration::from_secs(5), || p.counters().predictions_sent == 3), "{:?}", p.counters());
        let c = p.counters();
        assert_eq!((c.acked, c.requeued_unacked, c.reconnects, c.queue_depth, c.in_flight), (3, 3, 1, 0, 0));
        let frames = |s: &[serde_json::Value]| s.iter().filter_map(|v| v["frame"].as_u64()).collect::<Vec<_>>();
        let ([on_a, second_on_a], on_b) = (a.join().unwrap(), b.join().unwrap());
        assert_eq!((frames(&on_a), frames(&second_on_a), frames(&on_b)), (vec![1, 2, 3], vec![], vec![1, 2, 3]));
        p.shutdown(status, Duration::from_millis(100));
    }
}
