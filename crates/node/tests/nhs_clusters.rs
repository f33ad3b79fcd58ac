//! NHS clusters (Cisco `ip nhrp nhs cluster 1 max-connections 2`, `ip nhrp nhs ADDR priority P
//! cluster 1`), in memory with real IKEv2, NHRP, ESP and GRE: a spoke with three hubs in one
//! cluster registers with the best two only and keeps the third in reserve (no IKE, no
//! registration, no multicast); when one of the two dies the third registers at once; when
//! the dead one comes back and has been reachable for the fallback time it replaces the
//! third, whose registration is purged. A reload re-ranks the cluster live: new priorities,
//! `max-connections` or clusters register the newly best NHSs before purging those they
//! displace, and leave the SA and registration of an NHS that stays untouched.

mod sim;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use dmvpn_node::Event;
use dmvpn_node::nhs_choice::ClusterRole;
use sim::{Kind, Net, hub_config, spoke_config, udp_packet};

const HUB_NBMA: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 51, 100, 1),
    Ipv4Addr::new(198, 51, 100, 2),
    Ipv4Addr::new(198, 51, 100, 3),
];
const SPOKE_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const SPOKE_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5);
/// Another spoke's tunnel address, not resolved: the preferred NHS carries it.
const UNMAPPED: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 50);
const FALLBACK: u64 = 30;
const SPOKE: usize = 3;

fn spoke_text() -> String {
    // Listed worst first: the order of configuration breaks only ties of priority.
    let more = format!(
        "[[nhrp.nhs]]\naddress = \"10.250.0.3\"\nnbma = \"{}\"\nmulticast = true\npriority = 3\ncluster = 1\n\
         [[nhrp.nhs]]\naddress = \"10.250.0.2\"\nnbma = \"{}\"\nmulticast = true\npriority = 2\ncluster = 1\n\
         [[nhrp.cluster]]\nid = 1\nmax-connections = 2\n",
        HUB_NBMA[2], HUB_NBMA[1]
    );
    spoke_config("10.250.0.11", HUB_NBMA[0], &more)
        .replace(
            "multicast = true\n[[route]]",
            "multicast = true\npriority = 1\ncluster = 1\n[[route]]",
        )
        .replace(
            "shortcut = true\n",
            &format!("shortcut = true\nnhs-fallback = {FALLBACK}\n"),
        )
}

fn network() -> Net {
    let mut net = Net::new();
    for (i, nbma) in HUB_NBMA.iter().enumerate() {
        let n = i as u8 + 1;
        let hub = hub_config(*nbma).replace("10.250.0.1/24", &format!("10.250.0.{n}/24"));
        net.add(
            ["hub1", "hub2", "hub3"][i],
            &hub,
            *nbma,
            *nbma,
            (Ipv4Addr::new(10, 0, 10 + n, 0), 24),
            &[],
            u64::from(n),
        );
    }
    let spoke = spoke_text();
    net.add(
        "spoke",
        &spoke,
        SPOKE_NBMA,
        SPOKE_NBMA,
        (Ipv4Addr::new(10, 0, 1, 0), 24),
        &[],
        9,
    );
    net.idle(Duration::from_secs(5));
    net
}

fn ups(net: &Net, nbma: Ipv4Addr) -> usize {
    net.hosts[SPOKE]
        .events
        .iter()
        .filter(|e| matches!(e, Event::NhsUp { nbma: n } if *n == IpAddr::V4(nbma)))
        .count()
}

fn registered_at_hub(net: &Net, hub: usize) -> bool {
    let (reg, unreg) = net.hosts[hub]
        .events
        .iter()
        .fold((0, 0), |(r, u), e| match e {
            Event::PeerRegistered { .. } => (r + 1, u),
            Event::PeerUnregistered { .. } => (r, u + 1),
            _ => (r, u),
        });
    reg > unreg
}

fn role(net: &Net, hub: usize) -> ClusterRole {
    let (cluster, role) = net.hosts[SPOKE]
        .node
        .nhs_cluster(HUB_NBMA[hub])
        .expect("an NHS");
    assert_eq!(cluster, 1);
    role
}

/// The NHSs whose registration is up at the spoke, by hub index.
fn up_set(net: &Net) -> Vec<usize> {
    let st = net.hosts[SPOKE].node.nhrp().nhs_status(net.now);
    (0..3)
        .filter(|h| {
            st.iter().any(|s| {
                s.nbma_addr == IpAddr::V4(HUB_NBMA[*h]) && s.state == dmvpn_nhrp::NhsState::Up
            })
        })
        .collect()
}

fn multicast_set(net: &Net) -> Vec<usize> {
    let m = &net.hosts[SPOKE].node.tables().multicast;
    (0..3).filter(|h| m.contains(&HUB_NBMA[*h])).collect()
}

fn send(net: &mut Net, id: u16) {
    net.send_from_lan(SPOKE, udp_packet(SPOKE_HOST, UNMAPPED, id, 64));
}

#[test]
fn the_best_two_register_the_third_stands_by_and_takes_over_and_falls_back() {
    let mut net = network();
    assert_eq!(
        up_set(&net),
        [0, 1],
        "registered with the best two by priority"
    );
    assert!(registered_at_hub(&net, 0) && registered_at_hub(&net, 1));
    assert!(!registered_at_hub(&net, 2), "hub 3 holds no registration");
    assert!(
        !net.hosts[SPOKE]
            .sent
            .iter()
            .any(|(d, _)| *d.ip() == HUB_NBMA[2]),
        "nothing at all sent to hub 3: no IKE, no registration"
    );
    assert_eq!(
        (role(&net, 0), role(&net, 1), role(&net, 2)),
        (ClusterRole::Active, ClusterRole::Active, ClusterRole::Down)
    );
    assert_eq!(
        multicast_set(&net),
        [0, 1],
        "multicast to the registered NHSs only"
    );
    assert_eq!(net.hosts[SPOKE].node.preferred_nhs(), Some(HUB_NBMA[0]));

    // Hub 1 dies while traffic flows: on-demand DPD (40 s + 5 × 5 s) takes its SA and its
    // registration down, and hub 3 is brought up (IKE + registration) at once.
    net.hosts[0].alive = false;
    let died = net.now;
    let mut id = 0u16;
    let mut hub3_up = None;
    net.run_for(Duration::from_secs(120), |net| {
        id += 1;
        send(net, id);
        if hub3_up.is_none() && ups(net, HUB_NBMA[2]) > 0 {
            hub3_up = Some(net.now - died);
        }
    });
    let hub3_up = hub3_up.expect("hub 3 registered");
    eprintln!(
        "hub 1 dead: hub 3 registered {hub3_up:?} later (DPD 40 s + 5 x 5 s, then IKE + registration)"
    );
    assert!(hub3_up <= Duration::from_secs(70), "{hub3_up:?}");
    assert_eq!(up_set(&net), [1, 2]);
    assert!(registered_at_hub(&net, 2));
    assert_eq!(multicast_set(&net), [1, 2]);
    assert_eq!(net.hosts[SPOKE].node.preferred_nhs(), Some(HUB_NBMA[1]));
    assert_eq!(
        (role(&net, 0), role(&net, 2)),
        (ClusterRole::Probe, ClusterRole::Active),
        "hub 1, better than hub 3, is probed"
    );

    // Hub 1 comes back: a probe's IKE reaches it (under the IKE back-off); once its SA has
    // been up for the fallback time it registers and hub 3 goes back to reserve, purged.
    net.hosts[0].alive = true;
    let back = net.now;
    let hub1_ups = ups(&net, HUB_NBMA[0]);
    let mut reachable = None;
    let mut replaced = None;
    let mut seen_over_limit = false;
    net.run_for(Duration::from_secs(180), |net| {
        id += 1;
        send(net, id);
        if reachable.is_none()
            && net.hosts[SPOKE]
                .node
                .tables()
                .paths
                .contains_key(&HUB_NBMA[0])
        {
            reachable = Some(net.now);
        }
        seen_over_limit |= up_set(net).len() > 2;
        if replaced.is_none()
            && ups(net, HUB_NBMA[0]) > hub1_ups
            && role(net, 2) == ClusterRole::Down
        {
            replaced = Some(net.now);
        }
    });
    let reachable = reachable.expect("an SA with hub 1 again");
    let replaced = replaced.expect("hub 1 replaced hub 3");
    let waited = replaced - reachable;
    eprintln!(
        "hub 1 back: SA up after {:?} (probe under the IKE back-off), hub 3 replaced {waited:?} after that (fallback {FALLBACK} s)",
        reachable - back
    );
    assert!(
        waited >= Duration::from_secs(FALLBACK) && waited <= Duration::from_secs(FALLBACK + 3),
        "replaced {waited:?} after hub 1 became reachable"
    );
    assert!(
        !seen_over_limit,
        "never three registrations seen at once (per second)"
    );
    assert_eq!(up_set(&net), [0, 1]);
    assert!(registered_at_hub(&net, 0));
    assert!(!registered_at_hub(&net, 2), "hub 3's registration purged");
    assert_eq!(multicast_set(&net), [0, 1]);
    assert_eq!(
        net.hosts[SPOKE].node.preferred_nhs(),
        Some(HUB_NBMA[0]),
        "traffic back on hub 1 (its fallback time served while it was probed)"
    );
    assert_eq!(role(&net, 2), ClusterRole::Down);
    // Within a housekeeping period the SA with hub 3 is closed: max-connections bounds the
    // hubs the spoke holds tunnels with.
    net.run_for(Duration::from_secs(3), |_| {});
    assert!(
        !net.hosts[SPOKE]
            .node
            .tables()
            .paths
            .contains_key(&HUB_NBMA[2]),
        "the SA with hub 3 closed"
    );
    assert!(
        !net.hosts[SPOKE]
            .node
            .ike()
            .has_sa_with(IpAddr::V4(HUB_NBMA[2])),
        "no IKE SA with hub 3 either"
    );
    let _ = Kind::Esp;
}

/// The spoke's IKE SA with hub `hub` (SPI pair), if it has one.
fn sa(net: &Net, hub: usize) -> Option<(u64, u64)> {
    net.hosts[SPOKE]
        .node
        .ike()
        .ike_sas(net.now)
        .iter()
        .find(|s| s.remote.ip() == IpAddr::V4(HUB_NBMA[hub]))
        .map(|s| (s.spi_i, s.spi_r))
}

/// Runs one simulated second at a time until `done` holds or `bound` has passed; how long
/// it took.
fn until(net: &mut Net, bound: Duration, done: impl Fn(&Net) -> bool) -> Option<Duration> {
    let start = net.now;
    while net.now < start + bound {
        net.run_for(Duration::from_secs(1), |_| {});
        if done(net) {
            return Some(net.now - start);
        }
    }
    None
}

#[test]
fn a_reload_re_ranks_the_cluster_make_before_break_and_keeps_the_rest() {
    let mut net = network();
    assert_eq!(up_set(&net), [0, 1]);
    let hub1_sa = sa(&net, 0).expect("an SA with hub 1");
    let hub1_downs = |net: &Net| {
        net.hosts[SPOKE]
            .events
            .iter()
            .filter(|e| matches!(e, Event::NhsDown { nbma } if *nbma == IpAddr::V4(HUB_NBMA[0])))
            .count()
    };

    // Hub 3 (priority 3 → 2) and hub 2 (2 → 3) swap places: hub 3 registers at once (no
    // fallback time: it never failed, the operator chose it), and hub 2 is purged only once
    // hub 3 is registered.
    let swapped = spoke_text()
        .replace("priority = 3\ncluster = 1", "priority = 9\ncluster = 1")
        .replace("priority = 2\ncluster = 1", "priority = 3\ncluster = 1")
        .replace("priority = 9\ncluster = 1", "priority = 2\ncluster = 1");
    let events_before = net.hosts[SPOKE].events.len();
    net.reload(SPOKE, &swapped);
    let took = until(&mut net, Duration::from_secs(20), |net| {
        up_set(net) == [0, 2] && role(net, 1) == ClusterRole::Down
    });
    let took = took.unwrap_or_else(|| {
        panic!(
            "hub 3 registered and hub 2 in reserve within 20 s: up {:?}, roles {:?}",
            up_set(&net),
            (role(&net, 0), role(&net, 1), role(&net, 2))
        )
    });
    eprintln!("reload (hub 3 before hub 2): hub 3 registered and hub 2 purged within {took:?}");
    let order: Vec<_> = net.hosts[SPOKE].events[events_before..]
        .iter()
        .filter_map(|e| match e {
            Event::NhsUp { nbma } => Some(("up", *nbma)),
            Event::NhsDown { nbma, .. } => Some(("down", *nbma)),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        [
            ("up", IpAddr::V4(HUB_NBMA[2])),
            ("down", IpAddr::V4(HUB_NBMA[1]))
        ],
        "make before break: hub 3 registered before hub 2 was purged"
    );
    assert!(registered_at_hub(&net, 2), "hub 3 holds the registration");
    assert!(!registered_at_hub(&net, 1), "hub 2's registration purged");
    assert_eq!(multicast_set(&net), [0, 2]);
    assert_eq!(sa(&net, 0), Some(hub1_sa), "the SA with hub 1 untouched");
    assert_eq!(hub1_downs(&net), 0, "hub 1's registration never went down");
    assert_eq!(net.hosts[SPOKE].node.preferred_nhs(), Some(HUB_NBMA[0]));
    // Hub 2, in reserve and not probed (worse than both active ones), loses its SA at the
    // next housekeeping.
    net.run_for(Duration::from_secs(3), |_| {});
    assert_eq!(sa(&net, 1), None, "the SA with hub 2 closed");

    // max-connections 2 → 3: hub 2 registers again, nothing else moves.
    let hub3_sa = sa(&net, 2).expect("an SA with hub 3");
    let wider = swapped.replace("max-connections = 2", "max-connections = 3");
    net.reload(SPOKE, &wider);
    let took = until(&mut net, Duration::from_secs(20), |net| {
        up_set(net) == [0, 1, 2]
    })
    .expect("registered with all three");
    eprintln!("reload (max-connections 3): hub 2 registered {took:?} later");
    assert_eq!((sa(&net, 0), sa(&net, 2)), (Some(hub1_sa), Some(hub3_sa)));

    // max-connections 3 → 1: only hub 1 stays, the others are purged at once (hub 1 is
    // registered).
    let narrow = swapped.replace("max-connections = 2", "max-connections = 1");
    net.reload(SPOKE, &narrow);
    assert_eq!(up_set(&net), [0], "purged with the reload");
    assert!(!registered_at_hub(&net, 1) && !registered_at_hub(&net, 2));
    assert_eq!(
        (role(&net, 1), role(&net, 2)),
        (ClusterRole::Down, ClusterRole::Down)
    );
    assert_eq!(multicast_set(&net), [0]);

    // Hub 3 moves to a cluster without a limit: it registers again, as every NHS of an
    // unlimited cluster does; hub 1's SA and registration never moved.
    let moved = narrow.replace("priority = 2\ncluster = 1", "priority = 2\ncluster = 2");
    net.reload(SPOKE, &moved);
    until(&mut net, Duration::from_secs(20), |net| {
        up_set(net) == [0, 2]
    })
    .expect("hub 3 registered again");
    let (cluster, place) = net.hosts[SPOKE]
        .node
        .nhs_cluster(HUB_NBMA[2])
        .expect("an NHS");
    assert_eq!((cluster, place), (2, ClusterRole::Active));
    assert_eq!(sa(&net, 0), Some(hub1_sa));
    assert_eq!(hub1_downs(&net), 0);
}

#[test]
fn a_reload_that_changes_the_nhs_list_asks_for_a_restart() {
    let mut net = network();
    let now = net.now;
    let node = &mut net.hosts[SPOKE].node;
    // Hub 3 loses its multicast flag: the NHS list is NHRP's identity, only a restart
    // changes it (and nothing of the reload applies, not even the new limit).
    let changed = spoke_text()
        .replace(
            "multicast = true\npriority = 3",
            "multicast = false\npriority = 3",
        )
        .replace("max-connections = 2", "max-connections = 3");
    match node.reload(now, sim::parse(&changed)) {
        Err(dmvpn_node::NodeError::RestartRequired(keys)) => assert_eq!(keys, ["nhrp.nhs"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        role(&net, 2),
        ClusterRole::Down,
        "the old limit still applies"
    );
}
