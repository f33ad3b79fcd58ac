//! `dmvpnctl explain DEST`: the dataplane's own decision for DEST (`Tables::explain` on the
//! snapshot and route table the packet workers read, so the answer cannot drift from what
//! they do), joined with the NHRP entry of the next hop, the peer's SAs as `show sa` reports
//! them, and the node's record of the last NHRP event and error.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use dmvpn_api::{
    ExplainError, ExplainForwarding, ExplainKernel, ExplainNhrpEvent, ExplainPath, ExplainReport,
    ExplainRoute, NhrpEntry, SCHEMA_VERSION, SaPeer,
};
use dmvpn_dataplane::{Forwarding, Route, RouteProto};
use dmvpn_nhrp::{CacheEntry, CieCode, EntryKind, ErrorCode};
use dmvpn_node::explain_log::{NhrpNote, NhrpRecord};
use dmvpn_node::peers::Backoff;

use super::ControlPlane;
use crate::ctl::{Response, ShowFilter};
use crate::netlink::KernelLookup;
use crate::status::{self, nhrp_entry};

/// Where a tunnel route came from, by the kernel's protocol number (rtnetlink.h RTPROT_*,
/// iproute2's names) and, for dmvpnd's own routes, by the metric the node gives each kind.
fn route_source(r: &Route) -> &'static str {
    match r.proto {
        RouteProto::DMVPND if r.metric == dmvpn_node::SHORTCUT_METRIC => "nhrp_shortcut",
        // dmvpnd's route of the tunnel subnet for a /32 tunnel address (`tunnel.network`)
        // stands in for the connected route; shortcuts and static routes have a gateway.
        RouteProto::DMVPND if r.gateway.is_none() => "connected",
        RouteProto::DMVPND => "dmvpnd_static",
        // The kernel adds the on-link route of the tunnel subnet with the address.
        RouteProto::KERNEL if r.gateway.is_none() => "connected",
        RouteProto::KERNEL => "kernel",
        RouteProto(3) => "boot",
        RouteProto::STATIC => "static",
        RouteProto(11) => "zebra",
        RouteProto(186) => "bgp",
        RouteProto(187) => "isis",
        RouteProto(188) => "ospf",
        RouteProto(189) => "rip",
        RouteProto(192) => "eigrp",
        _ => "other",
    }
}

fn covers(prefix: IpAddr, len: u8, dst: Ipv4Addr) -> bool {
    let IpAddr::V4(p) = prefix else { return false };
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    };
    p.to_bits() & mask == dst.to_bits() & mask
}

fn nhrp_event(r: &NhrpRecord, now: Instant) -> ExplainNhrpEvent {
    let (kind, next_hop, nbma, code) = match r.note {
        NhrpNote::ShortcutInstalled { next_hop, nbma } => {
            ("shortcut_installed", Some(next_hop), nbma, None)
        }
        NhrpNote::ResolutionRequested { nhs } => ("resolution_requested", None, Some(nhs), None),
        NhrpNote::ShortcutWithdrawn { next_hop } => {
            ("shortcut_withdrawn", Some(next_hop), None, None)
        }
        NhrpNote::ResolutionFailed { code } => (
            "resolution_failed",
            None,
            None,
            code.map(|c| CieCode(c).to_string()),
        ),
    };
    ExplainNhrpEvent {
        kind: kind.to_owned(),
        prefix: Some(IpAddr::V4(r.prefix)),
        prefix_len: Some(r.prefix_len),
        next_hop: next_hop.map(IpAddr::V4),
        nbma: nbma.map(IpAddr::V4),
        code,
        age_secs: now.saturating_duration_since(r.at).as_secs(),
    }
}

/// The kernel's lookup in the report's terms.
fn kernel(lookup: KernelLookup, tunnel_index: u32) -> ExplainKernel {
    let (lookup, route, error) = match lookup {
        KernelLookup::Route(r) => {
            let l = if r.oif == Some(tunnel_index) {
                "tunnel"
            } else {
                match r.kind {
                    "local" | "broadcast" => "local",
                    "unreachable" | "blackhole" | "prohibit" => "unreachable",
                    _ => "other_interface",
                }
            };
            (l, Some(r), None)
        }
        KernelLookup::Refused(e) => ("unreachable", None, Some(e)),
        KernelLookup::NoAnswer(e) => ("failed", None, Some(e)),
    };
    ExplainKernel {
        lookup: lookup.to_owned(),
        route_type: route.as_ref().map(|r| r.kind.to_owned()),
        interface_index: route.as_ref().and_then(|r| r.oif),
        gateway: route.and_then(|r| r.gateway).map(IpAddr::V4),
        error,
    }
}

/// The last IKE setup failure toward the peer (`backoff`: its NBMA address and back-off)
/// when none succeeded since — the back-off keeps it, and while it holds the peer down it is
/// what keeps traffic from flowing — else the newer of the last failed resolution of the
/// destination and the last Error Indication from the peer.
fn last_error(
    now: Instant,
    backoff: Option<(Ipv4Addr, Backoff)>,
    failed: Option<NhrpRecord>,
    indication: Option<ExplainNhrpEvent>,
) -> Option<ExplainError> {
    if let Some((n, b)) = backoff
        && let Some(last) = b.last
    {
        return Some(ExplainError {
            source: "ike_setup".to_owned(),
            peer: Some(IpAddr::V4(n)),
            reason: last.as_str().to_owned(),
            age_secs: None,
            retry_in_secs: (b.until > now).then(|| (b.until - now).as_secs()),
        });
    }
    let failed = failed.and_then(|r| match r.note {
        NhrpNote::ResolutionFailed { code } => Some(ExplainError {
            source: "nhrp_resolution".to_owned(),
            peer: None,
            reason: code.map_or_else(|| "timeout".to_owned(), |c| CieCode(c).to_string()),
            age_secs: Some(now.saturating_duration_since(r.at).as_secs()),
            retry_in_secs: None,
        }),
        _ => None,
    });
    let indicated = indication.map(|e| ExplainError {
        source: "nhrp_error_indication".to_owned(),
        peer: e.nbma,
        reason: e.code.unwrap_or_default(),
        age_secs: Some(e.age_secs),
        retry_in_secs: None,
    });
    match (failed, indicated) {
        (Some(f), Some(i)) => Some(if i.age_secs < f.age_secs { i } else { f }),
        (f, i) => f.or(i),
    }
}

impl ControlPlane {
    /// The answer to `explain dst` at `now`.
    pub(super) async fn explain(&mut self, now: Instant, dst: Ipv4Addr) -> Response {
        // First the kernel: whether it hands such packets to the tunnel at all (the mirror
        // below knows only the tunnel's own routes).
        let kernel = kernel(self.netlink.route_get(dst).await, self.tun_index);
        // What the packet workers read right now, not the node's master copy: the answer is
        // about what a packet sent now would meet.
        let tables = self.dp.tables.load_full();
        let routes = self.dp.routes.load_full();
        let d = tables.explain(&routes, dst);
        let forwarding = match d.forwarding {
            // Checked first: a host sends multicast out of the interface it names (OSPF names
            // the tunnel), whatever the unicast routes say.
            Forwarding::Multicast => ExplainForwarding::Multicast,
            _ if kernel.lookup != "tunnel" && kernel.lookup != "failed" => {
                ExplainForwarding::NoRoute
            }
            // No answer from the kernel: the mirror, a copy of its tunnel routes, decides.
            _ if kernel.lookup == "failed" && d.route.is_none() => ExplainForwarding::NoRoute,
            Forwarding::NoMapping => ExplainForwarding::NoMapping,
            Forwarding::NeedSa => ExplainForwarding::NeedSa,
            Forwarding::Send => ExplainForwarding::Send,
        };
        let unicast = !matches!(
            forwarding,
            ExplainForwarding::Multicast | ExplainForwarding::NoRoute
        );
        let nbma = d.nbma.filter(|_| unicast);
        let config = self.node.config().clone();
        let cache = self.node.nhrp().cache_entries(now);
        let entry_of = |e: &CacheEntry| nhrp_entry(e, now);
        let nhrp_entry: Option<NhrpEntry> = cache
            .iter()
            .find(|e| {
                unicast
                    && e.kind != EntryKind::Local
                    && e.prefix_len == 32
                    && e.protocol_addr == IpAddr::V4(d.next_hop)
            })
            .map(entry_of);
        let nhrp_shortcut = cache
            .iter()
            .filter(|e| e.kind == EntryKind::Shortcut && covers(e.protocol_addr, e.prefix_len, dst))
            .max_by_key(|e| e.prefix_len)
            .map(entry_of);
        let peer = match nbma {
            Some(n) => self.sa_peer(now, IpAddr::V4(n)),
            None => None,
        };
        let mut multicast_to: Vec<IpAddr> = if forwarding == ExplainForwarding::Multicast {
            tables.multicast.iter().map(|a| IpAddr::V4(*a)).collect()
        } else {
            Vec::new()
        };
        multicast_to.sort_unstable();

        let log = self.node.explain_log();
        let resolution = log.nhrp_event_for(dst);
        let indication = nbma.and_then(|n| log.last_error_from(n).map(|e| (n, e)));
        let indication_event = indication.map(|(n, e)| ExplainNhrpEvent {
            kind: "error_indication".to_owned(),
            prefix: None,
            prefix_len: None,
            next_hop: None,
            nbma: Some(IpAddr::V4(n)),
            code: Some(ErrorCode(e.code).to_string()),
            age_secs: now.saturating_duration_since(e.at).as_secs(),
        });
        let last_nhrp_event = match (resolution, indication) {
            (Some(r), Some((_, e))) if e.at > r.at => indication_event.clone(),
            (Some(r), _) => Some(nhrp_event(&r, now)),
            (None, _) => indication_event.clone(),
        };
        let last_error = last_error(
            now,
            nbma.and_then(|n| Some((n, self.node.backoff(n)?))),
            log.last_failure_for(dst),
            indication_event,
        );
        let history_evicted = log.evicted();

        Response::ok(&ExplainReport {
            schema_version: SCHEMA_VERSION,
            interface: config.tunnel.interface.clone(),
            destination: IpAddr::V4(dst),
            forwarding,
            kernel,
            route: d.route.map(|r| ExplainRoute {
                prefix: IpAddr::V4(r.prefix),
                prefix_len: r.prefix_len,
                gateway: r.gateway.map(IpAddr::V4),
                metric: r.metric,
                protocol: r.proto.0,
                source: route_source(&r).to_owned(),
            }),
            next_hop: unicast.then_some(IpAddr::V4(d.next_hop)),
            via_nhs_default: unicast && d.via_default_nhs,
            nbma: nbma.map(IpAddr::V4),
            nhrp_entry,
            nhrp_shortcut,
            outbound: d.path.filter(|_| unicast).map(|p| ExplainPath {
                spi_out: format!("0x{:08x}", p.spi_out),
                udp_encap: p.udp_encap,
                port: if p.udp_encap { p.port } else { 0 },
            }),
            peer,
            multicast_to,
            last_nhrp_event,
            last_error,
            history_evicted,
        })
    }

    /// `peer` as `show sa --peer PEER` lists it: the same capture, filter and join as `show`,
    /// so the counters and any later change to them stay the same in both.
    fn sa_peer(&mut self, now: Instant, peer: IpAddr) -> Option<SaPeer> {
        let mut capture = status::Capture::of(&self.node, now);
        capture.filter(ShowFilter {
            peer: Some(peer),
            ..ShowFilter::default()
        });
        status::sa_report(&capture.snapshot(), self.node.tables())
            .peers
            .into_iter()
            .find(|p| p.nbma == peer || p.post_nat_nbma == Some(peer))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dmvpn_node::peers::SetupFailure;

    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn route(proto: RouteProto, gateway: Option<&str>, metric: u32) -> Route {
        Route {
            prefix: ip("10.1.2.0"),
            prefix_len: 24,
            gateway: gateway.map(ip),
            metric,
            proto,
        }
    }

    #[test]
    fn route_sources_by_protocol_and_metric() {
        let gw = Some("10.250.0.5");
        let cases = [
            (
                route(RouteProto::DMVPND, gw, dmvpn_node::SHORTCUT_METRIC),
                "nhrp_shortcut",
            ),
            (
                route(RouteProto::DMVPND, gw, dmvpn_node::STATIC_METRIC),
                "dmvpnd_static",
            ),
            (route(RouteProto::KERNEL, None, 0), "connected"),
            // The tunnel subnet's route dmvpnd adds for a /32 tunnel address.
            (route(RouteProto::DMVPND, None, 0), "connected"),
            (route(RouteProto::KERNEL, gw, 0), "kernel"),
            (route(RouteProto(3), gw, 0), "boot"),
            (route(RouteProto::STATIC, gw, 0), "static"),
            (route(RouteProto(188), gw, 20), "ospf"),
            (route(RouteProto(186), gw, 20), "bgp"),
            (route(RouteProto(11), gw, 20), "zebra"),
            (route(RouteProto(250), gw, 0), "other"),
        ];
        for (r, want) in cases {
            assert_eq!(route_source(&r), want, "{r:?}");
        }
    }

    #[test]
    fn kernel_lookups_in_the_reports_terms() {
        let r = |kind, oif| {
            KernelLookup::Route(crate::netlink::KernelRoute {
                kind,
                oif,
                gateway: None,
            })
        };
        assert_eq!(kernel(r("unicast", Some(7)), 7).lookup, "tunnel");
        assert_eq!(kernel(r("unicast", Some(2)), 7).lookup, "other_interface");
        assert_eq!(kernel(r("local", Some(1)), 7).lookup, "local");
        assert_eq!(kernel(r("blackhole", None), 7).lookup, "unreachable");
        let refused = kernel(KernelLookup::Refused("Network is unreachable".into()), 7);
        assert_eq!(
            (refused.lookup.as_str(), refused.error.as_deref()),
            ("unreachable", Some("Network is unreachable"))
        );
        assert_eq!(
            kernel(KernelLookup::NoAnswer("timeout".into()), 7).lookup,
            "failed"
        );
    }

    #[test]
    fn the_last_error_prefers_a_failed_ike_setup_then_the_newest_nhrp_one() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(100);
        let peer = ip("203.0.113.7");
        let failed = NhrpRecord {
            at: t0 + Duration::from_secs(40),
            prefix: ip("10.1.2.3"),
            prefix_len: 32,
            note: NhrpNote::ResolutionFailed { code: None },
        };
        let indication = |age| ExplainNhrpEvent {
            kind: "error_indication".to_owned(),
            prefix: None,
            prefix_len: None,
            next_hop: None,
            nbma: Some(IpAddr::V4(peer)),
            code: Some("Protocol Error".to_owned()),
            age_secs: age,
        };
        assert_eq!(last_error(now, None, None, None), None);
        let e = last_error(now, None, Some(failed), Some(indication(80))).unwrap();
        assert_eq!(
            (e.source.as_str(), e.reason.as_str()),
            ("nhrp_resolution", "timeout")
        );
        assert_eq!(e.age_secs, Some(60));
        let e = last_error(now, None, Some(failed), Some(indication(5))).unwrap();
        assert_eq!(e.source, "nhrp_error_indication");
        assert_eq!(e.reason, "Protocol Error");

        let held = Backoff {
            until: now + Duration::from_secs(31),
            failures: 3,
            last: Some(SetupFailure::Authentication),
        };
        let e = last_error(now, Some((peer, held)), Some(failed), None).unwrap();
        assert_eq!(e.source, "ike_setup");
        assert_eq!(e.reason, "authentication_failed");
        assert_eq!(
            (e.peer, e.retry_in_secs),
            (Some(IpAddr::V4(peer)), Some(31))
        );
        // A hold-down after the peer's DELETE is no setup failure.
        let deleted = Backoff { last: None, ..held };
        let e = last_error(now, Some((peer, deleted)), Some(failed), None).unwrap();
        assert_eq!(e.source, "nhrp_resolution");
    }
}
