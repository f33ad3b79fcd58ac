//! Reaches past the integrity check: a hub and a spoke bring up an IKE SA and a Child SA
//! (the real exchanges), then every input chunk becomes a request the spoke seals on that
//! SA with the right SPIs, message id and SK payload, carrying a payload chain straight from
//! the fuzzer. The hub decrypts it and runs its INFORMATIONAL, CREATE_CHILD_SA, IKE_AUTH
//! (out of place) or unknown-exchange handlers on payloads no encoder would build; time moves
//! between chunks so timers (DPD, rekeys, deletes) interleave. No input may panic, and the
//! hub's indexes stay consistent.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dmvpn_crypto::TestRng;
use dmvpn_ike::{Config, Endpoint, Event, ExchangeType, IkeSaId, PayloadType};
use libfuzzer_sys::fuzz_target;

const EXCHANGES: [u8; 5] = [34, 35, 36, 37, 43];

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let hub: SocketAddr = "198.51.100.1:500".parse().unwrap();
    let spoke: SocketAddr = "198.51.100.3:500".parse().unwrap();
    let mut cfg = Config::default();
    cfg.keyring.set_wildcard(b"keykey00-keykey00");
    let mut h = Endpoint::new(cfg.clone(), Box::new(TestRng::new(1)));
    let mut s = Endpoint::new(cfg, Box::new(TestRng::new(2)));
    s.initiate(now, spoke, hub).unwrap();
    for _ in 0..4 {
        while let Some(t) = s.poll_transmit() {
            h.handle_datagram(now, hub, spoke, &t.bytes);
        }
        while let Some(t) = h.poll_transmit() {
            s.handle_datagram(now, spoke, hub, &t.bytes);
        }
    }
    let sa = std::iter::from_fn(|| s.poll_event()).find_map(|e| match e {
        Event::IkeSaUp { sa, .. } => Some(sa),
        _ => None,
    });
    let Some(sa): Option<IkeSaId> = sa else {
        return;
    };
    // Each chunk: [exchange selector, first payload type, length (2 bytes), chain...].
    let mut rest = data;
    let mut t = now;
    while rest.len() >= 4 {
        let exchange = ExchangeType(EXCHANGES[usize::from(rest[0]) % EXCHANGES.len()]);
        let first = PayloadType(rest[1]);
        let n = usize::from(u16::from_be_bytes([rest[2], rest[3]])).min(rest.len() - 4);
        let (chain, tail) = rest[4..].split_at(n);
        rest = tail;
        let Some(bytes) = s.seal_raw_request(sa, exchange, first, chain) else {
            return;
        };
        h.handle_datagram(t, hub, spoke, &bytes);
        // The hub's answers (and requests of its own) go back, so responses are processed
        // on the spoke and the hub sees the spoke's answers to its timers' requests.
        while let Some(x) = h.poll_transmit() {
            s.handle_datagram(t, spoke, hub, &x.bytes);
        }
        while let Some(x) = s.poll_transmit() {
            h.handle_datagram(t, hub, spoke, &x.bytes);
        }
        while h.poll_transmit().is_some() {}
        while h.poll_event().is_some() {}
        while s.poll_event().is_some() {}
        t += Duration::from_secs(7);
        h.handle_timeout(t);
        h.check_indexes();
    }
    let _ = h.poll_timeout();
});
