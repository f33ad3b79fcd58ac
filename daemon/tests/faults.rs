//! The fault suite (issue 14, item 5), in namespaces; each case prints its timings. A hub
//! killed and restarted is `fault_hub_restart.rs`.
//!
//! - 20 % random loss on the underlay, both directions (an nftables `numgen random` rule on the
//!   WAN bridge): registration, a phase 3 shortcut and a TCP transfer between the spokes' LANs
//!   still complete; IKE and NHRP retransmit.
//! - A frozen peer (SIGSTOP): the hub's on-demand DPD gives its verdict at delay + tries ×
//!   retry (± 1 s, the tests' 3 s / 1 s × 5); after SIGCONT the spoke comes back unattended.
//! - A spoke killed (no purge, no DELETE) that comes back from a new public address (a new
//!   Elastic IP): its registration is refused while the hub's entry from the old address
//!   stands, the hub challenges the old holder, and the spoke has its address back within
//!   seconds, not after the holding time.
//! - Spoke B stopped with SIGTERM (purge, then IKE DELETEs) while spoke A has a shortcut to
//!   B's LAN, against a hub that honours purges, one that ignores them (`[debug]
//!   ignore-purge`, as FRR's nhrpd) and one that ignores them and loses B's DELETE: the hub's
//!   entry goes at the purge, at the DELETE or at its DPD verdict on traffic toward B, and A
//!   falls back to the hub path, where packets to B's LAN are dropped and counted.
//! - A NAT mapping change under spoke B (the NAT forgets its mappings and gives B a new
//!   source port): the hub follows B's first authenticated packet from the new port, with
//!   the same IKE SA, and traffic both ways resumes at once.
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft`, `ping`, `iperf3` and
//! `conntrack` (tests/install-deps.sh).

use std::time::{Duration, Instant, SystemTime};

use dmvpn_tests::e2e::{
    HUB_NBMA, HUB_TUNNEL, NAT_OUTSIDE, Node, SPOKE_A_LAN_HOST, SPOKE_A_NBMA, SPOKE_A_TUNNEL,
    SPOKE_B_LAN_HOST, SPOKE_B_TUNNEL, TestDir, Topology, WAN_IF, ping,
};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::{
    DPD_DELAY, DPD_RETRY, DPD_TRIES, Scenario, e2e_config, edit_config, expect, keys,
    log_secs_of_day, route_get, shortcut_route, start_hub_then_spokes, start_registered, table,
    utc_secs_of_day,
};

const LOSS_PERCENT: u32 = 20;
/// How long a spoke may take to register through the loss. One IKE exchange gets through
/// with probability 0.8 × 0.8 = 0.64; IKE sends a request 6 times over 62 s and gives up
/// at 94 s (2 s doubling to 32 s, `dmvpn_ike::Retransmit`), so about one setup in 230 loses
/// every try of IKE_SA_INIT or of IKE_AUTH (2 × 0.36^6) and must start again after the
/// hold-down (10 s, less jitter). A bound below 94 s made the test fail that often (seen once, in a
/// CI rehearsal on 2 Dec 2026: spoke A's first setup never came up, nothing wrong with it);
/// this one allows a second full setup.
const LOSSY_REGISTRATION: Duration = Duration::from_secs(160);

/// Waits for `node`'s registration (IKE SA, Child SA, NHS) with a bound that allows for loss.
fn wait_registered_lossy(s: &mut Scenario<'_>, node: Node, bound: Duration) {
    s.wait_line(node, "IKE SA up", 0, bound, &expect::ike_sa_up);
    s.wait_line(
        node,
        "NHRP registered with NHS",
        0,
        bound,
        &expect::registered_with_nhs,
    );
}

#[test]
fn twenty_percent_underlay_loss_both_ways_still_registers_resolves_and_transfers() {
    require_root_and_tools();
    let dir = TestDir::new("faults-loss").unwrap();
    let t = Topology::new().expect("building the topology");
    // Every frame crossing the WAN bridge, either way, is dropped with probability 1/5.
    t.wan
        .nft(&[
            vec!["add", "table", "bridge", "loss"],
            vec![
                "add",
                "chain",
                "bridge",
                "loss",
                "lossy",
                "{ type filter hook forward priority 0; }",
            ],
            vec![
                "add", "rule", "bridge", "loss", "lossy", "numgen", "random", "mod", "100", "<",
                "20", "counter", "drop",
            ],
        ])
        .expect("the loss rule");
    let k = keys();
    let cfgs = [
        e2e_config(&dir, Node::Hub, &k),
        e2e_config(&dir, Node::SpokeA, &k),
        e2e_config(&dir, Node::SpokeB, &k),
    ];
    // One frame per datagram: with UDP GSO a whole batch crosses the veth bridge as one
    // frame and would be lost or kept together, which no real underlay does (a NIC segments
    // it on the wire).
    for c in &cfgs {
        edit_config(&c.config, |t| {
            table(t, "dataplane").insert("offload".into(), toml::Value::Boolean(false));
        });
    }
    let start = Instant::now();
    let mut s = start_hub_then_spokes("faults-loss", &t, &cfgs);
    s.step(&format!(
        "both spokes register through {LOSS_PERCENT} % loss each way"
    ));
    for spoke in [Node::SpokeA, Node::SpokeB] {
        wait_registered_lossy(&mut s, spoke, LOSSY_REGISTRATION);
    }
    let registered = start.elapsed();

    s.step("a phase 3 shortcut between the spokes' LANs forms");
    let (route_a, route_b) = s.wait_shortcuts(
        &[SPOKE_B_LAN_HOST, SPOKE_B_TUNNEL],
        &[SPOKE_A_LAN_HOST, SPOKE_A_TUNNEL],
        // The spoke-to-spoke IKE setup crosses the same loss: the same allowance.
        LOSSY_REGISTRATION,
    );
    let shortcut = start.elapsed();
    s.note(format!("shortcuts: A {route_a}, B {route_b}"));

    s.step("256 KiB over TCP from LAN A to LAN B");
    let mut server = t.lan_b.command("iperf3");
    // Not one-off (-1): a client attempt that fails under loss must not take the server along.
    server.args(["-s", "-B", SPOKE_B_LAN_HOST]);
    let _server = t
        .lan_b
        .spawn(server, &dir.path().join("iperf3-server.log"))
        .expect("iperf3 -s");
    let json = s.poll("iperf3 -n 256K completes", Duration::from_secs(150), |_| {
        // Bounded per attempt: under loss a stalled control connection can keep one client
        // waiting for minutes, which would outlast the poll's own bound.
        let out = t
            .lan_a
            .exec(
                "timeout",
                &[
                    "45",
                    "iperf3",
                    "-c",
                    SPOKE_B_LAN_HOST,
                    "-n",
                    "256K",
                    "-J",
                    "--connect-timeout",
                    "3000",
                ],
            )
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["end"]["sum_received"]["bytes"]
            .as_u64()
            .filter(|b| *b >= 256 * 1024)
            .map(|_| v)
    });
    let transferred = start.elapsed();
    let drops = t
        .wan
        .exec("nft", &["list", "table", "bridge", "loss"])
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let dropped = drops
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .unwrap_or("?")
        .to_owned();
    s.note(format!(
        "with {LOSS_PERCENT} % loss: both registered after {registered:.1?}, shortcut after {shortcut:.1?}, \
         256 KiB over TCP done after {transferred:.1?} ({:.2} Mbit/s, {} retransmissions); frames dropped on the WAN: {dropped}",
        json["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6,
        json["end"]["sum_sent"]["retransmits"]
    ));
    s.check_alive();
    s.finish();
}

#[test]
fn a_frozen_spoke_is_declared_dead_on_time_and_comes_back_after_sigcont() {
    require_root_and_tools();
    let dir = TestDir::new("faults-freeze").unwrap();
    let t = Topology::new().expect("building the topology");
    let k = keys();
    let cfgs = [
        e2e_config(&dir, Node::Hub, &k),
        e2e_config(&dir, Node::SpokeA, &k),
    ];
    let mut s = start_hub_then_spokes("faults-freeze", &t, &cfgs);
    s.step("spoke A registers");
    s.wait_registered(Node::SpokeA, 0, 0);
    s.reach(&t.hub, "hub", SPOKE_A_TUNNEL);

    s.step("spoke A frozen (SIGSTOP): the hub's DPD verdict at delay + tries × retry");
    let from = s.log_len(Node::Hub);
    // A last answered ping right before the freeze, so the DPD delay (from the last packet
    // heard) starts at the freeze.
    let _ = ping(&t.hub, SPOKE_A_TUNNEL, 1, "0.2");
    s.signal(Node::SpokeA, "STOP");
    let frozen = Instant::now();
    let frozen_wall = utc_secs_of_day(SystemTime::now());
    let expected = Duration::from_secs(u64::from(DPD_DELAY + DPD_TRIES * DPD_RETRY));
    let line = s.poll(
        "the hub logs spoke A dead",
        expected + Duration::from_secs(10),
        |s| {
            // On-demand DPD probes only a peer we send to.
            let _ = ping(&t.hub, SPOKE_A_TUNNEL, 1, "0.3");
            s.lines(Node::Hub, from, &|l| expect::peer_dead_at(l, SPOKE_A_NBMA))
                .into_iter()
                .next()
        },
    );
    // When the hub decided, from its log line's timestamp (the polling above lags by up to a
    // ping's timeout).
    let logged = log_secs_of_day(&line).unwrap_or_else(|| s.fail(format!("no time in {line}")));
    let dead_after = Duration::from_secs_f64((logged - frozen_wall).rem_euclid(86_400.0));
    s.note(format!(
        "frozen spoke declared dead {dead_after:.1?} after the freeze by the hub's log, seen after {:.1?} (DPD {DPD_DELAY} s + {DPD_TRIES} × {DPD_RETRY} s = {expected:?})",
        frozen.elapsed()
    ));
    if dead_after + Duration::from_secs(1) < expected
        || dead_after > expected + Duration::from_secs(1)
    {
        s.fail(format!(
            "DPD verdict {dead_after:?} after the freeze, expected {expected:?} ± 1 s"
        ));
    }

    s.step("SIGCONT: spoke A comes back unattended");
    let hub_from = s.log_len(Node::Hub);
    s.signal(Node::SpokeA, "CONT");
    let resumed = Instant::now();
    let back = s.poll(
        "pings spoke A → hub answered again",
        Duration::from_secs(60),
        |_| {
            let (got, _) = ping(&t.spoke_a, HUB_TUNNEL, 2, "0.3").ok()?;
            (got >= 1).then(|| resumed.elapsed())
        },
    );
    s.wait_line(
        Node::Hub,
        "NHRP registration accepted (again)",
        hub_from,
        Duration::from_secs(60),
        &|l| expect::registration_accepted(l, SPOKE_A_TUNNEL),
    );
    let registered = resumed.elapsed();
    s.note(format!(
        "after SIGCONT: pings answered after {back:.1?}, registered with the hub again after {registered:.1?}"
    ));
    s.reach(&t.hub, "hub", SPOKE_A_TUNNEL);
    s.check_alive();
    s.finish();
}

/// The hub's IKE SA with spoke B: (responder SPI, remote address:port).
fn hub_sa_with_b(s: &Scenario<'_>) -> Option<(String, String)> {
    let sa = s.ike_sa(Node::Hub, NAT_OUTSIDE)?;
    Some((
        sa["spi_r"].as_str()?.to_owned(),
        sa["remote"].as_str()?.to_owned(),
    ))
}

#[test]
fn a_nat_mapping_change_under_a_spoke_is_followed_by_the_hub() {
    require_root_and_tools();
    let dir = TestDir::new("faults-nat").unwrap();
    let t = Topology::new().expect("building the topology");
    let (mut s, _) = start_registered("faults-nat", &t, &dir, &[Node::SpokeB], e2e_config);
    s.reach(&t.spoke_b, "spoke B", HUB_TUNNEL);
    let (spi, before) =
        hub_sa_with_b(&s).unwrap_or_else(|| s.fail("the hub has no IKE SA with spoke B"));
    s.note(format!("the hub sees spoke B at {before}"));

    s.step("the NAT forgets its mappings and maps B to ports 40000-40099 from now on");
    t.nat
        .nft(&[
            vec!["flush", "chain", "ip", "nat", "postrouting"],
            vec![
                "add",
                "rule",
                "ip",
                "nat",
                "postrouting",
                "oifname",
                WAN_IF,
                "meta",
                "l4proto",
                "udp",
                "masquerade",
                "to",
                ":40000-40099",
            ],
            vec![
                "add",
                "rule",
                "ip",
                "nat",
                "postrouting",
                "oifname",
                WAN_IF,
                "masquerade",
            ],
        ])
        .expect("the new NAT rules");
    let out = t.nat.exec("conntrack", &["-F"]).expect("conntrack -F");
    assert!(
        out.status.success(),
        "conntrack -F: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let changed = Instant::now();
    let hub_from = s.log_len(Node::Hub);

    s.step("spoke B → hub pings are answered again, over the new mapping");
    let back = s.poll(
        "a ping spoke B → hub answered",
        Duration::from_secs(30),
        |_| {
            let (got, _) = ping(&t.spoke_b, HUB_TUNNEL, 1, "0.2").ok()?;
            (got == 1).then(|| changed.elapsed())
        },
    );
    s.wait_line(
        Node::Hub,
        "the hub logs the new mapping",
        hub_from,
        Duration::from_secs(10),
        &|l| l.contains("NAT mapping of peer changed"),
    );
    let (spi_after, after) =
        hub_sa_with_b(&s).unwrap_or_else(|| s.fail("the hub lost its IKE SA with spoke B"));
    s.note(format!(
        "after the change: first ping answered after {back:.1?}; the hub sees spoke B at {after}"
    ));
    let port: u16 = after
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    if !(40_000..40_100).contains(&port) {
        s.fail(format!("the hub's IKE SA still points at {after}"));
    }
    if spi_after != spi {
        s.fail(format!(
            "the hub's IKE SA with B was replaced ({spi} → {spi_after}): the mapping was not followed"
        ));
    }
    if back > Duration::from_secs(3) {
        s.fail(format!("traffic resumed only after {back:?}"));
    }

    s.step("hub → spoke B pings are answered without loss");
    let (got, out) = ping(&t.hub, SPOKE_B_TUNNEL, 20, "0.1").expect("ping");
    if got != 20 {
        s.fail(format!("hub → spoke B: {got}/20 answered\n{out}"));
    }
    s.check_alive();
    s.finish();
}

#[test]
fn a_spoke_back_from_a_new_address_gets_its_tunnel_address_back_in_seconds() {
    require_root_and_tools();
    let dir = TestDir::new("faults-new-address").unwrap();
    let t = Topology::new().expect("building the topology");
    let (mut s, cfgs) =
        start_registered("faults-new-address", &t, &dir, &[Node::SpokeA], e2e_config);
    s.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);

    s.step("SIGKILL spoke A, move it to 198.51.100.13, start it again");
    s.kill(Node::SpokeA);
    let new_address = "198.51.100.13";
    for args in [
        vec!["addr", "flush", "dev", WAN_IF],
        vec!["addr", "add", &format!("{new_address}/24"), "dev", WAN_IF],
    ] {
        t.spoke_a.ip(&args).expect("ip addr");
    }
    let hub_from = s.log_len(Node::Hub);
    let restarted = Instant::now();
    s.start(&cfgs[1]);

    s.step("the hub refuses, challenges the old holder, and then accepts the new address");
    s.wait_line(
        Node::Hub,
        "the hub checks the old holder",
        hub_from,
        Duration::from_secs(20),
        &|l| l.contains("checking that its holder is alive") && l.contains(SPOKE_A_NBMA),
    );
    s.wait_line(
        Node::Hub,
        "the old holder declared dead",
        hub_from,
        Duration::from_secs(20),
        &|l| expect::peer_dead_at(l, SPOKE_A_NBMA),
    );
    let back = s.poll(
        "spoke A registered and answering from its new address",
        Duration::from_secs(30),
        |s| {
            let registered = s
                .nhrp_entry(Node::Hub, SPOKE_A_TUNNEL)
                .is_some_and(|e| e.to_string().contains(new_address));
            let (got, _) = ping(&t.spoke_a, HUB_TUNNEL, 1, "0.2").ok()?;
            (registered && got == 1).then(|| restarted.elapsed())
        },
    );
    s.note(format!(
        "spoke A back from {new_address}: registered and pinging {back:.1?} after its restart"
    ));
    if back > Duration::from_secs(15) {
        s.fail(format!(
            "took {back:?}: the challenge gives its verdict in 4 s"
        ));
    }
    s.check_alive();
    s.finish();
}

/// How the hub is set up for [`a_stopping_spoke_leaves_the_hub_whether_it_honours_purges_or_not`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PurgeHub {
    /// A dmvpnd hub: B's Purge Request removes its registration (RFC 2332 §5.2.5).
    Honouring,
    /// `[debug] ignore-purge`, as FRR's nhrpd: B's IKE DELETE is what removes it.
    Ignoring,
    /// Ignoring, and B's IKE messages to the hub lost from the SIGTERM on (its DELETE never
    /// arrives): only the hub's DPD, on traffic toward B, can remove the entry before its
    /// holding time.
    IgnoringDeleteLost,
}

/// The hub's log line (index, seconds of day) of the first match after `from`.
fn hub_line(s: &Scenario<'_>, from: usize, pred: &dyn Fn(&str) -> bool) -> Option<(usize, f64)> {
    let lines = s.lines(Node::Hub, from, pred);
    let first = lines.first()?;
    let all = s.lines(Node::Hub, from, &|_| true);
    let at = all.iter().position(|l| l == first)?;
    Some((at, log_secs_of_day(first)?))
}

/// A hub's drop counter `reason` in `show interface --json`.
fn hub_drops(s: &Scenario<'_>, reason: &str) -> u64 {
    s.show_json(Node::Hub, "interface")["drops"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// Issue 14, item 5: spoke B stops with SIGTERM (it purges its registration, then deletes its
/// IKE SAs) while spoke A has a shortcut to B's LAN, against a hub that honours purges, one
/// that ignores them (as FRR's nhrpd), and one that ignores them and never gets B's DELETE.
/// The hub's entry for B goes at the purge, at the IKE DELETE, or at the hub's DPD verdict on
/// A's traffic; A's shortcut goes with B's DELETE to A, and A's traffic to B's LAN falls back
/// to the hub path and is dropped there, counted, rather than sent into a dead shortcut.
#[test]
fn a_stopping_spoke_leaves_the_hub_whether_it_honours_purges_or_not() {
    require_root_and_tools();
    for mode in [
        PurgeHub::Honouring,
        PurgeHub::Ignoring,
        PurgeHub::IgnoringDeleteLost,
    ] {
        let label = match mode {
            PurgeHub::Honouring => "faults-purge",
            PurgeHub::Ignoring => "faults-purge-ignored",
            PurgeHub::IgnoringDeleteLost => "faults-purge-delete-lost",
        };
        let dir = TestDir::new(label).unwrap();
        let t = Topology::new().expect("building the topology");
        let k = keys();
        let cfgs = [
            e2e_config(&dir, Node::Hub, &k),
            e2e_config(&dir, Node::SpokeA, &k),
            e2e_config(&dir, Node::SpokeB, &k),
        ];
        if mode != PurgeHub::Honouring {
            edit_config(&cfgs[0].config, |t| {
                table(t, "debug").insert("ignore-purge".into(), toml::Value::Boolean(true));
            });
        }
        let mut s = start_hub_then_spokes(label, &t, &cfgs);
        if mode != PurgeHub::Honouring {
            s.wait_line(
                Node::Hub,
                "the ignore-purge warning",
                0,
                Duration::from_secs(5),
                &|l| l.contains("WARN") && l.contains("ignore-purge"),
            );
        }
        s.step(&format!(
            "{mode:?} hub: both spokes register, spoke A has a shortcut to B's LAN"
        ));
        s.wait_registered(Node::SpokeA, 0, 0);
        s.wait_registered(Node::SpokeB, 0, 0);
        let (route_a, _) = s.wait_shortcuts(
            &[SPOKE_B_LAN_HOST, SPOKE_B_TUNNEL],
            &[SPOKE_A_LAN_HOST, SPOKE_A_TUNNEL],
            Duration::from_secs(30),
        );
        s.note(format!("spoke A's shortcut: {route_a}"));
        if s.nhrp_entry(Node::Hub, SPOKE_B_TUNNEL).is_none() {
            s.fail("the hub holds no entry for spoke B");
        }
        let counters = |s: &Scenario<'_>| {
            let c = &s.show_json(Node::Hub, "nhrp")["counters"];
            (
                c["rx"]["purge_request"].as_u64().unwrap_or(0),
                c["drops"]["unhandled_type"].as_u64().unwrap_or(0),
            )
        };
        let (purges_before, unhandled_before) = counters(&s);

        s.step("SIGTERM spoke B");
        if mode == PurgeHub::IgnoringDeleteLost {
            // IKE from B (behind the NAT, so UDP 4500) to the hub: the non-ESP marker, four
            // zero bytes, opens the UDP payload (RFC 3948 §2.2). ESP, the purge, still passes.
            t.wan
                .nft(&[
                    vec!["add", "table", "bridge", "ikeloss"],
                    vec![
                        "add",
                        "chain",
                        "bridge",
                        "ikeloss",
                        "drops",
                        "{ type filter hook forward priority 0; }",
                    ],
                    vec![
                        "add",
                        "rule",
                        "bridge",
                        "ikeloss",
                        "drops",
                        "ip",
                        "saddr",
                        NAT_OUTSIDE,
                        "ip",
                        "daddr",
                        HUB_NBMA,
                        "udp",
                        "dport",
                        "4500",
                        "@th,64,32",
                        "0",
                        "counter",
                        "drop",
                    ],
                ])
                .expect("the IKE loss rule");
        }
        let from = s.log_len(Node::Hub);
        let a_from = s.log_len(Node::SpokeA);
        let sent_wall = utc_secs_of_day(SystemTime::now());
        let sent = Instant::now();
        let status = s
            .terminate(Node::SpokeB, Duration::from_secs(10))
            .unwrap_or_else(|e| s.fail(format!("SIGTERM spoke B: {e}")));
        if !status.success() {
            s.fail(format!("spoke B exited with {status}"));
        }
        let exited = sent.elapsed();

        // A's shortcut goes with B's IKE DELETE to A (never filtered here).
        let a_back = s.poll(
            "spoke A's shortcut to B withdrawn",
            Duration::from_secs(5),
            |_| {
                shortcut_route(&t.spoke_a, &[SPOKE_B_LAN_HOST, SPOKE_B_TUNNEL])
                    .is_none()
                    .then(|| sent.elapsed())
            },
        );
        let via = route_get(&t.spoke_a, SPOKE_B_LAN_HOST);
        if via["gateway"] != HUB_TUNNEL {
            s.fail(format!(
                "spoke A routes B's LAN through {via} after the withdrawal"
            ));
        }

        // Traffic from A's LAN to B's LAN, one ping per poll: through the hub now, which
        // drops it once it holds no entry for B (or, DELETE lost, sends it toward B until
        // its DPD gives up on B: on-demand, the traffic is what makes it probe).
        let no_mapping_before = hub_drops(&s, "no_mapping");
        let bound = match mode {
            PurgeHub::IgnoringDeleteLost => {
                Duration::from_secs(u64::from(DPD_DELAY + DPD_TRIES * DPD_RETRY) + 10)
            }
            _ => Duration::from_secs(3),
        };
        let mut answered = 0;
        s.poll("the hub's entry for spoke B gone", bound, |s| {
            let (got, _) = ping(&t.lan_a, SPOKE_B_LAN_HOST, 1, "0.2").ok()?;
            answered += got;
            s.nhrp_entry(Node::Hub, SPOKE_B_TUNNEL)
                .is_none()
                .then_some(())
        });
        let removed = hub_line(&s, from, &|l| {
            expect::registration_removed(l, SPOKE_B_TUNNEL)
        })
        .unwrap_or_else(|| s.fail("the hub logged no removal of B's registration"));
        let gone_ms = ((removed.1 - sent_wall).rem_euclid(86_400.0) * 1000.0).round();
        let sa_down = hub_line(&s, from, &|l| expect::ike_sa_down(l, NAT_OUTSIDE));
        let dead = hub_line(&s, from, &|l| expect::peer_dead_at(l, NAT_OUTSIDE));
        let (purges, unhandled) = counters(&s);
        let (purges, unhandled) = (purges - purges_before, unhandled - unhandled_before);
        // What removed it, by the order of the hub's log lines.
        match mode {
            PurgeHub::Honouring => {
                let purge_first = sa_down.is_some_and(|d| removed.0 < d.0);
                if !purge_first || purges == 0 || unhandled != 0 {
                    s.fail(format!(
                        "the purge did not remove B first: removal {removed:?}, IKE SA down {sa_down:?}, purges {purges}, unhandled {unhandled}"
                    ));
                }
            }
            PurgeHub::Ignoring => {
                let delete_first = sa_down.is_some_and(|d| d.0 < removed.0);
                if !delete_first || purges == 0 || unhandled == 0 {
                    s.fail(format!(
                        "not the IKE DELETE: removal {removed:?}, IKE SA down {sa_down:?}, purges {purges} (ignored {unhandled})"
                    ));
                }
            }
            PurgeHub::IgnoringDeleteLost => {
                // On-demand DPD: delay + tries × retry after the last packet from B.
                let dpd = f64::from(DPD_DELAY + DPD_TRIES * DPD_RETRY - 1) * 1000.0;
                let dpd_first = dead.is_some_and(|d| d.0 <= removed.0);
                if !dpd_first || unhandled == 0 || gone_ms < dpd {
                    s.fail(format!(
                        "not the DPD verdict: removal {removed:?}, peer dead {dead:?}, ignored purges {unhandled}"
                    ));
                }
            }
        }
        if answered != 0 {
            s.fail(format!(
                "{answered} pings to B's LAN answered with B stopped"
            ));
        }

        s.step("A's traffic to B's LAN: dropped at the hub, counted; no shortcut comes back");
        let pinged = Instant::now();
        let (got, _) = ping(&t.lan_a, SPOKE_B_LAN_HOST, 10, "0.1").expect("ping");
        let no_mapping = hub_drops(&s, "no_mapping") - no_mapping_before;
        if got != 0 || no_mapping < 10 {
            s.fail(format!(
                "after B left: {got}/10 answered, the hub counted {no_mapping} no_mapping drops"
            ));
        }
        if let Some(r) = shortcut_route(&t.spoke_a, &[SPOKE_B_LAN_HOST, SPOKE_B_TUNNEL]) {
            s.fail(format!("spoke A has a shortcut toward B again: {r}"));
        }
        if s.ike_sa(Node::SpokeA, NAT_OUTSIDE).is_some() {
            s.fail("spoke A has an IKE SA with B's address again");
        }
        s.no_line(Node::SpokeA, a_from, "an error", &expect::error);
        let figure = format!(
            "{mode:?} hub: B exited {exited:.1?} after SIGTERM; hub entry gone after {gone_ms} ms (by its log; \
             purges received {purges}, ignored {unhandled}); A's shortcut gone after {a_back:.1?}, A then on the hub path \
             (route via {HUB_TUNNEL}), {no_mapping} packets to B's LAN dropped at the hub as no_mapping in {:.1?}",
            pinged.elapsed()
        );
        s.note(&figure);
        s.check_alive();
        s.finish();
    }
}
