//! The publisher's event thread: polls rumqttc (either version, through [`super::wire`]), turns
//! its events into calls on the connection policy (connected, written, acknowledged, refused,
//! lost), carries out the answers (wait, point at the next broker URL, hand queued predictions
//! over), applies the server's announced limits, keeps an expiring status fresh, and logs each
//! cause once, rate-limited.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::cause::{self, LogLimit};
use super::wire::{WireConnection, WireError, WireEvent};
use super::{flush, say_status, send_finding, send_state, Ctx, Limits, Shared};
use crate::publish::policy::Retry;
use crate::publish::Refusal;

/// What the event thread remembers between events, for its log lines.
#[derive(Default)]
struct EventLog {
    limit: LogLimit,
    /// Refusals are rate-limited apart from connection failures: both can go on at once.
    refusals: LogLimit,
    /// The last loss was logged, so the reconnect that ends it is logged too.
    loss_logged: bool,
    /// The broker URL (index) of the last session: a session on another one is always logged.
    last_broker: Option<usize>,
    /// The server limits last reported, so each change is reported once.
    reported: Option<(Option<u8>, Option<u32>)>,
}

pub(super) fn event_loop(mut connection: WireConnection, shared: &Shared, ctx: &Ctx) {
    let mut log = EventLog::default();
    while !shared.stop.load(Ordering::Relaxed) {
        *shared.last_poll.lock().unwrap() = Instant::now();
        // A blocking receive: recv_timeout drops rumqttc's poll future whenever the timeout fires,
        // and nothing here should depend on that being cancel-safe. Shutdown wakes this loop with
        // the DISCONNECT request; keep-alive pings bound an idle wait (and so the status refresh).
        match connection.recv() {
            None => break, // every client handle is gone
            Some(Ok(WireEvent::DisconnectSent)) => {
                // Polling on would make rumqttc reconnect (and later die without DISCONNECT: Last Will).
                shared.disconnect_sent.store(true, Ordering::Relaxed);
                break;
            }
            Some(Ok(event)) => on_event(event, shared, ctx, &mut log),
            Some(Err(e)) => {
                if !on_connection_error(&e, &mut connection, shared, ctx, &mut log) {
                    break;
                }
            }
        }
        say_held_online_if_due(shared, ctx);
        refresh_status_if_due(shared, ctx);
    }
}

/// The `online` held back after a short session, once this session has proved itself.
fn say_held_online_if_due(shared: &Shared, ctx: &Ctx) {
    if !shared.online_held.load(Ordering::Relaxed) {
        return;
    }
    let status = shared.status.lock().unwrap().clone();
    let mut policy = shared.policy();
    if let Some(status) = status.filter(|_| policy.may_say_online(Instant::now())) {
        say_status(ctx, shared, &mut policy, &status);
    }
}

fn on_event(event: WireEvent, shared: &Shared, ctx: &Ctx, log: &mut EventLog) {
    match event {
        WireEvent::ConnAck { max_qos, max_packet_bytes } => {
            apply_limits(shared, ctx, max_qos, max_packet_bytes, log);
            on_connected(shared, ctx, log);
        }
        // Every publish we hand over yields one `Written`, in hand-over order (rumqttc takes
        // requests from its channel in order and holds the next one back while an id collides).
        WireEvent::Written(pkid) => shared.policy().written(pkid),
        WireEvent::Acked { pkid, .. } => shared.policy().acked(pkid),
        WireEvent::Refused(pkid, why) => {
            let prediction = shared.policy().refused(pkid, why);
            log_refusal(why, prediction, ctx, log);
        }
        WireEvent::DisconnectSent | WireEvent::SubAck(_) | WireEvent::Message(_) | WireEvent::Other => return,
    }
    // The client's channel has room again, or the session is new.
    flush(shared, ctx);
}

fn on_connected(shared: &Shared, ctx: &Ctx, log: &mut EventLog) {
    let status = shared.status.lock().unwrap().clone();
    let state = shared.state.lock().unwrap().clone();
    let mut policy = shared.policy();
    // Under the policy's lock, as publish_finding holds them: none is held after this drain.
    let held: Vec<_> = shared.held_findings.lock().unwrap().drain(..).collect();
    let broker = policy.broker();
    if log.last_broker != Some(broker) || log.loss_logged {
        let under = ctx.topics.status.trim_end_matches("/status");
        log::info!("mqtt connected to {}; publishing under {under}", ctx.brokers[broker].name);
    }
    log.last_broker = Some(broker);
    policy.connected(Instant::now());
    if let Some(status) = status {
        say_status(ctx, shared, &mut policy, &status);
    }
    if let Some(state) = state {
        policy.send_live(|| send_state(ctx, shared, &state));
    }
    for f in &held {
        policy.send_live(|| send_finding(ctx, shared, f));
    }
}

/// Honours what an MQTT 5 server announced in CONNACK: predictions and stats go out at no more
/// than its Maximum QoS, and nothing larger than its Maximum Packet Size is sent. Reported once.
fn apply_limits(shared: &Shared, ctx: &Ctx, max_qos: Option<u8>, max_packet_bytes: Option<u32>, log: &mut EventLog) {
    let qos = max_qos.map_or(ctx.qos, |m| ctx.qos.min(m));
    *shared.limits.lock().unwrap() = Limits { qos, max_packet_bytes };
    if log.reported == Some((max_qos, max_packet_bytes)) {
        return;
    }
    log.reported = Some((max_qos, max_packet_bytes));
    if qos < ctx.qos {
        log::warn!(
            "mqtt: the broker's Maximum QoS is {qos}: predictions and stats go out at QoS {qos}, not mqtt.qos = {}; \
             set mqtt.qos = {qos} to say so",
            ctx.qos
        );
    }
    if let Some(max) = max_packet_bytes {
        log::info!("mqtt: the broker's Maximum Packet Size is {max} bytes; a larger message is not sent (counted in stats.refused.packet_too_large)");
    }
}

/// MQTT 5: publishes the `online` status and the input state again once half their expiry has passed.
fn refresh_status_if_due(shared: &Shared, ctx: &Ctx) {
    let Some(expiry_s) = ctx.status_expiry_s else { return };
    let due = |sent_at: &std::sync::Mutex<Option<Instant>>| {
        sent_at.lock().unwrap().is_some_and(|at| at.elapsed() >= Duration::from_secs(expiry_s.into()) / 2)
    };
    if due(&shared.status_sent_at) {
        let status = shared.status.lock().unwrap().clone();
        if let Some(status) = status {
            say_status(ctx, shared, &mut shared.policy(), &status);
        }
    }
    if due(&shared.state_sent_at) {
        let state = shared.state.lock().unwrap().clone();
        if let Some(state) = state {
            shared.policy().send_live(|| send_state(ctx, shared, &state));
        }
    }
}

fn log_refusal(why: Refusal, prediction: bool, ctx: &Ctx, log: &mut EventLog) {
    let Some(quiet) = log.refusals.admit(why.name(), Instant::now()) else { return };
    let what =
        if prediction { "a prediction (counted in stats.refused, not sent again)" } else { "a status, state, finding or stats message" };
    let quiet = if quiet > 0 { format!(" ({quiet} similar refusals not logged)") } else { String::new() };
    let hint = match why {
        Refusal::NotAuthorized => {
            format!("; check the broker's ACL lets this user publish to {}/#", ctx.topics.status.trim_end_matches("/status"))
        }
        Refusal::QuotaExceeded => "; the broker's quota for this client is used up".to_string(),
        _ => String::new(),
    };
    log::warn!("mqtt: the broker refused {what}: {}{hint}{quiet}", why.name());
}

/// Waits as the policy says, then points the connection at the broker URL the policy chose; false
/// when shutting down (no reconnect then).
fn on_connection_error(e: &WireError, connection: &mut WireConnection, shared: &Shared, ctx: &Ctx, log: &mut EventLog) -> bool {
    // The policy is told first: from here on nothing is handed to the client until the next CONNACK.
    let (failed, retry) = {
        let mut policy = shared.policy();
        (policy.broker(), policy.connection_error(Instant::now()))
    };
    // rumqttc keeps unacknowledged publishes to resend, but drops them anyway when the broker
    // starts a clean session (ours always is); the policy has re-queued them. Forgetting rumqttc's
    // copies means nothing is sent twice and every later `Written` matches the policy's order.
    connection.forget_client_copies();
    if shared.closing.load(Ordering::Relaxed) {
        return false;
    }
    connection.point_at(&ctx.brokers[retry.broker].options);
    log_loss(e, &retry, shared, ctx, failed, log);
    let until = Instant::now() + retry.delay;
    while Instant::now() < until && !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn log_loss(e: &WireError, retry: &Retry, shared: &Shared, ctx: &Ctx, failed: usize, log: &mut EventLog) {
    let stable = shared.policy().config().stable_after;
    let cause = cause::explain(e, retry.up_for, stable, ctx.qos);
    // Only a lost session is a disconnect; failed attempts keep the reason of the last loss.
    if retry.up_for.is_some() {
        *shared.last_disconnect.lock().unwrap() = Some(cause.text.clone());
    }
    log.loss_logged = false;
    let Some(quiet) = log.limit.admit(cause.kind, Instant::now()) else { return };
    log.loss_logged = true;
    let quiet = if quiet > 0 { format!(" ({quiet} similar failures not logged)") } else { String::new() };
    let (failed, next) = (&ctx.brokers[failed].name, &ctx.brokers[retry.broker].name);
    let delay = retry.delay.as_secs_f64();
    log::warn!("mqtt {failed}: {}; trying {next} in {delay:.1} s, predictions are queued{quiet}", cause.text);
}
