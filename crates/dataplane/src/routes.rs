//! The tunnel's IPv4 routing table as the dataplane sees it: longest-prefix match (RFC 1812
//! §5.2.4.3) over the kernel routes whose output device is the tunnel, published as immutable
//! snapshots (read-copy-update: the daemon swaps an `Arc`) so a packet lookup never takes a
//! lock. The route mirror owns it; the control plane installs NHRP shortcuts as kernel routes
//! and sees them come back through the mirror.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use dmvpn_wire::Ipv4Cidr;

/// Where a route came from; kernel routes carry the protocol number the kernel reports
/// (`ip route` "proto", rtnetlink.h RTPROT_*), which also identifies dmvpnd's own shortcuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteProto(pub u8);

impl RouteProto {
    pub const KERNEL: RouteProto = RouteProto(2);
    pub const STATIC: RouteProto = RouteProto(4);
    /// dmvpnd's routes (NHRP shortcuts, configured static routes). Not in iproute2's rt_protos
    /// list and distinct from FRR's 186..=196, so zebra's startup sweep leaves them alone.
    pub const DMVPND: RouteProto = RouteProto(77);
}

/// One route into the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub prefix: Ipv4Addr,
    pub prefix_len: u8,
    /// `None` for an on-link route (the connected tunnel subnet): the next hop is the destination.
    pub gateway: Option<Ipv4Addr>,
    /// The kernel's priority; lower wins among routes to the same prefix.
    pub metric: u32,
    pub proto: RouteProto,
}

impl Route {
    /// The tunnel address the packet goes to next: the gateway, or the destination itself.
    pub fn next_hop(&self, dst: Ipv4Addr) -> Ipv4Addr {
        self.gateway.unwrap_or(dst)
    }
}

/// The network of `addr/len` as a hash key (lengths over 32 are refused by the callers).
fn network(addr: Ipv4Addr, len: u8) -> u32 {
    Ipv4Cidr::new(addr, len.min(32)).map_or(0, |c| u32::from(c.network()))
}

/// An immutable-once-published table. Lookups probe one hash map per prefix length in use,
/// longest first: at most 33 probes, typically a handful (connected subnet, a few shortcuts,
/// a default or summary route).
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// by prefix length: network address → routes sorted by metric
    by_len: Vec<HashMap<u32, Vec<Route>>>,
    /// prefix lengths in use, longest first
    lens: Vec<u8>,
    count: usize,
}

impl RouteTable {
    pub fn new() -> Self {
        RouteTable {
            by_len: vec![HashMap::new(); 33],
            lens: Vec::new(),
            count: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds or replaces the route with the same prefix and metric (the kernel's identity for
    /// IPv4 routes in one table, ignoring TOS).
    pub fn insert(&mut self, mut route: Route) {
        if route.prefix_len > 32 {
            return;
        }
        if self.by_len.len() < 33 {
            self.by_len.resize(33, HashMap::new());
        }
        let net = network(route.prefix, route.prefix_len);
        route.prefix = Ipv4Addr::from(net);
        let Some(map) = self.by_len.get_mut(usize::from(route.prefix_len)) else {
            return;
        };
        let slot = map.entry(net).or_default();
        match slot.iter_mut().find(|r| r.metric == route.metric) {
            Some(r) => *r = route,
            None => {
                slot.push(route);
                slot.sort_by_key(|r| r.metric);
                self.count += 1;
            }
        }
        if !self.lens.contains(&route.prefix_len) {
            self.lens.push(route.prefix_len);
            self.lens.sort_unstable_by(|a, b| b.cmp(a));
        }
    }

    /// Removes the route to `prefix/len` with `metric`; returns whether one was there.
    pub fn remove(&mut self, prefix: Ipv4Addr, prefix_len: u8, metric: u32) -> bool {
        let Some(map) = self.by_len.get_mut(usize::from(prefix_len)) else {
            return false;
        };
        let net = network(prefix, prefix_len);
        let Some(slot) = map.get_mut(&net) else {
            return false;
        };
        let before = slot.len();
        slot.retain(|r| r.metric != metric);
        let removed = slot.len() != before;
        if slot.is_empty() {
            map.remove(&net);
            if map.is_empty() {
                self.lens.retain(|l| *l != prefix_len);
            }
        }
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Longest-prefix match; among equal prefixes the lowest metric.
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<&Route> {
        self.lens.iter().find_map(|&len| {
            self.by_len
                .get(usize::from(len))?
                .get(&network(dst, len))
                .and_then(|routes| routes.first())
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.by_len.iter().flat_map(|m| m.values().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(p: &str, len: u8, gw: Option<&str>, metric: u32) -> Route {
        Route {
            prefix: p.parse().unwrap(),
            prefix_len: len,
            gateway: gw.map(|g| g.parse().unwrap()),
            metric,
            proto: RouteProto::KERNEL,
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = RouteTable::new();
        t.insert(r("10.250.0.0", 24, None, 0));
        t.insert(r("0.0.0.0", 0, Some("10.250.0.1"), 0));
        t.insert(r("10.1.0.0", 16, Some("10.250.0.1"), 0));
        t.insert(r("10.1.2.0", 24, Some("10.250.0.5"), 0));
        assert_eq!(t.len(), 4);
        assert_eq!(
            t.lookup(ip("10.1.2.9")).unwrap().next_hop(ip("10.1.2.9")),
            ip("10.250.0.5")
        );
        assert_eq!(
            t.lookup(ip("10.1.3.9")).unwrap().next_hop(ip("10.1.3.9")),
            ip("10.250.0.1")
        );
        assert_eq!(
            t.lookup(ip("10.250.0.7"))
                .unwrap()
                .next_hop(ip("10.250.0.7")),
            ip("10.250.0.7")
        );
        assert_eq!(t.lookup(ip("192.0.2.1")).unwrap().prefix_len, 0);
        assert!(t.remove(ip("10.1.2.0"), 24, 0));
        assert!(!t.remove(ip("10.1.2.0"), 24, 0));
        assert_eq!(t.lookup(ip("10.1.2.9")).unwrap().prefix_len, 16);
        assert!(t.remove(ip("0.0.0.0"), 0, 0));
        assert!(t.lookup(ip("192.0.2.1")).is_none());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn metric_orders_equal_prefixes_and_host_bits_are_masked() {
        let mut t = RouteTable::new();
        t.insert(r("10.1.2.77", 24, Some("10.250.0.5"), 100));
        t.insert(r("10.1.2.0", 24, Some("10.250.0.6"), 10));
        assert_eq!(
            t.lookup(ip("10.1.2.1")).unwrap().gateway,
            Some(ip("10.250.0.6"))
        );
        t.insert(r("10.1.2.0", 24, Some("10.250.0.7"), 10)); // replaces metric 10
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.lookup(ip("10.1.2.1")).unwrap().gateway,
            Some(ip("10.250.0.7"))
        );
        assert!(t.remove(ip("10.1.2.0"), 24, 10));
        assert_eq!(
            t.lookup(ip("10.1.2.1")).unwrap().gateway,
            Some(ip("10.250.0.5"))
        );
        assert_eq!(t.iter().count(), 1);
    }

    #[test]
    fn host_routes_and_copies_are_independent() {
        let before = RouteTable::new();
        let mut next = before.clone();
        next.insert(r("10.250.0.5", 32, None, 0));
        assert!(
            before.lookup(ip("10.250.0.5")).is_none(),
            "a published copy never changes"
        );
        assert_eq!(next.lookup(ip("10.250.0.5")).unwrap().prefix_len, 32);
        assert!(next.lookup(ip("10.250.0.6")).is_none());
    }
}
