//! The packet workers (docs/architecture.md, "Packet path"). Each TUN queue has a thread that reads a
//! batch (with offload, a GSO super-packet split into segments), routes, encapsulates and
//! seals every packet in place, and sends each run of packets to one peer while it holds that
//! SA's turn (so the SA's numbers reach the wire in order): equal-size ESP-in-UDP datagrams
//! as one UDP GSO send, raw ESP with one sendmmsg per run. The underlay readers
//! (`underlay.rs`, one thread per UDP 4500 socket and one for raw ESP) open ESP in place
//! through [`EspHandler`] and write each batch's inner packets to the TUN at once, coalescing
//! in-order TCP segments of a flow into one super-packet where offload is on.
//!
//! The workers read the published [`Tables`] and route snapshots without locks; only the
//! slow path — a packet waiting for an SA, an NHRP packet, a redirect trigger — goes to the
//! control plane (and its `dmvpn_node::Node`), through a bounded channel that drops and counts
//! when full. No allocation per packet: every buffer lives as long as its thread.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dmvpn_dataplane::{DropReason, Inbound, Outbound, Tables};
use dmvpn_node::SlowPath;
use dmvpn_wire::PacketBuf;
use dmvpn_wire::gre::EtherType;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio::sync::mpsc;
use tun_rs::{GROTable, IDEAL_BATCH_SIZE, SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::batch::{GSO_MAX_BYTES, MAX_GSO_SEGMENTS, SendBatch};
use crate::routes::SharedRoutes;
use crate::tun::TunDevice;
use crate::underlay::{EspHandler, Underlay};

/// How often at most one reader tells the control plane about one hairpinned
/// (source, destination) pair; the NHRP engine applies the protocol's own rate limit on top.
const REDIRECT_HINT_INTERVAL: Duration = Duration::from_secs(1);
/// Buffers per TUN reader: room for one more GSO super-packet's segments (tun-rs's ideal batch)
/// after a full one, so a reader can drain several reads into one batch.
const SLOTS: usize = 2 * IDEAL_BATCH_SIZE;
/// Pairs one reader remembers for that rate limit; past it, old pairs are forgotten.
const REDIRECT_HINTS: usize = 4096;
/// Bytes of a redirected packet that go into the traffic indication (IP header + 8, as ICMP
/// quotes; docs/interop-notes.md).
const REDIRECT_QUOTE: usize = 28;

/// Everything the packet threads share.
pub struct Datapath {
    /// Published by the control plane.
    pub tables: ArcSwap<Tables>,
    /// Published by the route mirror.
    pub routes: SharedRoutes,
    pub tun: Arc<TunDevice>,
    pub underlay: Arc<Underlay>,
    slow: mpsc::Sender<SlowPath>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("tun", &self.tun)
            .finish_non_exhaustive()
    }
}

/// A PacketBuf as tun-rs's batch reader sees it: its tailroom, after the headroom GRE, ESP and
/// UDP will need.
struct Slot(PacketBuf);

impl AsRef<[u8]> for Slot {
    fn as_ref(&self) -> &[u8] {
        self.0.spare_back()
    }
}

impl AsMut<[u8]> for Slot {
    fn as_mut(&mut self) -> &mut [u8] {
        self.0.spare_back_mut()
    }
}

impl AsMut<PacketBuf> for Slot {
    fn as_mut(&mut self) -> &mut PacketBuf {
        &mut self.0
    }
}

/// A sealed packet waiting in a worker's send batch.
#[derive(Debug, Clone, Copy)]
struct Pending {
    slot: usize,
    to: SocketAddrV4,
    udp_encap: bool,
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
        }
    }

    fn to_slow_path(&self, tables: &Tables, msg: SlowPath) {
        if self.slow.try_send(msg).is_err() {
            tables.counters.count_drop(DropReason::SlowPathFull);
        }
    }

    /// Starts one TUN reader thread per queue.
    pub fn spawn_tun_readers(self: &Arc<Self>) -> anyhow::Result<()> {
        for (worker, queue) in self.tun.queues.iter().enumerate() {
            let this = Arc::clone(self);
            let queue = Arc::clone(queue);
            std::thread::Builder::new()
                .name(format!("dmvpn-tun-{worker}"))
                .spawn(move || this.run_tun(worker, &queue))?;
        }
        Ok(())
    }

    /// Reads TUN queue `worker` forever: batch in, route, encapsulate, encrypt in place,
    /// batch out.
    fn run_tun(&self, worker: usize, queue: &SyncDevice) {
        let offload = self.tun.offload;
        let mut original = vec![
            0u8;
            if offload {
                VIRTIO_NET_HDR_LEN + 65535
            } else {
                0
            }
        ];
        let mut slots: Vec<Slot> = (0..SLOTS).map(|_| Slot(PacketBuf::new())).collect();
        let mut sizes = vec![0usize; SLOTS];
        let mut verdicts = vec![Outbound::Multicast; SLOTS];
        let mut pending: Vec<Pending> = Vec::with_capacity(SLOTS);
        let mut copy = PacketBuf::new();
        let mut raw = SendBatch::new();
        // Reads after the first of a batch take only what is queued already: the fd is
        // non-blocking and an empty queue is waited for with poll(2).
        if let Err(e) = queue.set_nonblocking(true) {
            tracing::error!(
                worker,
                "{}: cannot make the queue non-blocking: {e}",
                self.tun.name
            );
            return;
        }
        // Slots the last batch used; the rest are still fresh.
        let mut used = SLOTS;
        loop {
            for s in slots.iter_mut().take(used) {
                let _ = s.0.reset(PacketBuf::DEFAULT_HEADROOM);
            }
            let Some(n) = self.read_batch(worker, queue, &mut original, &mut slots, &mut sizes)
            else {
                return;
            };
            used = n;
            let tables = self.tables.load();
            let routes = self.routes.load();
            let (Some(batch), Some(verdicts)) = (slots.get_mut(..n), verdicts.get_mut(..n)) else {
                continue;
            };
            // Each run of packets to one peer is sent as soon as it is sealed, in its SA's
            // turn (dmvpn_esp::OutboundSa::turn): the other worker's packets to that peer
            // cannot overtake it on the wire and fall out of the peer's replay window.
            tables.outbound_batch_then(&routes, batch, verdicts, |run, verdicts| {
                pending.clear();
                pending.extend(verdicts.iter().enumerate().filter_map(|(i, v)| match *v {
                    Outbound::Send {
                        nbma,
                        port,
                        udp_encap,
                    } => Some(Pending {
                        slot: i,
                        to: SocketAddrV4::new(nbma, port),
                        udp_encap,
                    }),
                    _ => None,
                }));
                self.send_batch(worker, run, &pending, &mut raw);
            });
            for (slot, verdict) in batch.iter_mut().zip(verdicts.iter()) {
                let buf = &mut slot.0;
                match *verdict {
                    Outbound::NeedSa { nbma } => {
                        let queued = std::mem::take(buf);
                        self.to_slow_path(
                            &tables,
                            SlowPath::NeedSa {
                                nbma,
                                protocol: EtherType::IPV4,
                                buf: queued,
                            },
                        );
                    }
                    Outbound::Multicast => self.replicate(worker, &tables, buf, &mut copy),
                    // Sent with their run; drops are counted.
                    Outbound::Send { .. } | Outbound::Drop(_) => {}
                }
            }
        }
    }

    /// Fills `slots` with what the queue holds: the first read waits, later ones take only
    /// what is already queued, while a whole GSO super-packet's segments still fit. Returns
    /// how many packets arrived, or `None` once the device is gone.
    fn read_batch(
        &self,
        worker: usize,
        queue: &SyncDevice,
        original: &mut [u8],
        slots: &mut [Slot],
        sizes: &mut [usize],
    ) -> Option<usize> {
        let offload = self.tun.offload;
        let mut n = 0;
        loop {
            let (Some(free), Some(free_sizes)) = (slots.get_mut(n..), sizes.get_mut(n..)) else {
                return Some(n);
            };
            let r = if offload {
                queue.recv_multiple(original, free, free_sizes, 0)
            } else {
                match (free.first_mut(), free_sizes.first_mut()) {
                    (Some(slot), Some(size)) => queue.recv(slot.0.spare_back_mut()).map(|len| {
                        *size = len;
                        1
                    }),
                    _ => return Some(n),
                }
            };
            match r {
                Ok(k) => {
                    for (slot, size) in free.iter_mut().zip(free_sizes.iter()).take(k) {
                        if slot.0.push_back(*size).is_err() {
                            // Cannot happen (the reader wrote that much); an empty buffer is
                            // dropped as not IPv4.
                            let _ = slot.0.reset(PacketBuf::DEFAULT_HEADROOM);
                        }
                    }
                    n += k;
                    // Another read must have room for a super-packet's segments.
                    let room = if offload { IDEAL_BATCH_SIZE } else { 1 };
                    if SLOTS - n < room {
                        return Some(n);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if n > 0 {
                        return Some(n);
                    }
                    let mut fds = [PollFd::new(queue.as_fd(), PollFlags::POLLIN)];
                    if let Err(e) = poll(&mut fds, PollTimeout::NONE)
                        && e != nix::errno::Errno::EINTR
                    {
                        tracing::error!(worker, "waiting for {}: {e}", self.tun.name);
                        return None;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EBADFD) => {
                    tracing::error!(worker, "reading {}: {e}", self.tun.name);
                    return None;
                }
                Err(e) => {
                    tracing::debug!(worker, "reading {}: {e}", self.tun.name);
                    if n > 0 {
                        return Some(n);
                    }
                }
            }
        }
    }

    /// Replicates a multicast packet to every NBMA that gets multicast (OSPF hellos over the
    /// NBMA network, as `ip nhrp map multicast` does).
    fn replicate(&self, worker: usize, tables: &Tables, buf: &PacketBuf, copy: &mut PacketBuf) {
        for &nbma in tables.multicast.iter() {
            if copy.reset(PacketBuf::DEFAULT_HEADROOM).is_err() {
                break;
            }
            let Ok(dst) = copy.push_back(buf.len()) else {
                break;
            };
            dst.copy_from_slice(buf.as_slice());
            // Multicast to a peer without an SA is not worth bringing one up for; the unicast
            // path will. Sent in the SA's turn, in order with the data.
            tables.seal_to_then(nbma, EtherType::IPV4, copy, |sealed, out| {
                if let Outbound::Send {
                    nbma,
                    port,
                    udp_encap,
                } = out
                {
                    let to = SocketAddrV4::new(nbma, port);
                    if let Err(e) = self
                        .underlay
                        .send_esp(worker, to, udp_encap, sealed.as_slice())
                    {
                        tracing::debug!(peer = %nbma, "ESP send: {e}");
                    }
                }
            });
        }
    }

    /// Sends what a run of a TUN batch sealed (`pending` indexes `slots`): raw ESP with
    /// sendmmsg; ESP-in-UDP in runs of equal-size datagrams to one peer, each run one GSO
    /// send, the datagrams gathered from their buffers (no copy).
    fn send_batch(&self, worker: usize, slots: &[Slot], pending: &[Pending], raw: &mut SendBatch) {
        let raws = pending.iter().filter(|p| !p.udp_encap).filter_map(|p| {
            Some((
                slots.get(p.slot)?.0.as_slice(),
                SocketAddrV4::new(*p.to.ip(), 0),
            ))
        });
        if let Err(e) = self.underlay.send_raw_batch(raw, raws) {
            tracing::debug!("raw ESP send: {e}");
        }
        let mut udp = pending.iter().filter(|p| p.udp_encap).peekable();
        let mut run = [IoSlice::new(&[]); MAX_GSO_SEGMENTS];
        while let Some(first) = udp.next() {
            let Some(head) = slots.get(first.slot).map(|s| s.0.as_slice()) else {
                continue;
            };
            let segment = head.len();
            let mut len = head.len();
            let mut count = 1;
            run[0] = IoSlice::new(head);
            // Extend the run while the next datagram goes to the same peer, is no longer than
            // the first (only the last of a GSO run may be shorter) and fits.
            while let Some(next) = udp.peek() {
                let Some(bytes) = slots.get(next.slot).map(|s| s.0.as_slice()) else {
                    break;
                };
                let last_was_short = len % segment != 0;
                if next.to != first.to
                    || bytes.len() > segment
                    || last_was_short
                    || count >= MAX_GSO_SEGMENTS
                    || len + bytes.len() > GSO_MAX_BYTES
                {
                    break;
                }
                if let Some(s) = run.get_mut(count) {
                    *s = IoSlice::new(bytes);
                }
                len += bytes.len();
                count += 1;
                udp.next();
            }
            let datagrams = run.get(..count).unwrap_or_default();
            if let Err(e) = self
                .underlay
                .send_esp_run(worker, first.to, datagrams, segment)
            {
                tracing::debug!(peer = %first.to, "ESP send: {e}");
            }
        }
    }
}

/// What one underlay reader collects for the TUN during a batch.
pub struct TunBatch {
    queue: Arc<SyncDevice>,
    offload: bool,
    /// Inner packets at `offset`, the virtio-net header's room in front when offloading.
    bufs: Vec<Vec<u8>>,
    count: usize,
    gro: GROTable,
    /// Redirect hints sent per (source, destination) pair, for the rate limit.
    hints: HashMap<(Ipv4Addr, Ipv4Addr), Instant>,
    /// Unknown-SPI reports sent per source, for the rate limit.
    unknown_spi: HashMap<Ipv4Addr, Instant>,
    /// NAT mapping changes reported per new source, for the rate limit.
    moved: HashMap<SocketAddrV4, Instant>,
}

impl std::fmt::Debug for TunBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunBatch")
            .field("offload", &self.offload)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl TunBatch {
    fn offset(&self) -> usize {
        if self.offload { VIRTIO_NET_HDR_LEN } else { 0 }
    }

    fn push(&mut self, packet: &[u8]) {
        let offset = self.offset();
        if self.count == self.bufs.len() {
            // Room for one packet; a buffer that GRO coalesces into grows once and keeps it.
            self.bufs
                .push(Vec::with_capacity(offset + PacketBuf::CAPACITY));
        }
        if let Some(b) = self.bufs.get_mut(self.count) {
            b.clear();
            b.resize(offset, 0);
            b.extend_from_slice(packet);
            self.count += 1;
        }
    }

    fn flush(&mut self, name: &str) {
        if self.count == 0 {
            return;
        }
        let offset = self.offset();
        let bufs = &mut self.bufs[..self.count];
        let r = if self.offload {
            self.queue
                .send_multiple(&mut self.gro, bufs, offset)
                .map(drop)
        } else {
            bufs.iter().try_for_each(|b| self.queue.send(b).map(drop))
        };
        if let Err(e) = r {
            tracing::debug!("writing {name}: {e}");
        }
        self.count = 0;
    }

    /// Whether a redirect hint for this packet is due (at most one per pair per interval).
    fn redirect_hint_due(&mut self, quote: &[u8]) -> bool {
        let (Some(src), Some(dst)) = (quote.get(12..16), quote.get(16..20)) else {
            return false;
        };
        let key = (
            Ipv4Addr::from(<[u8; 4]>::try_from(src).unwrap_or_default()),
            Ipv4Addr::from(<[u8; 4]>::try_from(dst).unwrap_or_default()),
        );
        hint_due(&mut self.hints, key)
    }

    /// Whether a report of ESP with an unknown SPI from `src` is due (at most one per source
    /// per interval): the control plane answers each with an INVALID_SPI notify.
    fn unknown_spi_report_due(&mut self, src: Ipv4Addr) -> bool {
        hint_due(&mut self.unknown_spi, src)
    }

    /// Whether a report of a peer's new NAT mapping `src` is due (at most one per source per
    /// interval; the control plane follows the first).
    fn moved_report_due(&mut self, src: SocketAddrV4) -> bool {
        hint_due(&mut self.moved, src)
    }
}

/// At most one hint per key per [`REDIRECT_HINT_INTERVAL`], in a map of at most
/// [`REDIRECT_HINTS`] keys.
fn hint_due<K: std::hash::Hash + Eq>(hints: &mut HashMap<K, Instant>, key: K) -> bool {
    let now = Instant::now();
    if hints.len() >= REDIRECT_HINTS {
        hints.retain(|_, t| now.duration_since(*t) < REDIRECT_HINT_INTERVAL);
        if hints.len() >= REDIRECT_HINTS {
            hints.clear();
        }
    }
    match hints.get(&key) {
        Some(t) if now.duration_since(*t) < REDIRECT_HINT_INTERVAL => false,
        _ => {
            hints.insert(key, now);
            true
        }
    }
}

/// Batch size after which a reader writes to the TUN even mid-batch.
const TUN_WRITE_BATCH: usize = IDEAL_BATCH_SIZE;

impl EspHandler for Datapath {
    type Batch = TunBatch;

    fn batch(&self, worker: usize) -> TunBatch {
        let queues = &self.tun.queues;
        TunBatch {
            queue: Arc::clone(&queues[worker % queues.len()]),
            offload: self.tun.offload,
            bufs: Vec::with_capacity(TUN_WRITE_BATCH),
            count: 0,
            gro: GROTable::default(),
            hints: HashMap::new(),
            unknown_spi: HashMap::new(),
            moved: HashMap::new(),
        }
    }

    fn handle_esp(
        &self,
        from: SocketAddrV4,
        encap: bool,
        buf: &mut PacketBuf,
        batch: &mut TunBatch,
    ) -> bool {
        let tables = self.tables.load();
        let routes = self.routes.load();
        let verdict = tables.inbound(&routes, *from.ip(), buf);
        // Authenticated ESP-in-UDP from a port the peer's path does not have: its NAT gave it
        // a new mapping, which the control plane follows (RFC 7296 §2.23).
        if let Inbound::Data { peer, .. } | Inbound::Nhrp { peer } = verdict
            && encap
            && tables.path_port_moved(peer, from.port())
            && batch.moved_report_due(from)
        {
            self.to_slow_path(&tables, SlowPath::NatMapping { peer, from });
        }
        match verdict {
            Inbound::Data { peer, redirect } => {
                if redirect {
                    let quote = buf.as_slice().get(..REDIRECT_QUOTE.min(buf.len()));
                    if let Some(q) = quote
                        && batch.redirect_hint_due(q)
                    {
                        let quote = q.to_vec();
                        self.to_slow_path(&tables, SlowPath::Redirect { peer, quote });
                    }
                }
                batch.push(buf.as_slice());
                if batch.count >= TUN_WRITE_BATCH {
                    batch.flush(&self.tun.name);
                }
            }
            Inbound::Nhrp { peer } => {
                let bytes = buf.as_slice().to_vec();
                self.to_slow_path(&tables, SlowPath::Nhrp { peer, bytes });
            }
            // A peer still sending on an SA we do not have (we restarted): the control
            // plane may tell it (RFC 7296 §1.5), so it need not wait for its DPD.
            Inbound::Drop(DropReason::UnknownSpi) => {
                let spi = buf
                    .as_slice()
                    .get(..4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok());
                if let Some(spi) = spi
                    && batch.unknown_spi_report_due(*from.ip())
                {
                    let spi = u32::from_be_bytes(spi);
                    self.to_slow_path(&tables, SlowPath::UnknownSpi { from, encap, spi });
                }
            }
            Inbound::Drop(_) => {}
        }
        true
    }

    fn end_batch(&self, batch: &mut TunBatch) {
        batch.flush(&self.tun.name);
    }
}
