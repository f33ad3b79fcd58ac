//! A hub and two spokes (B behind a 1:1 NAT) in memory, with real IKEv2, NHRP, ESP and GRE:
//! registration, phase 3 redirect → resolution → direct IKE → shortcut → data over ESP,
//! rekeys under traffic, DPD death, purge on shutdown. Simulated clock, seeded RNGs.

mod sim;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use dmvpn_node::Event;
use sim::three::*;
use sim::{Kind, Net, udp_packet};

fn network() -> Net {
    Net::hub_and_two_spokes()
}

fn registered(net: &Net, tunnel: Ipv4Addr) -> bool {
    net.hosts[HUB].events.iter().any(
        |e| matches!(e, Event::PeerRegistered { protocol_addr, .. } if *protocol_addr == IpAddr::V4(tunnel)),
    )
}

/// Both spokes registered with the hub.
fn registered_network() -> Net {
    let mut net = network();
    net.idle(Duration::from_secs(10));
    assert!(
        registered(&net, A_TUNNEL),
        "A registered: {:?}",
        net.hosts[HUB].events
    );
    assert!(
        registered(&net, B_TUNNEL),
        "B registered: {:?}",
        net.hosts[HUB].events
    );
    net
}

fn ping(net: &mut Net, from: usize, src: Ipv4Addr, dst: Ipv4Addr, id: u16) {
    net.send_from_lan(from, udp_packet(src, dst, id, 64));
}

fn delivered_ids(net: &Net, h: usize) -> Vec<u16> {
    net.hosts[h]
        .delivered
        .iter()
        .map(|p| u16::from_be_bytes([p[4], p[5]]))
        .collect()
}

fn esp_sent_to(net: &Net, h: usize, nbma: Ipv4Addr) -> usize {
    net.hosts[h]
        .sent
        .iter()
        .filter(|(d, k)| *k == Kind::Esp && *d.ip() == nbma)
        .count()
}

fn shortcut_to_b(net: &Net) -> bool {
    net.hosts[A]
        .events
        .iter()
        .any(|e| matches!(e, Event::ShortcutInstalled { via, .. } if *via == B_TUNNEL))
}

/// A redirected flow from A to B's LAN: the first packets go via the hub, the hub tells A
/// (traffic indication), A resolves B, brings up IKE directly with B (behind its NAT) and
/// installs the shortcut; later packets go straight to B's public address, over UDP 4500.
fn shortcut_network() -> Net {
    let mut net = registered_network();
    let mut id = 0u16;
    net.run_for(Duration::from_secs(10), |net| {
        id += 1;
        ping(net, A, A_HOST, B_HOST, id);
    });
    assert!(shortcut_to_b(&net), "A events: {:?}", net.hosts[A].events);
    net
}

#[test]
fn spokes_register_and_reach_each_other_via_the_hub() {
    let mut net = registered_network();
    for h in [A, B] {
        assert!(
            net.hosts[h]
                .events
                .iter()
                .any(|e| matches!(e, Event::NhsUp { nbma } if *nbma == IpAddr::V4(HUB_NBMA))),
            "{} registered with the NHS",
            net.hosts[h].name
        );
    }
    // B is behind NAT: its Child SA with the hub is UDP-encapsulated, A's is not.
    let hub = net.hosts[HUB].node.tables();
    assert!(hub.paths[&B_PUBLIC].udp_encap);
    assert!(!hub.paths[&A_NBMA].udp_encap);
    ping(&mut net, A, A_HOST, B_HOST, 1);
    assert_eq!(delivered_ids(&net, B), vec![1]);
    ping(&mut net, B, B_HOST, A_HOST, 2);
    assert_eq!(delivered_ids(&net, A), vec![2]);
    // Nothing ever left in clear: every datagram was IKE, ESP or a NAT keepalive by type,
    // and the ESP ones toward the hub carried both pings.
    assert!(esp_sent_to(&net, A, HUB_NBMA) >= 2);
}

#[test]
fn spokes_register_through_a_hub_that_offloads_its_ike_work() {
    let mut net = network();
    net.hosts[HUB].node.set_ike_offload(true);
    net.hosts[HUB].offload = true;
    net.idle(Duration::from_secs(10));
    assert!(registered(&net, A_TUNNEL) && registered(&net, B_TUNNEL));
    let c = net.hosts[HUB].node.ike().counters();
    assert_eq!((c.jobs_late, c.jobs_refused), (0, 0));
    // One IKE_SA_INIT per spoke, each through a job.
    assert!(net.hosts[HUB].jobs_run >= 2);
    ping(&mut net, A, A_HOST, B_HOST, 1);
    assert_eq!(delivered_ids(&net, B), vec![1]);
}

#[test]
fn redirect_builds_a_direct_shortcut_that_carries_traffic() {
    let mut net = shortcut_network();
    let before = esp_sent_to(&net, A, B_PUBLIC);
    let via_hub_before = esp_sent_to(&net, A, HUB_NBMA);
    for id in 100..110 {
        ping(&mut net, A, A_HOST, B_HOST, id);
    }
    let ids = delivered_ids(&net, B);
    assert!(
        (100..110).all(|i| ids.contains(&i)),
        "delivered to B: {ids:?}"
    );
    assert_eq!(
        esp_sent_to(&net, A, B_PUBLIC) - before,
        10,
        "direct to B's public address"
    );
    assert_eq!(
        esp_sent_to(&net, A, HUB_NBMA),
        via_hub_before,
        "none via the hub"
    );
    // The direct SA crosses B's NAT, so it is ESP-in-UDP.
    assert!(net.hosts[A].node.tables().paths[&B_PUBLIC].udp_encap);
    // And B answers directly too.
    ping(&mut net, B, B_HOST, A_HOST, 200);
    assert!(delivered_ids(&net, A).contains(&200));
}

#[test]
fn child_and_ike_rekeys_under_traffic_lose_nothing() {
    let mut net = shortcut_network();
    let start = net.hosts[B].delivered.len();
    let mut id = 1000u16;
    let mut sent = 0usize;
    // Child SAs live 300 s (rekeyed ~30 s early), IKE SAs 600 s: 700 s crosses both.
    net.run_for(Duration::from_secs(700), |net| {
        id += 1;
        sent += 1;
        ping(net, A, A_HOST, B_HOST, id);
    });
    let got = net.hosts[B].delivered.len() - start;
    assert_eq!(got, sent, "every packet across the rekeys arrived");
    let rekeys = |h: usize| {
        net.hosts[h]
            .events
            .iter()
            .filter(|e| matches!(e, Event::ChildSaInstalled { rekey: true, .. }))
            .count()
    };
    assert!(
        rekeys(A) + rekeys(B) >= 2,
        "child rekeys: A {} B {}",
        rekeys(A),
        rekeys(B)
    );
    // Old SAs are deleted after their replacement: each peer keeps one or two, not a pile.
    for h in [A, B, HUB] {
        let inbound = net.hosts[h].node.tables().inbound.iter().count();
        assert!(inbound <= 4, "{}: {inbound} inbound SAs", net.hosts[h].name);
    }
}

#[test]
fn dead_spoke_is_detected_by_dpd_and_traffic_falls_back_to_the_hub() {
    let mut net = shortcut_network();
    net.hosts[B].alive = false;
    let mut id = 2000u16;
    // On-demand DPD: A sends into the shortcut and hears nothing; after the 40 s delay it
    // probes, retransmits, and declares B dead.
    net.run_for(Duration::from_secs(240), |net| {
        id += 1;
        ping(net, A, A_HOST, B_HOST, id);
    });
    let a = &net.hosts[A];
    assert!(
        a.events
            .iter()
            .any(|e| matches!(e, Event::PeerDown { peer } if *peer == B_PUBLIC)),
        "A: {:?}",
        a.events
    );
    assert!(
        a.events
            .iter()
            .any(|e| matches!(e, Event::ShortcutWithdrawn { via, .. } if *via == B_TUNNEL)),
        "shortcut withdrawn"
    );
    assert!(!a.node.tables().paths.contains_key(&B_PUBLIC));
    // Packets to B's LAN go to the hub again.
    let via_hub = esp_sent_to(&net, A, HUB_NBMA);
    ping(&mut net, A, A_HOST, B_HOST, 9999);
    assert_eq!(esp_sent_to(&net, A, HUB_NBMA), via_hub + 1);
}

#[test]
fn shutdown_purges_the_registration_and_deletes_the_sas() {
    let mut net = registered_network();
    net.shutdown(A);
    net.idle(Duration::from_secs(1));
    let hub = &net.hosts[HUB];
    assert!(
        hub.events.iter().any(|e| matches!(e, Event::PeerUnregistered { protocol_addr, .. } if *protocol_addr == IpAddr::V4(A_TUNNEL))),
        "hub: {:?}",
        hub.events
    );
    assert!(
        !hub.node.tables().paths.contains_key(&A_NBMA),
        "hub's SA to A deleted"
    );
    assert!(
        hub.node.tables().paths.contains_key(&B_PUBLIC),
        "B unaffected"
    );
}

/// A hub that ignores Purge Requests (`[debug] ignore-purge`, as FRR's nhrpd) still forgets a
/// spoke that stops at once: the spoke's IKE DELETE of its last SA with the hub (RFC 7296
/// §1.4.1) takes the registration with it. With purges honoured the registration goes first
/// (the purge, RFC 2332 §5.2.5), then the SA; ignored, the SA goes first and the registration
/// with it, and the purge is counted as an unhandled type.
#[test]
fn a_hub_that_ignores_purges_forgets_a_stopping_spoke_at_its_ike_delete() {
    for ignore in [false, true] {
        let mut net = registered_network();
        if ignore {
            let text = format!(
                "{}[debug]\nignore-purge = true\n",
                sim::hub_config(HUB_NBMA)
            );
            net.reload(HUB, &text);
        }
        let from = net.hosts[HUB].events.len();
        let waited = net.shutdown(A);
        // The DELETEs wait for the Purge Reply, for the whole bound if none comes.
        let want = if ignore {
            dmvpn_node::PURGE_REPLY_WAIT
        } else {
            Duration::ZERO
        };
        assert_eq!(
            waited, want,
            "ignore={ignore}: the wait for the Purge Reply"
        );
        let hub = &net.hosts[HUB];
        let at = |want: fn(&Event) -> bool| {
            hub.events[from..]
                .iter()
                .position(want)
                .unwrap_or_else(|| panic!("ignore={ignore}: {:?}", &hub.events[from..]))
        };
        let unregistered = at(
            |e| matches!(e, Event::PeerUnregistered { protocol_addr, .. } if *protocol_addr == IpAddr::V4(A_TUNNEL)),
        );
        let down = at(|e| matches!(e, Event::PeerDown { peer } if *peer == A_NBMA));
        let ignored = hub
            .node
            .nhrp()
            .counters()
            .drops
            .get(&dmvpn_nhrp::DropReason::UnhandledType)
            .copied()
            .unwrap_or(0);
        if ignore {
            assert!(down < unregistered, "the IKE DELETE took it");
            assert_eq!(ignored, 1, "the purge dropped, counted");
        } else {
            assert!(unregistered < down, "the purge took it");
            assert_eq!(ignored, 0);
        }
        assert!(
            !hub.node
                .nhrp()
                .cache_entries(net.now)
                .iter()
                .any(|e| e.protocol_addr == IpAddr::V4(A_TUNNEL)),
            "ignore={ignore}: no entry for A left"
        );
    }
}

#[test]
fn runs_are_deterministic() {
    let trace = || {
        let net = shortcut_network();
        net.hosts
            .iter()
            .map(|h| {
                h.sent
                    .iter()
                    .map(|(d, k)| format!("{d}/{k:?}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(trace(), trace());
}

/// The operator's latency figures: each new shortcut is timed once, its stages in order, and
/// every registration reply is timed.
#[test]
fn shortcut_stages_and_registration_replies_are_timed() {
    let mut net = shortcut_network();
    let timed: Vec<_> = net.hosts[A]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ShortcutTimed {
                prefix,
                prefix_len,
                via,
                requested,
                replied,
                sa_up,
            } => Some((*prefix, *prefix_len, *via, *requested, *replied, *sa_up)),
            _ => None,
        })
        .collect();
    assert_eq!(timed.len(), 1, "{:?}", net.hosts[A].events);
    let (prefix, len, via, requested, replied, sa_up) = timed[0];
    assert_eq!(
        (prefix, len, via),
        (Ipv4Addr::new(10, 0, 2, 0), 24, B_TUNNEL)
    );
    assert!(requested <= replied && replied <= sa_up);
    let installed = net.hosts[A]
        .events
        .iter()
        .position(|e| matches!(e, Event::ShortcutInstalled { via, .. } if *via == B_TUNNEL));
    let timed_at = net.hosts[A]
        .events
        .iter()
        .position(|e| matches!(e, Event::ShortcutTimed { .. }));
    assert!(installed < timed_at, "timed once the route is handed out");
    assert!(net.hosts[A].events.iter().any(|e| matches!(
        e,
        Event::NhrpAnswered {
            kind: dmvpn_nhrp::RequestKind::Resolution,
            accepted: true,
            ..
        }
    )));
    for h in [A, B] {
        assert!(
            net.hosts[h].events.iter().any(|e| matches!(
                e,
                Event::NhrpAnswered {
                    kind: dmvpn_nhrp::RequestKind::Registration,
                    target,
                    accepted: true,
                    ..
                } if *target == IpAddr::V4(HUB_NBMA)
            )),
            "{} timed its registration",
            net.hosts[h].name
        );
    }
    // More traffic over the live shortcut times nothing again.
    net.run_for(Duration::from_secs(5), |net| {
        ping(net, A, A_HOST, B_HOST, 900)
    });
    let again = net.hosts[A]
        .events
        .iter()
        .filter(|e| matches!(e, Event::ShortcutTimed { .. }))
        .count();
    assert_eq!(again, 1);
}
