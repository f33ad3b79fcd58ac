//! rtnetlink (rtnetlink(7), netlink(7)) for the tunnel device: interface address, MTU and flags;
//! installing and withdrawing routes on the tunnel (NHRP shortcuts, static routes) as ordinary
//! kernel routes so the host and routing daemons see them; and mirroring the kernel's main-table
//! routes whose output device is the tunnel into the dataplane's [`RouteTable`].

use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, LinkUnspec, MulticastGroup, RouteMessageBuilder};
use tokio::task::JoinHandle;

use crate::routes::{Route, RouteProto, RouteTable, SharedRoutes};

mod route_get;
pub use route_get::{KernelLookup, KernelRoute};

/// A handle for netlink requests; its connection runs as a background task.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a NETLINK_ROUTE socket in the current network namespace.
    pub fn open() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink socket")?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn link_index(&self, name: &str) -> Result<u32> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        let link = links
            .try_next()
            .await
            .with_context(|| format!("looking up interface {name}"))?
            .ok_or_else(|| anyhow!("no interface {name}"))?;
        Ok(link.header.index)
    }

    /// Gives the tunnel its address and MTU and brings it up, multicast-capable so routing
    /// daemons (OSPF hellos to 224.0.0.5) can use it. Idempotent: an existing address is kept.
    pub async fn configure_tunnel(
        &self,
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
        mtu: u16,
        txqueuelen: u32,
    ) -> Result<()> {
        // No IPv6 link-local address on the tunnel (addr_gen_mode none, set while the link is
        // still down): the tunnel carries IPv4 only, and the kernel's router solicitations
        // and MLD reports would otherwise show up as `not_ipv4` drops on an idle tunnel.
        // Best effort: a kernel without IPv6 refuses the attribute, which is fine. The link
        // goes down first: an address generated while it was up would stay.
        let _ = self
            .handle
            .link()
            .set(LinkUnspec::new_with_index(index).down().build())
            .execute()
            .await;
        if let Err(e) = self
            .handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                        vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
                    )]))
                    .build(),
            )
            .execute()
            .await
        {
            tracing::info!("IPv6 address generation left on for interface {index}: {e}");
        }
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .mtu(u32::from(mtu))
                    .append_extra_attribute(LinkAttribute::TxQueueLen(txqueuelen))
                    .multicast(true)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .with_context(|| {
                format!(
                    "setting mtu {mtu}, txqueuelen {txqueuelen}, multicast and up on interface {index}"
                )
            })?;
        match self
            .handle
            .address()
            .add(index, addr.into(), prefix_len)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("adding {addr}/{prefix_len} to interface {index}"))
            }
        }
    }

    fn route_message(
        index: u32,
        prefix: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        metric: u32,
    ) -> RouteMessage {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(prefix, prefix_len)
            .output_interface(index)
            .priority(metric)
            .protocol(RouteProtocol::Other(RouteProto::DMVPND.0))
            .table_id(u32::from(RouteHeader::RT_TABLE_MAIN))
            .kind(RouteType::Unicast);
        b = match gateway {
            Some(gw) => b.gateway(gw).scope(RouteScope::Universe),
            None => b.scope(RouteScope::Link),
        };
        b.build()
    }

    /// Installs (or replaces) `prefix/len via gateway dev tunnel proto 77 metric M` in the main
    /// table. Shortcuts use a lower metric than static routes to the same prefix, so both can
    /// coexist and withdrawing the shortcut falls back to the static route.
    pub async fn install_route(
        &self,
        index: u32,
        prefix: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        metric: u32,
    ) -> Result<()> {
        self.handle
            .route()
            .add(Self::route_message(
                index, prefix, prefix_len, gateway, metric,
            ))
            .replace()
            .execute()
            .await
            .with_context(|| format!("installing route {prefix}/{prefix_len} via {gateway:?}"))
    }

    /// Routes the tunnel subnet `prefix/len` into the tunnel (`dev tunnel scope link src SRC proto
    /// 77 metric 0`) for an interface addressed with a /32 (`tunnel.network`): what the kernel adds
    /// by itself, as `proto kernel`, for a subnet address. Without it unicast to another router's
    /// tunnel address (an OSPF neighbour's database exchange, a ping) would follow the default
    /// route onto the underlay. Replaces an existing one (a restart onto a persistent device); the
    /// route goes with the device.
    pub async fn install_network_route(
        &self,
        index: u32,
        prefix: Ipv4Addr,
        prefix_len: u8,
        src: Ipv4Addr,
    ) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(prefix, prefix_len)
            .output_interface(index)
            .pref_source(src)
            .priority(0)
            .protocol(RouteProtocol::Other(RouteProto::DMVPND.0))
            .table_id(u32::from(RouteHeader::RT_TABLE_MAIN))
            .kind(RouteType::Unicast)
            .scope(RouteScope::Link)
            .build();
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .with_context(|| format!("routing the tunnel network {prefix}/{prefix_len}"))
    }

    /// Withdraws a route installed by [`Netlink::install_route`]; a route already gone is fine.
    pub async fn withdraw_route(
        &self,
        index: u32,
        prefix: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        metric: u32,
    ) -> Result<()> {
        match self
            .handle
            .route()
            .del(Self::route_message(
                index, prefix, prefix_len, gateway, metric,
            ))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
            Err(e) => Err(e).with_context(|| format!("withdrawing route {prefix}/{prefix_len}")),
        }
    }
}

impl Netlink {
    /// The router's own prefixes: main-table unicast IPv4 routes that do *not* leave through the
    /// tunnel (LAN subnets, static routes to the LAN side), except default routes. NHRP answers
    /// resolution requests for destinations inside them with the covering prefix (RFC 2332
    /// §5.2.2: the reply's CIE prefix length), as Cisco does from its routing table.
    pub async fn local_prefixes(&self, tunnel_index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let mut out = Vec::new();
        let mut stream = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(m) = stream.try_next().await.context("dumping IPv4 routes")? {
            if let Some((r, oif)) = main_unicast_route(&m)
                && oif != Some(tunnel_index)
                && r.prefix_len > 0
                && !r.prefix.is_loopback()
            {
                out.push((r.prefix, r.prefix_len));
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

/// Converts a kernel route into a tunnel route if it is a unicast main-table IPv4 route out of
/// the tunnel device. Multipath routes are skipped: nexthop groups over the tunnel are not a
/// DMVPN setup we support yet.
pub fn tunnel_route(msg: &RouteMessage, tunnel_index: u32) -> Option<Route> {
    match main_unicast_route(msg)? {
        (r, Some(oif)) if oif == tunnel_index => Some(r),
        _ => None,
    }
}

/// A unicast main-table IPv4 route and its output interface.
fn main_unicast_route(msg: &RouteMessage) -> Option<(Route, Option<u32>)> {
    let h = &msg.header;
    if h.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(h.table);
    let (mut dst, mut gateway, mut oif, mut metric) = (Ipv4Addr::UNSPECIFIED, None, None, 0);
    for a in &msg.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Destination(_) | RouteAttribute::Gateway(_) => return None, // not IPv4
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let proto = match h.protocol {
        RouteProtocol::Other(p) => RouteProto(p),
        p => RouteProto(u8::from(p)),
    };
    let route = Route {
        prefix: dst,
        prefix_len: h.destination_prefix_length,
        gateway,
        metric,
        proto,
    };
    Some((route, oif))
}

/// Keeps `routes` equal to the kernel's main-table routes out of the tunnel. Subscribes to route
/// and link notifications before dumping so no change is lost between dump and monitor. IPv4
/// does not announce the routes it flushes when a device goes down, so any link change of the
/// tunnel triggers a fresh dump instead of trusting incremental updates.
pub async fn spawn_route_mirror(tunnel_index: u32, routes: SharedRoutes) -> Result<JoinHandle<()>> {
    let (conn, handle, mut messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Ipv4Route, MulticastGroup::Link])
            .context("opening rtnetlink monitor socket")?;
    tokio::spawn(conn);
    let table = dump(&handle, tunnel_index).await?;
    routes.store(Arc::new(table));
    Ok(tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            let NetlinkPayload::InnerMessage(msg) = msg.payload else {
                continue;
            };
            let mut next = (**routes.load()).clone();
            match msg {
                RouteNetlinkMessage::NewRoute(m) => match tunnel_route(&m, tunnel_index) {
                    Some(r) => next.insert(r),
                    None => continue,
                },
                RouteNetlinkMessage::DelRoute(m) => match tunnel_route(&m, tunnel_index) {
                    Some(r) => {
                        next.remove(r.prefix, r.prefix_len, r.metric);
                    }
                    None => continue,
                },
                RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l)
                    if l.header.index == tunnel_index =>
                {
                    match dump(&handle, tunnel_index).await {
                        Ok(t) => next = t,
                        Err(e) => {
                            tracing::warn!(
                                "route mirror: re-reading routes after a tunnel link change: {e:#}"
                            );
                            continue;
                        }
                    }
                }
                _ => continue,
            }
            tracing::debug!(routes = next.len(), "tunnel route table updated");
            routes.store(Arc::new(next));
        }
        tracing::error!(
            "route mirror: netlink monitor closed; tunnel routes are no longer updated"
        );
    }))
}

async fn dump(handle: &Handle, tunnel_index: u32) -> Result<RouteTable> {
    let mut table = RouteTable::new();
    let mut stream = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(m) = stream.try_next().await.context("dumping IPv4 routes")? {
        if let Some(r) = tunnel_route(&m, tunnel_index) {
            table.insert(r);
        }
    }
    Ok(table)
}
