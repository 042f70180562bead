//! The connection policy of the publisher as a state machine without I/O: the offline queue, the
//! reconnect backoff, the in-flight accounting and the publish counters. It knows nothing of MQTT
//! versions or of rumqttc: the glue in [`super::mqtt`] turns client events into calls here
//! (`connected`, `connection_error`, `written`, `acked`) and carries out the answers (wait this long,
//! hand these messages over). Time is passed in, so tests drive it with made-up instants.
//!
//! Every prediction ends up counted exactly once: made = `predictions_sent` plus
//! `dropped_offline_queue_full` plus `refused` (MQTT 5 reason codes, the broker's Maximum Packet
//! Size) plus `queue_depth` plus `in_flight`. A prediction the broker has not acknowledged when the link drops is
//! put back at the head of the queue and sent again after the reconnect (at least once, as QoS 1
//! promises); it is never counted as sent before the broker has it.
//!
//! Backoff constants, and why:
//! - [`FIRST_DELAY`] 0.5 s: a broker restart or a Wi-Fi roam is often over within a second.
//! - [`MAX_DELAY`] 8 s with [`JITTER`] 25%: waits run 0.5, 1, 2, 4, 8, 8, ... s, each stretched by a
//!   random 0-25% so a fleet that lost the same broker does not return in lockstep. After an outage of
//!   any length the next attempt comes at most 10 s (5 s on average) after the broker is back.
//! - Worst case, a broker that closes every connection right after CONNACK: at most 3600 / 8 = 450
//!   connections an hour (about 400 with the mean wait of 9 s), where the old reset-on-CONNACK loop
//!   made about 5900 (65 in 40 s).
//! - Several brokers (`mqtt.urls`: a cluster's nodes, or a primary and a standby) form a ring with
//!   no favourite: after every failed attempt and every lost session the next URL is tried, after
//!   the same backoff. One mechanism, so the bounds above hold for the whole list (a cluster whose
//!   every node closes after CONNACK sees at most 450 connections an hour from a cart, all nodes
//!   together), and a node that stops after a stable session is replaced by the next one after
//!   0.5-0.625 s. The cart stays on whichever node took it until that one fails.
//! - [`STABLE_AFTER`] 20 s: the backoff starts again from 0.5 s only after a connection stayed up that
//!   long. A broker that closes because of its own rules (ACL, client-id takeover, a refused QoS, its
//!   max_packet_size) does so at the first publishes, within a second or two at the daemon's rates;
//!   20 s is far beyond that and beyond the default keep-alive (15 s), so a link that dies at its first
//!   keep-alive exchange keeps escalating too. Yet after a real working connection, a loss is retried
//!   after 0.5 s.
//! - The same 20 s decide when `online` may be said again ([`Policy::may_say_online`]): after
//!   [`SHORT_SESSIONS_TO_PROVE`] sessions in a row that ended before [`STABLE_AFTER`], the next one
//!   must itself stay up that long before the status says `online`. Each of those short sessions
//!   ends with the broker publishing the Last Will `offline`; without the wait the retained status
//!   would flap online/offline at every reconnect (twins sharing a device_id: 35 changes in 20 s).
//!   One short session is not enough: a broker killed soon after the cart connected is an ordinary
//!   failover, and the next broker's `online` goes out at once. Predictions keep flowing meanwhile.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{PublishCounters, Refusal};

/// What handing a prediction to the client came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hand {
    Taken,
    /// The client's buffer is full: it stays queued for the next flush.
    Full,
    /// It cannot be sent (larger than the broker's Maximum Packet Size): dropped, counted.
    Refused(Refusal),
}

impl From<bool> for Hand {
    fn from(taken: bool) -> Hand {
        if taken {
            Hand::Taken
        } else {
            Hand::Full
        }
    }
}

pub const FIRST_DELAY: Duration = Duration::from_millis(500);
pub const MAX_DELAY: Duration = Duration::from_secs(8);
pub const JITTER: f64 = 0.25;
pub const STABLE_AFTER: Duration = Duration::from_secs(20);
/// Short sessions in a row after which `online` waits for a session to stay up [`STABLE_AFTER`].
pub const SHORT_SESSIONS_TO_PROVE: u32 = 2;

/// Tunables of the policy; [`PolicyConfig::new`] gives the production values above.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyConfig {
    /// Predictions kept while they cannot be sent; past it the oldest is dropped and counted.
    pub queue_capacity: usize,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Each delay is stretched by a random fraction in `[0, jitter)`.
    pub jitter: f64,
    /// How long a connection must stay up before the backoff starts again from `first_delay`.
    pub stable_after: Duration,
    /// How many broker URLs there are to take turns (at least 1).
    pub brokers: usize,
    /// Seed of the jitter's generator: tests inject one to get repeatable delays.
    pub seed: u64,
}

impl PolicyConfig {
    pub fn new(queue_capacity: usize, brokers: usize, seed: u64) -> PolicyConfig {
        PolicyConfig {
            queue_capacity,
            first_delay: FIRST_DELAY,
            max_delay: MAX_DELAY,
            jitter: JITTER,
            stable_after: STABLE_AFTER,
            brokers: brokers.max(1),
            seed,
        }
    }
}

/// The answer to a connection error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Wait this long before the next attempt.
    pub delay: Duration,
    /// How long the lost connection had been up; `None` if the attempt never got a session.
    pub up_for: Option<Duration>,
    /// Predictions put back into the queue because the broker had not acknowledged them.
    pub requeued: usize,
    /// The index of the broker URL to try next.
    pub broker: usize,
}

/// Something handed to the client: a prediction (kept, to be re-queued if the link drops) or a live
/// message (status, stats: not kept; the status is republished on every connect, and a stale stats
/// message is not worth sending).
enum Slot<M> {
    Prediction(M),
    Live,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Down,
    Up { since: Instant },
}

pub struct Policy<M> {
    cfg: PolicyConfig,
    queue: VecDeque<M>,
    /// Handed to the client, in order, not yet reported written to the connection.
    handed: VecDeque<Slot<M>>,
    /// Written under an id, waiting for the broker's acknowledgement; in the order written.
    awaiting: Vec<(u16, Slot<M>)>,
    link: Link,
    /// The index of the broker URL connected to, or to be tried next.
    broker: usize,
    ever_connected: bool,
    /// Sessions in a row that ended before `stable_after`.
    short_sessions: u32,
    backoff: Backoff,
    counters: PublishCounters,
}

impl<M> Policy<M> {
    pub fn new(cfg: PolicyConfig) -> Policy<M> {
        Policy {
            queue: VecDeque::with_capacity(cfg.queue_capacity),
            handed: VecDeque::new(),
            awaiting: Vec::new(),
            link: Link::Down,
            broker: 0,
            ever_connected: false,
            short_sessions: 0,
            backoff: Backoff::new(&cfg),
            counters: PublishCounters::default(),
            cfg,
        }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// The index of the broker URL connected to, or to be tried next.
    pub fn broker(&self) -> usize {
        self.broker
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// Messages of any kind handed to the client and not yet acknowledged (QoS 0: not yet written).
    pub fn outstanding(&self) -> usize {
        self.handed.len() + self.awaiting.len()
    }

    pub fn counters(&self) -> PublishCounters {
        let in_flight = self.handed.iter().chain(self.awaiting.iter().map(|(_, s)| s)).filter(|s| matches!(s, Slot::Prediction(_))).count();
        PublishCounters {
            queue_depth: self.queue.len() as u64,
            in_flight: in_flight as u64,
            connected: self.is_connected(),
            ..self.counters
        }
    }

    /// The broker accepted a session. The backoff is not reset here: see [`STABLE_AFTER`].
    pub fn connected(&mut self, now: Instant) {
        if self.is_connected() {
            return;
        }
        if self.ever_connected {
            self.counters.reconnects += 1;
        }
        self.ever_connected = true;
        self.link = Link::Up { since: now };
    }

    /// A connection was lost, or an attempt failed. Everything the broker has not acknowledged goes
    /// back to the queue; the answer says how long to wait, and which broker URL to try next: the
    /// following one in the list, whether this one failed at once or after a long session.
    pub fn connection_error(&mut self, now: Instant) -> Retry {
        let up_for = match self.link {
            Link::Up { since } => Some(now.saturating_duration_since(since)),
            Link::Down => None,
        };
        self.link = Link::Down;
        if up_for.is_some_and(|d| d >= self.cfg.stable_after) {
            self.backoff.reset(&self.cfg);
            self.short_sessions = 0;
        } else if up_for.is_some() {
            self.short_sessions = self.short_sessions.saturating_add(1);
        }
        let requeued = self.requeue_unacknowledged();
        self.broker = (self.broker + 1) % self.cfg.brokers;
        Retry { delay: self.backoff.next_delay(&self.cfg), up_for, requeued, broker: self.broker }
    }

    /// Whether the status may say `online` now: connected, and either fewer than
    /// [`SHORT_SESSIONS_TO_PROVE`] sessions in a row ended early or this one has been up for
    /// `stable_after` (see the module's notes).
    pub fn may_say_online(&self, now: Instant) -> bool {
        let proving = self.short_sessions >= SHORT_SESSIONS_TO_PROVE;
        match self.link {
            Link::Up { since } => !proving || now.saturating_duration_since(since) >= self.cfg.stable_after,
            Link::Down => false,
        }
    }

    /// Queues a prediction; when the queue is full its oldest entry is dropped and counted.
    pub fn push(&mut self, msg: M) {
        self.queue.push_back(msg);
        self.trim_queue();
    }

    /// Hands queued predictions to the client, oldest first, while connected and while `try_hand`
    /// takes them (false or [`Hand::Full`]: the client's buffer is full; they stay queued for the
    /// next flush; [`Hand::Refused`]: that one is dropped and counted).
    pub fn flush<H: Into<Hand>>(&mut self, mut try_hand: impl FnMut(&M) -> H) {
        while self.is_connected() {
            let Some(msg) = self.queue.front() else { break };
            let hand = try_hand(msg).into();
            if hand == Hand::Full {
                break;
            }
            let msg = self.queue.pop_front().expect("front exists");
            match hand {
                Hand::Refused(why) => self.counters.refused.add(why),
                _ => self.handed.push_back(Slot::Prediction(msg)),
            }
        }
    }

    /// Hands a live message (status, stats) over if connected; false if it was not handed. Live
    /// messages are never queued.
    pub fn send_live(&mut self, try_hand: impl FnOnce() -> bool) -> bool {
        if !self.is_connected() || !try_hand() {
            return false;
        }
        self.handed.push_back(Slot::Live);
        true
    }

    /// The client wrote the oldest handed message to the connection: `Some(id)` if the broker will
    /// acknowledge it under that id, `None` if it will not (QoS 0: as delivered as it will ever be).
    pub fn written(&mut self, id: Option<u16>) {
        // Nothing handed: not one of ours (the glue clears the client's copies on every loss).
        let Some(slot) = self.handed.pop_front() else { return };
        match id {
            Some(id) => self.awaiting.push((id, slot)),
            None => self.delivered(slot),
        }
    }

    /// The broker refused the message written under `id` (an MQTT 5 reason code): a prediction is
    /// counted as refused, not sent, and not sent again (the broker would refuse it again). True if
    /// it was a prediction; an unknown id is ignored.
    pub fn refused(&mut self, id: u16, why: Refusal) -> bool {
        let Some(i) = self.awaiting.iter().position(|(a, _)| *a == id) else { return false };
        let (_, slot) = self.awaiting.remove(i);
        let prediction = matches!(slot, Slot::Prediction(_));
        if prediction {
            self.counters.refused.add(why);
        }
        prediction
    }

    /// The broker acknowledged the message written under `id`; an unknown id is ignored.
    pub fn acked(&mut self, id: u16) {
        let Some(i) = self.awaiting.iter().position(|(a, _)| *a == id) else { return };
        let (_, slot) = self.awaiting.remove(i);
        self.counters.acked += 1;
        self.delivered(slot);
    }

    fn delivered(&mut self, slot: Slot<M>) {
        if let Slot::Prediction(_) = slot {
            self.counters.predictions_sent += 1;
        }
    }

    /// Puts unacknowledged predictions back at the head of the queue, oldest first (written ones
    /// went out before anything still handed). Overflow then drops the oldest, counted.
    fn requeue_unacknowledged(&mut self) -> usize {
        let awaiting = self.awaiting.drain(..).map(|(_, s)| s);
        let lost: Vec<M> = awaiting
            .chain(self.handed.drain(..))
            .filter_map(|s| match s {
                Slot::Prediction(m) => Some(m),
                Slot::Live => None,
            })
            .collect();
        let n = lost.len();
        for msg in lost.into_iter().rev() {
            self.queue.push_front(msg);
        }
        self.trim_queue();
        self.counters.requeued_unacked += n as u64;
        n
    }

    fn trim_queue(&mut self) {
        // The oldest result is the least useful one to a viewer: drop it, and count it.
        while self.queue.len() > self.cfg.queue_capacity.max(1) {
            self.queue.pop_front();
            self.counters.dropped_offline_queue_full += 1;
        }
    }
}

/// Exponential delays with multiplicative jitter from a seeded generator (splitmix64).
struct Backoff {
    next: Duration,
    rng: u64,
}

impl Backoff {
    fn new(cfg: &PolicyConfig) -> Backoff {
        Backoff { next: cfg.first_delay, rng: cfg.seed }
    }

    fn reset(&mut self, cfg: &PolicyConfig) {
        self.next = cfg.first_delay;
    }

    fn next_delay(&mut self, cfg: &PolicyConfig) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(cfg.max_delay);
        base.mul_f64(1.0 + cfg.jitter * self.unit())
    }

    /// A uniform number in [0, 1).
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Production constants without jitter, so delays can be asserted exactly.
    fn exact(queue_capacity: usize) -> Policy<u32> {
        Policy::new(PolicyConfig { jitter: 0.0, ..PolicyConfig::new(queue_capacity, 1, 1) })
    }

    /// Connects, hands over everything queued and returns what was handed, in order.
    fn connect_and_flush(p: &mut Policy<u32>, now: Instant) -> Vec<u32> {
        p.connected(now);
        let mut handed = Vec::new();
        p.flush(|m| {
            handed.push(*m);
            true
        });
        handed
    }

    /// Every prediction is sent, dropped, refused, queued or in flight: never two, never none.
    fn accounted(p: &Policy<u32>) -> u64 {
        let c = p.counters();
        c.predictions_sent + c.dropped_offline_queue_full + c.refused.total() + c.queue_depth + c.in_flight
    }

    #[test]
    fn a_close_right_after_connack_repeated_50_times_never_resets_the_backoff() {
        let mut p = exact(8);
        let mut now = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..50 {
            p.connected(now);
            now += ms(100);
            let retry = p.connection_error(now);
            assert_eq!(retry.up_for, Some(ms(100)));
            delays.push(retry.delay);
            now += retry.delay;
        }
        let mut want = vec![ms(500), ms(1000), ms(2000), ms(4000)];
        want.resize(50, ms(8000));
        assert_eq!(delays, want);
        assert_eq!(p.counters().reconnects, 49);
    }

    #[test]
    fn a_link_that_stays_up_for_the_stable_period_resets_the_backoff() {
        let mut p = exact(8);
        let mut now = Instant::now();
        for want in [500, 1000, 2000, 4000, 8000] {
            assert_eq!(p.connection_error(now).delay, ms(want), "failed attempts without a session escalate");
            now += ms(want);
        }
        p.connected(now);
        now += STABLE_AFTER - ms(1);
        assert_eq!(p.connection_error(now).delay, ms(8000), "19.999 s up is not stable yet");
        p.connected(now);
        now += STABLE_AFTER;
        assert_eq!(p.connection_error(now).delay, ms(500), "20 s up is stable: start again from 0.5 s");
        assert_eq!(p.connection_error(now).delay, ms(1000));
    }

    #[test]
    fn online_waits_for_a_session_to_prove_itself_only_after_a_session_that_ended_early() {
        let mut p = exact(8);
        let mut now = Instant::now();
        assert!(!p.may_say_online(now), "not connected");
        p.connection_error(now); // failed attempts alone prove nothing either way
        p.connected(now);
        assert!(p.may_say_online(now), "the first session says online at once");
        now += ms(300);
        p.connection_error(now); // closed right after CONNACK, or a failover
        p.connected(now);
        assert!(p.may_say_online(now), "one short session: the next (another broker, maybe) says online at once");
        now += ms(300);
        p.connection_error(now); // two in a row: a broker closing sessions on purpose
        for _ in 0..5 {
            p.connected(now);
            assert!(!p.may_say_online(now), "after two short sessions in a row the next must prove itself");
            now += ms(900);
            assert!(!p.may_say_online(now));
            p.connection_error(now);
            p.connection_error(now); // a failed attempt keeps it proving
        }
        p.connected(now);
        assert!(!p.may_say_online(now + STABLE_AFTER - ms(1)));
        assert!(p.may_say_online(now + STABLE_AFTER), "20 s up: online");
        now += STABLE_AFTER + ms(5);
        p.connection_error(now); // an ordinary outage after a stable session
        p.connected(now + ms(500));
        assert!(p.may_say_online(now + ms(500)), "after a stable session online goes out at once");
    }

    #[test]
    fn reconnects_count_once_per_session_after_a_loss_not_per_failed_attempt() {
        let mut p = exact(8);
        let now = Instant::now();
        p.connection_error(now);
        p.connected(now);
        assert_eq!(p.counters().reconnects, 0, "the first session is a connect, not a reconnect");
        p.connected(now);
        p.connection_error(now);
        for _ in 0..3 {
            p.connection_error(now);
        }
        p.connected(now);
        assert_eq!(p.counters().reconnects, 1);
        assert!(p.counters().connected);
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_counts_it() {
        let mut p = exact(3);
        for m in 1..=5 {
            p.push(m);
        }
        let c = p.counters();
        assert_eq!((c.dropped_offline_queue_full, c.queue_depth, c.connected), (2, 3, false));
        assert_eq!(connect_and_flush(&mut p, Instant::now()), vec![3, 4, 5]);
        assert_eq!(accounted(&p), 5);
    }

    #[test]
    fn unacknowledged_predictions_are_requeued_when_the_link_drops_and_resent_in_order() {
        let mut p = exact(8);
        let now = Instant::now();
        p.connected(now);
        for m in [1, 2, 3] {
            p.push(m);
        }
        p.flush(|_| true);
        p.written(Some(11));
        p.written(Some(12));
        p.acked(11);
        let c = p.counters();
        assert_eq!((c.predictions_sent, c.acked, c.in_flight), (1, 1, 2));
        let retry = p.connection_error(now);
        assert_eq!(retry.requeued, 2);
        let c = p.counters();
        assert_eq!((c.predictions_sent, c.queue_depth, c.in_flight, c.requeued_unacked, c.dropped_offline_queue_full), (1, 2, 0, 2, 0));
        assert_eq!(connect_and_flush(&mut p, now), vec![2, 3]);
        p.written(Some(13));
        p.written(Some(14));
        p.acked(14);
        p.acked(13);
        assert_eq!(p.counters().predictions_sent, 3);
        assert_eq!(accounted(&p), 3);
    }

    #[test]
    fn requeued_predictions_past_capacity_are_dropped_oldest_first_and_counted_once() {
        let mut p = exact(2);
        let now = Instant::now();
        p.connected(now);
        p.push(1);
        p.push(2);
        p.flush(|_| true);
        p.push(3);
        p.flush(|_| false); // the client's buffer is full: 3 stays queued
        p.written(Some(1));
        p.connection_error(now);
        let c = p.counters();
        assert_eq!((c.dropped_offline_queue_full, c.queue_depth, c.requeued_unacked, c.predictions_sent), (1, 2, 2, 0));
        assert_eq!(connect_and_flush(&mut p, now), vec![2, 3]);
        assert_eq!(accounted(&p), 3);
    }

    #[test]
    fn qos0_predictions_count_as_sent_once_written_and_are_not_acked() {
        let mut p = exact(4);
        p.connected(Instant::now());
        p.push(7);
        p.flush(|_| true);
        assert_eq!(p.counters().in_flight, 1);
        p.written(None);
        let c = p.counters();
        assert_eq!((c.predictions_sent, c.acked, c.in_flight, p.outstanding()), (1, 0, 0, 0));
        p.connection_error(Instant::now());
        assert_eq!(p.counters().queue_depth, 0, "a written QoS 0 message is not sent again");
    }

    #[test]
    fn live_messages_are_never_queued_or_requeued_but_their_acks_count() {
        let mut p = exact(4);
        let now = Instant::now();
        assert!(!p.send_live(|| panic!("not handed while disconnected")));
        p.connected(now);
        assert!(!p.send_live(|| false));
        assert!(p.send_live(|| true));
        assert!(p.send_live(|| true));
        p.written(Some(5));
        p.acked(5);
        assert_eq!((p.counters().acked, p.counters().predictions_sent, p.outstanding()), (1, 0, 1));
        let retry = p.connection_error(now);
        let c = p.counters();
        assert_eq!((retry.requeued, c.queue_depth, c.requeued_unacked, p.outstanding()), (0, 0, 0, 0));
    }

    #[test]
    fn acks_for_unknown_ids_and_writes_of_nothing_change_nothing() {
        let mut p = exact(4);
        p.connected(Instant::now());
        p.written(Some(3));
        p.acked(3);
        p.acked(9);
        assert_eq!(p.counters(), PublishCounters { connected: true, ..Default::default() });
    }

    #[test]
    fn predictions_are_not_handed_over_while_disconnected() {
        let mut p = exact(4);
        p.push(1);
        p.flush(|_| -> bool { panic!("handed while disconnected") });
        assert_eq!(p.counters().queue_depth, 1);
    }

    #[test]
    fn jitter_stretches_each_delay_by_under_a_quarter_and_repeats_with_the_seed() {
        let delays = |seed| {
            let mut p: Policy<u32> = Policy::new(PolicyConfig::new(4, 1, seed));
            (0..12).map(|_| p.connection_error(Instant::now()).delay).collect::<Vec<_>>()
        };
        let (a, b) = (delays(42), delays(42));
        assert_eq!(a, b);
        assert_ne!(a, delays(43));
        let bases = [500u64, 1000, 2000, 4000, 8000, 8000, 8000, 8000, 8000, 8000, 8000, 8000];
        for (d, base) in a.iter().zip(bases) {
            assert!(*d >= ms(base) && *d < ms(base).mul_f64(1.25), "{d:?} for base {base} ms");
        }
        assert!(a.iter().zip(bases).any(|(d, base)| *d > ms(base)), "jitter applied: {a:?}");
    }

    #[test]
    fn a_broker_that_always_closes_after_connack_sees_at_most_450_connections_an_hour() {
        let mut p: Policy<u32> = Policy::new(PolicyConfig::new(4, 1, 7));
        let start = Instant::now();
        let (mut now, mut connections) = (start, 0);
        while now < start + Duration::from_secs(3600) {
            connections += 1;
            p.connected(now);
            now += p.connection_error(now + ms(50)).delay + ms(50);
        }
        // 3600 s / 8 s = 450 at most; the mean wait of 9 s gives about 400.
        assert!((380..=450).contains(&connections), "{connections} connections in an hour");
    }

    #[test]
    fn after_a_ten_minute_outage_the_next_attempt_comes_within_ten_seconds_of_the_return() {
        let mut p: Policy<u32> = Policy::new(PolicyConfig::new(4, 1, 9));
        let start = Instant::now();
        let back = start + Duration::from_secs(600);
        let mut now = start;
        while now < back {
            now += p.connection_error(now).delay;
        }
        assert!(now - back < Duration::from_secs(10), "{:?} after the broker returned", now - back);
    }

    /// Production constants without jitter, for `brokers` URLs.
    fn ring(brokers: usize) -> Policy<u32> {
        Policy::new(PolicyConfig { jitter: 0.0, ..PolicyConfig::new(8, brokers, 1) })
    }

    #[test]
    fn failed_attempts_take_the_urls_in_turn_with_one_escalating_backoff() {
        let mut p = ring(3);
        let now = Instant::now();
        assert_eq!(p.broker(), 0, "the first URL is tried first");
        let tries: Vec<(usize, Duration)> = (0..7).map(|_| p.connection_error(now)).map(|r| (r.broker, r.delay)).collect();
        let want = [(1, 500), (2, 1000), (0, 2000), (1, 4000), (2, 8000), (0, 8000), (1, 8000)];
        assert_eq!(tries, want.map(|(b, d)| (b, ms(d))));
        assert_eq!(p.broker(), 1);
    }

    #[test]
    fn a_stable_session_lost_is_followed_by_the_next_url_after_the_first_delay() {
        let mut p = ring(2);
        let mut now = Instant::now();
        p.connection_error(now); // the first URL is down at start: the second takes the cart
        p.connected(now);
        assert_eq!(p.broker(), 1);
        now += STABLE_AFTER;
        let retry = p.connection_error(now);
        assert_eq!((retry.broker, retry.delay), (0, ms(500)));
        p.connected(now + retry.delay);
        assert_eq!((p.broker(), p.counters().reconnects), (0, 1), "the session stays on the URL that took it");
    }

    #[test]
    fn predictions_unacknowledged_by_the_lost_broker_go_first_to_the_next_one() {
        let mut p = ring(2);
        let now = Instant::now();
        p.connected(now);
        for m in [1, 2, 3] {
            p.push(m);
        }
        p.flush(|_| true);
        p.written(Some(1));
        p.acked(1);
        p.written(Some(2));
        let retry = p.connection_error(now);
        p.push(4);
        assert_eq!((retry.broker, retry.requeued), (1, 2));
        assert_eq!(connect_and_flush(&mut p, now + retry.delay), vec![2, 3, 4]);
        assert_eq!((p.counters().predictions_sent, accounted(&p)), (1, 4));
    }

    #[test]
    fn one_url_is_retried_alone() {
        let mut p = ring(1);
        let brokers: Vec<usize> = (0..3).map(|_| p.connection_error(Instant::now()).broker).collect();
        assert_eq!(brokers, vec![0, 0, 0]);
    }

    #[test]
    fn a_cluster_whose_every_node_closes_after_connack_sees_at_most_450_connections_an_hour_in_all() {
        let mut p: Policy<u32> = Policy::new(PolicyConfig::new(4, 3, 7));
        let start = Instant::now();
        let (mut now, mut per_node) = (start, [0u32; 3]);
        while now < start + Duration::from_secs(3600) {
            per_node[p.broker()] += 1;
            p.connected(now);
            now += p.connection_error(now + ms(50)).delay + ms(50);
        }
        let all: u32 = per_node.iter().sum();
        assert!((380..=450).contains(&all), "{all} connections in an hour: {per_node:?}");
        assert!(per_node.iter().all(|&n| n.abs_diff(all / 3) <= 1), "the nodes take turns: {per_node:?}");
    }

    #[test]
    fn a_prediction_the_broker_refuses_is_counted_by_reason_and_not_sent_again() {
        let mut p = exact(8);
        let now = Instant::now();
        p.connected(now);
        p.push(1);
        p.push(2);
        p.flush(|_| true);
        p.written(Some(1));
        p.written(Some(2));
        assert!(p.refused(1, Refusal::NotAuthorized));
        p.acked(2);
        assert!(!p.refused(9, Refusal::NotAuthorized), "an unknown id");
        p.connection_error(now);
        let c = p.counters();
        assert_eq!((c.predictions_sent, c.refused.not_authorized, c.refused.total(), c.queue_depth), (1, 1, 1, 0));
        assert_eq!(accounted(&p), 2);
    }

    #[test]
    fn a_prediction_too_large_for_the_broker_is_dropped_as_refused_and_the_rest_flow() {
        let mut p = exact(8);
        p.connected(Instant::now());
        for m in [1, 500, 2] {
            p.push(m);
        }
        let mut handed = Vec::new();
        p.flush(|m| match *m > 100 {
            true => Hand::Refused(Refusal::PacketTooLarge),
            false => {
                handed.push(*m);
                Hand::Taken
            }
        });
        assert_eq!(handed, vec![1, 2]);
        let c = p.counters();
        assert_eq!((c.refused.packet_too_large, c.in_flight, c.queue_depth), (1, 2, 0));
        assert_eq!(accounted(&p), 3);
    }

    #[test]
    fn a_refused_status_or_stats_message_is_not_counted_as_a_prediction() {
        let mut p = exact(8);
        p.connected(Instant::now());
        assert!(p.send_live(|| true));
        p.written(Some(4));
        assert!(!p.refused(4, Refusal::QuotaExceeded));
        assert_eq!((p.counters().refused.total(), p.outstanding()), (0, 0));
    }
}
