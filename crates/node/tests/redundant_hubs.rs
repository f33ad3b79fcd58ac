//! A spoke with two NHSs (Cisco `ip nhrp nhs … priority N`, `ip nhrp nhs fallback SECS`), in
//! memory with real IKEv2, NHRP, ESP and GRE: it registers with both; traffic without a
//! mapping of its own goes to the preferred one (priority 0, hub 1); when hub 1 dies (DPD)
//! it moves to hub 2 at once, and back to hub 1 only once hub 1 has been registered again for
//! the fallback time. A reload that changes the priorities or the fallback time applies at
//! once, without touching an SA or a registration.

mod sim;

use std::net::Ipv4Addr;
use std::time::Duration;

use dmvpn_node::Event;
use sim::{Kind, Net, hub_config, spoke_config, udp_packet};

const HUB1_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const HUB2_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const SPOKE_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const SPOKE_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5);
/// Another spoke's tunnel address, not resolved: the NHS carries it.
const UNMAPPED: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 50);
const FALLBACK: u64 = 60;
const HUB1: usize = 0;
const HUB2: usize = 1;
const SPOKE: usize = 2;

/// The spoke's configuration, hub 1 at `p1` and hub 2 at `p2`, fallback `fallback` s.
fn spoke_text(p1: u8, p2: u8, fallback: u64) -> String {
    let second = format!(
        "[[nhrp.nhs]]\naddress = \"10.250.0.2\"\nnbma = \"{HUB2_NBMA}\"\nmulticast = true\npriority = {p2}\n"
    );
    spoke_config("10.250.0.11", HUB1_NBMA, &second)
        .replace(
            "multicast = true\n[[route]]",
            &format!("multicast = true\npriority = {p1}\n[[route]]"),
        )
        .replace(
            "shortcut = true\n",
            &format!("shortcut = true\nnhs-fallback = {fallback}\n"),
        )
}

fn network() -> Net {
    let mut net = Net::new();
    net.add(
        "hub1",
        &hub_config(HUB1_NBMA),
        HUB1_NBMA,
        HUB1_NBMA,
        (Ipv4Addr::new(10, 0, 0, 0), 24),
        &[],
        1,
    );
    let hub2 = hub_config(HUB2_NBMA).replace("10.250.0.1/24", "10.250.0.2/24");
    net.add(
        "hub2",
        &hub2,
        HUB2_NBMA,
        HUB2_NBMA,
        (Ipv4Addr::new(10, 0, 9, 0), 24),
        &[],
        2,
    );
    let spoke = spoke_text(0, 1, FALLBACK);
    net.add(
        "spoke",
        &spoke,
        SPOKE_NBMA,
        SPOKE_NBMA,
        (Ipv4Addr::new(10, 0, 1, 0), 24),
        &[],
        3,
    );
    net.idle(Duration::from_secs(5));
    net
}

fn esp_to(net: &Net, nbma: Ipv4Addr) -> usize {
    net.hosts[SPOKE]
        .sent
        .iter()
        .filter(|(d, k)| *k == Kind::Esp && *d.ip() == nbma)
        .count()
}

fn send(net: &mut Net, id: u16) {
    net.send_from_lan(SPOKE, udp_packet(SPOKE_HOST, UNMAPPED, id, 64));
}

fn registered_with(net: &Net, nbma: Ipv4Addr) -> usize {
    net.hosts[SPOKE]
        .events
        .iter()
        .filter(|e| matches!(e, Event::NhsUp { nbma: n } if *n == std::net::IpAddr::V4(nbma)))
        .count()
}

#[test]
fn traffic_moves_to_the_secondary_nhs_and_back_after_the_fallback_time() {
    let mut net = network();
    assert_eq!(registered_with(&net, HUB1_NBMA), 1, "registered with hub 1");
    assert_eq!(registered_with(&net, HUB2_NBMA), 1, "and with hub 2");
    assert!(
        net.hosts[HUB2]
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerRegistered { .. })),
        "hub 2 holds the spoke's registration"
    );
    assert_eq!(net.hosts[SPOKE].node.preferred_nhs(), Some(HUB1_NBMA));
    let before = (esp_to(&net, HUB1_NBMA), esp_to(&net, HUB2_NBMA));
    send(&mut net, 1);
    assert_eq!(
        esp_to(&net, HUB1_NBMA),
        before.0 + 1,
        "unmapped traffic to hub 1"
    );
    assert_eq!(esp_to(&net, HUB2_NBMA), before.1);

    // Hub 1 dies. With traffic flowing, on-demand DPD gives its verdict after 40 s + 5
    // retries of 5 s; the registration goes down with the SA, and traffic moves to hub 2.
    net.hosts[HUB1].alive = false;
    let died = net.now;
    let mut id = 100u16;
    let mut moved_after = None;
    net.run_for(Duration::from_secs(120), |net| {
        id += 1;
        send(net, id);
        if moved_after.is_none() && net.hosts[SPOKE].node.preferred_nhs() == Some(HUB2_NBMA) {
            moved_after = Some(net.now - died);
        }
    });
    let moved_after = moved_after.expect("traffic moved to hub 2");
    eprintln!("hub 1 dead: traffic on hub 2 after {moved_after:?} (DPD 40 s + 5 x 5 s)");
    assert!(
        moved_after <= Duration::from_secs(75),
        "moved after {moved_after:?}"
    );
    let via2 = esp_to(&net, HUB2_NBMA);
    send(&mut net, 9000);
    assert_eq!(esp_to(&net, HUB2_NBMA), via2 + 1, "now through hub 2");

    // Hub 1 returns (a new process: forget its old state); the spoke's NHS retry brings the
    // registration back, and only FALLBACK s later the traffic.
    net.hosts[HUB1].alive = true;
    let ups = registered_with(&net, HUB1_NBMA);
    let mut back_up = None;
    let mut moved_back = None;
    net.run_for(Duration::from_secs(240), |net| {
        id += 1;
        send(net, id);
        if back_up.is_none() && registered_with(net, HUB1_NBMA) > ups {
            back_up = Some(net.now);
        }
        if moved_back.is_none() && net.hosts[SPOKE].node.preferred_nhs() == Some(HUB1_NBMA) {
            moved_back = Some(net.now);
        }
    });
    let back_up = back_up.expect("re-registered with hub 1");
    let moved_back = moved_back.expect("traffic back on hub 1");
    let waited = moved_back - back_up;
    eprintln!(
        "hub 1 registered again; traffic back on it {waited:?} later (fallback {FALLBACK} s)"
    );
    assert!(
        waited >= Duration::from_secs(FALLBACK) && waited <= Duration::from_secs(FALLBACK + 2),
        "back on hub 1 {waited:?} after it re-registered (fallback {FALLBACK} s)"
    );
    let via1 = esp_to(&net, HUB1_NBMA);
    send(&mut net, 9001);
    assert_eq!(esp_to(&net, HUB1_NBMA), via1 + 1, "through hub 1 again");
}

/// What must survive a reload that only re-ranks the NHSs: the spoke's IKE SAs (by SPI
/// pair) and its registrations (no NHS went down at the spoke, no hub lost it).
fn sas_and_registrations(net: &Net) -> (Vec<(u64, u64)>, usize, usize) {
    let mut sas: Vec<(u64, u64)> = net.hosts[SPOKE]
        .node
        .ike()
        .ike_sas(net.now)
        .iter()
        .map(|s| (s.spi_i, s.spi_r))
        .collect();
    sas.sort_unstable();
    let downs = net.hosts[SPOKE]
        .events
        .iter()
        .filter(|e| matches!(e, Event::NhsDown { .. } | Event::PeerDown { .. }))
        .count();
    let unregistered = net.hosts[..SPOKE]
        .iter()
        .flat_map(|h| &h.events)
        .filter(|e| matches!(e, Event::PeerUnregistered { .. }))
        .count();
    (sas, downs, unregistered)
}

#[test]
fn a_reload_that_swaps_the_priorities_moves_traffic_at_once_and_keeps_every_sa() {
    let mut net = network();
    assert_eq!(net.hosts[SPOKE].node.preferred_nhs(), Some(HUB1_NBMA));
    let before = sas_and_registrations(&net);
    assert_eq!(before.0.len(), 2, "an IKE SA with each hub");

    // Hub 2 first now. Both have been registered all along (neither came back from a
    // failure), so no fallback time applies: traffic moves with the reload.
    net.reload(SPOKE, &spoke_text(2, 1, FALLBACK));
    assert_eq!(
        net.hosts[SPOKE].node.preferred_nhs(),
        Some(HUB2_NBMA),
        "hub 2 preferred as soon as the reload is applied"
    );
    let via = (esp_to(&net, HUB1_NBMA), esp_to(&net, HUB2_NBMA));
    send(&mut net, 1);
    assert_eq!(
        (esp_to(&net, HUB1_NBMA), esp_to(&net, HUB2_NBMA)),
        (via.0, via.1 + 1),
        "unmapped traffic through hub 2"
    );
    net.idle(Duration::from_secs(5));
    assert_eq!(
        sas_and_registrations(&net),
        before,
        "same IKE SAs, no NHS down, no registration lost"
    );

    // And back, with a fallback time changed in the same reload: still at once.
    net.reload(SPOKE, &spoke_text(0, 1, 5));
    assert_eq!(net.hosts[SPOKE].node.preferred_nhs(), Some(HUB1_NBMA));
    assert_eq!(sas_and_registrations(&net), before);
}

/// Runs one simulated second at a time, sending one packet per second, until `done` holds or
/// `bound` has passed; when it held.
fn until(
    net: &mut Net,
    id: &mut u16,
    bound: Duration,
    done: impl Fn(&Net) -> bool,
) -> Option<std::time::Instant> {
    let end = net.now + bound;
    while net.now < end {
        *id += 1;
        send(net, *id);
        net.run_for(Duration::from_secs(1), |_| {});
        if done(net) {
            return Some(net.now);
        }
    }
    None
}

/// Hub 1 dies (DPD moves traffic to hub 2) and comes back; when the spoke is registered with
/// it again.
fn hub1_fails_and_returns(net: &mut Net, id: &mut u16) -> std::time::Instant {
    net.hosts[HUB1].alive = false;
    until(net, id, Duration::from_secs(120), |net| {
        net.hosts[SPOKE].node.preferred_nhs() == Some(HUB2_NBMA)
    })
    .expect("traffic moved to hub 2");
    net.hosts[HUB1].alive = true;
    let ups = registered_with(net, HUB1_NBMA);
    until(net, id, Duration::from_secs(120), |net| {
        registered_with(net, HUB1_NBMA) > ups
    })
    .expect("registered with hub 1 again")
}

#[test]
fn a_reload_that_shortens_the_fallback_time_ends_the_wait_of_a_returning_nhs() {
    let mut net = network();
    let mut id = 0u16;
    // Hub 1 comes back; with the configured fallback traffic would stay on hub 2 for 60 s.
    let back_up = hub1_fails_and_returns(&mut net, &mut id);
    until(&mut net, &mut id, Duration::from_secs(10), |_| false);
    assert_eq!(
        net.hosts[SPOKE].node.preferred_nhs(),
        Some(HUB2_NBMA),
        "hub 1 waits out its fallback time"
    );
    let before = sas_and_registrations(&net);

    // A fallback of 5 s: hub 1 has been registered longer than that, so it carries traffic
    // with the reload; the same SAs and registrations.
    net.reload(SPOKE, &spoke_text(0, 1, 5));
    assert_eq!(
        net.hosts[SPOKE].node.preferred_nhs(),
        Some(HUB1_NBMA),
        "hub 1, registered {:?} ago, preferred with the 5 s fallback",
        net.now - back_up
    );
    assert_eq!(sas_and_registrations(&net), before);

    // Hub 1 fails again and comes back: now 5 s apply.
    let back_up = hub1_fails_and_returns(&mut net, &mut id);
    let moved_back = until(&mut net, &mut id, Duration::from_secs(30), |net| {
        net.hosts[SPOKE].node.preferred_nhs() == Some(HUB1_NBMA)
    })
    .expect("back on hub 1");
    let waited = moved_back - back_up;
    eprintln!("after a reload to nhs-fallback 5: back on hub 1 {waited:?} after it re-registered");
    assert!(
        waited >= Duration::from_secs(5) && waited <= Duration::from_secs(7),
        "{waited:?}"
    );
}
