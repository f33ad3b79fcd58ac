//! The metrics only events can give (docs/metrics.md): latency histograms of NHRP replies and
//! of shortcut setup, and counts of rekeys, DPD deaths, registration failures and IKE setup
//! failures. The control loop feeds every [`dmvpn_node::Event`] to [`Recorder::observe`];
//! the handles are shared (prometheus-client metrics are `Arc`s inside), so a scrape encodes
//! the live values without a copy.
//!
//! Label cardinality: the labels here are the NHS (from the configuration, a handful) and
//! fixed enums, so they are bounded by construction; the per-peer rekey counts are kept for
//! peers that have SAs (forgotten when the peer goes down) and emitted only for the peers a
//! scrape shows.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dmvpn_api::SaPeer;
use dmvpn_nhrp::RequestKind;
use dmvpn_node::Event;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Bucket bounds of the latency histograms, in seconds: a LAN reply takes a millisecond, an
/// IKE exchange across continents a few hundred, a lost and retransmitted request seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// The event-derived metrics. Cheap to clone: every field is shared.
#[derive(Debug, Clone)]
pub struct Recorder {
    registration_rtt: HistogramFamily,
    registration_failures: Family<Labels, Counter>,
    resolution_rtt: Histogram,
    resolutions: Family<Labels, Counter>,
    shortcut_resolution: Histogram,
    shortcut_sa_wait: Histogram,
    shortcut_route: Histogram,
    shortcut_setup: Histogram,
    shortcuts_installed: Counter,
    shortcuts_withdrawn: Counter,
    child_rekeys: Counter,
    ike_rekeys: Counter,
    crossed_setups: Counter,
    dpd_events: Family<Labels, Counter>,
    ike_setup_failures: Counter,
    /// Per peer since its SAs came up: (Child SA rekeys, IKE SA rekeys).
    peer_rekeys: Arc<Mutex<BTreeMap<IpAddr, (u64, u64)>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            registration_rtt: Family::new_with_constructor(latency_histogram),
            registration_failures: Family::default(),
            resolution_rtt: latency_histogram(),
            resolutions: Family::default(),
            shortcut_resolution: latency_histogram(),
            shortcut_sa_wait: latency_histogram(),
            shortcut_route: latency_histogram(),
            shortcut_setup: latency_histogram(),
            shortcuts_installed: Counter::default(),
            shortcuts_withdrawn: Counter::default(),
            child_rekeys: Counter::default(),
            ike_rekeys: Counter::default(),
            crossed_setups: Counter::default(),
            dpd_events: Family::default(),
            ike_setup_failures: Counter::default(),
            peer_rekeys: Arc::default(),
        }
    }

    /// Records one node event; `now` is when the daemon carried out what preceded it (the
    /// routes of a [`Event::ShortcutTimed`] are installed before its events are polled).
    pub fn observe(&self, now: Instant, ev: &Event) {
        match ev {
            Event::NhrpAnswered {
                kind: RequestKind::Registration,
                target,
                rtt,
                accepted,
            } => {
                let nhs = vec![("nhs", target.to_string())];
                if *accepted {
                    self.registration_rtt
                        .get_or_create(&nhs)
                        .observe(secs(*rtt));
                } else {
                    self.registration_failure(*target, "refused");
                }
            }
            Event::NhrpAnswered {
                kind: RequestKind::Resolution,
                rtt,
                accepted,
                ..
            } => {
                self.resolution_rtt.observe(secs(*rtt));
                let result = if *accepted { "accepted" } else { "refused" };
                self.resolutions
                    .get_or_create(&vec![("result", result.to_owned())])
                    .inc();
            }
            Event::RegistrationTimedOut { nbma } => self.registration_failure(*nbma, "timeout"),
            Event::ShortcutTimed {
                requested,
                replied,
                sa_up,
                ..
            } => {
                let routed = now.max(*sa_up);
                self.shortcut_resolution
                    .observe(secs(replied.saturating_duration_since(*requested)));
                self.shortcut_sa_wait
                    .observe(secs(sa_up.saturating_duration_since(*replied)));
                self.shortcut_route
                    .observe(secs(routed.saturating_duration_since(*sa_up)));
                self.shortcut_setup
                    .observe(secs(routed.saturating_duration_since(*requested)));
            }
            Event::ShortcutInstalled { .. } => {
                self.shortcuts_installed.inc();
            }
            Event::ShortcutWithdrawn { .. } => {
                self.shortcuts_withdrawn.inc();
            }
            Event::ChildSaInstalled {
                peer, rekey: true, ..
            } => {
                self.child_rekeys.inc();
                if let Ok(mut m) = self.peer_rekeys.lock() {
                    m.entry(IpAddr::V4(*peer)).or_default().0 += 1;
                }
            }
            Event::PeerDown { peer } => {
                if let Ok(mut m) = self.peer_rekeys.lock() {
                    m.remove(&IpAddr::V4(*peer));
                }
            }
            Event::DpdDead { stale, .. } => {
                let event = if *stale { "stale_sa_dead" } else { "peer_dead" };
                self.dpd_events
                    .get_or_create(&vec![("event", event.to_owned())])
                    .inc();
            }
            Event::SetupFailed { .. } => {
                self.ike_setup_failures.inc();
            }
            Event::IkeSaRekeyed { peer } => {
                self.ike_rekeys.inc();
                if let Ok(mut m) = self.peer_rekeys.lock() {
                    m.entry(IpAddr::V4(*peer)).or_default().1 += 1;
                }
            }
            Event::CrossedSetup { .. } => {
                self.crossed_setups.inc();
            }
            _ => {}
        }
    }

    fn registration_failure(&self, nhs: IpAddr, reason: &str) {
        self.registration_failures
            .get_or_create(&vec![
                ("nhs", nhs.to_string()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    /// Registers every metric into `r` (a registry built per scrape); the per-peer rekey
    /// counts only for `peers`, the peers the scrape shows.
    pub fn register(&self, r: &mut Registry, peers: &[SaPeer]) {
        r.register_with_unit(
            "dmvpn_nhrp_registration_rtt",
            "Registration Request to its reply, per NHS, from the request's first transmission",
            Unit::Seconds,
            self.registration_rtt.clone(),
        );
        r.register(
            "dmvpn_nhrp_registration_failures",
            "Registrations refused by an NHS or unanswered through the whole back-off (the SA is then reset)",
            self.registration_failures.clone(),
        );
        r.register_with_unit(
            "dmvpn_nhrp_resolution_rtt",
            "Resolution Request to its reply (new shortcuts and refreshes), from the first transmission",
            Unit::Seconds,
            self.resolution_rtt.clone(),
        );
        r.register(
            "dmvpn_nhrp_resolutions",
            "Resolution replies received, by result",
            self.resolutions.clone(),
        );
        for (name, help, h) in [
            (
                "dmvpn_shortcut_resolution",
                "New shortcut: Resolution Request sent (on a Traffic Indication) to its reply",
                &self.shortcut_resolution,
            ),
            (
                "dmvpn_shortcut_sa_wait",
                "New shortcut: reply to the SA with the next hop up (0 when one was up already)",
                &self.shortcut_sa_wait,
            ),
            (
                "dmvpn_shortcut_route",
                "New shortcut: SA up to its kernel route installed",
                &self.shortcut_route,
            ),
            (
                "dmvpn_shortcut_setup",
                "New shortcut: Resolution Request sent to its kernel route installed",
                &self.shortcut_setup,
            ),
        ] {
            r.register_with_unit(name, help, Unit::Seconds, h.clone());
        }
        r.register(
            "dmvpn_shortcuts_installed",
            "Shortcut routes installed (new and re-learned)",
            self.shortcuts_installed.clone(),
        );
        r.register(
            "dmvpn_shortcuts_withdrawn",
            "Shortcut routes withdrawn",
            self.shortcuts_withdrawn.clone(),
        );
        r.register(
            "dmvpn_child_sa_rekeys",
            "Child SAs installed to replace an older one (all peers)",
            self.child_rekeys.clone(),
        );
        r.register(
            "dmvpn_ike_sa_rekeys",
            "IKE SAs rekeyed (RFC 7296 2.18), at either end's initiative (all peers)",
            self.ike_rekeys.clone(),
        );
        r.register(
            "dmvpn_ike_crossed_setups",
            "Crossed IKE setups (both ends initiated at once) settled on one SA",
            self.crossed_setups.clone(),
        );
        r.register(
            "dmvpn_dpd_events",
            "Dead peer detection verdicts: peer_dead (its SAs and NHRP state cleared) or stale_sa_dead (an old SA of a peer that is up)",
            self.dpd_events.clone(),
        );
        r.register(
            "dmvpn_ike_setup_failures",
            "IKE setups that failed (authentication, refused, timeout); the peer is then held down",
            self.ike_setup_failures.clone(),
        );
        // Node events name a peer by its IKE (post-NAT) address, as the labels do.
        let shown: Vec<(IpAddr, Labels)> = peers
            .iter()
            .map(|p| {
                (
                    p.post_nat_nbma.unwrap_or(p.nbma),
                    crate::metrics::peer_labels(p),
                )
            })
            .collect();
        let counts = self
            .peer_rekeys
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        r.register_collector(Box::new(PeerRekeys { shown, counts }));
    }
}

/// `dmvpn_peer_child_sa_rekeys` and `dmvpn_peer_ike_sa_rekeys`, for the peers one scrape shows.
#[derive(Debug)]
struct PeerRekeys {
    shown: Vec<(IpAddr, Labels)>,
    counts: BTreeMap<IpAddr, (u64, u64)>,
}

impl Collector for PeerRekeys {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        type Pick = fn(&(u64, u64)) -> u64;
        let families: [(&str, &str, Pick); 2] = [
            (
                "dmvpn_peer_child_sa_rekeys",
                "Child SA rekeys per peer since its SAs came up",
                |c| c.0,
            ),
            (
                "dmvpn_peer_ike_sa_rekeys",
                "IKE SA rekeys per peer since its SAs came up (RFC 7296 2.18, by either end)",
                |c| c.1,
            ),
        ];
        for (name, help, pick) in families {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (peer, labels) in &self.shown {
                let v = self.counts.get(peer).map_or(0, pick);
                ConstCounter::new(v).encode(m.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}
