//! A NAT mapping change under a spoke (the NAT in front of spoke B forgets its mapping and
//! gives it a new source port): the hub follows the new port on B's first authenticated ESP
//! packet, so traffic toward B resumes at once instead of after B's DPD (RFC 7296 §2.23 asks
//! for an authenticated message; the ESP packet passed its ICV and replay checks).

mod sim;

use std::time::Duration;

use dmvpn_node::Event;
use sim::three::{B, B_PUBLIC, B_TUNNEL, HUB};
use sim::{Net, udp_packet};
use std::net::Ipv4Addr;

const NEW_PORT: u16 = 40_000;
const HUB_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const B_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 5);

fn hub_port_for_b(net: &Net) -> Option<u16> {
    net.hosts[HUB].tables.paths.get(&B_PUBLIC).map(|p| p.port)
}

#[test]
fn the_hub_follows_a_spoke_whose_nat_mapping_changed() {
    let mut net = Net::hub_and_two_spokes();
    net.idle(Duration::from_secs(5));
    assert!(
        net.hosts[HUB].events.iter().any(
            |e| matches!(e, Event::PeerRegistered { protocol_addr, .. } if *protocol_addr == B_TUNNEL)
        ),
        "spoke B did not register"
    );
    assert_eq!(hub_port_for_b(&net), Some(4500));

    // Traffic both ways, 20 packets a second: B first, then the hub, each second.
    let sent = std::cell::Cell::new(0usize);
    let traffic = |net: &mut Net| {
        for _ in 0..20 {
            let id = (sent.get() % 65_536) as u16;
            sent.set(sent.get() + 1);
            net.send_from_lan(B, udp_packet(B_HOST, HUB_HOST, id, 200));
            net.send_from_lan(HUB, udp_packet(HUB_HOST, B_TUNNEL, id, 200));
        }
    };
    net.run_for(Duration::from_secs(3), traffic);
    let before = net.hosts[B].delivered.len();
    assert_eq!(before, sent.get(), "hub → B lost packets before the change");

    // B's NAT forgets the mapping: B appears from port 40000, and 4500 leads nowhere.
    net.hosts[B].nat_port = Some(NEW_PORT);
    let sent_before = sent.get();
    net.run_for(Duration::from_secs(1), traffic);
    let first_second = net.hosts[B].delivered.len() - before;
    let sent_first = sent.get() - sent_before;
    assert_eq!(
        hub_port_for_b(&net),
        Some(NEW_PORT),
        "the hub still sends B's ESP to the old port"
    );
    let (mark, sent_mark) = (net.hosts[B].delivered.len(), sent.get());
    net.run_for(Duration::from_secs(5), traffic);
    let after = net.hosts[B].delivered.len() - mark;
    let sent_after = sent.get() - sent_mark;
    println!(
        "NAT mapping change: hub → B delivered {first_second}/{sent_first} in the second of the \
         change, then {after}/{sent_after}"
    );
    // B speaks first each second, so the hub has followed before it sends.
    assert_eq!(
        first_second, sent_first,
        "hub → B lost packets at the change"
    );
    assert_eq!(
        after, sent_after,
        "hub → B lost packets after following the new port"
    );
    // The liveness check the hub sent over the new mapping was answered: its IKE SA with B
    // is still up, and no DPD verdict came.
    assert!(
        !net.hosts[HUB]
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerDown { peer } if *peer == B_PUBLIC)),
        "the hub lost B"
    );
}
