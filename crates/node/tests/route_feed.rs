//! A route a routing daemon installs on the hub (BGP, OSPF) reaches NHRP at once: a
//! resolution for it right after is answered and the shortcut forms, instead of being
//! refused until the next housekeeping (up to 2 s later; seen in the BGP namespace test).

mod sim;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use dmvpn_dataplane::{Route, RouteProto};
use dmvpn_node::Event;
use sim::three::{A, A_HOST, A_TUNNEL, B, B_HOST, B_TUNNEL, HUB};
use sim::{Net, udp_packet};

#[test]
fn a_route_installed_on_the_hub_is_resolvable_at_once() {
    // The hub starts with a route to A's LAN only; B's comes later, as from bgpd.
    let mut net = Net::hub_and_two_spokes_with(&[(Ipv4Addr::new(10, 0, 1, 0), 24, A_TUNNEL)]);
    // Past the first housekeeping passes, so only an immediate feed can tell NHRP.
    net.idle(Duration::from_secs(5));
    let t = net.now;
    let hub = &mut net.hosts[HUB];
    hub.routes.insert(Route {
        prefix: Ipv4Addr::new(10, 0, 2, 0),
        prefix_len: 24,
        gateway: Some(B_TUNNEL),
        metric: 20,
        proto: RouteProto(186),
    });
    let routes = Arc::new(hub.routes.clone());
    hub.node.set_routes(routes);
    // Traffic A → B's LAN at once, every 50 ms, for one second.
    let mut shortcut = None;
    for i in 0..20u16 {
        net.send_from_lan(A, udp_packet(A_HOST, B_HOST, i, 64));
        net.idle(Duration::from_millis(50));
        if shortcut.is_none()
            && net.hosts[A]
                .events
                .iter()
                .any(|e| matches!(e, Event::ShortcutInstalled { via, .. } if *via == B_TUNNEL))
        {
            shortcut = Some(net.now - t);
        }
    }
    println!("shortcut to B's LAN {shortcut:?} after the hub's route appeared");
    let took = shortcut.expect("no shortcut within 1 s of the route");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(!net.hosts[B].delivered.is_empty());
}
