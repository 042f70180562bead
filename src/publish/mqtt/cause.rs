//! Names the cause of a lost or refused MQTT connection for the operator (what rumqttc reports,
//! turned into what to check), and keeps a repeating failure from flooding the log.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use rumqttc::{ConnectReturnCode, ConnectionError, StateError};

/// A failure's kind (what the rate limit compares) and its text for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub kind: &'static str,
    pub text: String,
}

/// Explains `e`; `up_for` is how long the lost session had been up (`None`: no session was made),
/// `stable` how long a session must last before a close no longer counts as "right after CONNACK",
/// `qos` the configured QoS (2 is the likeliest cause of such a close: NATS takes 0 and 1 only).
pub fn explain(e: &ConnectionError, up_for: Option<Duration>, stable: Duration, qos: u8) -> Cause {
    let cause = |kind, text: String| Cause { kind, text };
    match (e, up_for) {
        (ConnectionError::ConnectionRefused(code), _) => refused(*code),
        (e, Some(up)) if closed_by_peer(e) && up < stable => {
            let qos2 = if qos == 2 { "QoS 2 refused (mqtt.qos = 2; NATS takes QoS 0 and 1 only), " } else { "" };
            cause(
                "closed-after-connack",
                format!(
                    "connection closed by the broker {:.1} s after CONNACK: check {qos2}the ACL, a duplicate device_id \
                     (client-id takeover) or broker limits (max_packet_size, maximum QoS); `sonoedge check` tells which",
                    up.as_secs_f64()
                ),
            )
        }
        (e, Some(_)) => cause("lost", format!("connection lost: {e}")),
        (ConnectionError::Tls(e), None) => {
            cause("tls", format!("TLS: {e}; check mqtt.ca_file (the CA that signed the broker's certificate) and the host in mqtt.url"))
        }
        (ConnectionError::Io(io), None) if io.kind() == ErrorKind::ConnectionRefused => {
            cause("unreachable", format!("{io}: nothing listens there; check mqtt.url and that the broker runs"))
        }
        (e, None) => cause("no-session", format!("cannot connect: {e}; check mqtt.url, the network and the broker")),
    }
}

fn refused(code: ConnectReturnCode) -> Cause {
    let (kind, why) = match code {
        ConnectReturnCode::BadUserNamePassword => {
            ("bad-credentials", "bad user name or password; check mqtt.username and SONOEDGE_MQTT_PASSWORD or mqtt.password_file")
        }
        ConnectReturnCode::NotAuthorized => ("not-authorized", "not authorized; check that the broker lets this user connect"),
        ConnectReturnCode::BadClientId => ("bad-client-id", "client id rejected; check device_id against the broker's client-id rules"),
        ConnectReturnCode::ServiceUnavailable => ("unavailable", "the broker says it is unavailable"),
        ConnectReturnCode::RefusedProtocolVersion => ("protocol", "the broker does not accept MQTT 3.1.1"),
        ConnectReturnCode::Success => ("refused", "refused with a success code (a broker bug)"),
    };
    Cause { kind, text: format!("connection refused by the broker: {why}") }
}

/// The broker (or something on the path) ended the connection, as opposed to our own timeouts.
fn closed_by_peer(e: &ConnectionError) -> bool {
    let io_closed = |io: &std::io::Error| {
        matches!(io.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe)
    };
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

    #[test]
    fn a_close_soon_after_connack_points_at_acl_takeover_and_limits() {
        let e = ConnectionError::MqttState(StateError::ConnectionAborted);
        let c = explain(&e, Some(Duration::from_millis(300)), STABLE, 1);
        assert_eq!(c.kind, "closed-after-connack");
        assert!(c.text.contains("0.3 s after CONNACK") && c.text.contains("client-id takeover"), "{}", c.text);
        assert!(!c.text.contains("QoS 2 refused"), "{}", c.text);
        assert_eq!(explain(&e, Some(STABLE), STABLE, 1).kind, "lost");
    }

    #[test]
    fn a_close_after_connack_at_qos_2_names_a_refused_qos_first_even_when_seen_as_a_broken_pipe() {
        let io = std::io::Error::from(ErrorKind::BrokenPipe);
        let e = ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io)));
        let c = explain(&e, Some(Duration::from_secs(1)), STABLE, 2);
        assert_eq!(c.kind, "closed-after-connack");
        assert!(c.text.contains("check QoS 2 refused (mqtt.qos = 2"), "{}", c.text);
    }

    #[test]
    fn a_bad_password_names_the_credentials_and_not_the_ca_file() {
        let c = explain(&ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword), None, STABLE, 1);
        assert!(c.text.contains("mqtt.username") && !c.text.contains("ca_file"), "{}", c.text);
        let c = explain(&ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized), None, STABLE, 1);
        assert!(c.text.contains("not authorized") && !c.text.contains("ca_file"), "{}", c.text);
    }

    #[test]
    fn a_refused_tcp_connection_points_at_the_url() {
        let e = ConnectionError::Io(std::io::Error::from(ErrorKind::ConnectionRefused));
        assert_eq!(explain(&e, None, STABLE, 1).kind, "unreachable");
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
