#![no_main]
//! Arbitrary bytes into a hub engine's and a spoke engine's `handle_packet`,
//! then a timer run, with every output drained: nothing may panic.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use dmvpn_nhrp::{Config, Engine, NhsConfig, SequentialRequestIds};
use libfuzzer_sys::fuzz_target;

fn drain(e: &mut Engine) {
    while e.poll_transmit().is_some() {}
    while e.poll_event().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    let hub_nbma = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    let hub_tun = IpAddr::V4(Ipv4Addr::new(10, 250, 0, 1));
    let peer = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
    let now = Instant::now();
    let auth = data.first().is_some_and(|b| b & 1 == 1);

    let mut hc = Config::hub(hub_tun, 24, hub_nbma);
    let mut sc = Config::spoke(
        IpAddr::V4(Ipv4Addr::new(10, 250, 0, 9)),
        24,
        IpAddr::V4(Ipv4Addr::new(172, 16, 0, 10)),
        vec![NhsConfig { protocol_addr: Some(hub_tun), nbma_addr: hub_nbma, multicast: true }],
    );
    if auth {
        hc.auth_key = Some(b"keykey00".to_vec());
        sc.auth_key = Some(b"keykey00".to_vec());
    }
    let mut hub = Engine::new(hc, SequentialRequestIds::starting_at(1)).expect("valid config");
    let mut spoke = Engine::new(sc, SequentialRequestIds::starting_at(1)).expect("valid config");
    spoke.sa_up(now, hub_nbma);
    spoke.register(now);
    drain(&mut spoke);

    // Fix up the packet size and checksum (RFC 2332 §5.2.0.1) so most inputs
    // reach the engine's handlers rather than the checksum check.
    // Fixed header: ar$afn 0..2, ar$pro.type 2..4, ar$pktsz 10..12, ar$chksum 12..14,
    // ar$op.version 16. The address family, protocol and version are set too: the
    // engine drops anything but IPv4 over NHRP version 1 before its handlers.
    let mut body = data.get(1..).unwrap_or_default().to_vec();
    if let (true, Ok(len)) = (body.len() >= 20, u16::try_from(body.len())) {
        body[0..2].copy_from_slice(&1u16.to_be_bytes());
        body[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
        body[16] = 1;
        body[10..12].copy_from_slice(&len.to_be_bytes());
        body[12..14].copy_from_slice(&[0, 0]);
        let sum = dmvpn_nhrp::packet::checksum(&body);
        body[12..14].copy_from_slice(&sum.to_be_bytes());
    }
    let body = body.as_slice();
    hub.handle_packet(now, peer, body);
    drain(&mut hub);
    spoke.handle_packet(now, hub_nbma, body);
    drain(&mut spoke);
    hub.traffic_indication_needed(now, peer, body);
    drain(&mut hub);
    for e in [&mut hub, &mut spoke] {
        let later = now + Duration::from_secs(8000);
        e.handle_timeout(later);
        let _ = e.poll_timeout();
        let _ = e.cache_entries(later);
        drain(e);
    }
});
