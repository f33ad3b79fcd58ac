//! A Child SA rekey whose CREATE_CHILD_SA response is lost loses no data: the responder
//! installs the new SA when it answers, but the initiator can decrypt on it only once the
//! (retransmitted) response arrives, so the responder keeps sending on the old SA until the
//! initiator deletes it or sends on the new one (crates/node/src/rekey_switch.rs).

mod sim;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use dmvpn_node::Event;
use sim::{Kind, Net, hub_config, spoke_config, udp_packet};

const HUB_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const A_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const HUB: usize = 0;
const A: usize = 1;
const A_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 11);

/// Child SAs of 60 s, so several rekeys happen in a few simulated minutes.
fn short_child(config: String) -> String {
    let c = config.replace("lifetime = 300\n", "lifetime = 60\n");
    assert!(c.contains("lifetime = 60\n"));
    c
}

const CREATE_CHILD_SA: u8 = 36;
const RESPONSE: u8 = 0x20;

#[test]
fn a_lost_rekey_response_loses_no_packet() {
    let mut net = Net::hub_and_spoke(
        HUB_NBMA,
        &short_child(hub_config(HUB_NBMA)),
        A_NBMA,
        &short_child(spoke_config("10.250.0.11", HUB_NBMA, "")),
    );
    net.idle(Duration::from_secs(5));
    assert!(
        net.hosts[HUB]
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerRegistered { .. })),
        "spoke A did not register"
    );
    // Drop the first copy of every CREATE_CHILD_SA response (child and IKE rekeys alike);
    // the initiator retransmits its request after 2 s and the responder resends it.
    let dropped = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let counter = dropped.clone();
    let mut seen = HashSet::new();
    net.loss = Some(Box::new(move |_src, _dst, kind, bytes: &[u8]| {
        if kind != Kind::Ike || bytes.len() < 28 {
            return false;
        }
        let response = bytes[18] == CREATE_CHILD_SA && bytes[19] & RESPONSE != 0;
        // SPIs and message id name one exchange.
        let key = (bytes[..16].to_vec(), bytes[20..24].to_vec());
        if response && seen.insert(key) {
            counter.set(counter.get() + 1);
            return true;
        }
        false
    }));
    let (before_hub, before_a) = (net.hosts[HUB].delivered.len(), net.hosts[A].delivered.len());
    // 20 packets a second each way for 150 s: two or more child rekeys.
    let mut id = 0u16;
    let mut sent = 0usize;
    net.run_for(Duration::from_secs(150), |net| {
        for _ in 0..20 {
            id = id.wrapping_add(1);
            sent += 1;
            net.send_from_lan(
                A,
                udp_packet(
                    Ipv4Addr::new(10, 0, 1, 5),
                    Ipv4Addr::new(10, 0, 0, 5),
                    id,
                    200,
                ),
            );
            net.send_from_lan(
                HUB,
                udp_packet(Ipv4Addr::new(10, 0, 0, 5), A_TUNNEL, id, 200),
            );
        }
    });
    net.idle(Duration::from_secs(2));
    let rekeys: usize = [HUB, A]
        .iter()
        .map(|&h| {
            net.hosts[h]
                .events
                .iter()
                .filter(|e| matches!(e, Event::ChildSaInstalled { rekey: true, .. }))
                .count()
        })
        .sum();
    let (to_hub, to_a) = (
        net.hosts[HUB].delivered.len() - before_hub,
        net.hosts[A].delivered.len() - before_a,
    );
    println!(
        "150 s, {sent} packets each way, {rekeys} child SA installs from rekeys, {} responses \
         dropped: delivered to the hub {to_hub}, to spoke A {to_a}",
        dropped.get()
    );
    assert!(
        rekeys >= 4,
        "expected both ends to install at least two rekeys"
    );
    assert!(dropped.get() >= 2, "no rekey response was dropped");
    assert_eq!(to_hub, sent, "packets to the hub were lost");
    assert_eq!(to_a, sent, "packets to spoke A were lost");
}
