//! A spoke back from a reboot with a new public address (a new Elastic IP) gets its tunnel
//! address back in seconds: its registration is refused while the hub's entry from the old
//! address stands, but the refusal makes the hub check the old holder at once (an IKE
//! liveness check with a four-second verdict); the holder is dead, its SAs and entry go, and
//! the spoke's next attempt succeeds. A live holder keeps its address (issue 13).

mod sim;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use dmvpn_node::Event;
use sim::three::{A, A_NBMA, A_TUNNEL, HUB, HUB_NBMA};
use sim::{Net, spoke_config};

/// Spoke A's new public address after the reboot.
const A_NEW_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 21);

fn registered_from(net: &Net, nbma: Ipv4Addr) -> bool {
    net.hosts[HUB].events.iter().any(|e| {
        matches!(e, Event::PeerRegistered { protocol_addr, nbma: n }
            if *protocol_addr == IpAddr::V4(A_TUNNEL) && *n == IpAddr::V4(nbma))
    })
}

/// A second router claiming spoke A's tunnel address from `nbma`.
fn add_claimant(net: &mut Net, nbma: Ipv4Addr) -> usize {
    net.add(
        "spoke-a-again",
        &spoke_config("10.250.0.11", HUB_NBMA, ""),
        nbma,
        nbma,
        (Ipv4Addr::new(10, 0, 1, 0), 24),
        &[],
        9,
    )
}

#[test]
fn a_spoke_back_with_a_new_address_gets_its_tunnel_address_back_in_seconds() {
    let mut net = Net::hub_and_two_spokes();
    net.idle(Duration::from_secs(5));
    assert!(registered_from(&net, A_NBMA), "spoke A did not register");

    // Spoke A loses power: no purge, no DELETE; the hub's SA and entry stay.
    net.hosts[A].alive = false;
    net.idle(Duration::from_secs(2));
    let again = add_claimant(&mut net, A_NEW_NBMA);
    let mut took = None;
    for tenth in 1..=300 {
        net.idle(Duration::from_millis(100));
        if registered_from(&net, A_NEW_NBMA) {
            took = Some(Duration::from_millis(100 * tenth));
            break;
        }
    }
    println!("spoke A back from {A_NEW_NBMA}: registered after {took:?}");
    let took = took.expect("spoke A's tunnel address stayed with the dead holder for 30 s");
    assert!(
        took <= Duration::from_secs(10),
        "took {took:?}: the challenge's verdict is 4 s, the spoke retries within seconds"
    );
    assert!(
        net.hosts[HUB]
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerDown { peer } if *peer == A_NBMA)),
        "the hub did not drop the dead holder's SAs"
    );
    assert!(
        net.hosts[again]
            .node
            .tables()
            .paths
            .get(&HUB_NBMA)
            .is_some()
    );
}

#[test]
fn a_live_holder_keeps_its_address_against_a_claimant() {
    let mut net = Net::hub_and_two_spokes();
    net.idle(Duration::from_secs(5));
    assert!(registered_from(&net, A_NBMA), "spoke A did not register");
    // Another spoke holding the NHRP key claims A's address while A is up.
    add_claimant(&mut net, A_NEW_NBMA);
    net.idle(Duration::from_secs(30));
    assert!(
        !registered_from(&net, A_NEW_NBMA),
        "the claimant took a live spoke's address"
    );
    assert!(
        !net.hosts[HUB]
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerDown { peer } if *peer == A_NBMA)),
        "the challenge declared a live holder dead"
    );
}
