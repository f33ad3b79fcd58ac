//! The event loop: one task owns the protocol engines (sans-IO, quinn-proto style) and is fed by
//! bounded channels from the underlay and TUN reader tasks; its only timer is the earliest
//! deadline any engine asks for. Also starts the daemon (TUN, sockets, route mirror, static
//! routes) in the order each step depends on.
//!
//! Integration seams for the IKE and NHRP engines and the ESP dataplane are marked
//! `TODO(integration)`; everything else here is live.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use dmvpn_config::{Config, Role};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::netlink::{Netlink, spawn_route_mirror};
use crate::routes::{RouteTable, SharedRoutes, shared};
use crate::tun::{HEADROOM, TunDevice};
use crate::underlay::{NATT_PORT, Received, Underlay, UnderlayConfig, local_address_for};

/// Depth of the reader → control plane channels. Full channels drop and count.
const QUEUE_DEPTH: usize = 1024;

/// Schedules RFC 3948 §4 NAT keepalives to the peers whose IKE SA detected a NAT in front of us.
#[derive(Debug)]
pub struct NatKeepalives {
    interval: Option<Duration>,
    next: BTreeMap<SocketAddrV4, Instant>,
}

impl NatKeepalives {
    pub fn new(interval: Option<Duration>) -> Self {
        NatKeepalives {
            interval,
            next: BTreeMap::new(),
        }
    }

    /// Starts keepalives to `peer` (its NAT-T address); the first goes one interval from now.
    pub fn add(&mut self, peer: SocketAddrV4, now: Instant) {
        if let Some(i) = self.interval {
            self.next.entry(peer).or_insert(now + i);
        }
    }

    pub fn remove(&mut self, peer: SocketAddrV4) {
        self.next.remove(&peer);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next.values().min().copied()
    }

    /// Peers due at `now`; each is rescheduled one interval later.
    pub fn due(&mut self, now: Instant) -> Vec<SocketAddrV4> {
        let Some(interval) = self.interval else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (peer, at) in self.next.iter_mut() {
            if *at <= now {
                out.push(*peer);
                *at = now + interval;
            }
        }
        out
    }
}

/// A packet read from the TUN, stored at `HEADROOM` so encapsulation can grow it in front.
#[derive(Debug)]
pub struct TunPacket {
    pub buf: Vec<u8>,
    pub len: usize,
}

impl TunPacket {
    pub fn bytes(&self) -> &[u8] {
        self.buf
            .get(HEADROOM..HEADROOM + self.len)
            .unwrap_or_default()
    }

    /// IPv4 destination address (RFC 791 §3.1), if this is an IPv4 packet.
    pub fn ipv4_dst(&self) -> Option<Ipv4Addr> {
        let b = self.bytes();
        if b.first()? >> 4 != 4 {
            return None;
        }
        let d: [u8; 4] = b.get(16..20)?.try_into().ok()?;
        Some(Ipv4Addr::from(d))
    }
}

/// Counters of the control task.
#[derive(Debug, Default)]
pub struct ControlStats {
    pub tun_packets: AtomicU64,
    pub tun_no_route: AtomicU64,
    pub tun_queue_full: AtomicU64,
}

/// What the control task owns.
#[derive(Debug)]
pub struct ControlPlane {
    pub config: Arc<Config>,
    pub underlay: Arc<Underlay>,
    pub netlink: Netlink,
    pub tun_index: u32,
    /// Read by the dataplane; written only by the route mirror.
    pub routes: SharedRoutes,
    pub keepalives: NatKeepalives,
    pub stats: Arc<ControlStats>,
    /// Append-only, mode 0600; `debug.key-export`.
    pub key_log: Option<File>,
    /// Own NBMA address toward the first NHS (or configured); the NHRP engine's src NBMA.
    pub local_nbma: Option<Ipv4Addr>,
    // TODO(integration): the engines live here, e.g. `ike: dmvpn_ike::Endpoint` and
    // `nhrp: dmvpn_nhrp::…` (spoke NHS client or hub server per `config.nhrp.role`), built from
    // `config` with an injected RNG; and the dataplane's SA-table publisher.
}

impl ControlPlane {
    /// Installs a route into the tunnel as a kernel route (so routing daemons see it); the route
    /// mirror then publishes it to the dataplane. Used for static routes and NHRP shortcuts.
    pub async fn install_route(
        &self,
        prefix: Ipv4Addr,
        prefix_len: u8,
        via: Option<Ipv4Addr>,
    ) -> Result<()> {
        self.netlink
            .install_route(self.tun_index, prefix, prefix_len, via)
            .await
    }

    pub async fn withdraw_route(
        &self,
        prefix: Ipv4Addr,
        prefix_len: u8,
        via: Option<Ipv4Addr>,
    ) -> Result<()> {
        self.netlink
            .withdraw_route(self.tun_index, prefix, prefix_len, via)
            .await
    }

    /// The earliest deadline of any engine.
    fn poll_timeout(&self) -> Option<Instant> {
        // TODO(integration): min with `self.ike.poll_timeout()` and `self.nhrp.poll_timeout()`.
        self.keepalives.poll_timeout()
    }

    async fn handle_timeout(&mut self, now: Instant) {
        for peer in self.keepalives.due(now) {
            if let Err(e) = self.underlay.send_nat_keepalive(peer).await {
                tracing::debug!(%peer, "NAT keepalive: {e}");
            }
        }
        // TODO(integration): `self.ike.handle_timeout(now)`; `self.nhrp.handle_timeout(now)`.
    }

    async fn handle_underlay(&mut self, _now: Instant, r: Received) {
        match r {
            Received::Ike {
                from,
                natt,
                message,
            } => {
                tracing::trace!(%from, natt, len = message.len(), "IKE datagram");
                // TODO(integration): `self.ike.handle_datagram(now, from, local, &message)`;
                // `natt` tells the engine the peer already floated to port 4500.
            }
            Received::Esp {
                from,
                encap,
                packet,
            } => {
                tracing::trace!(%from, encap, len = packet.len(), "ESP packet");
                // TODO(integration): dataplane inbound (SA by SPI, replay check, open in place,
                // GRE key check); GRE protocol 0x2001 goes to `self.nhrp.handle_datagram(now, …)`,
                // IPv4 is written to the TUN.
            }
            Received::NatKeepalive { from } => {
                tracing::trace!(%from, "NAT keepalive");
            }
        }
    }

    async fn handle_tun(&mut self, _now: Instant, pkt: TunPacket) {
        self.stats.tun_packets.fetch_add(1, Ordering::Relaxed);
        let Some(dst) = pkt.ipv4_dst() else { return };
        let routes = self.routes.load();
        let Some(route) = routes.lookup(dst) else {
            self.stats.tun_no_route.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let _next_hop = route.next_hop(dst);
        // TODO(integration): dataplane outbound: NHRP mapping of `_next_hop` → NBMA → SA → GRE +
        // ESP sealed in place in `pkt.buf` (HEADROOM in front) → `self.underlay.send_esp`. On a
        // mapping miss, `self.nhrp` resolves (spoke) or redirects (hub); multicast goes to NHSes
        // flagged `multicast`.
    }

    /// Drains the engines' outputs after every input or timeout.
    async fn flush(&mut self) {
        // TODO(integration): while let Some(t) = self.ike.poll_transmit() → `self.underlay.send_ike`;
        // while let Some(ev) = self.ike.poll_event(): Child SA installed → publish SA table and
        // write `self.key_log`; NAT detected → `self.keepalives.add(peer, now)`; SA deleted →
        // `self.keepalives.remove(peer)`. while let Some(ev) = self.nhrp.poll_event(): need SA to
        // NBMA → `self.ike.initiate(peer)`; shortcut → `self.install_route(..)`; purge/expiry →
        // `self.withdraw_route(..)`; NHRP packets to send → dataplane GRE+ESP.
    }

    /// Runs until `shutdown` resolves or the readers go away.
    pub async fn run(
        mut self,
        mut underlay_rx: mpsc::Receiver<Received>,
        mut tun_rx: mpsc::Receiver<TunPacket>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let deadline = self.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                r = underlay_rx.recv() => match r {
                    Some(r) => self.handle_underlay(Instant::now(), r).await,
                    None => break,
                },
                p = tun_rx.recv() => match p {
                    Some(p) => self.handle_tun(Instant::now(), p).await,
                    None => break,
                },
                _ = sleep => self.handle_timeout(Instant::now()).await,
            }
            self.flush().await;
        }
        // TODO(integration): NHRP purge and IKE Delete before exit, like `clear crypto session`.
        tracing::info!("control plane stopped");
    }
}

/// Reads the TUN into `HEADROOM`-offset buffers and hands packets to the control task.
fn spawn_tun_reader(tun: Arc<TunDevice>, tx: mpsc::Sender<TunPacket>, stats: Arc<ControlStats>) {
    tokio::spawn(async move {
        loop {
            // TODO(integration): buffers from the dataplane's free list instead of one per packet.
            let mut buf = vec![0u8; tun.buffer_len()];
            let Some(room) = buf.get_mut(HEADROOM..) else {
                return;
            };
            let len = match tun.dev.recv(room).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!("reading {}: {e}", tun.name);
                    return;
                }
            };
            match tx.try_send(TunPacket { buf, len }) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    stats.tun_queue_full.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    });
}

/// Opens the key export file: created 0600 and appended to, never truncated.
fn open_key_log(path: &std::path::Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening key export file {}", path.display()))
}

/// A started daemon: everything opened and configured, ready to run the event loop.
#[derive(Debug)]
pub struct Daemon {
    pub control: ControlPlane,
    pub tun: Arc<TunDevice>,
    underlay_rx: mpsc::Receiver<Received>,
    tun_rx: mpsc::Receiver<TunPacket>,
}

impl Daemon {
    /// Creates the TUN, mirrors its routes, opens the underlay sockets, installs static routes.
    pub async fn start(config: Config) -> Result<Self> {
        let config = Arc::new(config);
        let netlink = Netlink::open()?;
        let tun = Arc::new(TunDevice::create(&config.tunnel, &netlink).await?);
        tracing::info!(
            device = %tun.name,
            address = %config.tunnel.address,
            mtu = tun.mtu,
            "tunnel interface up"
        );
        let routes = shared(RouteTable::new());
        spawn_route_mirror(tun.index, routes.clone()).await?;

        let underlay = Underlay::open(&UnderlayConfig::from_config(&config.underlay))?;
        let local_nbma = match (config.underlay.local_address, config.nhrp.nhs.first()) {
            (Some(a), _) => Some(a),
            (None, Some(nhs)) => {
                match local_address_for(nhs.nbma, config.underlay.interface.as_deref()) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        // Not fatal: the route to the NHS may appear later (DHCP, link up).
                        tracing::warn!(nhs = %nhs.nbma, "no route to the NHS yet: {e}");
                        None
                    }
                }
            }
            (None, None) => None,
        };
        tracing::info!(?local_nbma, role = ?config.nhrp.role, "underlay sockets open");

        let key_log = match &config.key_export {
            Some(p) => {
                tracing::warn!(path = %p.display(), "exporting IKE/ESP keys for Wireshark: debugging only");
                Some(open_key_log(p)?)
            }
            None => None,
        };

        let (utx, underlay_rx) = mpsc::channel(QUEUE_DEPTH);
        underlay.spawn_readers(utx);
        let (ttx, tun_rx) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(ControlStats::default());
        spawn_tun_reader(tun.clone(), ttx, stats.clone());

        let control = ControlPlane {
            keepalives: NatKeepalives::new(config.ike.nat_keepalive),
            config: config.clone(),
            underlay,
            netlink,
            tun_index: tun.index,
            routes,
            stats,
            key_log,
            local_nbma,
        };
        for r in &config.routes {
            control
                .install_route(r.prefix.addr, r.prefix.prefix_len, Some(r.via))
                .await?;
        }
        if let Role::Spoke { .. } = config.nhrp.role {
            // The NHS is reached before registration over its NBMA address on 4500 once NAT-T
            // floats; keepalives start when IKE reports the NAT (TODO(integration) in `flush`).
            tracing::debug!(
                nhs = config.nhrp.nhs.len(),
                port = NATT_PORT,
                "spoke: NHS list loaded"
            );
        }
        Ok(Daemon {
            control,
            tun,
            underlay_rx,
            tun_rx,
        })
    }

    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        self.control
            .run(self.underlay_rx, self.tun_rx, shutdown)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_schedule() {
        let t0 = Instant::now();
        let mut k = NatKeepalives::new(Some(Duration::from_secs(20)));
        let a = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 4500);
        let b = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 4500);
        assert_eq!(k.poll_timeout(), None);
        k.add(a, t0);
        k.add(b, t0 + Duration::from_secs(5));
        assert_eq!(k.poll_timeout(), Some(t0 + Duration::from_secs(20)));
        assert!(k.due(t0 + Duration::from_secs(19)).is_empty());
        assert_eq!(k.due(t0 + Duration::from_secs(20)), vec![a]);
        assert_eq!(k.poll_timeout(), Some(t0 + Duration::from_secs(25)));
        k.remove(b);
        assert_eq!(k.poll_timeout(), Some(t0 + Duration::from_secs(40)));
        let mut off = NatKeepalives::new(None);
        off.add(a, t0);
        assert_eq!(off.poll_timeout(), None);
    }

    #[test]
    fn tun_packet_destination() {
        let mut buf = vec![0u8; HEADROOM + 20];
        buf[HEADROOM] = 0x45;
        buf[HEADROOM + 16..HEADROOM + 20].copy_from_slice(&[10, 1, 1, 106]);
        let p = TunPacket { buf, len: 20 };
        assert_eq!(p.ipv4_dst(), Some(Ipv4Addr::new(10, 1, 1, 106)));
        let short = TunPacket {
            buf: vec![0x45; HEADROOM + 10],
            len: 10,
        };
        assert_eq!(short.ipv4_dst(), None);
    }
}
