//! The delivery probe of `sonoedge check`: publishes a probe under the device's own topics
//! (`<prefix>/<device_id>/check`) at the configured QoS, subscribed to it first, and watches it come
//! back. On MQTT 3.1.1 a broker acknowledges a publish its ACL denies (mosquitto, NATS) or drops it
//! for its size, and tells nobody: this round trip is how such loss is found before a cart goes
//! live. A close instead of an acknowledgement (RabbitMQ on a denial, NATS on QoS 2) is told apart
//! by trying again at QoS 1 and with a small payload. I/O stands apart from [`judge`], which decides
//! the verdict from the attempts' outcomes and is tested on its own.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{Client, ConnectionError, Event, Outgoing, Packet, QoS, SubscribeReasonCode};

use super::mqtt::{connect_options, MqttSettings};

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
    /// The configured QoS is refused; `works` got through.
    QosRefused {
        works: u8,
    },
    /// A [`SMALL_BYTES`] probe got through, the full-size one did not.
    SizeLimit,
    /// Not even a small probe at QoS <= 1 got through: `first` is what the full-size one saw.
    Denied {
        first: Attempt,
    },
}

impl Verdict {
    /// Predictions would not arrive: `check` exits 69.
    pub fn fails(&self) -> bool {
        !matches!(self, Verdict::Delivered { .. } | Verdict::Unverified { .. })
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

    fn attempt(&self, qos: u8, bytes: usize) -> Attempt {
        // Not the daemon's client id: a probe under it would take the running daemon's session over.
        let id = format!("sonoedge-check-{}-{qos}-{bytes}", std::process::id());
        match connect_options(self.settings, self.url, &id) {
            Ok(options) => {
                let (client, connection) = Client::new(options, 8);
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
/// where the first one failed: QoS 1 at full size if QoS 2 failed, then the small probe at QoS <= 1.
pub fn judge(qos: u8, first: Attempt, mut retry: impl FnMut(u8, bool) -> Attempt) -> Verdict {
    match first {
        Attempt::Delivered { ms, granted, acked_as } => return Verdict::Delivered { ms, granted, acked_as },
        Attempt::NoSession(why) => return Verdict::Unreachable(why),
        Attempt::Unreadable { acked } => return Verdict::Unverified { acked },
        Attempt::Lost | Attempt::Closed { .. } | Attempt::NoAck => {}
    }
    if qos == 2 && retry(1, false).delivered() {
        return Verdict::QosRefused { works: 1 };
    }
    if retry(qos.min(1), true).delivered() {
        return Verdict::SizeLimit;
    }
    Verdict::Denied { first }
}

/// rumqttc's events, on a channel: the probe waits with timeouts without cancelling its poll. The
/// thread ends at the first error (no reconnect) or when the probe is gone.
fn forward(mut connection: rumqttc::Connection) -> Receiver<Result<Event, ConnectionError>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for event in connection.iter() {
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
    client: &'a Client,
    events: &'a Receiver<Result<Event, ConnectionError>>,
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
        match self.next(STEP_WAIT, |e| matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())) {
            Step::Got(()) => {}
            Step::Closed(why) => return Attempt::NoSession(why),
            Step::Timeout => return Attempt::NoSession(format!("no CONNACK within {} s", STEP_WAIT.as_secs())),
        }
        let granted = match self.subscribe(qos) {
            Step::Got(granted) => granted,
            Step::Closed(why) => return Attempt::Closed { acked: false, why: format!("on SUBSCRIBE: {why}") },
            Step::Timeout => return Attempt::NoAck,
        };
        let nonce = nonce();
        let sent_at = Instant::now();
        if self.client.try_publish(self.topic, qos_of(qos), false, payload(&nonce, bytes)).is_err() {
            return Attempt::NoAck;
        }
        self.outcome(qos, granted, &nonce, sent_at)
    }

    /// The granted QoS, or `None` if the broker refused the subscription.
    fn subscribe(&self, qos: u8) -> Step<Option<u8>> {
        if self.client.try_subscribe(self.topic, qos_of(qos)).is_err() {
            return Step::Timeout;
        }
        self.next(STEP_WAIT, |e| match e {
            Event::Incoming(Packet::SubAck(ack)) => Some(match ack.return_codes.first() {
                Some(SubscribeReasonCode::Success(q)) => Some(*q as u8),
                _ => None,
            }),
            _ => None,
        })
    }

    /// After the publish: its acknowledgement, then (if subscribed) the echo.
    fn outcome(&self, qos: u8, granted: Option<u8>, nonce: &str, sent_at: Instant) -> Attempt {
        let acked = |e: &Event| match e {
            Event::Outgoing(Outgoing::Publish(_)) if qos == 0 => Some(0),
            Event::Incoming(Packet::PubAck(_)) => Some(1),
            Event::Incoming(Packet::PubComp(_)) => Some(2),
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
            Step::Got(acked_as) => acked_as,
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
    fn next<T>(&self, wait: Duration, mut want: impl FnMut(&Event) -> Option<T>) -> Step<T> {
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(e)) => {
                    if let Some(t) = want(&e) {
                        return Step::Got(t);
                    }
                }
                Ok(Err(e)) => return Step::Closed(e.to_string()),
                Err(RecvTimeoutError::Disconnected) => return Step::Closed("the connection ended".into()),
                Err(RecvTimeoutError::Timeout) => return Step::Timeout,
            }
        }
    }
}

fn is_echo(e: &Event, nonce: &str) -> bool {
    matches!(e, Event::Incoming(Packet::Publish(p)) if p.payload.windows(nonce.len()).any(|w| w == nonce.as_bytes()))
}

fn qos_of(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
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
        assert_eq!(judged(2, closed(), &[(1, false, OK)]), (Verdict::QosRefused { works: 1 }, vec![(1, false)]));
    }

    #[test]
    fn an_acknowledged_probe_that_never_arrives_while_a_small_one_does_is_a_size_limit() {
        assert_eq!(judged(1, Attempt::Lost, &[(1, true, OK)]), (Verdict::SizeLimit, vec![(1, true)]));
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
    fn the_probe_payload_has_the_asked_size_and_carries_its_nonce() {
        let p = payload("abc-1", 700);
        assert_eq!(p.len(), 700);
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["probe"], "abc-1");
        assert!(payload("abc-1", 1).len() < SMALL_BYTES);
    }
}
