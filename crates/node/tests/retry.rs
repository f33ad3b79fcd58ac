//! One retry discipline for every IKE initiation (issue: an IKE storm toward the hub while
//! its PSK was wrong and data flowed; no retry after a corrected reload): a spoke whose
//! hub refuses authentication backs off exponentially whoever asks for the SA, and a reload
//! retries at once.

mod sim;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use dmvpn_dataplane::DropReason;
use dmvpn_node::Event;
use dmvpn_node::peers::SetupFailure;
use sim::{Kind, Net, PSK, hub_config, spoke_config, udp_packet};

const HUB_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const A_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const A_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 11);
const HUB: usize = 0;
const A: usize = 1;
const WRONG: &str = "a wrong in-memory PSK of 32 byte";

/// IKE_SA_INIT requests host `h` sent (IKE datagrams with message id 0, exchange 34,
/// initiator flag and no response flag).
fn sa_inits(net: &Net, h: usize) -> usize {
    net.hosts[h]
        .sent
        .iter()
        .filter(|(_, k)| *k == Kind::Ike)
        .count()
}

fn registered(net: &Net) -> bool {
    net.hosts[HUB].events.iter().any(|e| {
        matches!(e, Event::PeerRegistered { protocol_addr, .. } if *protocol_addr == IpAddr::V4(A_TUNNEL))
    })
}

#[test]
fn data_toward_a_hub_that_refuses_us_backs_off_and_a_reload_retries_at_once() {
    let good = spoke_config("10.250.0.11", HUB_NBMA, "");
    let bad = good.replace(PSK, WRONG);
    assert_ne!(good, bad);
    let mut net = Net::hub_and_spoke(HUB_NBMA, &hub_config(HUB_NBMA), A_NBMA, &bad);
    // 20 packets a second toward the hub's LAN for two minutes.
    let mut id = 0u16;
    net.run_for(Duration::from_secs(120), |net| {
        for _ in 0..20 {
            id = id.wrapping_add(1);
            net.send_from_lan(
                A,
                udp_packet(
                    Ipv4Addr::new(10, 0, 1, 5),
                    Ipv4Addr::new(10, 0, 0, 5),
                    id,
                    64,
                ),
            );
        }
    });
    assert!(!registered(&net));
    let failures = net.hosts[A]
        .events
        .iter()
        .filter(|e| matches!(e, Event::SetupFailed { .. }))
        .count();
    // Back-off 10, 20, 40, 60 s (less jitter) from the first failure: at most 5 attempts in
    // 120 s, where one per packet (2,400) or one per second (120) was the bug.
    println!(
        "120 s at 20 packets/s with a wrong PSK: {failures} failed setups, {} IKE datagrams",
        sa_inits(&net, A)
    );
    assert!((2..=5).contains(&failures), "{failures} setups failed");
    let b = net.hosts[A].node.backoff(HUB_NBMA).expect("hub held down");
    assert_eq!(b.last, Some(SetupFailure::Authentication));
    assert!(b.until > net.now, "still held down");
    // The packets that found the queue full did so because the setup failed: counted as such.
    let drops = |r| net.hosts[A].node.tables().counters.drops(r);
    println!(
        "drops: ike_failed {}, sa_queue_full {}",
        drops(DropReason::IkeFailed),
        drops(DropReason::SaQueueFull)
    );
    assert!(drops(DropReason::IkeFailed) > 1000);
    assert_eq!(drops(DropReason::SaQueueFull), 0);

    // Fixing the key: the reload retries at once instead of waiting out the back-off.
    let t_reload = net.now;
    net.reload(A, &good);
    let mut waited = Duration::ZERO;
    while !registered(&net) && waited < Duration::from_secs(5) {
        net.idle(Duration::from_millis(100));
        waited += Duration::from_millis(100);
    }
    assert!(
        registered(&net),
        "registered within 5 s of the reload: {:?}",
        net.hosts[A].events
    );
    println!(
        "registered {} ms after the reload",
        (net.now - t_reload).as_millis()
    );
    assert!(net.hosts[A].node.backoff(HUB_NBMA).is_none());
}

#[test]
fn an_idle_spoke_retries_its_nhs_when_the_hold_down_ends() {
    let mut net = Net::hub_and_spoke(
        HUB_NBMA,
        &hub_config(HUB_NBMA).replace(PSK, WRONG),
        A_NBMA,
        &spoke_config("10.250.0.11", HUB_NBMA, ""),
    );
    net.idle(Duration::from_secs(2));
    let first = net.hosts[A].node.backoff(HUB_NBMA).expect("held down");
    // The hub operator fixes the hub's key; nobody touches the spoke, and no traffic flows.
    net.reload(HUB, &hub_config(HUB_NBMA));
    let deadline = first.until + Duration::from_secs(5);
    while !registered(&net) && net.now < deadline {
        net.idle(Duration::from_millis(500));
    }
    assert!(
        registered(&net),
        "the spoke retried its NHS after the hold-down: {:?}",
        net.hosts[A].events
    );
}

/// The hub's IKE SAs with spoke A that are up.
fn hub_sas_with_a(net: &Net) -> usize {
    net.hosts[HUB]
        .node
        .ike()
        .sas_with(IpAddr::V4(A_NBMA))
        .filter(|(_, state)| *state == dmvpn_ike::IkeSaState::Established)
        .count()
}

#[test]
fn a_psk_rotation_ends_the_old_sas_and_the_spoke_comes_back_with_the_new_key() {
    const ROTATED: &str = "a rotated in-memory PSK, 32 byte";
    let mut net = Net::hub_and_spoke(
        HUB_NBMA,
        &hub_config(HUB_NBMA),
        A_NBMA,
        &spoke_config("10.250.0.11", HUB_NBMA, ""),
    );
    net.idle(Duration::from_secs(3));
    assert!(registered(&net));
    assert_eq!(hub_sas_with_a(&net), 1);
    // The hub gets the new key first: the SA authenticated with the old one goes at once
    // (an IKE rekey would have kept the old authentication).
    net.reload(HUB, &hub_config(HUB_NBMA).replace(PSK, ROTATED));
    net.idle(Duration::from_millis(500));
    assert_eq!(hub_sas_with_a(&net), 0, "the hub kept an SA of the old key");
    // Then the spoke: its reload retries at once, with the new key.
    let before = net.hosts[HUB].events.len();
    let t = net.now;
    net.reload(
        A,
        &spoke_config("10.250.0.11", HUB_NBMA, "").replace(PSK, ROTATED),
    );
    let mut back = None;
    while back.is_none() && net.now < t + Duration::from_secs(10) {
        net.idle(Duration::from_millis(100));
        if net.hosts[HUB].events[before..].iter().any(|e| {
            matches!(e, Event::PeerRegistered { protocol_addr, .. } if *protocol_addr == IpAddr::V4(A_TUNNEL))
        }) && hub_sas_with_a(&net) == 1
        {
            back = Some(net.now - t);
        }
    }
    println!("PSK rotation: spoke back {back:?} after its reload");
    assert!(
        back.is_some(),
        "the spoke did not come back with the new key"
    );
}
