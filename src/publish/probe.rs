//! The delivery probe of `sonoedge check`: publishes a probe under the device's own topics
//! (`<prefix>/<device_id>/check`) at the configured QoS, subscribed to it first, and watches it come
//! back. On MQTT 3.1.1 a broker acknowledges a publish its ACL denies (mosquitto, NATS) or drops it
//! for its size, and tells nobody: this round trip is how such loss is found before a cart goes
//! live. A close instead of an acknowledgement (RabbitMQ on a denial, NATS on QoS 2) is told apart
//! by trying again at QoS 1 and with a small payload. Over MQTT 5 (`mqtt.protocol = "5"`) the
//! broker says more, and the probe reads it: the CONNACK's Maximum QoS and Maximum Packet Size, and
//! a PUBACK's reason code (mosquitto: 0x87 not authorized for a denied publish). I/O stands apart
//! from [`judge`], which decides the verdict from the attempts' outcomes and is tested on its own.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use super::mqtt::wire::{self, WireClient, WireConnection, WireEvent};
use super::mqtt::{close_reason, probe_options, publish_packet_bytes, MqttSettings};
use super::Refusal;

/// How long to wait for each step (CONNACK, SUBACK, the acknowledgement) and for the echo.
pub const STEP_WAIT: Duration = Duration::from_secs(5);
pub const ECHO_WAIT: Duration = Duration::from_secs(3);
/// The small probe that tells a size limit from a denial.
pub const SMALL_BYTES: usize = 64;

/// What one attempt (connect, subscribe, publish, wait) saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// No session: the connection or the CONNECT failed.
    NoSession(String),
    /// The probe came back after `ms`, through a subscription granted at `granted`; the publish
    /// was acknowledged as QoS `acked_as` (RabbitMQ answers QoS 2 with QoS 1's PUBACK).
    Delivered { ms: u64, granted: u8, acked_as: u8 },
    /// The broker refused the subscription; `acked`: it did acknowledge the publish.
    Unreadable { acked: bool },
    /// Acknowledged, subscribed, and never delivered within [`ECHO_WAIT`].
    Lost,
    /// The broker closed the session after the publish (`acked`: after acknowledging it).
    Closed { acked: bool, why: String },
    /// Neither acknowledged nor closed within [`STEP_WAIT`].
    NoAck,
    /// MQTT 5: the CONNACK's Maximum QoS is below the probe's; nothing was sent.
    QosAbove { max: u8 },
    /// MQTT 5: the CONNACK's Maximum Packet Size is below the probe's packet; nothing was sent.
    TooLarge { max: u32 },
    /// MQTT 5: the broker answered the publish with a failure reason code.
    Refused(Refusal),
}

impl Attempt {
    fn delivered(&self) -> bool {
        matches!(self, Attempt::Delivered { .. })
    }
}

/// The verdict on one broker, from up to three attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Unreachable(String),
    Delivered {
        ms: u64,
        granted: u8,
        acked_as: u8,
    },
    /// Subscribing is refused, so delivery cannot be seen from this client.
    Unverified {
        acked: bool,
    },
    /// The configured QoS is refused; `works` got through. `announced`: the server's CONNACK
    /// said so (MQTT 5), rather than a close or a drop.
    QosRefused {
        works: u8,
        announced: bool,
    },
    /// A [`SMALL_BYTES`] probe got through, the full-size one did not; or (MQTT 5) the server's
    /// CONNACK `announced` a Maximum Packet Size below the full-size probe.
    SizeLimit {
        announced: Option<u32>,
    },
    /// MQTT 5: the publish was refused with this reason code.
    Refused(Refusal),
    /// Not even a small probe at QoS <= 1 got through: `first` is what the full-size one saw.
    Denied {
        first: Attempt,
    },
}

impl Verdict {
    /// Predictions would not arrive: `check` exits 69. A Maximum QoS the server announces is not a
    /// failure: the daemon publishes at that QoS (and says so once), and the probe got through at it.
    pub fn fails(&self) -> bool {
        !matches!(self, Verdict::Delivered { .. } | Verdict::Unverified { .. } | Verdict::QosRefused { announced: true, .. })
    }
}

/// Where and what to probe.
pub struct Probe<'a> {
    pub settings: &'a MqttSettings,
    pub url: &'a str,
    /// `<prefix>/<device_id>/check`.
    pub topic: String,
    /// The configured QoS, 0-2.
    pub qos: u8,
    /// The size of the largest message the daemon sends; the probe is padded to it.
    pub bytes: usize,
}

impl Probe<'_> {
    /// Runs the attempts [`judge`] asks for, at most three.
    pub fn run(&self) -> Verdict {
        let first = self.attempt(self.qos, self.bytes);
        judge(self.qos, first, |qos, small| self.attempt(qos, if small { SMALL_BYTES } else { self.bytes }))
    }

    /// One connection, in the configured protocol version.
    fn attempt(&self, qos: u8, bytes: usize) -> Attempt {
        // Not the daemon's client id: a probe under it would take the running daemon's session over.
        let id = format!("sonoedge-check-{}-{qos}-{bytes}", std::process::id());
        match probe_options(self.settings, self.url, &id) {
            Ok(options) => {
                let (client, connection) = wire::client(&options, 8);
                let events = forward(connection);
                let seen = Session { client: &client, events: &events, topic: &self.topic }.probe(qos, bytes);
                let _ = client.try_disconnect();
                seen
            }
            Err(e) => Attempt::NoSession(e.to_string()),
        }
    }
}

/// The verdict from the first attempt at `qos` and full size, asking `retry(qos, small)` for more
/// where the first one failed: a lower QoS at full size if QoS 2 failed (or the server's Maximum
/// QoS is lower), then the small probe at QoS <= 1.
pub fn judge(qos: u8, first: Attempt, mut retry: impl FnMut(u8, bool) -> Attempt) -> Verdict {
    match first {
        Attempt::Delivered { ms, granted, acked_as } => return Verdict::Delivered { ms, granted, acked_as },
        Attempt::NoSession(why) => return Verdict::Unreachable(why),
        Attempt::Unreadable { acked } => return Verdict::Unverified { acked },
        Attempt::Refused(r) => return Verdict::Refused(r),
        Attempt::TooLarge { max } => return Verdict::SizeLimit { announced: Some(max) },
        Attempt::QosAbove { .. } | Attempt::Lost | Attempt::Closed { .. } | Attempt::NoAck => {}
    }
    let (lower, announced) = match first {
        Attempt::QosAbove { max } => (Some(max), true),
        _ => ((qos == 2).then_some(1), false),
    };
    if let Some(works) = lower.filter(|&q| retry(q, false).delivered()) {
        return Verdict::QosRefused { works, announced };
    }
    if retry(lower.unwrap_or(qos).min(1), true).delivered() {
        return Verdict::SizeLimit { announced: None };
    }
    Verdict::Denied { first }
}

/// The client's events, on a channel: the probe waits with timeouts without cancelling its poll.
/// The thread ends at the first error (no reconnect) or when the probe is gone.
fn forward(mut connection: WireConnection) -> Receiver<Result<WireEvent, String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Some(event) = connection.recv() {
            let event = event.map_err(|e| close_reason(&e));
            let failed = event.is_err();
            if tx.send(event).is_err() || failed {
                break;
            }
        }
    });
    rx
}

/// One connection's probe: its client, its events and the probe topic.
struct Session<'a> {
    client: &'a WireClient,
    events: &'a Receiver<Result<WireEvent, String>>,
    topic: &'a str,
}

/// What a step waited for, or why it stopped.
enum Step<T> {
    Got(T),
    Closed(String),
    Timeout,
}

impl Session<'_> {
    fn probe(&self, qos: u8, bytes: usize) -> Attempt {
        let limits = self.next(STEP_WAIT, |e| match e {
            WireEvent::ConnAck { max_qos, max_packet_bytes } => Some((*max_qos, *max_packet_bytes)),
            _ => None,
        });
        let (max_qos, max_packet) = match limits {
            Step::Got(limits) => limits,
            Step::Closed(why) => return Attempt::NoSession(why),
            Step::Timeout => return Attempt::NoSession(format!("no CONNACK within {} s", STEP_WAIT.as_secs())),
        };
        if let Some(max) = max_qos.filter(|&m| m < qos) {
            return Attempt::QosAbove { max };
        }
        if let Some(max) = max_packet.filter(|&m| (m as usize) < publish_packet_bytes(self.topic, bytes)) {
            return Attempt::TooLarge { max };
        }
        let granted = match self.subscribe(qos) {
            Step::Got(granted) => granted,
            Step::Closed(why) => return Attempt::Closed { acked: false, why: format!("on SUBSCRIBE: {why}") },
            Step::Timeout => return Attempt::NoAck,
        };
        let nonce = nonce();
        let sent_at = Instant::now();
        if !self.client.try_publish(self.topic, qos, false, payload(&nonce, bytes), None) {
            return Attempt::NoAck;
        }
        self.outcome(qos, granted, &nonce, sent_at)
    }

    /// The granted QoS, or `None` if the broker refused the subscription.
    fn subscribe(&self, qos: u8) -> Step<Option<u8>> {
        if !self.client.try_subscribe(self.topic, qos) {
            return Step::Timeout;
        }
        self.next(STEP_WAIT, |e| match e {
            WireEvent::SubAck(granted) => Some(*granted),
            _ => None,
        })
    }

    /// After the publish: its acknowledgement (or MQTT 5 refusal), then (if subscribed) the echo.
    fn outcome(&self, qos: u8, granted: Option<u8>, nonce: &str, sent_at: Instant) -> Attempt {
        let acked = |e: &WireEvent| match e {
            WireEvent::Written(None) if qos == 0 => Some(Ok(0)),
            WireEvent::Acked { qos: as_qos, .. } => Some(Ok(*as_qos)),
            WireEvent::Refused(_, why) => Some(Err(*why)),
            _ => None,
        };
        // The echo can overtake the acknowledgement: look for both while waiting for the first.
        let mut echoed = None;
        let acked_as = match self.next(STEP_WAIT, |e| {
            if is_echo(e, nonce) {
                echoed = Some(sent_at.elapsed());
            }
            acked(e)
        }) {
            Step::Got(Ok(acked_as)) => acked_as,
            Step::Got(Err(why)) => return Attempt::Refused(why),
            Step::Closed(why) => return Attempt::Closed { acked: false, why },
            Step::Timeout => return Attempt::NoAck,
        };
        let Some(granted) = granted else { return Attempt::Unreadable { acked: true } };
        let echo = match echoed {
            Some(at) => Step::Got(at),
            None => self.next(ECHO_WAIT, |e| is_echo(e, nonce).then(|| sent_at.elapsed())),
        };
        match echo {
            Step::Got(at) => Attempt::Delivered { ms: at.as_millis() as u64, granted, acked_as },
            Step::Closed(why) => Attempt::Closed { acked: true, why },
            Step::Timeout => Attempt::Lost,
        }
    }

    /// Waits up to `wait` for an event `want` maps to `Some`.
    fn next<T>(&self, wait: Duration, mut want: impl FnMut(&WireEvent) -> Option<T>) -> Step<T> {
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(e)) => {
                    if let Some(t) = want(&e) {
                        return Step::Got(t);
                    }
                }
                Ok(Err(why)) => return Step::Closed(why),
                Err(RecvTimeoutError::Disconnected) => return Step::Closed("the connection ended".into()),
                Err(RecvTimeoutError::Timeout) => return Step::Timeout,
            }
        }
    }
}

fn is_echo(e: &WireEvent, nonce: &str) -> bool {
    matches!(e, WireEvent::Message(payload) if payload.windows(nonce.len()).any(|w| w == nonce.as_bytes()))
}

/// Unique per probe, so an old retained or queued probe is never taken for this one.
fn nonce() -> String {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{:x}-{nanos:x}", std::process::id())
}

/// A JSON probe of exactly `bytes` bytes (or the smallest possible, if fewer).
fn payload(nonce: &str, bytes: usize) -> Vec<u8> {
    let head = format!("{{\"schema\":\"sonoedge.check.v1\",\"probe\":\"{nonce}\",\"pad\":\"");
    let pad = bytes.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad)).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed() -> Attempt {
        Attempt::Closed { acked: false, why: "connection closed by peer".into() }
    }

    /// Runs `judge` with scripted retries; returns the verdict and the retries asked for.
    fn judged(qos: u8, first: Attempt, retries: &[(u8, bool, Attempt)]) -> (Verdict, Vec<(u8, bool)>) {
        let mut asked = Vec::new();
        let verdict = judge(qos, first, |q, small| {
            asked.push((q, small));
            retries.iter().find(|(rq, rs, _)| (*rq, *rs) == (q, small)).map_or(Attempt::Lost, |(_, _, a)| a.clone())
        });
        (verdict, asked)
    }

    const OK: Attempt = Attempt::Delivered { ms: 3, granted: 1, acked_as: 1 };

    #[test]
    fn a_probe_that_comes_back_needs_no_second_attempt() {
        assert_eq!(judged(1, OK, &[]), (Verdict::Delivered { ms: 3, granted: 1, acked_as: 1 }, vec![]));
    }

    #[test]
    fn a_qos_2_publish_closed_by_the_broker_while_qos_1_works_is_a_refused_qos() {
        assert_eq!(judged(2, closed(), &[(1, false, OK)]), (Verdict::QosRefused { works: 1, announced: false }, vec![(1, false)]));
    }

    #[test]
    fn an_acknowledged_probe_that_never_arrives_while_a_small_one_does_is_a_size_limit() {
        assert_eq!(judged(1, Attempt::Lost, &[(1, true, OK)]), (Verdict::SizeLimit { announced: None }, vec![(1, true)]));
    }

    #[test]
    fn when_nothing_gets_through_the_publish_is_denied_and_the_first_outcome_is_kept() {
        let (v, asked) = judged(2, Attempt::Lost, &[]);
        assert_eq!((v, asked), (Verdict::Denied { first: Attempt::Lost }, vec![(1, false), (1, true)]));
        assert!(judged(0, closed(), &[]).0.fails());
        assert_eq!(judged(0, closed(), &[]).1, vec![(0, true)], "QoS 0 is retried at QoS 0");
    }

    #[test]
    fn a_refused_subscription_leaves_delivery_unverified_which_is_not_a_failure() {
        let (v, asked) = judged(1, Attempt::Unreadable { acked: true }, &[]);
        assert_eq!((v.clone(), asked), (Verdict::Unverified { acked: true }, vec![]));
        assert!(!v.fails());
        assert!(judged(1, Attempt::NoSession("refused".into()), &[]).0.fails());
    }

    #[test]
    fn what_an_mqtt5_server_announces_or_answers_is_the_verdict_without_guessing() {
        let (v, asked) = judged(1, Attempt::Refused(Refusal::NotAuthorized), &[]);
        assert_eq!((v, asked), (Verdict::Refused(Refusal::NotAuthorized), vec![]));
        assert_eq!(judged(1, Attempt::TooLarge { max: 300 }, &[]), (Verdict::SizeLimit { announced: Some(300) }, vec![]));
        // A Maximum QoS of 1 for a QoS 2 probe: QoS 1 is tried, and the verdict says it was announced.
        let (v, asked) = judged(2, Attempt::QosAbove { max: 1 }, &[(1, false, OK)]);
        assert_eq!((v, asked), (Verdict::QosRefused { works: 1, announced: true }, vec![(1, false)]));
        // Maximum QoS 0 for a QoS 1 probe: QoS 0 is tried, then a small one at QoS 0.
        let (v, asked) = judged(1, Attempt::QosAbove { max: 0 }, &[]);
        assert_eq!((v, asked), (Verdict::Denied { first: Attempt::QosAbove { max: 0 } }, vec![(0, false), (0, true)]));
        assert!(Verdict::Refused(Refusal::QuotaExceeded).fails());
        assert!(!Verdict::QosRefused { works: 1, announced: true }.fails(), "the daemon publishes at the server's maximum");
        assert!(Verdict::QosRefused { works: 1, announced: false }.fails(), "a close or a drop at the configured QoS");
    }

    #[test]
    fn the_probe_payload_has_the_asked_size_and_carries_its_nonce() {
        let p = payload("abc-1", 700);
        assert_eq!(p.len(), 700);
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["probe"], "abc-1");
        assert!(payload("abc-1", 1).len() < SMALL_BYTES);
    }
}
