//! Names the cause of a lost or refused MQTT connection for the operator (what rumqttc reports,
//! turned into what to check), and keeps a repeating failure from flooding the log.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode as Code5, DisconnectReasonCode};
use rumqttc::v5::{ConnectionError as Error5, StateError as State5};
use rumqttc::{ConnectReturnCode, ConnectionError, StateError};

use super::wire::WireError;

/// A failure's kind (what the rate limit compares) and its text for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub kind: &'static str,
    pub text: String,
}

fn cause(kind: &'static str, text: String) -> Cause {
    Cause { kind, text }
}

/// What a failure was, whichever protocol version reported it.
enum Failure<'a> {
    /// Explained already: a refused CONNECT, or an MQTT 5 server's DISCONNECT with its reason.
    Known(Cause),
    ClosedByPeer,
    Tls(String),
    Unreachable(&'a std::io::Error),
    Other,
}

/// Explains `e`; `up_for` is how long the lost session had been up (`None`: no session was made),
/// `stable` how long a session must last before a close no longer counts as "right after CONNACK",
/// `qos` the configured QoS (2 is the likeliest cause of such a close: NATS takes 0 and 1 only).
pub fn explain(e: &WireError, up_for: Option<Duration>, stable: Duration, qos: u8) -> Cause {
    let (failure, text) = classify(e);
    match (failure, up_for) {
        (Failure::Known(c), _) => c,
        (Failure::ClosedByPeer, None) if matches!(e, WireError::V5(_)) => cause(
            "protocol",
            format!(
                "the broker closed the connection on the MQTT 5 CONNECT ({text}): it may not speak MQTT 5 \
                 (Debian 12's RabbitMQ 3.10 and NATS 2.9 do not); set mqtt.protocol = \"3.1.1\""
            ),
        ),
        (Failure::ClosedByPeer, Some(up)) if up < stable => closed_after_connack(up, qos),
        (_, Some(_)) => cause("lost", format!("connection lost: {text}")),
        (Failure::Tls(e), None) => {
            cause("tls", format!("TLS: {e}; check mqtt.ca_file (the CA that signed the broker's certificate) and the host in mqtt.url"))
        }
        (Failure::Unreachable(io), None) => {
            cause("unreachable", format!("{io}: nothing listens there; check mqtt.url and that the broker runs"))
        }
        (_, None) => cause("no-session", format!("cannot connect: {text}; check mqtt.url, the network and the broker")),
    }
}

/// Why the broker ended a session or refused one, for `check`'s probe: the refused CONNECT's code
/// or an MQTT 5 server's DISCONNECT reason where there is one, else rumqttc's words.
pub fn close_reason(e: &WireError) -> String {
    let (failure, text) = classify(e);
    match failure {
        Failure::Known(c) => c.text,
        _ => text,
    }
}

/// What `e` was, whichever version reported it, and rumqttc's words for it.
fn classify(e: &WireError) -> (Failure<'_>, String) {
    match e {
        WireError::V4(e) => (failure4(e), e.to_string()),
        WireError::V5(e) => (failure5(e), e.to_string()),
    }
}

fn closed_after_connack(up: Duration, qos: u8) -> Cause {
    let qos2 = if qos == 2 { "QoS 2 refused (mqtt.qos = 2; NATS takes QoS 0 and 1 only), " } else { "" };
    cause(
        "closed-after-connack",
        format!(
            "connection closed by the broker {:.1} s after CONNACK: check {qos2}the ACL, a duplicate device_id \
             (client-id takeover) or broker limits (max_packet_size, maximum QoS); `sonoedge check` tells which. \
             Unless the broker went down: then the next attempt finds nothing listening",
            up.as_secs_f64()
        ),
    )
}

fn failure4(e: &ConnectionError) -> Failure<'_> {
    match e {
        ConnectionError::ConnectionRefused(code) => Failure::Known(refused(*code)),
        ConnectionError::Tls(t) => Failure::Tls(t.to_string()),
        ConnectionError::Io(io) if io.kind() == ErrorKind::ConnectionRefused => Failure::Unreachable(io),
        e if closed_by_peer(e) => Failure::ClosedByPeer,
        _ => Failure::Other,
    }
}

fn failure5(e: &Error5) -> Failure<'_> {
    match e {
        Error5::ConnectionRefused(code) | Error5::MqttState(State5::ConnFail { reason: code }) => Failure::Known(refused5(*code)),
        Error5::MqttState(State5::ServerDisconnect { reason_code, reason_string }) => {
            Failure::Known(server_disconnect(*reason_code, reason_string.as_deref()))
        }
        Error5::Tls(t) => Failure::Tls(t.to_string()),
        Error5::Io(io) if io.kind() == ErrorKind::ConnectionRefused => Failure::Unreachable(io),
        Error5::MqttState(State5::ConnectionAborted) => Failure::ClosedByPeer,
        Error5::MqttState(State5::Io(io)) | Error5::Io(io) if io_closed(io) => Failure::ClosedByPeer,
        _ => Failure::Other,
    }
}

/// An MQTT 5 server's DISCONNECT, by its reason code.
fn server_disconnect(code: DisconnectReasonCode, reason: Option<&str>) -> Cause {
    let said = reason.map_or(String::new(), |r| format!(" (\"{r}\")"));
    let (kind, why) = match code {
        DisconnectReasonCode::SessionTakenOver => (
            "takeover",
            "session taken over by another client with this client id: a duplicate device_id (a cloned SD card?); give each cart its own",
        ),
        DisconnectReasonCode::NotAuthorized => ("not-authorized", "not authorized; check the broker's ACL for this user's topics"),
        DisconnectReasonCode::QoSNotSupported => ("qos-refused", "QoS not supported; lower mqtt.qos (`sonoedge check` finds what works)"),
        DisconnectReasonCode::PacketTooLarge => ("too-large", "packet too large; raise the broker's maximum packet size"),
        DisconnectReasonCode::QuotaExceeded => ("quota", "quota exceeded"),
        DisconnectReasonCode::ServerShuttingDown => ("shutdown", "the broker is shutting down"),
        _ => ("server-disconnect", "see the reason code"),
    };
    cause(kind, format!("the broker disconnected: {code:?}{said}: {why}"))
}

fn refused(code: ConnectReturnCode) -> Cause {
    let (kind, why) = match code {
        ConnectReturnCode::BadUserNamePassword => ("bad-credentials", BAD_CREDENTIALS),
        ConnectReturnCode::NotAuthorized => ("not-authorized", NOT_AUTHORIZED),
        ConnectReturnCode::BadClientId => ("bad-client-id", BAD_CLIENT_ID),
        ConnectReturnCode::ServiceUnavailable => ("unavailable", "the broker says it is unavailable"),
        ConnectReturnCode::RefusedProtocolVersion => ("protocol", "the broker does not accept MQTT 3.1.1"),
        ConnectReturnCode::Success => ("refused", "refused with a success code (a broker bug)"),
    };
    cause(kind, format!("connection refused by the broker: {why}"))
}

const BAD_CREDENTIALS: &str = "bad user name or password; check mqtt.username and SONOEDGE_MQTT_PASSWORD or mqtt.password_file";
const NOT_AUTHORIZED: &str = "not authorized; check that the broker lets this user connect";
const BAD_CLIENT_ID: &str = "client id rejected; check device_id against the broker's client-id rules";

fn refused5(code: Code5) -> Cause {
    let (kind, why) = match code {
        Code5::BadUserNamePassword => ("bad-credentials", BAD_CREDENTIALS),
        Code5::NotAuthorized | Code5::Banned => ("not-authorized", NOT_AUTHORIZED),
        Code5::BadClientId | Code5::ClientIdentifierNotValid => ("bad-client-id", BAD_CLIENT_ID),
        Code5::RefusedProtocolVersion | Code5::UnsupportedProtocolVersion => {
            ("protocol", "the broker does not speak MQTT 5; set mqtt.protocol = \"3.1.1\"")
        }
        Code5::QoSNotSupported => ("qos-refused", "the Will's QoS 1 is not supported by the broker"),
        Code5::ServerUnavailable | Code5::ServiceUnavailable | Code5::ServerBusy | Code5::ConnectionRateExceeded => {
            ("unavailable", "the broker says it is unavailable or busy")
        }
        _ => ("refused", "see the reason code"),
    };
    cause(kind, format!("connection refused by the broker ({code:?}): {why}"))
}

fn io_closed(io: &std::io::Error) -> bool {
    matches!(io.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe)
}

/// The broker (or something on the path) ended the connection, as opposed to our own timeouts.
fn closed_by_peer(e: &ConnectionError) -> bool {
    match e {
        ConnectionError::MqttState(StateError::ConnectionAborted) => true,
        ConnectionError::MqttState(StateError::Io(io)) | ConnectionError::Io(io) => io_closed(io),
        // A write into a socket the broker closed (NATS after a QoS 2 publish) surfaces here.
        ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io))) => io_closed(io),
        _ => false,
    }
}

/// Lets a failure through to the log when its kind differs from the last one logged, and the same
/// kind again once a minute, with the count of those left out.
#[derive(Debug, Default)]
pub struct LogLimit {
    last: Option<(&'static str, Instant)>,
    suppressed: u64,
}

impl LogLimit {
    pub const REPEAT_AFTER: Duration = Duration::from_secs(60);

    /// `Some(n)`: log now, mentioning the `n` similar failures not logged since; `None`: stay quiet.
    pub fn admit(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        let fresh = match self.last {
            Some((k, at)) => k != kind || now.saturating_duration_since(at) >= Self::REPEAT_AFTER,
            None => true,
        };
        if !fresh {
            self.suppressed += 1;
            return None;
        }
        self.last = Some((kind, now));
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STABLE: Duration = Duration::from_secs(20);

    fn v4(e: ConnectionError) -> WireError {
        WireError::V4(Box::new(e))
    }

    #[test]
    fn a_close_soon_after_connack_points_at_acl_takeover_and_limits() {
        let e = v4(ConnectionError::MqttState(StateError::ConnectionAborted));
        let c = explain(&e, Some(Duration::from_millis(300)), STABLE, 1);
        assert_eq!(c.kind, "closed-after-connack");
        assert!(c.text.contains("0.3 s after CONNACK") && c.text.contains("client-id takeover"), "{}", c.text);
        assert!(!c.text.contains("QoS 2 refused"), "{}", c.text);
        // A broker killed just after CONNACK closes the same way; the line does not pretend to know.
        assert!(c.text.contains("Unless the broker went down"), "{}", c.text);
        assert_eq!(explain(&e, Some(STABLE), STABLE, 1).kind, "lost");
    }

    #[test]
    fn a_close_after_connack_at_qos_2_names_a_refused_qos_first_even_when_seen_as_a_broken_pipe() {
        let io = std::io::Error::from(ErrorKind::BrokenPipe);
        let e = v4(ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io))));
        let c = explain(&e, Some(Duration::from_secs(1)), STABLE, 2);
        assert_eq!(c.kind, "closed-after-connack");
        assert!(c.text.contains("check QoS 2 refused (mqtt.qos = 2"), "{}", c.text);
    }

    #[test]
    fn a_bad_password_names_the_credentials_and_not_the_ca_file() {
        let c = explain(&v4(ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword)), None, STABLE, 1);
        assert!(c.text.contains("mqtt.username") && !c.text.contains("ca_file"), "{}", c.text);
        let c = explain(&v4(ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)), None, STABLE, 1);
        assert!(c.text.contains("not authorized") && !c.text.contains("ca_file"), "{}", c.text);
    }

    #[test]
    fn a_refused_tcp_connection_points_at_the_url() {
        let e = v4(ConnectionError::Io(std::io::Error::from(ErrorKind::ConnectionRefused)));
        assert_eq!(explain(&e, None, STABLE, 1).kind, "unreachable");
    }

    #[test]
    fn an_mqtt5_takeover_names_a_duplicate_device_id_and_a_refused_protocol_names_the_key() {
        let e = State5::ServerDisconnect { reason_code: DisconnectReasonCode::SessionTakenOver, reason_string: None };
        let c = explain(&WireError::V5(Box::new(Error5::MqttState(e))), Some(Duration::from_secs(1)), STABLE, 1);
        assert_eq!(c.kind, "takeover");
        assert!(c.text.contains("SessionTakenOver") && c.text.contains("duplicate device_id"), "{}", c.text);
        let c = explain(&WireError::V5(Box::new(Error5::ConnectionRefused(Code5::UnsupportedProtocolVersion))), None, STABLE, 1);
        assert!(c.text.contains("mqtt.protocol = \"3.1.1\""), "{}", c.text);
        let closed = WireError::V5(Box::new(Error5::MqttState(State5::ConnectionAborted)));
        assert!(explain(&closed, None, STABLE, 1).text.contains("may not speak MQTT 5"), "a close before CONNACK");
        assert_eq!(explain(&closed, Some(Duration::from_secs(1)), STABLE, 1).kind, "closed-after-connack");
    }

    #[test]
    fn the_same_failure_is_logged_once_a_minute_with_the_count_left_out() {
        let mut limit = LogLimit::default();
        let t = Instant::now();
        assert_eq!(limit.admit("a", t), Some(0));
        assert_eq!(limit.admit("a", t + Duration::from_secs(1)), None);
        assert_eq!(limit.admit("a", t + Duration::from_secs(2)), None);
        assert_eq!(limit.admit("b", t + Duration::from_secs(3)), Some(2));
        assert_eq!(limit.admit("b", t + Duration::from_secs(62)), None);
        assert_eq!(limit.admit("b", t + Duration::from_secs(63)), Some(1));
    }
}
