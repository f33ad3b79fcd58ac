//! Hub-scale figures for the NHRP engine alone (issue 12): what one control-plane event costs a
//! hub that holds N registered spokes. Not a timed test; it prints a table.
//!
//! `cargo run --release -p dmvpn-nhrp --example hub_scale -- [ROUNDS] [EVENTS] [N...]`
//! (defaults: 3 rounds of 2000 events at N = 1000, 10000, 50000).
//!
//! For each N the hub first takes N Registration Requests ("bring-up", each followed by the
//! `poll_timeout` + `handle_timeout` a daemon's loop does after every input). Then, ROUNDS times,
//! EVENTS steady-state events: a re-registration of a random spoke (one in four from a changed
//! NBMA address, one in four of them behind NAT), its outputs drained, then `poll_timeout` and
//! `handle_timeout`. "harness" is the loop's own cost (building the packets) per event, to
//! subtract from the steady figure. Times are the thread's CPU time from `/proc/thread-self/schedstat` where
//! available (the machine is shared, wall time varies far more), else wall time.
//!
//! Only the engine's public API is used, so the same file measures any version of the engine.
//!
//! Figures of 2026-12-01 (2 shared vCPUs, Intel Xeon, load average 3–5 from other builds; the
//! median round, µs of CPU time per event; "before" is this file built against the engine of
//! commit 310ffea, which walked the whole cache in `poll_timeout` and `handle_timeout`, two
//! runs of 3 × 2000 events; "after" with the indexes, runs of 3 × 50,000 events):
//!
//! | N      | bring-up before | after   | steady before  | after     | steady ratio |
//! |--------|-----------------|---------|----------------|-----------|--------------|
//! | 1,000  | 7.6–8.4         | 1.9–7.1 | 13–20          | 3.1–4.6   | ≈ 4×         |
//! | 10,000 | 101–104         | 3.1–4.1 | 168–276        | 4.2–6.1   | ≈ 40×        |
//! | 50,000 | 783–814         | 3.7–5.0 | 1,494–1,940    | 6.5–10.1  | ≈ 200×       |
//!
//! Before, the cost per event grew linearly with N (every event walked every entry); after,
//! it grows by ≈ 2× from 1,000 to 50,000 spokes (O(log N) index operations whose cache misses
//! grow with the table), of which ≈ 0.4 µs is the harness.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use dmvpn_nhrp::packet::ip_bytes;
use dmvpn_nhrp::{Config, Engine, NhsConfig, SequentialRequestIds};

const HUB_TUN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const HUB_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const KEY: &[u8] = b"keykey00";

/// Nanoseconds of CPU time this thread used, or of wall time since `origin` without procfs.
fn clock_ns(origin: Instant) -> u128 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u128>().ok())
        .unwrap_or_else(|| origin.elapsed().as_nanos())
}

/// Spoke `i`'s tunnel address: 10.x.y.z from 10.0.1.0 on, inside the hub's /8.
fn spoke_tun(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 1, 0)) + i))
}

/// Spoke `i`'s NBMA address, `generation` moving it (a re-registration from a new address).
fn spoke_nbma(i: u32, generation: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i + generation * 0x0010_0000,
    ))
}

/// A template spoke whose Registration Request is re-addressed for every simulated spoke.
struct Registrations {
    template: Engine,
    next_id: u32,
}

impl Registrations {
    fn new() -> Self {
        let mut c = Config::spoke(
            spoke_tun(0),
            8,
            spoke_nbma(0, 0),
            vec![NhsConfig {
                protocol_addr: Some(IpAddr::V4(HUB_TUN)),
                nbma_addr: IpAddr::V4(HUB_NBMA),
                multicast: true,
            }],
        );
        c.auth_key = Some(KEY.to_vec());
        // Not unique, so a spoke may re-register from a changed address.
        c.unique = false;
        let template = Engine::new(c, SequentialRequestIds::starting_at(1)).expect("config");
        Self {
            template,
            next_id: 1,
        }
    }

    /// The bytes of spoke `tun`'s Registration Request, claiming NBMA `nbma`.
    fn packet(&mut self, tun: IpAddr, nbma: IpAddr) -> Vec<u8> {
        self.next_id = self.next_id.wrapping_add(1);
        let mut p = self
            .template
            .registration_request(0, self.next_id)
            .expect("one NHS");
        p.src_protocol = ip_bytes(tun);
        p.src_nbma = ip_bytes(nbma);
        p.to_bytes().expect("encodes")
    }
}

fn hub() -> Engine {
    let mut c = Config::hub(IpAddr::V4(HUB_TUN), 8, IpAddr::V4(HUB_NBMA));
    c.auth_key = Some(KEY.to_vec());
    Engine::new(c, SequentialRequestIds::starting_at(1)).expect("config")
}

fn drain(hub: &mut Engine) -> usize {
    let mut n = 0;
    while hub.poll_transmit().is_some() {
        n += 1;
    }
    while hub.poll_event().is_some() {
        n += 1;
    }
    n
}

/// Tiny deterministic generator (xorshift64*), so every version sees the same events.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let events: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let sizes: Vec<u32> = if args.len() > 2 {
        args.iter().skip(2).filter_map(|a| a.parse().ok()).collect()
    } else {
        vec![1_000, 10_000, 50_000]
    };
    let origin = Instant::now();
    println!("hub_scale: {rounds} rounds x {events} events per N (CPU time of this thread)");
    println!(
        "{:>7} | {:>16} | {:>18} | {:>13} | rounds (µs/event)",
        "N", "bring-up µs/reg", "steady µs/event", "harness µs"
    );
    for &n in &sizes {
        let mut regs = Registrations::new();
        let mut hub = hub();
        let mut now = Instant::now();
        // NBMA generation per spoke; odd generations are behind NAT (observed ≠ claimed).
        let mut generation = vec![0u32; n as usize];
        let t0 = clock_ns(origin);
        for i in 0..n {
            let tun = spoke_tun(i);
            let claimed = spoke_nbma(i, 0);
            let bytes = regs.packet(tun, claimed);
            hub.sa_up(now, claimed);
            hub.handle_packet(now, claimed, &bytes);
            drain(&mut hub);
            std::hint::black_box(hub.poll_timeout());
            hub.handle_timeout(now);
            now += Duration::from_micros(10);
        }
        let bring_up = (clock_ns(origin) - t0) as f64 / 1e3 / f64::from(n);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(n));
        let mut per_round = Vec::with_capacity(rounds);
        let mut sink = 0usize;
        for _ in 0..rounds {
            let t0 = clock_ns(origin);
            for _ in 0..events {
                let i = (rng.next() % u64::from(n)) as u32;
                let r = rng.next();
                let slot = &mut generation[i as usize];
                if r.is_multiple_of(4) {
                    *slot = (*slot + 1) % 8;
                }
                let claimed = spoke_nbma(i, *slot & !1);
                // Behind NAT: the packet arrives from another address than it claims.
                let observed = if *slot & 1 == 1 {
                    spoke_nbma(i, *slot)
                } else {
                    claimed
                };
                let bytes = regs.packet(spoke_tun(i), claimed);
                hub.sa_up(now, observed);
                hub.handle_packet(now, observed, &bytes);
                sink += drain(&mut hub);
                if let Some(t) = hub.poll_timeout() {
                    sink += usize::from(t <= now);
                }
                hub.handle_timeout(now);
                sink += drain(&mut hub);
                now += Duration::from_micros(10);
            }
            per_round.push((clock_ns(origin) - t0) as f64 / 1e3 / events as f64);
        }
        // What the loop costs without the hub (building the packets): the same in every
        // version, so it is shown to be subtracted, not hidden in the figures.
        let t0 = clock_ns(origin);
        for _ in 0..events {
            let i = (rng.next() % u64::from(n)) as u32;
            let r = rng.next();
            let b = regs.packet(spoke_tun(i), spoke_nbma(i, (r % 8) as u32 & !1));
            sink += b.len();
        }
        let harness = (clock_ns(origin) - t0) as f64 / 1e3 / events as f64;
        let mut sorted = per_round.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
        let rounds_txt: Vec<String> = per_round.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{n:>7} | {bring_up:>16.2} | {median:>18.2} | {harness:>13.2} | {}",
            rounds_txt.join(" ")
        );
        std::hint::black_box(sink);
    }
}
