//! The network most node tests use: a hub (LAN 10.0.0.0/24, with routes to both spoke LANs as
//! OSPF would install them), spoke A (10.250.0.11, LAN 10.0.1.0/24) and spoke B (10.250.0.12,
//! LAN 10.0.2.0/24) behind a 1:1 NAT.

use std::net::Ipv4Addr;

use super::{Net, hub_config, spoke_config};

pub const HUB_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const A_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
pub const B_PRIVATE: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 2);
pub const B_PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// B's address in [`Net::hub_and_two_public_spokes`] (no NAT).
pub const B_OWN_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
pub const A_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 11);
pub const B_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 12);
pub const A_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5);
pub const B_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 5);
pub const HUB: usize = 0;
pub const A: usize = 1;
pub const B: usize = 2;

impl Net {
    /// The hub and spokes A and B, not yet run.
    pub fn hub_and_two_spokes() -> Self {
        Self::hub_and_two_spokes_with(&[
            (Ipv4Addr::new(10, 0, 1, 0), 24, A_TUNNEL),
            (Ipv4Addr::new(10, 0, 2, 0), 24, B_TUNNEL),
        ])
    }

    /// The same network with only `hub_routes` in the hub's kernel table.
    pub fn hub_and_two_spokes_with(hub_routes: &[(Ipv4Addr, u8, Ipv4Addr)]) -> Self {
        Self::three(hub_routes, B_PRIVATE, B_PUBLIC)
    }

    /// The same network with spoke B on a public address of its own, [`B_OWN_PUBLIC`] (two
    /// spokes that can both initiate to each other, as in the BGP namespace test).
    pub fn hub_and_two_public_spokes() -> Self {
        Self::three(
            &[
                (Ipv4Addr::new(10, 0, 1, 0), 24, A_TUNNEL),
                (Ipv4Addr::new(10, 0, 2, 0), 24, B_TUNNEL),
            ],
            B_OWN_PUBLIC,
            B_OWN_PUBLIC,
        )
    }

    fn three(
        hub_routes: &[(Ipv4Addr, u8, Ipv4Addr)],
        b_private: Ipv4Addr,
        b_public: Ipv4Addr,
    ) -> Self {
        let mut net = Net::new();
        net.add(
            "hub",
            &hub_config(HUB_NBMA),
            HUB_NBMA,
            HUB_NBMA,
            (Ipv4Addr::new(10, 0, 0, 0), 24),
            hub_routes,
            1,
        );
        net.add(
            "spoke-a",
            &spoke_config("10.250.0.11", HUB_NBMA, ""),
            A_NBMA,
            A_NBMA,
            (Ipv4Addr::new(10, 0, 1, 0), 24),
            &[],
            2,
        );
        net.add(
            "spoke-b",
            &spoke_config("10.250.0.12", HUB_NBMA, ""),
            b_private,
            b_public,
            (Ipv4Addr::new(10, 0, 2, 0), 24),
            &[],
            3,
        );
        net
    }
}
