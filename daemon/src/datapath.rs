//! The per-packet tasks: the TUN reader (outbound) and the ESP half of the underlay readers
//! (inbound). Each owns one [`PacketBuf`] for its lifetime and reads the published
//! [`Tables`] and route snapshots without locks (design.md, "Packet path"); only the slow
//! path — a packet waiting for an SA, an NHRP packet, a redirect trigger — goes to the
//! control plane (and its `dmvpn_node::Node`), through a bounded channel that drops and counts when full.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dmvpn_dataplane::{DropReason, Inbound, Outbound, Tables};
use dmvpn_node::SlowPath;
use dmvpn_wire::PacketBuf;
use dmvpn_wire::gre::EtherType;
use tokio::sync::mpsc;

use crate::routes::SharedRoutes;
use crate::tun::TunDevice;
use crate::underlay::{EspHandler, Underlay};

/// How often at most the dataplane tells the control plane about one hairpinned
/// (source, destination) pair; the NHRP engine applies the protocol's own rate limit on top.
const REDIRECT_HINT_INTERVAL: Duration = Duration::from_secs(1);
/// Bytes of a redirected packet that go into the traffic indication (IP header + 8,
/// as ICMP quotes; wire notes item 10).
const REDIRECT_QUOTE: usize = 28;

/// Everything the per-packet tasks share.
pub struct Datapath {
    /// Published by the control plane.
    pub tables: ArcSwap<Tables>,
    /// Published by the route mirror.
    pub routes: SharedRoutes,
    pub tun: Arc<TunDevice>,
    pub underlay: Arc<Underlay>,
    slow: mpsc::Sender<SlowPath>,
    redirect_hints: Mutex<HashMap<(Ipv4Addr, Ipv4Addr), Instant>>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("tun", &self.tun)
            .finish_non_exhaustive()
    }
}

impl Datapath {
    pub fn new(
        tables: Tables,
        routes: SharedRoutes,
        tun: Arc<TunDevice>,
        underlay: Arc<Underlay>,
        slow: mpsc::Sender<SlowPath>,
    ) -> Self {
        Datapath {
            tables: ArcSwap::from_pointee(tables),
            routes,
            tun,
            underlay,
            slow,
            redirect_hints: Mutex::new(HashMap::new()),
        }
    }

    fn to_slow_path(&self, tables: &Tables, msg: SlowPath) {
        if self.slow.try_send(msg).is_err() {
            tables.counters.count_drop(DropReason::SaQueueFull);
        }
    }

    /// Sends a sealed ESP packet to its peer.
    pub async fn send(&self, nbma: Ipv4Addr, port: u16, udp_encap: bool, buf: &PacketBuf) {
        let to = SocketAddrV4::new(nbma, port);
        if let Err(e) = self.underlay.send_esp(to, udp_encap, buf.as_slice()).await {
            tracing::debug!(peer = %nbma, "ESP send: {e}");
        }
    }

    /// Reads the TUN forever: route, encapsulate, encrypt in place, send.
    pub async fn run_tun(self: Arc<Self>) {
        let mut buf = PacketBuf::new();
        // Multicast copies are built in a second buffer that also lives as long as the task.
        let mut copy = PacketBuf::new();
        loop {
            if buf.reset(PacketBuf::DEFAULT_HEADROOM).is_err() {
                return;
            }
            let n = match self.tun.dev.recv(buf.spare_back_mut()).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!("reading {}: {e}", self.tun.name);
                    return;
                }
            };
            if buf.push_back(n).is_err() {
                continue;
            }
            let tables = self.tables.load();
            let routes = self.routes.load();
            match tables.outbound(&routes, &mut buf) {
                Outbound::Send {
                    nbma,
                    port,
                    udp_encap,
                } => self.send(nbma, port, udp_encap, &buf).await,
                Outbound::NeedSa { nbma } => {
                    let queued = std::mem::take(&mut buf);
                    self.to_slow_path(
                        &tables,
                        SlowPath::NeedSa {
                            nbma,
                            protocol: EtherType::IPV4,
                            buf: queued,
                        },
                    );
                }
                Outbound::Multicast => {
                    // Replicate to every NBMA that gets multicast (OSPF hellos over the
                    // NBMA network, as `ip nhrp map multicast` does).
                    for &nbma in &tables.multicast {
                        if copy.reset(PacketBuf::DEFAULT_HEADROOM).is_err() {
                            break;
                        }
                        let Ok(dst) = copy.push_back(buf.len()) else {
                            break;
                        };
                        dst.copy_from_slice(buf.as_slice());
                        match tables.seal_to(nbma, EtherType::IPV4, &mut copy) {
                            Outbound::Send {
                                nbma,
                                port,
                                udp_encap,
                            } => self.send(nbma, port, udp_encap, &copy).await,
                            // Multicast to a peer without an SA is not worth bringing one
                            // up for; the unicast path will.
                            Outbound::NeedSa { .. } | Outbound::Multicast | Outbound::Drop(_) => {}
                        }
                    }
                }
                Outbound::Drop(_) => {}
            }
        }
    }

    fn redirect_hint_due(&self, quote: &[u8]) -> bool {
        let (Some(src), Some(dst)) = (quote.get(12..16), quote.get(16..20)) else {
            return false;
        };
        let key = (
            Ipv4Addr::from(<[u8; 4]>::try_from(src).unwrap_or_default()),
            Ipv4Addr::from(<[u8; 4]>::try_from(dst).unwrap_or_default()),
        );
        let now = Instant::now();
        let Ok(mut hints) = self.redirect_hints.lock() else {
            return false;
        };
        // Bounded: old pairs are forgotten once the map grows.
        if hints.len() > 4096 {
            hints.retain(|_, t| now.duration_since(*t) < REDIRECT_HINT_INTERVAL);
        }
        match hints.get(&key) {
            Some(t) if now.duration_since(*t) < REDIRECT_HINT_INTERVAL => false,
            _ => {
                hints.insert(key, now);
                true
            }
        }
    }
}

impl EspHandler for Datapath {
    async fn handle_esp(&self, from: SocketAddrV4, _encap: bool, buf: &mut PacketBuf) -> bool {
        let tables = self.tables.load();
        let routes = self.routes.load();
        match tables.inbound(&routes, *from.ip(), buf) {
            Inbound::Data { peer, redirect } => {
                if redirect {
                    let quote = buf.as_slice().get(..REDIRECT_QUOTE.min(buf.len()));
                    if let Some(q) = quote
                        && self.redirect_hint_due(q)
                    {
                        let quote = q.to_vec();
                        self.to_slow_path(&tables, SlowPath::Redirect { peer, quote });
                    }
                }
                if let Err(e) = self.tun.dev.send(buf.as_slice()).await {
                    tracing::debug!("writing {}: {e}", self.tun.name);
                }
            }
            Inbound::Nhrp { peer } => {
                let bytes = buf.as_slice().to_vec();
                self.to_slow_path(&tables, SlowPath::Nhrp { peer, bytes });
            }
            Inbound::Drop(_) => {}
        }
        true
    }
}
