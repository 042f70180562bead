//! Scripted MQTT 3.1.1 brokers on loopback for the publisher's unit tests: each misbehaves in one
//! way mosquitto cannot be made to (close right after CONNACK, never acknowledge), and reports what
//! it saw. Test-only.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CONNACK_ACCEPTED: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

/// Answers every CONNECT with a CONNACK and closes at once (what an ACL denial or a client-id
/// takeover looks like to the client) for `run_for`; returns how many connections it accepted.
pub fn closing_after_connack(run_for: Duration) -> (u16, JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (until, mut connections) = (Instant::now() + run_for, 0);
        while Instant::now() < until {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            connections += 1;
            s.set_nonblocking(false).unwrap();
            let _ = read_packet(&mut s);
            let _ = s.write_all(&CONNACK_ACCEPTED);
        }
        connections
    });
    (port, t)
}

/// First session: takes `n` QoS 1 publishes without acknowledging any, then closes. Second
/// session: acknowledges every publish until `run_for` has passed. Returns each session's payloads.
pub fn unacking_then_acking(n: usize, run_for: Duration) -> (u16, JoinHandle<[Vec<serde_json::Value>; 2]>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let until = Instant::now() + run_for;
        let mut unacked = Vec::new();
        if let Some(mut first) = session(&listener, until) {
            while unacked.len() < n {
                let Some((payload, _)) = next_publish(&mut first) else { break };
                unacked.push(payload);
            }
        }
        let mut acked = Vec::new();
        let Some(mut second) = session(&listener, until) else { return [unacked, acked] };
        while Instant::now() < until {
            let Some((payload, pkid)) = next_publish(&mut second) else { continue };
            second.write_all(&[0x40, 0x02, (pkid >> 8) as u8, pkid as u8]).unwrap();
            acked.push(payload);
        }
        [unacked, acked]
    });
    (port, t)
}

/// Accepts one session and acknowledges every publish until `run_for` has passed; returns their
/// payloads (a healthy second broker for failover tests).
pub fn acking(run_for: Duration) -> (u16, JoinHandle<Vec<serde_json::Value>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let until = Instant::now() + run_for;
        let mut acked = Vec::new();
        let Some(mut s) = session(&listener, until) else { return acked };
        while Instant::now() < until {
            let Some((payload, pkid)) = next_publish(&mut s) else { continue };
            s.write_all(&[0x40, 0x02, (pkid >> 8) as u8, pkid as u8]).unwrap();
            acked.push(payload);
        }
        acked
    });
    (port, t)
}

/// Accepts one connection before `until` and accepts its session; reads time out after 100 ms.
fn session(listener: &TcpListener, until: Instant) -> Option<TcpStream> {
    while Instant::now() < until {
        let Ok((mut s, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let (kind, _) = read_packet(&mut s).expect("CONNECT");
        assert_eq!(kind >> 4, 1, "expected CONNECT");
        s.write_all(&CONNACK_ACCEPTED).unwrap();
        return Some(s);
    }
    None
}

/// The next PUBLISH's JSON payload and packet id (0 for QoS 0), skipping other packets.
fn next_publish(s: &mut TcpStream) -> Option<(serde_json::Value, u16)> {
    loop {
        let (kind, body) = read_packet(s)?;
        if kind >> 4 != 3 {
            continue;
        }
        let topic_end = 2 + u16::from_be_bytes([body[0], body[1]]) as usize;
        let (pkid, payload_at) = match (kind >> 1) & 3 {
            0 => (0, topic_end),
            _ => (u16::from_be_bytes([body[topic_end], body[topic_end + 1]]), topic_end + 2),
        };
        return Some((serde_json::from_slice(&body[payload_at..]).expect("JSON payload"), pkid));
    }
}

/// One packet: its first byte and its body; `None` on close or timeout.
fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut byte = [0u8; 1];
    s.read_exact(&mut byte).ok()?;
    let kind = byte[0];
    let (mut len, mut shift) = (0usize, 0);
    loop {
        s.read_exact(&mut byte).ok()?;
        len |= ((byte[0] & 0x7f) as usize) << shift;
        shift += 7;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).ok()?;
    Some((kind, body))
}
