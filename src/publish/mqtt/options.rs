//! Connection options for each broker URL: address, keep-alive, credentials, TLS, and for the
//! publisher a clean session and the Last Will, built for the configured protocol version. Parsed
//! and checked once at start, so a reconnect never meets a bad URL.

use std::path::PathBuf;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::LastWill as LastWill5;
use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

use super::wire::{qos5, Protocol, WireOptions};
use super::{MqttError, MqttSettings, Topics};
use crate::publish::Status;

/// The publisher's options for `url` under its own client id `sonoedge-<device_id>`, with the Last
/// Will `offline` (retained, QoS 1, no expiry: it must outlive the cart).
pub fn publisher_options(
    s: &MqttSettings,
    url: &str,
    device_id: &str,
    topics: &Topics,
    offline: &Status,
) -> Result<WireOptions, MqttError> {
    let will = serde_json::to_vec(offline).expect("status serializes");
    let id = format!("sonoedge-{device_id}");
    match s.protocol {
        Protocol::V311 => {
            let mut o = connect_options(s, url, &id)?;
            // A clean session: rumqttc then drops what it held for resending, and the policy resends instead.
            o.set_clean_session(true);
            o.set_last_will(LastWill::new(&topics.status, will, QoS::AtLeastOnce, true));
            Ok(WireOptions::V4(Box::new(o)))
        }
        Protocol::V5 => {
            let mut o = connect_options5(s, url, &id)?;
            o.set_clean_start(true);
            o.set_last_will(LastWill5::new(&topics.status, will, qos5(1), true, None));
            Ok(WireOptions::V5(Box::new(o)))
        }
    }
}

/// `check`'s probe: the options for `url` in the configured protocol version (a clean session, no
/// Will), under the probe's own client id.
pub fn probe_options(s: &MqttSettings, url: &str, client_id: &str) -> Result<WireOptions, MqttError> {
    Ok(match s.protocol {
        Protocol::V311 => WireOptions::V4(Box::new(connect_options(s, url, client_id)?)),
        Protocol::V5 => WireOptions::V5(Box::new(connect_options5(s, url, client_id)?)),
    })
}

/// [`connect_options`] for MQTT 5.
fn connect_options5(s: &MqttSettings, url: &str, client_id: &str) -> Result<rumqttc::v5::MqttOptions, MqttError> {
    let (tls, host, port) = parse_url(url)?;
    let keep_alive_s = u16::try_from(s.keep_alive_s).map_err(|_| MqttError::KeepAlive(s.keep_alive_s))?;
    let mut o = rumqttc::v5::MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(keep_alive_s.into()));
    if let Some(user) = &s.username {
        o.set_credentials(user, s.password.clone().unwrap_or_default());
    }
    if tls {
        o.set_transport(Transport::tls_with_config(tls_config(s, url)?));
    }
    Ok(o)
}

/// The options for the broker at `url` (one of `s.urls`): address, keep-alive, credentials and TLS
/// from the settings, what every connection of sonoedge's (the publisher's, `check`'s probe) shares.
pub fn connect_options(s: &MqttSettings, url: &str, client_id: &str) -> Result<MqttOptions, MqttError> {
    let (tls, host, port) = parse_url(url)?;
    // rumqttc would truncate a longer keep-alive to 16 bits (65536 s reaches the broker as 0: off).
    let keep_alive_s = u16::try_from(s.keep_alive_s).map_err(|_| MqttError::KeepAlive(s.keep_alive_s))?;
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(keep_alive_s.into()));
    if let Some(user) = &s.username {
        o.set_credentials(user, s.password.clone().unwrap_or_default());
    }
    if tls {
        o.set_transport(Transport::tls_with_config(tls_config(s, url)?));
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
