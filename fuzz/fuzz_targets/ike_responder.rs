//! Feeds arbitrary datagrams to a responder endpoint, interleaved with a
//! genuine IKE_SA_INIT so the fuzzer also reaches the encrypted-message
//! paths of a half-open SA. No input may panic.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dmvpn_crypto::TestRng;
use dmvpn_ike::{Config, Endpoint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let hub: SocketAddr = "198.51.100.1:500".parse().unwrap();
    let spoke: SocketAddr = "198.51.100.3:500".parse().unwrap();
    let mut cfg = Config::default();
    cfg.keyring.set_wildcard(b"keykey00");
    let mut responder = Endpoint::new(cfg.clone(), Box::new(TestRng::new(1)));
    let mut initiator = Endpoint::new(cfg, Box::new(TestRng::new(2)));
    initiator.initiate(now, spoke, hub).unwrap();
    while let Some(t) = initiator.poll_transmit() {
        responder.handle_datagram(now, hub, spoke, &t.bytes);
    }
    // Each chunk (split on a 2-byte length prefix) is one datagram.
    let mut rest = data;
    let mut t = now;
    while rest.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (d, tail) = rest[2..].split_at(n);
        responder.handle_datagram(t, hub, spoke, d);
        t += Duration::from_secs(1);
        responder.handle_timeout(t);
        while responder.poll_transmit().is_some() {}
        while responder.poll_event().is_some() {}
        rest = tail;
    }
    let _ = responder.poll_timeout();
});
