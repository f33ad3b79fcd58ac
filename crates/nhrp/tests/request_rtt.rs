//! `Event::RequestAnswered`: the reply to our registration or resolution, timed from the first
//! transmission of its request id, on the in-memory network of `dmvpn_nhrp::testing`.

use std::time::Duration;

use dmvpn_nhrp::engine::INITIAL_REGISTRATION_WAIT;
use dmvpn_nhrp::testing::{A, B, HUB, Net, b_tun, hub_nbma, ip};
use dmvpn_nhrp::{Event, PacketType, RequestKind};

fn answered(ev: &[Event], kind: RequestKind) -> Vec<(std::net::IpAddr, Duration, bool)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::RequestAnswered {
                kind: k,
                target,
                rtt,
                accepted,
            } if *k == kind => Some((*target, *rtt, *accepted)),
            _ => None,
        })
        .collect()
}

#[test]
fn registration_reply_is_timed_from_the_first_transmission() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    // The in-memory network delivers at once: the first registration's RTT is zero.
    assert_eq!(
        answered(&net.take_events(A), RequestKind::Registration),
        vec![(hub_nbma(), Duration::ZERO, true)]
    );
    assert!(answered(&net.take_events(HUB), RequestKind::Registration).is_empty());

    // The refresh (due before a third of the 7200 s holding time) is lost and retransmitted;
    // the reply to a retransmission counts from the first one.
    net.blackhole.push(hub_nbma());
    let from_a = |net: &Net| {
        net.sent(PacketType::REGISTRATION_REQUEST)
            .iter()
            .filter(|(from, _, _)| *from == A)
            .count()
    };
    let before = from_a(&net);
    let mut waited = Duration::ZERO;
    while from_a(&net) == before {
        assert!(waited < Duration::from_secs(2400), "no refresh from A");
        net.advance(Duration::from_secs(1));
        waited += Duration::from_secs(1);
    }
    net.take_events(A);
    assert!(answered(&net.take_events(A), RequestKind::Registration).is_empty());
    net.blackhole.clear();
    // The first retransmission comes two seconds after the first transmission.
    net.advance(Duration::from_secs(3));
    let a = answered(&net.take_events(A), RequestKind::Registration);
    assert_eq!(a.len(), 1, "{a:?}");
    let (nhs, rtt, accepted) = a[0];
    assert_eq!((nhs, accepted), (hub_nbma(), true));
    // Answered at once on the first retransmission: the RTT is the wait before it (from the
    // last transmission it would be zero).
    assert_eq!(rtt, INITIAL_REGISTRATION_WAIT);
}

#[test]
fn resolution_reply_is_timed_and_comes_before_the_route() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    net.take_events(A);
    net.take_events(B);
    net.data_via_hub(A, ip(10, 0, 101, 2), ip(10, 0, 103, 2));
    let ev = net.take_events(A);
    assert_eq!(
        answered(&ev, RequestKind::Resolution),
        vec![(ip(10, 0, 103, 2), Duration::ZERO, true)]
    );
    let timed = ev
        .iter()
        .position(|e| matches!(e, Event::RequestAnswered { .. }))
        .unwrap();
    let route = ev
        .iter()
        .position(|e| matches!(e, Event::InstallRoute { next_hop, .. } if *next_hop == b_tun()))
        .expect("shortcut route");
    assert!(timed < route, "{ev:?}");
}
