//! The answering side of phase 3 under the retry discipline (found against the strongSwan + FRR
//! hub VM): spoke B answers A's Resolution Requests, which the hub forwards, directly to A, so
//! it needs an SA with A. When B's first setup toward A failed (here: B's keyring had no PSK
//! for A), B must come back to A after the hold-down, or at once after a reload that fixes the
//! key, and the shortcut must form.

mod sim;

use std::time::Duration;

use dmvpn_node::Event;
use sim::three::*;
use sim::{Net, PSK, spoke_config, udp_packet};

fn shortcut_on_a(net: &Net) -> bool {
    net.hosts[A]
        .events
        .iter()
        .any(|e| matches!(e, Event::ShortcutInstalled { via, .. } if *via == B_TUNNEL))
}

/// B's failed setups toward A so far.
fn b_failures(net: &Net) -> usize {
    net.hosts[B]
        .events
        .iter()
        .filter(|e| matches!(e, Event::SetupFailed { peer, .. } if *peer == A_NBMA))
        .count()
}

fn b_failed_toward_a(net: &Net) -> bool {
    b_failures(net) > 0
}

/// B's configuration with its one keyring entry narrowed to the hub: no PSK for A.
fn b_without_a_key() -> (String, String) {
    let good = spoke_config("10.250.0.12", HUB_NBMA, "");
    let bad = good.replace("peer = \"0.0.0.0/0\"", &format!("peer = \"{HUB_NBMA}/32\""));
    assert_ne!(good, bad);
    assert!(bad.contains(PSK));
    (good, bad)
}

fn traffic_a_to_b(net: &mut Net, secs: u64, id: &mut u16) {
    net.run_for(Duration::from_secs(secs), |net| {
        *id = id.wrapping_add(1);
        net.send_from_lan(A, udp_packet(A_HOST, B_HOST, *id, 64));
    });
}

fn network_with_b_missing_a_key() -> (Net, String) {
    let (good, bad) = b_without_a_key();
    let mut net = Net::hub_and_two_public_spokes();
    net.idle(Duration::from_secs(10));
    net.reload(B, &bad);
    net.idle(Duration::from_secs(2));
    (net, good)
}

#[test]
fn a_reload_that_gives_the_answering_spoke_the_key_brings_the_shortcut() {
    let (mut net, good) = network_with_b_missing_a_key();
    let mut id = 0;
    traffic_a_to_b(&mut net, 10, &mut id);
    assert!(
        b_failed_toward_a(&net),
        "B's setup toward A failed: {:?}",
        net.hosts[B].events
    );
    assert!(!shortcut_on_a(&net), "no shortcut without B's key for A");

    net.reload(B, &good);
    traffic_a_to_b(&mut net, 10, &mut id);
    assert!(
        shortcut_on_a(&net),
        "A's events: {:?}\nB's events: {:?}",
        net.hosts[A].events,
        net.hosts[B].events
    );
}

#[test]
fn the_answering_spoke_tries_again_after_its_hold_down() {
    let (mut net, good) = network_with_b_missing_a_key();
    let mut id = 0;
    traffic_a_to_b(&mut net, 10, &mut id);
    assert!(b_failed_toward_a(&net), "{:?}", net.hosts[B].events);
    let first = b_failures(&net);
    // Traffic keeps asking; the hold-downs (9 s, then longer) end and B tries again.
    traffic_a_to_b(&mut net, 60, &mut id);
    assert!(
        b_failures(&net) > first,
        "B tried A again after its hold-down: {:?}",
        net.hosts[B].events
    );
    let _ = good;
}

#[test]
fn clear_sa_of_a_held_down_peer_resets_its_back_off_and_tries_at_once() {
    let (mut net, _good) = network_with_b_missing_a_key();
    let mut id = 0;
    traffic_a_to_b(&mut net, 3, &mut id);
    // Quiet until the IKE SAs of the failed setups are gone: then there is no SA to delete
    // (the case the operator met), only the back-off.
    for _ in 0..40 {
        if !net.hosts[B]
            .node
            .ike()
            .has_sa_with(std::net::IpAddr::V4(A_NBMA))
        {
            break;
        }
        net.idle(Duration::from_millis(250));
    }
    assert!(
        !net.hosts[B]
            .node
            .ike()
            .has_sa_with(std::net::IpAddr::V4(A_NBMA)),
        "B still holds an IKE SA with A"
    );
    let before = b_failures(&net);
    assert!(before >= 1, "{:?}", net.hosts[B].events);
    let held_until = net.hosts[B]
        .node
        .backoff(A_NBMA)
        .expect("B holds A down")
        .until;
    // No SA to delete: the operator's clear is about the back-off, and it is not an error.
    let now = net.now;
    net.hosts[B]
        .node
        .clear_sa(now, std::net::IpAddr::V4(A_NBMA))
        .expect("clear sa of a held-down peer");
    net.outputs(B);
    net.flush();
    // A's next resolution request finds B free to try: well before the hold-down would have
    // ended.
    let left = held_until.saturating_duration_since(net.now);
    assert!(
        left > Duration::from_secs(2),
        "the test outran the hold-down it wants to beat"
    );
    let until = net.now + left - Duration::from_millis(500);
    while net.now < until && b_failures(&net) == before {
        id = id.wrapping_add(1);
        net.send_from_lan(A, udp_packet(A_HOST, B_HOST, id, 64));
        net.idle(Duration::from_millis(100));
    }
    assert!(
        b_failures(&net) > before && net.hosts[B].node.backoff(A_NBMA).is_some(),
        "B tried A again at once (and failed again, still without the key): {:?}",
        net.hosts[B].events
    );
}
