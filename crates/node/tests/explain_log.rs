//! What `dmvpnctl explain` reads from a node, in memory (hub + two spokes, B behind a 1:1
//! NAT, simulated clock): the explain log records the shortcut a redirect led to and its
//! withdrawal when the peer dies, at the simulated time, and the dataplane's decision on the
//! published tables follows the shortcut and then the hub again.

mod sim;

use std::time::Duration;

use dmvpn_dataplane::Forwarding;
use dmvpn_node::explain_log::NhrpNote;
use sim::three::*;
use sim::{Net, udp_packet};

fn network() -> Net {
    let mut net = Net::hub_and_two_spokes();
    net.idle(Duration::from_secs(10));
    net
}

fn traffic(net: &mut Net, secs: u64, first_id: u16) {
    let mut id = first_id;
    net.run_for(Duration::from_secs(secs), |net| {
        id = id.wrapping_add(1);
        net.send_from_lan(A, udp_packet(A_HOST, B_HOST, id, 64));
    });
}

#[test]
fn the_log_records_the_shortcut_and_its_withdrawal_and_the_decision_follows() {
    let mut net = network();
    let a = &net.hosts[A];
    assert_eq!(a.node.explain_log().nhrp_event_for(B_HOST), None);
    let d = a.tables.explain(&a.routes, B_HOST);
    assert_eq!(
        d.nbma,
        Some(HUB_NBMA),
        "before the redirect, via the hub: {d:?}"
    );

    let before = net.now;
    traffic(&mut net, 10, 0);
    let a = &net.hosts[A];
    let r = a
        .node
        .explain_log()
        .nhrp_event_for(B_HOST)
        .expect("the shortcut is recorded");
    assert!(
        matches!(r.note, NhrpNote::ShortcutInstalled { next_hop, .. } if next_hop == B_TUNNEL),
        "{r:?}"
    );
    // The exchange may complete within the simulated instant of the first packet.
    assert!(
        r.at >= before && r.at <= net.now,
        "recorded at the simulated now: {before:?} ≤ {:?} ≤ {:?}",
        r.at,
        net.now
    );
    assert!(
        (1..=32).contains(&r.prefix_len)
            && B_HOST.to_bits() & (u32::MAX << (32 - u32::from(r.prefix_len)))
                == r.prefix.to_bits(),
        "the recorded prefix covers B's host: {r:?}"
    );
    let d = a.tables.explain(&a.routes, B_HOST);
    assert_eq!(d.forwarding, Forwarding::Send, "{d:?}");
    assert_eq!(d.next_hop, B_TUNNEL, "{d:?}");
    assert_eq!(d.nbma, Some(B_PUBLIC), "to B's post-NAT address: {d:?}");
    assert!(d.path.is_some_and(|p| p.udp_encap), "over NAT-T: {d:?}");
    assert_eq!(a.node.explain_log().evicted(), 0);

    // B dies: DPD takes the SA down and the shortcut is withdrawn; the log says so and the
    // decision falls back to the hub.
    net.hosts[B].alive = false;
    traffic(&mut net, 240, 2000);
    let a = &net.hosts[A];
    let r = a.node.explain_log().nhrp_event_for(B_HOST).unwrap();
    assert!(
        matches!(r.note, NhrpNote::ShortcutWithdrawn { next_hop } if next_hop == B_TUNNEL),
        "{r:?}"
    );
    let d = a.tables.explain(&a.routes, B_HOST);
    assert_eq!(d.nbma, Some(HUB_NBMA), "back via the hub: {d:?}");
}
