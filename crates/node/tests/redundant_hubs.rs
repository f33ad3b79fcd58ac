//! A spoke with two NHSs (Cisco `ip nhrp nhs … priority N`, `ip nhrp nhs fallback SECS`), in
//! memory with real IKEv2, NHRP, ESP and GRE: it registers with both; traffic without a
//! mapping of its own goes to the preferred one (priority 0, hub 1); when hub 1 dies (DPD)
//! it moves to hub 2 at once, and back to hub 1 only once hub 1 has been registered again for
//! the fallback time.

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
    let second = format!(
        "[[nhrp.nhs]]\naddress = \"10.250.0.2\"\nnbma = \"{HUB2_NBMA}\"\nmulticast = true\npriority = 1\n"
    );
    let spoke = spoke_config("10.250.0.11", HUB1_NBMA, &second).replace(
        "shortcut = true\n",
        &format!("shortcut = true\nnhs-fallback = {FALLBACK}\n"),
    );
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
