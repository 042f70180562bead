//! The two MQTT versions behind one face: rumqttc's 3.1.1 client and its v5 client, chosen by
//! `mqtt.protocol`. The event thread sees [`WireEvent`]s and the publisher calls [`WireClient`],
//! so the glue in [`super`] and the connection policy exist once. What MQTT 5 adds and the glue
//! uses: PUBACK/PUBREC reason codes (a refusal is a [`Refusal`], counted, never "sent"), the
//! server's Maximum QoS and Maximum Packet Size from CONNACK, message expiry on publishes, and the
//! server's DISCONNECT reason (in the connection error).

use rumqttc::v5::mqttbytes::v5::{
    ConnAck as ConnAck5, Packet as Packet5, PubAckReason, PubRecReason, PublishProperties, SubscribeReasonCode as SubscribeReasonCode5,
};
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::{Event, Outgoing, Packet, QoS};

use crate::publish::Refusal;

/// `mqtt.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    V311,
    V5,
}

/// Connection options of either version.
#[derive(Clone)]
pub enum WireOptions {
    V4(Box<rumqttc::MqttOptions>),
    V5(Box<rumqttc::v5::MqttOptions>),
}

pub enum WireClient {
    V4(rumqttc::Client),
    V5(rumqttc::v5::Client),
}

pub enum WireConnection {
    V4(Box<rumqttc::Connection>),
    V5(Box<rumqttc::v5::Connection>),
}

/// A lost connection or failed attempt, as either client reports it.
#[derive(Debug)]
pub enum WireError {
    V4(Box<rumqttc::ConnectionError>),
    V5(Box<rumqttc::v5::ConnectionError>),
}

/// What the event thread acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireEvent {
    /// A session; MQTT 5 servers may announce limits in it.
    ConnAck {
        max_qos: Option<u8>,
        max_packet_bytes: Option<u32>,
    },
    /// The oldest handed publish was written, under this id (`None`: QoS 0, never acknowledged).
    Written(Option<u16>),
    /// Acknowledged by the exchange of this QoS: 1 a PUBACK, 2 a PUBCOMP (RabbitMQ answers a QoS 2
    /// publish with a PUBACK).
    Acked {
        pkid: u16,
        qos: u8,
    },
    /// MQTT 5: the server refused the publish under this id (a reason code of 0x80 or more).
    Refused(u16, Refusal),
    /// Our DISCONNECT went out.
    DisconnectSent,
    /// A SUBACK: the QoS granted to the first filter, `None` if refused (only `check`'s probe
    /// subscribes; the publisher never does).
    SubAck(Option<u8>),
    /// A message on a subscription (the probe's echo).
    Message(Vec<u8>),
    Other,
}

/// A new client and its connection, for the options of the first broker.
pub fn client(options: &WireOptions, cap: usize) -> (WireClient, WireConnection) {
    match options {
        WireOptions::V4(o) => {
            let (c, conn) = rumqttc::Client::new((**o).clone(), cap);
            (WireClient::V4(c), WireConnection::V4(Box::new(conn)))
        }
        WireOptions::V5(o) => {
            let (c, conn) = rumqttc::v5::Client::new((**o).clone(), cap);
            (WireClient::V5(c), WireConnection::V5(Box::new(conn)))
        }
    }
}

impl WireClient {
    /// Never blocks; false if the client's channel is full. `expiry_s`: MQTT 5's message expiry
    /// (ignored on 3.1.1, which has none).
    pub fn try_publish(&self, topic: &str, qos: u8, retain: bool, payload: Vec<u8>, expiry_s: Option<u32>) -> bool {
        match self {
            WireClient::V4(c) => c.try_publish(topic, qos4(qos), retain, payload).is_ok(),
            WireClient::V5(c) => {
                let props = PublishProperties { message_expiry_interval: expiry_s, ..Default::default() };
                c.try_publish_with_properties(topic, qos5(qos), retain, payload, props).is_ok()
            }
        }
    }

    pub fn try_subscribe(&self, topic: &str, qos: u8) -> bool {
        match self {
            WireClient::V4(c) => c.try_subscribe(topic, qos4(qos)).is_ok(),
            WireClient::V5(c) => c.try_subscribe(topic, qos5(qos)).is_ok(),
        }
    }

    pub fn try_disconnect(&self) -> bool {
        match self {
            WireClient::V4(c) => c.try_disconnect().is_ok(),
            WireClient::V5(c) => c.try_disconnect().is_ok(),
        }
    }
}

impl WireConnection {
    /// The next event (blocking); `None` when every client handle is gone.
    pub fn recv(&mut self) -> Option<Result<WireEvent, WireError>> {
        match self {
            WireConnection::V4(c) => c.recv().ok().map(|r| r.map(event4).map_err(|e| WireError::V4(Box::new(e)))),
            WireConnection::V5(c) => c.recv().ok().map(|r| r.map(event5).map_err(|e| WireError::V5(Box::new(e)))),
        }
    }

    /// Drops what the client holds for resending, including requests handed over after it
    /// noticed the loss (the policy re-queued them), and any id collision left from the lost session.
    pub fn forget_client_copies(&mut self) {
        match self {
            WireConnection::V4(c) => {
                c.eventloop.clean();
                c.eventloop.pending.clear();
                c.eventloop.state.collision = None;
            }
            WireConnection::V5(c) => {
                c.eventloop.clean();
                c.eventloop.pending.clear();
                c.eventloop.state.collision = None;
            }
        }
    }

    /// The broker the next attempt goes to (options of the same version).
    pub fn point_at(&mut self, options: &WireOptions) {
        match (self, options) {
            (WireConnection::V4(c), WireOptions::V4(o)) => c.eventloop.mqtt_options = (**o).clone(),
            (WireConnection::V5(c), WireOptions::V5(o)) => c.eventloop.options = (**o).clone(),
            _ => unreachable!("every broker's options are built for the one configured protocol"),
        }
    }
}

fn qos4(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

pub fn qos5(q: u8) -> QoS5 {
    match q {
        0 => QoS5::AtMostOnce,
        1 => QoS5::AtLeastOnce,
        _ => QoS5::ExactlyOnce,
    }
}

fn event4(e: Event) -> WireEvent {
    match e {
        Event::Incoming(Packet::ConnAck(_)) => WireEvent::ConnAck { max_qos: None, max_packet_bytes: None },
        // QoS 0 goes out with packet id 0 and is never acknowledged.
        Event::Outgoing(Outgoing::Publish(pkid)) => WireEvent::Written((pkid != 0).then_some(pkid)),
        Event::Incoming(Packet::PubAck(a)) => WireEvent::Acked { pkid: a.pkid, qos: 1 },
        Event::Incoming(Packet::PubComp(c)) => WireEvent::Acked { pkid: c.pkid, qos: 2 },
        Event::Outgoing(Outgoing::Disconnect) => WireEvent::DisconnectSent,
        Event::Incoming(Packet::SubAck(a)) => WireEvent::SubAck(match a.return_codes.first() {
            Some(rumqttc::SubscribeReasonCode::Success(q)) => Some(*q as u8),
            _ => None,
        }),
        Event::Incoming(Packet::Publish(p)) => WireEvent::Message(p.payload.to_vec()),
        _ => WireEvent::Other,
    }
}

fn event5(e: rumqttc::v5::Event) -> WireEvent {
    use rumqttc::v5::Event as E5;
    match e {
        E5::Incoming(Packet5::ConnAck(c)) => connack5(&c),
        E5::Outgoing(Outgoing::Publish(pkid)) => WireEvent::Written((pkid != 0).then_some(pkid)),
        E5::Incoming(Packet5::PubAck(a)) => match puback_refusal(a.reason) {
            Some(r) => WireEvent::Refused(a.pkid, r),
            None => WireEvent::Acked { pkid: a.pkid, qos: 1 },
        },
        // A refusing PUBREC ends a QoS 2 exchange: no PUBCOMP follows.
        E5::Incoming(Packet5::PubRec(r)) => pubrec_refusal(r.reason).map_or(WireEvent::Other, |why| WireEvent::Refused(r.pkid, why)),
        E5::Incoming(Packet5::PubComp(c)) => WireEvent::Acked { pkid: c.pkid, qos: 2 },
        E5::Outgoing(Outgoing::Disconnect) => WireEvent::DisconnectSent,
        E5::Incoming(Packet5::SubAck(a)) => WireEvent::SubAck(match a.return_codes.first() {
            Some(SubscribeReasonCode5::Success(q)) => Some(*q as u8),
            _ => None,
        }),
        E5::Incoming(Packet5::Publish(p)) => WireEvent::Message(p.payload.to_vec()),
        _ => WireEvent::Other,
    }
}

fn connack5(c: &ConnAck5) -> WireEvent {
    let p = c.properties.as_ref();
    WireEvent::ConnAck { max_qos: p.and_then(|p| p.max_qos), max_packet_bytes: p.and_then(|p| p.max_packet_size) }
}

/// The refusal a PUBACK reason code means; `None` for success (including "no subscribers").
pub fn puback_refusal(reason: PubAckReason) -> Option<Refusal> {
    Some(match reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => return None,
        PubAckReason::NotAuthorized => Refusal::NotAuthorized,
        PubAckReason::TopicNameInvalid => Refusal::TopicNameInvalid,
        PubAckReason::QuotaExceeded => Refusal::QuotaExceeded,
        PubAckReason::PayloadFormatInvalid => Refusal::PayloadFormatInvalid,
        PubAckReason::PacketIdentifierInUse => Refusal::PacketIdInUse,
        PubAckReason::ImplementationSpecificError => Refusal::ImplementationSpecific,
        PubAckReason::UnspecifiedError => Refusal::Unspecified,
    })
}

fn pubrec_refusal(reason: PubRecReason) -> Option<Refusal> {
    Some(match reason {
        PubRecReason::Success | PubRecReason::NoMatchingSubscribers => return None,
        PubRecReason::NotAuthorized => Refusal::NotAuthorized,
        PubRecReason::TopicNameInvalid => Refusal::TopicNameInvalid,
        PubRecReason::QuotaExceeded => Refusal::QuotaExceeded,
        PubRecReason::PayloadFormatInvalid => Refusal::PayloadFormatInvalid,
        PubRecReason::PacketIdentifierInUse => Refusal::PacketIdInUse,
        PubRecReason::ImplementationSpecificError => Refusal::ImplementationSpecific,
        PubRecReason::UnspecifiedError => Refusal::Unspecified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_reason_codes_are_acks_and_every_failure_code_is_a_named_refusal() {
        assert_eq!(puback_refusal(PubAckReason::Success), None);
        assert_eq!(puback_refusal(PubAckReason::NoMatchingSubscribers), None, "nobody listening is not a refusal");
        assert_eq!(puback_refusal(PubAckReason::NotAuthorized), Some(Refusal::NotAuthorized));
        assert_eq!(pubrec_refusal(PubRecReason::QuotaExceeded), Some(Refusal::QuotaExceeded));
        let a = rumqttc::v5::mqttbytes::v5::PubAck { pkid: 7, reason: PubAckReason::NotAuthorized, properties: None };
        assert_eq!(event5(rumqttc::v5::Event::Incoming(Packet5::PubAck(a))), WireEvent::Refused(7, Refusal::NotAuthorized));
    }

    #[test]
    fn qos_0_publishes_are_written_without_an_id_in_both_versions() {
        assert_eq!(event4(Event::Outgoing(Outgoing::Publish(0))), WireEvent::Written(None));
        assert_eq!(event5(rumqttc::v5::Event::Outgoing(Outgoing::Publish(3))), WireEvent::Written(Some(3)));
    }
}
