//! Runs the IKEv2 engine over real UDP sockets as initiator toward a peer
//! and prints the negotiated IKE and Child SAs, for early interop checks.
//!
//! ```text
//! cargo run -p dmvpn-ike --example ike_probe -- <local-ip[:port]> <peer-ip[:port]> <psk>
//! ```
//!
//! Binds `local` (port 500 by default) and the NAT-T port 4500 on the same
//! IP. On 4500 the probe adds/strips the non-ESP marker (RFC 3948 §2.2), as
//! the daemon does. After the Child SA is up it deletes the IKE SA again.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dmvpn_crypto::SystemRng;
use dmvpn_ike::{Config, Endpoint, Event};

fn addr(s: &str) -> SocketAddr {
    s.parse()
        .or_else(|_| format!("{s}:500").parse())
        .unwrap_or_else(|_| panic!("bad address {s}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: ike_probe <local-ip[:port]> <peer-ip[:port]> <psk>");
        std::process::exit(2);
    }
    let (local, peer, psk) = (addr(&args[1]), addr(&args[2]), args[3].as_bytes());
    let mut cfg = Config::default();
    cfg.keyring.set_wildcard(psk);
    let natt = cfg.natt_port;
    let s_ike = UdpSocket::bind(local).expect("bind IKE port");
    let s_natt = UdpSocket::bind(SocketAddr::new(local.ip(), natt)).expect("bind NAT-T port");
    for s in [&s_ike, &s_natt] {
        s.set_read_timeout(Some(Duration::from_millis(50))).ok();
    }
    let mut ep = Endpoint::new(cfg, Box::new(SystemRng::new()));
    let start = Instant::now();
    let id = ep.initiate(start, local, peer).expect("initiate");
    println!("initiating IKE SA {id} {local} -> {peer}");
    let mut done = false;
    let mut deleting_until = None;
    let mut buf = [0u8; 65536];
    while start.elapsed() < Duration::from_secs(60) {
        let now = Instant::now();
        while let Some(t) = ep.poll_transmit() {
            let r = if t.needs_non_esp_marker(natt) {
                let mut v = vec![0u8; 4];
                v.extend_from_slice(&t.bytes);
                s_natt.send_to(&v, t.remote)
            } else {
                s_ike.send_to(&t.bytes, t.remote)
            };
            if let Err(e) = r {
                eprintln!("send to {}: {e}", t.remote);
            }
        }
        while let Some(e) = ep.poll_event() {
            match &e {
                Event::ChildSaInstalled(c) => {
                    println!(
                        "CHILD SA installed: spi_in {:08x} spi_out {:08x} mode {:?} esn {} udp_encap {} {} <-> {} (salt in {:02x?})",
                        c.spi_in,
                        c.spi_out,
                        c.mode,
                        c.esn,
                        c.udp_encap,
                        c.local,
                        c.remote,
                        c.salt_in()
                    );
                    done = true;
                }
                other => println!("event: {other:?}"),
            }
            if matches!(
                e,
                Event::AuthFailed { .. }
                    | Event::EstablishFailed { .. }
                    | Event::EstablishTimedOut { .. }
                    | Event::PeerDead { .. }
                    | Event::ChildSaFailed { .. }
            ) {
                done = true;
            }
        }
        if done && deleting_until.is_none() {
            for sa in ep.ike_sas(now) {
                println!(
                    "IKE SA {} {}: {} -> {} spi_i {:016x} spi_r {:016x} suite {:?} nat_local {} nat_remote {} peer id {:?}",
                    sa.id,
                    sa.state,
                    sa.local,
                    sa.remote,
                    sa.spi_i,
                    sa.spi_r,
                    sa.suite,
                    sa.nat_local,
                    sa.nat_remote,
                    sa.remote_id
                );
                for c in &sa.children {
                    println!(
                        "  child {:08x}/{:08x} {:?} esn {} rekey in {:?}",
                        c.spi_in, c.spi_out, c.mode, c.esn, c.rekey_in
                    );
                }
            }
            let _ = ep.delete_sa(now, id);
            deleting_until = Some(now + Duration::from_secs(3));
        }
        if deleting_until.is_some_and(|d| now >= d) {
            break;
        }
        for (s, marker) in [(&s_ike, false), (&s_natt, true)] {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let d = &buf[..n];
                let d = if marker {
                    match d.strip_prefix(&[0u8, 0, 0, 0][..]) {
                        Some(ike) => ike,
                        None => continue, // ESP-in-UDP or keepalive
                    }
                } else {
                    d
                };
                let here = SocketAddr::new(local.ip(), if marker { natt } else { local.port() });
                ep.handle_datagram(Instant::now(), here, from, d);
            }
        }
        if ep.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            ep.handle_timeout(Instant::now());
        }
    }
}
