//! The routing table resolutions are answered from (`Engine::set_routes`), indexed by
//! (prefix, length) so a longest-prefix match is one hash lookup per prefix length present
//! instead of a walk of every route (issue 12: a hub with a route per spoke LAN answers a
//! Resolution Request, RFC 2332 §5.2.1, per new spoke-to-spoke flow).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use crate::config::Route;

use super::{covers, mask};

#[derive(Debug, Default)]
pub(super) struct RouteTable {
    routes: Vec<Route>,
    /// (prefix, length) → indexes into `routes`, in order.
    by_prefix: HashMap<(IpAddr, u8), Vec<usize>>,
    /// The prefix lengths present.
    lens: BTreeSet<u8>,
}

impl RouteTable {
    pub(super) fn new(routes: Vec<Route>) -> Self {
        let mut t = Self::default();
        for (i, r) in routes.iter().enumerate() {
            t.by_prefix
                .entry((r.prefix, r.prefix_len))
                .or_default()
                .push(i);
            t.lens.insert(r.prefix_len);
        }
        t.routes = routes;
        t
    }

    /// The longest route covering `target` among those `pred` accepts; among equally long
    /// ones the last in the table (as `Iterator::max_by_key` picks). A covering route has no
    /// host bits (see `covers`), so its prefix is `target` masked to its length: the only
    /// candidates are those keys.
    pub(super) fn longest_covering(
        &self,
        target: IpAddr,
        pred: impl Fn(&Route) -> bool,
    ) -> Option<&Route> {
        self.lens.iter().rev().find_map(|&len| {
            self.by_prefix
                .get(&(mask(target, len), len))?
                .iter()
                .filter_map(|&i| self.routes.get(i))
                .filter(|r| pred(r) && covers(r.prefix, r.prefix_len, target))
                .last()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;

    fn route() -> impl Strategy<Value = Route> {
        (
            prop_oneof![Just(0u8), Just(8), Just(16), Just(24), Just(32), Just(40)],
            0u8..4,
            0u8..3,
            proptest::option::of(0u8..3),
        )
            .prop_map(|(len, third, fourth, nh)| Route {
                prefix: IpAddr::V4(Ipv4Addr::new(10, 0, third, fourth)),
                prefix_len: len,
                next_hop: nh.map(|n| IpAddr::V4(Ipv4Addr::new(10, 9, 0, n))),
            })
    }

    proptest! {
        /// Agrees with the walk the engine did before: `max_by_key` over the covering routes.
        #[test]
        fn longest_covering_agrees_with_a_walk(
            routes in proptest::collection::vec(route(), 0..12),
            third in 0u8..4,
            fourth in 0u8..3,
        ) {
            let t = RouteTable::new(routes.clone());
            let target = IpAddr::V4(Ipv4Addr::new(10, 0, third, fourth));
            let walk = routes
                .iter()
                .filter(|r| covers(r.prefix, r.prefix_len, target))
                .max_by_key(|r| r.prefix_len);
            prop_assert_eq!(t.longest_covering(target, |_| true), walk);
            let local = routes
                .iter()
                .filter(|r| r.next_hop.is_none() && covers(r.prefix, r.prefix_len, target))
                .map(|r| r.prefix_len)
                .max();
            prop_assert_eq!(
                t.longest_covering(target, |r| r.next_hop.is_none()).map(|r| r.prefix_len),
                local
            );
        }
    }
}
