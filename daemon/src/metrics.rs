//! The Prometheus / OpenMetrics exposition (`GET /metrics`, see docs/metrics.md). What the
//! engines know is read at scrape time from the same read-only views `dmvpnctl show` uses
//! ([`crate::status`]): the control loop copies them into a [`Scrape`], and
//! [`Scrape::render`] encodes it, with the histograms and event counters of
//! [`crate::metrics_events::Recorder`], through prometheus-client. No counter is kept twice and
//! the text format is the library's, not ours.
//!
//! Label cardinality: per-peer and per-SA series are emitted for at most `max_peers` peers (by
//! NBMA address, lowest first; `[metrics] max-peers`); the others count in the router-wide
//! series only, and `dmvpn_metrics_peers_omitted` says how many there were.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use dmvpn_api::{
    IkeSa, IkeState, InterfaceReport, NHRP_PACKET_TYPES, NhrpCounters, NhrpKind, NhrpPeerState,
    NhrpRole, NhsEntry, SaPeer,
};
use dmvpn_node::Node;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::metrics_events::Recorder;
use crate::status::Capture;

/// The Content-Type of the exposition in OpenMetrics 1.0 text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which text format a scrape is encoded in, both by prometheus-client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 ([`CONTENT_TYPE`]): what Prometheus asks for first, and the default.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for clients that ask for `text/plain` only (older
    /// tools, `promtool check metrics`, which does not read OpenMetrics' `info` type).
    Prometheus,
}

impl Format {
    /// From a request's `Accept` header value: OpenMetrics unless the client names
    /// `text/plain` and not `application/openmetrics-text`.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(a) = accept.map(str::to_ascii_lowercase) else {
            return Format::OpenMetrics;
        };
        if a.contains("text/plain") && !a.contains("application/openmetrics-text") {
            Format::Prometheus
        } else {
            Format::OpenMetrics
        }
    }

    /// The response's Content-Type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => CONTENT_TYPE,
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// How the dataplane runs: fixed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneInfo {
    /// Packet workers (TUN queues, UDP 4500 sockets).
    pub workers: usize,
    /// TUN offload (TSO, virtio-net header) in use.
    pub offload: bool,
    /// UDP GRO on the underlay sockets.
    pub udp_gro: bool,
    /// The AES-GCM implementation sealing and opening ESP (`ring`, `aws-lc-rs`).
    pub aead_provider: &'static str,
    /// How it was chosen (`auto`, `ring`, `aws-lc-rs`).
    pub aead_choice: &'static str,
}

/// Everything a scrape shows, copied from the engines at one instant by the control loop.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// `hub` or `spoke`.
    pub role: &'static str,
    pub interface: String,
    pub tunnel_addr: String,
    pub dataplane: DataplaneInfo,
    /// Peers with series of their own (at most `max_peers`), by NBMA address.
    pub peers: Vec<SaPeer>,
    /// Peers known beyond those.
    pub peers_omitted: usize,
    /// Every IKE SA's coarse state (all peers, for the router-wide counts).
    pub ike_states: Vec<IkeState>,
    /// Peers whose IKE initiation is held down.
    pub backoff_peers: usize,
    /// Dead peer detection's liveness checks: (sent, answered).
    pub dpd_probes: (u64, u64),
    pub nhs: Vec<NhsEntry>,
    pub nhrp: NhrpCounters,
    /// NHRP cache entries by kind name.
    pub nhrp_cache: Vec<(&'static str, u64)>,
    /// Tunnel totals and every drop reason (dataplane and daemon).
    pub interface_counters: InterfaceReport,
    /// Histograms and event counters, shared with the control loop.
    pub recorder: Recorder,
}

/// NHRP cache kinds, every one emitted.
const CACHE_KINDS: [&str; 6] = [
    "static",
    "dynamic",
    "nhs",
    "shortcut",
    "local",
    "incomplete",
];

fn cache_kind_name(k: NhrpKind) -> &'static str {
    match k {
        NhrpKind::Static => "static",
        NhrpKind::Dynamic => "dynamic",
        NhrpKind::Nhs => "nhs",
        NhrpKind::Shortcut => "shortcut",
        NhrpKind::Local => "local",
        NhrpKind::Incomplete => "incomplete",
    }
}

fn ike_state_name(s: IkeState) -> &'static str {
    match s {
        IkeState::Negotiating => "negotiating",
        IkeState::Established => "established",
        IkeState::Deleting => "deleting",
        IkeState::Closed => "closed",
        IkeState::Unknown => "unknown",
    }
}

/// The NHRP states a peer or NHS can be in, in the schema's names (every one is emitted, 0 or
/// 1, so a state change is a value change rather than a series appearing).
const NHRP_STATES: [(NhrpPeerState, &str); 8] = [
    (NhrpPeerState::Up, "up"),
    (NhrpPeerState::Registering, "registering"),
    (NhrpPeerState::WaitingForSa, "waiting_for_sa"),
    (NhrpPeerState::Standby, "standby"),
    (NhrpPeerState::Registered, "registered"),
    (NhrpPeerState::Resolved, "resolved"),
    (NhrpPeerState::Static, "static"),
    (NhrpPeerState::None, "none"),
];

const IKE_STATES: [IkeState; 5] = [
    IkeState::Negotiating,
    IkeState::Established,
    IkeState::Deleting,
    IkeState::Closed,
    IkeState::Unknown,
];

type Labels = Vec<(&'static str, String)>;

/// One metric family of constant values, encoded at scrape time.
/// Every value here is a count or whole seconds, so integers throughout.
fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit, kind)?;
    for (labels, v) in samples {
        let fam = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(v).encode(fam)?,
            _ => ConstGauge::new(v).encode(fam)?,
        }
    }
    Ok(())
}

/// A peer is named by the NBMA address packets go to (post-NAT), as `show dmvpn` and IKE know
/// it, and its tunnel address.
pub fn peer_labels(p: &SaPeer) -> Labels {
    vec![
        ("peer", p.post_nat_nbma.unwrap_or(p.nbma).to_string()),
        (
            "tunnel",
            p.tunnel_addr.map(|a| a.to_string()).unwrap_or_default(),
        ),
    ]
}

/// A scrape still to be built: what the control loop copied, and the joins to run on them
/// (off the loop; [`Scrape::capture`]).
pub type LazyScrape = Box<dyn FnOnce() -> Scrape + Send>;

impl Scrape {
    /// Copies what a scrape shows from the node at `now` ([`Capture`]) and returns the rest
    /// of the work: the joins, as `dmvpnctl show sa` and `show nhrp` do them, which the
    /// metrics server runs off the control loop. `max_peers` caps the peers with series of
    /// their own; a hub with more pays only for counting the rest.
    pub fn capture(
        node: &Node,
        now: Instant,
        interface_counters: InterfaceReport,
        dataplane: DataplaneInfo,
        recorder: Recorder,
    ) -> LazyScrape {
        let config = node.config();
        let ike = node.ike().counters();
        let dpd_probes = (ike.dpd_probes_sent, ike.dpd_probes_answered);
        let mut capture = Capture::of(node, now);
        // O(1): the tables' maps are structurally shared, their counters atomics.
        let tables = node.tables().clone();
        let nhrp_counters = node.nhrp().counters().clone();
        let max_peers = usize::try_from(config.metrics.max_peers).unwrap_or(usize::MAX);
        Box::new(move || {
            let ike_states: Vec<IkeState> =
                capture.ike().iter().map(crate::status::ike_state).collect();
            let backoff_peers = capture
                .backoff()
                .iter()
                .filter(|(_, b)| b.until > now)
                .count();
            let snap = capture.snapshot();
            let mut peers = crate::status::sa_report(&snap, &tables).peers;
            let peers_omitted = peers.len().saturating_sub(max_peers);
            peers.truncate(max_peers);
            let nhrp_report = snap.nhrp_report(&nhrp_counters);
            let mut kinds: BTreeMap<&'static str, u64> =
                CACHE_KINDS.iter().map(|k| (*k, 0)).collect();
            for e in &nhrp_report.entries {
                *kinds.entry(cache_kind_name(e.kind)).or_default() += 1;
            }
            Scrape {
                role: match snap.role {
                    NhrpRole::Hub => "hub",
                    NhrpRole::Spoke => "spoke",
                },
                interface: snap.interface.to_owned(),
                tunnel_addr: snap.tunnel_addr.to_owned(),
                dataplane,
                peers,
                peers_omitted,
                ike_states,
                backoff_peers,
                dpd_probes,
                nhs: nhrp_report.nhs,
                nhrp: nhrp_report.counters,
                nhrp_cache: kinds.into_iter().collect(),
                interface_counters,
                recorder,
            }
        })
    }

    /// The exposition text (OpenMetrics ends in `# EOF`).
    pub fn render(self, format: Format) -> Result<String, fmt::Error> {
        let recorder = self.recorder.clone();
        let mut registry = Registry::default();
        recorder.register(&mut registry, &self.peers);
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        match format {
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry)?,
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?
            }
        }
        Ok(out)
    }

    fn encode_router(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let info = vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("role", self.role.to_owned()),
            ("interface", self.interface.clone()),
            ("tunnel_addr", self.tunnel_addr.clone()),
        ];
        let mut m = enc.encode_descriptor(
            "dmvpn_router",
            "This router: dmvpnd version, NHRP role, tunnel interface and address.",
            None,
            MetricType::Info,
        )?;
        m.encode_info(&info)?;
        let d = &self.dataplane;
        let info = vec![
            ("aead_provider", d.aead_provider.to_owned()),
            ("aead_choice", d.aead_choice.to_owned()),
            ("offload", d.offload.to_string()),
            ("udp_gro", d.udp_gro.to_string()),
        ];
        let mut m = enc.encode_descriptor(
            "dmvpn_dataplane",
            "How the dataplane runs: the AES-GCM provider of ESP (and how it was chosen), TUN offload, UDP GRO.",
            None,
            MetricType::Info,
        )?;
        m.encode_info(&info)?;
        family(
            enc,
            "dmvpn_dataplane_workers",
            "Packet workers (each a TUN queue and a UDP 4500 socket).",
            None,
            MetricType::Gauge,
            [(Labels::new(), d.workers as u64)],
        )?;
        let c = &self.interface_counters;
        family(
            enc,
            "dmvpn_tunnel_packets",
            "Packets through the tunnel: out = inner packets sealed and handed to the underlay, in = inner packets that passed ESP and GRE.",
            None,
            MetricType::Counter,
            [
                (vec![("direction", "out".to_owned())], c.tx_packets),
                (vec![("direction", "in".to_owned())], c.rx_packets),
            ],
        )?;
        family(
            enc,
            "dmvpn_tunnel_inner_bytes",
            "Inner bytes of those packets (without GRE and ESP, both ways).",
            None,
            MetricType::Counter,
            [
                (vec![("direction", "out".to_owned())], c.tx_inner_bytes),
                (vec![("direction", "in".to_owned())], c.rx_inner_bytes),
            ],
        )?;
        family(
            enc,
            "dmvpn_tunnel_esp_bytes",
            "ESP bytes of those packets (header to ICV, without the IP or a NAT-T UDP header).",
            None,
            MetricType::Counter,
            [
                (vec![("direction", "out".to_owned())], c.tx_esp_bytes),
                (vec![("direction", "in".to_owned())], c.rx_esp_bytes),
            ],
        )?;
        family(
            enc,
            "dmvpn_dataplane_drops",
            "Packets dropped, by reason: every dataplane reason (zero or not) and the daemon's own (underlay_*, tun_*, ike_half_open_refused, ike_half_open_evicted, ike_jobs_refused, ike_jobs_late, ike_sa_refused, ike_child_sa_refused).",
            None,
            MetricType::Counter,
            c.drops
                .iter()
                .map(|(r, v)| (vec![("reason", r.clone())], *v)),
        )
    }

    fn encode_ike(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        family(
            enc,
            "dmvpn_ike_sas",
            "IKE SAs by state (all peers).",
            None,
            MetricType::Gauge,
            IKE_STATES.iter().map(|s| {
                let n = self.ike_states.iter().filter(|x| *x == s).count();
                (vec![("state", ike_state_name(*s).to_owned())], n as u64)
            }),
        )?;
        family(
            enc,
            "dmvpn_ike_backoff_peers",
            "Peers whose IKE initiation is held down after failed setups.",
            None,
            MetricType::Gauge,
            [(Labels::new(), self.backoff_peers as u64)],
        )?;
        family(
            enc,
            "dmvpn_dpd_probes",
            "Dead peer detection liveness checks (empty INFORMATIONAL requests, RFC 7296 2.4): sent, and answered by the peer; the verdicts are dmvpn_dpd_events_total.",
            None,
            MetricType::Counter,
            [
                (vec![("outcome", "sent".to_owned())], self.dpd_probes.0),
                (vec![("outcome", "answered".to_owned())], self.dpd_probes.1),
            ],
        )?;
        family(
            enc,
            "dmvpn_peers",
            "Peers known to NHRP or IKE.",
            None,
            MetricType::Gauge,
            [(
                Labels::new(),
                (self.peers.len() + self.peers_omitted) as u64,
            )],
        )?;
        family(
            enc,
            "dmvpn_metrics_peers_omitted",
            "Peers without series of their own ([metrics] max-peers); they count in the router-wide series only.",
            None,
            MetricType::Gauge,
            [(Labels::new(), self.peers_omitted as u64)],
        )
    }

    fn encode_peers(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        family(
            enc,
            "dmvpn_peer_nhrp_state",
            "NHRP's view of each peer: 1 for its state, 0 for the others.",
            None,
            MetricType::Gauge,
            self.peers.iter().flat_map(|p| {
                NHRP_STATES.iter().map(move |(s, name)| {
                    let mut l = peer_labels(p);
                    l.push(("state", (*name).to_owned()));
                    (l, u64::from(p.nhrp_state == *s))
                })
            }),
        )?;
        let ike = |p: &SaPeer| p.ike.clone();
        family(
            enc,
            "dmvpn_peer_ike_sa_state",
            "Each peer's current IKE SA: 1 for its state, 0 for the others (no series without an IKE SA).",
            None,
            MetricType::Gauge,
            self.peers.iter().flat_map(|p| {
                let sa: Option<IkeSa> = ike(p);
                sa.into_iter().flat_map(move |sa| {
                    IKE_STATES.iter().map(move |s| {
                        let mut l = peer_labels(p);
                        l.push(("state", ike_state_name(*s).to_owned()));
                        (l, u64::from(sa.state == *s))
                    })
                })
            }),
        )?;
        family(
            enc,
            "dmvpn_peer_ike_sa_age",
            "Age of each peer's current IKE SA.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
            self.peers
                .iter()
                .filter_map(|p| p.ike.as_ref().map(|sa| (peer_labels(p), sa.age_secs))),
        )?;
        self.encode_child_sas(enc)
    }

    fn encode_child_sas(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let sas = || {
            self.peers.iter().flat_map(|p| {
                p.children.iter().map(move |c| {
                    let mut l = peer_labels(p);
                    l.push(("spi_in", c.spi_in.clone()));
                    l.push(("spi_out", c.spi_out.clone()));
                    (l, c)
                })
            })
        };
        let dir = |l: &Labels, d: &str| {
            let mut l = l.clone();
            l.push(("direction", d.to_owned()));
            l
        };
        family(
            enc,
            "dmvpn_sa_packets",
            "ESP packets per Child SA: in = opened and authenticated, out = sealed.",
            None,
            MetricType::Counter,
            sas().flat_map(|(l, c)| {
                [
                    (dir(&l, "in"), c.packets_in),
                    (dir(&l, "out"), c.packets_out),
                ]
            }),
        )?;
        family(
            enc,
            "dmvpn_sa_inner_bytes",
            "Inner bytes of those packets (without GRE and ESP).",
            None,
            MetricType::Counter,
            sas().flat_map(|(l, c)| {
                [
                    (dir(&l, "in"), c.inner_bytes_in),
                    (dir(&l, "out"), c.inner_bytes_out),
                ]
            }),
        )?;
        family(
            enc,
            "dmvpn_sa_esp_bytes",
            "ESP bytes of those packets (header to ICV, without the IP or a NAT-T UDP header).",
            None,
            MetricType::Counter,
            sas().flat_map(|(l, c)| {
                [
                    (dir(&l, "in"), c.esp_bytes_in),
                    (dir(&l, "out"), c.esp_bytes_out),
                ]
            }),
        )?;
        family(
            enc,
            "dmvpn_sa_replay_drops",
            "Inbound packets refused by the anti-replay window (RFC 4303 §3.4.3).",
            None,
            MetricType::Counter,
            sas().map(|(l, c)| (l, c.replay_drops)),
        )?;
        family(
            enc,
            "dmvpn_sa_icv_failures",
            "Inbound packets whose ICV did not verify (RFC 4303 §3.4.4).",
            None,
            MetricType::Counter,
            sas().map(|(l, c)| (l, c.auth_failures)),
        )?;
        family(
            enc,
            "dmvpn_sa_age",
            "Age of each Child SA.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
            sas().map(|(l, c)| (l, c.age_secs)),
        )
    }

    fn encode_nhrp(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let n = &self.nhrp;
        let by_type = |dir: &'static str, m: &std::collections::BTreeMap<String, u64>| {
            NHRP_PACKET_TYPES
                .iter()
                .map(move |t| {
                    (
                        vec![("direction", dir.to_owned()), ("type", (*t).to_owned())],
                        m.get(*t).copied().unwrap_or(0),
                    )
                })
                .collect::<Vec<_>>()
        };
        family(
            enc,
            "dmvpn_nhrp_packets",
            "NHRP packets by direction and type (RFC 2332 §5).",
            None,
            MetricType::Counter,
            by_type("in", &n.rx)
                .into_iter()
                .chain(by_type("out", &n.tx)),
        )?;
        family(
            enc,
            "dmvpn_nhrp_auth_failures",
            "NHRP packets whose authentication extension did not match.",
            None,
            MetricType::Counter,
            [(Labels::new(), n.auth_failures)],
        )?;
        family(
            enc,
            "dmvpn_nhrp_drops",
            "NHRP packets or requests dropped, by reason (only reasons that occurred).",
            None,
            MetricType::Counter,
            n.drops
                .iter()
                .map(|(r, v)| (vec![("reason", r.clone())], *v)),
        )?;
        family(
            enc,
            "dmvpn_nhrp_cache_entries",
            "NHRP cache entries by kind.",
            None,
            MetricType::Gauge,
            self.nhrp_cache
                .iter()
                .map(|(k, v)| (vec![("kind", (*k).to_owned())], *v)),
        )?;
        let nhs_labels = |e: &NhsEntry| {
            vec![
                ("nhs", e.nbma.to_string()),
                (
                    "nhs_tunnel",
                    e.protocol_addr.map(|a| a.to_string()).unwrap_or_default(),
                ),
            ]
        };
        family(
            enc,
            "dmvpn_nhrp_nhs_state",
            "Registration with each NHS (spoke): 1 for its state (up, registering, waiting_for_sa, standby), 0 for the others.",
            None,
            MetricType::Gauge,
            self.nhs.iter().flat_map(|e| {
                NHRP_STATES[..4].iter().map(move |(s, name)| {
                    let mut l = nhs_labels(e);
                    l.push(("state", (*name).to_owned()));
                    (l, u64::from(e.state == *s))
                })
            }),
        )?;
        family(
            enc,
            "dmvpn_nhrp_nhs_registration_expires",
            "Seconds until the registration with each NHS expires (absent while not registered).",
            Some(&Unit::Seconds),
            MetricType::Gauge,
            self.nhs
                .iter()
                .filter_map(|e| e.expires_in_secs.map(|s| (nhs_labels(e), s))),
        )
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        self.encode_router(&mut enc)?;
        self.encode_ike(&mut enc)?;
        self.encode_peers(&mut enc)?;
        self.encode_nhrp(&mut enc)
    }
}

#[cfg(test)]
pub(crate) mod tests;
