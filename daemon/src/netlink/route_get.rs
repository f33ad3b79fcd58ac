//! The kernel's own route lookup for one destination (`ip route get DST`, RTM_GETROUTE with a
//! destination): for `dmvpnctl explain`, which must say whether the kernel hands packets to
//! DST to the tunnel device at all. dmvpnd's route mirror holds only the routes *on* the
//! tunnel, so its longest match can be a tunnel route while the kernel prefers a longer route
//! on another device (or policy routing sends it elsewhere).

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteType};

use super::Netlink;

/// An answer the kernel takes longer than this for is treated as no answer: the control task
/// must not stall on it.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// The kernel's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelLookup {
    Route(KernelRoute),
    /// The kernel refused the lookup: its reason ("Network is unreachable").
    Refused(String),
    /// No answer (a netlink failure or a timeout).
    NoAnswer(String),
}

/// What the kernel's lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    /// `unicast`, `local`, `broadcast`, `multicast`, `unreachable`, `blackhole`,
    /// `prohibit`, `other`.
    pub kind: &'static str,
    /// Output interface index, when the route has one.
    pub oif: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
}

fn kind_name(t: RouteType) -> &'static str {
    match t {
        RouteType::Unicast => "unicast",
        RouteType::Local => "local",
        RouteType::Broadcast => "broadcast",
        RouteType::Multicast => "multicast",
        RouteType::Unreachable => "unreachable",
        RouteType::BlackHole => "blackhole",
        RouteType::Prohibit => "prohibit",
        _ => "other",
    }
}

impl Netlink {
    /// `ip route get dst`.
    pub async fn route_get(&self, dst: Ipv4Addr) -> KernelLookup {
        let req = self
            .handle
            .route()
            .get(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(dst, 32)
                    .build(),
            )
            .execute();
        let answer = tokio::time::timeout(LOOKUP_TIMEOUT, async move {
            futures::pin_mut!(req);
            req.try_next().await
        })
        .await;
        let msg = match answer {
            Err(_) => {
                return KernelLookup::NoAnswer(format!(
                    "no answer from the kernel within {LOOKUP_TIMEOUT:?}"
                ));
            }
            Ok(Err(rtnetlink::Error::NetlinkError(m))) => {
                // "Network is unreachable (os error 101)": the reason without the errno.
                let text = m.to_io().to_string();
                let reason = text.split(" (os error").next().unwrap_or_default();
                return KernelLookup::Refused(reason.to_owned());
            }
            Ok(Err(e)) => return KernelLookup::NoAnswer(e.to_string()),
            Ok(Ok(None)) => return KernelLookup::NoAnswer("an empty answer".to_owned()),
            Ok(Ok(Some(m))) => m,
        };
        let mut route = KernelRoute {
            kind: kind_name(msg.header.kind),
            oif: None,
            gateway: None,
        };
        for a in &msg.attributes {
            match a {
                RouteAttribute::Oif(o) => route.oif = Some(*o),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => route.gateway = Some(*g),
                _ => {}
            }
        }
        KernelLookup::Route(route)
    }
}
