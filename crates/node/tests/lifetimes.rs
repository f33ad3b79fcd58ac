//! Volume lifetime (`[ipsec] lifetime-kilobytes`, Cisco's `set security-association lifetime
//! kilobytes`): a Child SA that carried that much is rekeyed make-before-break, long before
//! its time lifetime, and no packet is lost.

mod sim;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use dmvpn_node::Event;
use sim::{Net, hub_config, spoke_config, udp_packet};

const HUB_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const A_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const HUB: usize = 0;
const A: usize = 1;

fn with_volume(config: String) -> String {
    let c = config.replace(
        "lifetime = 300\n",
        "lifetime = 300\nlifetime-kilobytes = 2560\n",
    );
    assert!(c.contains("lifetime-kilobytes"));
    c
}

fn rekeys(net: &Net, h: usize) -> usize {
    net.hosts[h]
        .events
        .iter()
        .filter(|e| matches!(e, Event::ChildSaInstalled { rekey: true, .. }))
        .count()
}

#[test]
fn a_child_sa_is_rekeyed_after_its_volume_lifetime_without_loss() {
    let mut net = Net::hub_and_spoke(
        HUB_NBMA,
        &with_volume(hub_config(HUB_NBMA)),
        A_NBMA,
        &with_volume(spoke_config("10.250.0.11", HUB_NBMA, "")),
    );
    net.idle(Duration::from_secs(5));
    assert!(net.hosts[HUB].events.iter().any(|e| matches!(
        e,
        Event::PeerRegistered { protocol_addr, .. } if *protocol_addr == IpAddr::V4(Ipv4Addr::new(10, 250, 0, 11))
    )));
    assert_eq!(rekeys(&net, A) + rekeys(&net, HUB), 0);
    // 100 packets of 1,300 bytes a second (130 KB/s): 2,560 KB after about 20 s, far from the 300 s
    // time lifetime (less its margin).
    let mut id = 0u16;
    net.run_for(Duration::from_secs(40), |net| {
        for _ in 0..100 {
            id = id.wrapping_add(1);
            net.send_from_lan(
                A,
                udp_packet(
                    Ipv4Addr::new(10, 0, 1, 5),
                    Ipv4Addr::new(10, 0, 0, 5),
                    id,
                    1300,
                ),
            );
        }
    });
    net.idle(Duration::from_secs(5));
    let total = rekeys(&net, A) + rekeys(&net, HUB);
    println!(
        "40 s at 130 KB/s with a 2,560 KB volume lifetime: {} rekeys (A {}, hub {})",
        total,
        rekeys(&net, A),
        rekeys(&net, HUB)
    );
    assert!(total >= 1, "no rekey from the volume lifetime");
    assert!(
        total <= 6,
        "rekeyed {total} times: once per worn-out SA expected"
    );
    assert_eq!(
        net.hosts[HUB].delivered.len(),
        usize::from(id),
        "every packet arrived across the rekey"
    );
}
