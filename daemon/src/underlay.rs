//! Underlay (NBMA) sockets: IKE on UDP 500 and 4500 (RFC 7296 §2.23), ESP in UDP on 4500 told
//! apart from IKE by the non-ESP marker and from NAT keepalives by their single 0xFF byte
//! (RFC 3948 §2.2, §2.3), ESP without NAT on a raw IP protocol 50 socket (raw(7), RFC 4303), and
//! the local NBMA address from the route to a peer.

use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use dmvpn_wire::udp::{UdpEncap, classify};
use dmvpn_wire::{Ipv4Packet, PacketBuf};

pub use dmvpn_node::{IKE_PORT, NATT_PORT};
/// RFC 3948 §2.2: IKE on port 4500 is preceded by four zero bytes, where ESP has its SPI
/// (SPI 0 is reserved, RFC 4303 §2.1).
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// RFC 3948 §2.3: a NAT keepalive is one octet 0xFF.
pub const NAT_KEEPALIVE: [u8; 1] = [0xFF];
const IPPROTO_ESP: i32 = 50;
// Datagrams are read into a `PacketBuf` (9 KiB, jumbo frames): the kernel reassembles ESP
// fragments (the hub clears DF) before our sockets see them; anything longer is truncated by
// recvfrom and then fails ESP authentication, a counted drop.

/// A datagram received on the underlay, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// `natt`: arrived on port 4500 (marker stripped), else on port 500.
    Ike {
        from: SocketAddrV4,
        natt: bool,
        message: Vec<u8>,
    },
    /// `encap`: ESP in UDP from `from`; else raw ESP, and `from` has port 0.
    Esp {
        from: SocketAddrV4,
        encap: bool,
        packet: Vec<u8>,
    },
    NatKeepalive {
        from: SocketAddrV4,
    },
}

/// Counters the readers keep; drops are counted, never logged per packet.
#[derive(Debug, Default)]
pub struct UnderlayStats {
    pub ike: AtomicU64,
    pub esp: AtomicU64,
    pub nat_keepalives: AtomicU64,
    pub malformed: AtomicU64,
    /// The control plane's channel for established peers' IKE (and keepalives) was full.
    pub queue_full: AtomicU64,
    /// The control plane's channel for IKE_SA_INIT requests that would open a new SA was
    /// full: a flood of them (they never take the other channel's room).
    pub sa_init_queue_full: AtomicU64,
    /// Datagrams the kernel dropped because a socket's receive queue was full (SO_RXQ_OVFL),
    /// summed over the sockets.
    pub socket_drops: AtomicU64,
    /// System calls that sent or received datagrams, and the datagrams they carried.
    pub send_calls: AtomicU64,
    pub recv_calls: AtomicU64,
}

/// The readers' channels to the control plane. IKE_SA_INIT requests that would open a new IKE
/// SA ([`opens_ike_sa`]) have one of their own, so a flood of them, spoofed or not, fills only
/// that one: established peers' IKE (DPD, rekeys, DELETE, INFORMATIONAL) and NAT keepalives
/// are never dropped behind it, and the control loop takes from both in turn.
#[derive(Debug, Clone)]
pub struct ControlQueues {
    pub established: mpsc::Sender<Received>,
    pub sa_init: mpsc::Sender<Received>,
}

/// An IKE_SA_INIT request with a zero responder SPI (RFC 7296 §3.1): the only message an
/// unauthenticated sender can make the responder do D-H work for (§2.6). Everything else
/// belongs to an SA we hold or initiated.
pub fn opens_ike_sa(message: &[u8]) -> bool {
    const IKE_SA_INIT: u8 = 34;
    const RESPONSE: u8 = 0x20;
    message
        .get(8..16)
        .is_some_and(|r| r.iter().all(|&b| b == 0))
        && message.get(18) == Some(&IKE_SA_INIT)
        && message.get(19).is_some_and(|f| f & RESPONSE == 0)
}

/// Where and how to open the underlay sockets.
#[derive(Debug, Clone)]
pub struct UnderlayConfig {
    /// Local address to bind; unspecified = all.
    pub bind: Ipv4Addr,
    /// SO_BINDTODEVICE, the `tunnel source` interface.
    pub interface: Option<String>,
    pub ike_port: u16,
    pub natt_port: u16,
    /// UDP 4500 sockets (SO_REUSEPORT), one per packet worker.
    pub workers: usize,
    /// Requested socket buffer size in bytes.
    pub socket_buffer: usize,
    /// UDP GSO/GRO on the NAT-T sockets.
    pub offload: bool,
}

impl UnderlayConfig {
    pub fn from_config(u: &dmvpn_config::Underlay) -> Self {
        UnderlayConfig {
            bind: u.local_address.unwrap_or(Ipv4Addr::UNSPECIFIED),
            interface: u.interface.clone(),
            ike_port: IKE_PORT,
            natt_port: NATT_PORT,
            workers: 1,
            socket_buffer: dmvpn_config::DEFAULT_SOCKET_BUFFER as usize,
            offload: true,
        }
    }
}

/// The open underlay sockets, shared (`Arc`) between the readers and the senders. UDP 500 is
/// read by a tokio task (IKE only); the UDP 4500 sockets, one per worker in one SO_REUSEPORT
/// group so the kernel spreads peers over them, and the raw ESP socket are read by blocking
/// threads in batches.
#[derive(Debug)]
pub struct Underlay {
    ike: UdpSocket,
    natt: Vec<StdUdpSocket>,
    esp: Socket,
    /// GRO was enabled on the NAT-T sockets.
    gro: bool,
    /// GSO sends work (cleared, once, when the kernel refuses one).
    gso: AtomicBool,
    /// Socket buffer sizes the kernel granted (receive, send), as it reports them.
    pub buffers: (usize, usize),
    pub stats: UnderlayStats,
}

fn base_udp_socket(cfg: &UnderlayConfig, port: u16, reuse_port: bool) -> Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(dev) = &cfg.interface {
        s.bind_device(Some(dev.as_bytes()))
            .with_context(|| format!("binding UDP {port} to interface {dev}"))?;
    }
    // Lets a restarted daemon rebind at once.
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    let addr = SocketAddrV4::new(cfg.bind, port);
    s.bind(&SocketAddr::V4(addr).into())
        .with_context(|| format!("binding UDP {addr}"))?;
    Ok(s)
}

/// The raw socket is blocking and read by its own thread; senders share it (sendto(2) on one
/// socket from several threads is safe).
fn esp_socket(cfg: &UnderlayConfig) -> Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_ESP)))
        .context("opening raw IP protocol 50 (ESP) socket (needs CAP_NET_RAW)")?;
    if let Some(dev) = &cfg.interface {
        s.bind_device(Some(dev.as_bytes()))
            .with_context(|| format!("binding the ESP socket to interface {dev}"))?;
    }
    if !cfg.bind.is_unspecified() {
        s.bind(&SocketAddr::V4(SocketAddrV4::new(cfg.bind, 0)).into())
            .with_context(|| format!("binding the ESP socket to {}", cfg.bind))?;
    }
    Ok(s)
}

/// Messages per receive batch: with GRO one message holds up to 64 KiB of datagrams.
const RECV_BATCH_GRO: usize = 8;
const RECV_BATCH: usize = 64;

impl Underlay {
    /// Opens UDP 500, the UDP 4500 group and the raw ESP socket. Needs CAP_NET_BIND_SERVICE and
    /// CAP_NET_RAW (and CAP_NET_ADMIN to size buffers past the system maximum).
    pub fn open(cfg: &UnderlayConfig) -> Result<Arc<Self>> {
        let ike = base_udp_socket(cfg, cfg.ike_port, false)?;
        ike.set_nonblocking(true)?;
        let workers = cfg.workers.max(1);
        let natt = (0..workers)
            .map(|_| base_udp_socket(cfg, cfg.natt_port, true))
            .collect::<Result<Vec<_>>>()?;
        let esp = esp_socket(cfg)?;
        // What the kernel granted the sockets ESP arrives on (reported as the NAT-T group's).
        let mut buffers = (0, 0);
        for (i, s) in natt.iter().chain([&esp, &ike]).enumerate() {
            let granted = crate::batch::set_buffers(s, cfg.socket_buffer);
            if i == 0 {
                buffers = granted;
            }
            crate::batch::enable_drop_counter(s);
        }
        let gro = cfg.offload && natt.iter().all(crate::batch::enable_gro);
        Ok(Arc::new(Underlay {
            ike: UdpSocket::from_std(StdUdpSocket::from(ike))?,
            natt: natt.into_iter().map(StdUdpSocket::from).collect(),
            esp,
            gro,
            gso: AtomicBool::new(cfg.offload),
            buffers,
            stats: UnderlayStats::default(),
        }))
    }

    pub fn ike_local_addr(&self) -> io::Result<SocketAddr> {
        self.ike.local_addr()
    }

    pub fn natt_local_addr(&self) -> io::Result<SocketAddr> {
        self.natt
            .first()
            .ok_or_else(|| io::Error::other("no NAT-T socket"))?
            .local_addr()
    }

    /// Whether received ESP-in-UDP arrives GRO-coalesced.
    pub fn gro(&self) -> bool {
        self.gro
    }

    fn natt_socket(&self, worker: usize) -> io::Result<&StdUdpSocket> {
        self.natt
            .get(worker % self.natt.len().max(1))
            .ok_or_else(|| io::Error::other("no NAT-T socket"))
    }

    /// Sends an IKE message; on the NAT-T port it gets the non-ESP marker.
    pub async fn send_ike(&self, to: SocketAddrV4, natt: bool, message: &[u8]) -> io::Result<()> {
        if natt {
            let mut buf = Vec::with_capacity(NON_ESP_MARKER.len() + message.len());
            buf.extend_from_slice(&NON_ESP_MARKER);
            buf.extend_from_slice(message);
            self.natt_socket(0)?.send_to(&buf, to).map(drop)
        } else {
            self.ike.send_to(message, to).await.map(drop)
        }
    }

    /// Sends one ESP packet (starting at the SPI): in UDP to `to` when `encap`, else as IP
    /// protocol 50 to `to`'s address (the kernel builds the IP header; DF follows the route).
    pub fn send_esp(
        &self,
        worker: usize,
        to: SocketAddrV4,
        encap: bool,
        packet: &[u8],
    ) -> io::Result<()> {
        self.stats.send_calls.fetch_add(1, Ordering::Relaxed);
        if encap {
            return self.natt_socket(worker)?.send_to(packet, to).map(drop);
        }
        let to = SocketAddr::V4(SocketAddrV4::new(*to.ip(), 0));
        self.esp.send_to(packet, &to.into()).map(drop)
    }

    /// Sends a run of equal-size ESP-in-UDP datagrams (the last may be shorter) to one peer:
    /// one GSO send where the kernel allows it, else one send per datagram.
    pub fn send_esp_run(
        &self,
        worker: usize,
        to: SocketAddrV4,
        datagrams: &[IoSlice<'_>],
        segment: usize,
    ) -> io::Result<()> {
        let sock = self.natt_socket(worker)?;
        if datagrams.len() > 1 && self.gso.load(Ordering::Relaxed) {
            let seg = u16::try_from(segment).map_err(|_| io::Error::other("segment too large"))?;
            self.stats.send_calls.fetch_add(1, Ordering::Relaxed);
            match crate::batch::send_gso(sock, to, datagrams, seg) {
                Ok(()) => return Ok(()),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                    ) =>
                {
                    tracing::warn!(
                        "UDP GSO refused by the kernel ({e}): sending datagrams one by one from now on"
                    );
                    self.gso.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        for d in datagrams {
            self.stats.send_calls.fetch_add(1, Ordering::Relaxed);
            sock.send_to(d, to)?;
        }
        Ok(())
    }

    /// Sends raw ESP packets with one sendmmsg(2) per 64.
    pub fn send_raw_batch<'a>(
        &self,
        batch: &mut crate::batch::SendBatch,
        packets: impl IntoIterator<Item = (&'a [u8], SocketAddrV4)>,
    ) -> io::Result<()> {
        batch.send(&self.esp, packets, &self.stats.send_calls)
    }

    /// RFC 3948 §4: keeps the NAT mapping for port 4500 alive.
    pub async fn send_nat_keepalive(&self, to: SocketAddrV4) -> io::Result<()> {
        self.natt_socket(0)?.send_to(&NAT_KEEPALIVE, to).map(drop)
    }

    /// Starts the readers: a tokio task for UDP 500, a thread per UDP 4500 socket and one for
    /// raw ESP. IKE and keepalives go to `tx` (the control plane, new IKE SAs on a channel of
    /// their own); ESP goes to `esp` in the reader thread, in batches, so the per-packet path
    /// never waits on the control plane. A full channel drops the datagram and counts it.
    pub fn spawn_readers<H: EspHandler>(
        self: &Arc<Self>,
        tx: ControlQueues,
        esp: Arc<H>,
    ) -> Result<()> {
        {
            let this = Arc::clone(self);
            let tx = tx.clone();
            tokio::spawn(async move { this.read_ike(tx).await });
        }
        for worker in 0..self.natt.len() {
            let this = Arc::clone(self);
            let tx = tx.clone();
            let esp = esp.clone();
            std::thread::Builder::new()
                .name(format!("dmvpn-natt-{worker}"))
                .spawn(move || this.read_natt(worker, tx, esp))
                .context("starting a NAT-T reader thread")?;
        }
        let this = Arc::clone(self);
        std::thread::Builder::new()
            .name("dmvpn-esp".into())
            .spawn(move || this.read_esp(esp))
            .context("starting the raw ESP reader thread")?;
        Ok(())
    }

    fn deliver(&self, q: &ControlQueues, r: Received) -> bool {
        let (tx, full) = match &r {
            Received::Ike { message, .. } if opens_ike_sa(message) => {
                (&q.sa_init, &self.stats.sa_init_queue_full)
            }
            _ => (&q.established, &self.stats.queue_full),
        };
        match tx.try_send(r) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                full.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    async fn read_ike(&self, tx: ControlQueues) {
        let mut buf = vec![0u8; PacketBuf::CAPACITY];
        loop {
            let (n, from) = match self.ike.recv_from(&mut buf).await {
                Ok(v) => v,
                Err(e) => {
                    // ICMP errors from earlier sends surface here (ECONNREFUSED…); keep reading.
                    tracing::debug!("underlay UDP 500 receive: {e}");
                    continue;
                }
            };
            let (SocketAddr::V4(from), Some(message)) = (from, buf.get(..n)) else {
                continue;
            };
            self.stats.ike.fetch_add(1, Ordering::Relaxed);
            let r = Received::Ike {
                from,
                natt: false,
                message: message.to_vec(),
            };
            if !self.deliver(&tx, r) {
                return;
            }
        }
    }

    fn note_kernel_drops(&self, last: &mut u32, now: u32) {
        if now > *last {
            self.stats
                .socket_drops
                .fetch_add(u64::from(now - *last), Ordering::Relaxed);
            *last = now;
        }
    }

    /// One UDP 4500 socket: receive a batch (GRO-coalesced where enabled), demultiplex each
    /// datagram (RFC 3948 §2), hand ESP to the dataplane in place, end the batch.
    fn read_natt<H: EspHandler>(&self, worker: usize, tx: ControlQueues, esp: Arc<H>) {
        let Ok(sock) = self.natt_socket(worker) else {
            return;
        };
        let (messages, size) = if self.gro {
            (RECV_BATCH_GRO, crate::batch::GRO_BUFFER)
        } else {
            (RECV_BATCH, PacketBuf::CAPACITY)
        };
        let mut rb = crate::batch::RecvBatch::new(messages, size);
        let mut buf = PacketBuf::new();
        let mut batch = esp.batch(worker);
        let mut drops = 0;
        loop {
            let n = match rb.recv(sock) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(worker, "underlay UDP 4500 receive: {e}");
                    continue;
                }
            };
            self.stats.recv_calls.fetch_add(1, Ordering::Relaxed);
            self.note_kernel_drops(&mut drops, rb.kernel_drops);
            for i in 0..n {
                let Some((m, bytes)) = rb.get(i) else {
                    continue;
                };
                for d in bytes.chunks(m.segment.unwrap_or(m.len).max(1)) {
                    if !self.natt_datagram(m.from, d, &tx, &*esp, &mut buf, &mut batch) {
                        return;
                    }
                }
            }
            esp.end_batch(&mut batch);
        }
    }

    fn natt_datagram<H: EspHandler>(
        &self,
        from: SocketAddrV4,
        d: &[u8],
        tx: &ControlQueues,
        esp: &H,
        buf: &mut PacketBuf,
        batch: &mut H::Batch,
    ) -> bool {
        let r = match classify(d) {
            Ok(UdpEncap::Ike(m)) => {
                self.stats.ike.fetch_add(1, Ordering::Relaxed);
                Received::Ike {
                    from,
                    natt: true,
                    message: m.to_vec(),
                }
            }
            Ok(UdpEncap::Esp(p)) => {
                self.stats.esp.fetch_add(1, Ordering::Relaxed);
                let loaded = buf.reset(PacketBuf::DEFAULT_HEADROOM).is_ok()
                    && buf.push_back(p.len()).map(|b| b.copy_from_slice(p)).is_ok();
                if !loaded {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                return esp.handle_esp(from, true, buf, batch);
            }
            Ok(UdpEncap::NatKeepalive) => {
                self.stats.nat_keepalives.fetch_add(1, Ordering::Relaxed);
                Received::NatKeepalive { from }
            }
            Err(_) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        };
        self.deliver(tx, r)
    }

    /// The raw ESP socket: receive a batch, strip each IPv4 header (raw(7) delivers it),
    /// hand ESP to the dataplane in place, end the batch.
    fn read_esp<H: EspHandler>(&self, esp: Arc<H>) {
        let mut rb = crate::batch::RecvBatch::new(RECV_BATCH, PacketBuf::CAPACITY);
        let mut buf = PacketBuf::new();
        let mut batch = esp.batch(0);
        let mut drops = 0;
        loop {
            let n = match rb.recv(&self.esp) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!("raw ESP receive: {e}");
                    continue;
                }
            };
            self.stats.recv_calls.fetch_add(1, Ordering::Relaxed);
            self.note_kernel_drops(&mut drops, rb.kernel_drops);
            for i in 0..n {
                let Some((_, pkt)) = rb.get(i) else { continue };
                let Some((from, payload)) =
                    esp_from_raw(pkt).filter(|(_, p)| p.len() >= dmvpn_wire::esp::HEADER_LEN)
                else {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let loaded = buf.reset(PacketBuf::DEFAULT_HEADROOM).is_ok()
                    && buf
                        .push_back(payload.len())
                        .map(|b| b.copy_from_slice(payload))
                        .is_ok();
                if !loaded {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                self.stats.esp.fetch_add(1, Ordering::Relaxed);
                if !esp.handle_esp(SocketAddrV4::new(from, 0), false, &mut buf, &mut batch) {
                    return;
                }
            }
            esp.end_batch(&mut batch);
        }
    }
}

/// Where received ESP goes. The daemon's dataplane opens it in place in the reader thread and
/// writes the inner packets to the TUN device once per batch; the demultiplexer's own tests
/// hand it to a channel instead ([`EspToChannel`]).
pub trait EspHandler: Send + Sync + 'static {
    /// Per-reader state for one batch (e.g. the TUN writes it collects).
    type Batch: Send;
    /// The batch state of reader `worker`.
    fn batch(&self, worker: usize) -> Self::Batch;
    /// Handles one ESP packet (starting at the SPI) from `from` (port 0 for raw ESP). Returns
    /// false when the receiver is gone and the reader should stop.
    fn handle_esp(
        &self,
        from: SocketAddrV4,
        encap: bool,
        buf: &mut PacketBuf,
        batch: &mut Self::Batch,
    ) -> bool;
    /// The reader's batch is done: flush what it collected.
    fn end_batch(&self, batch: &mut Self::Batch);
}

/// Forwards ESP as [`Received::Esp`] on a channel (for tests of the demultiplexer).
#[derive(Debug)]
pub struct EspToChannel(pub mpsc::Sender<Received>);

impl EspHandler for EspToChannel {
    type Batch = ();
    fn batch(&self, _worker: usize) {}
    fn handle_esp(&self, from: SocketAddrV4, encap: bool, buf: &mut PacketBuf, _: &mut ()) -> bool {
        !matches!(
            self.0.try_send(Received::Esp {
                from,
                encap,
                packet: buf.as_slice().to_vec(),
            }),
            Err(mpsc::error::TrySendError::Closed(_))
        )
    }
    fn end_batch(&self, _: &mut ()) {}
}

/// A datagram from the raw ESP socket: raw(7) delivers the IPv4 header (RFC 791 §3.1) too;
/// returns the source address and the ESP packet behind the header.
pub fn esp_from_raw(pkt: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    let ip = Ipv4Packet::new_checked(pkt).ok()?;
    let payload = pkt.get(ip.header_len()..usize::from(ip.total_len()))?;
    Some((ip.src_addr(), payload))
}

/// The local address the kernel would use toward `peer`: a connected UDP socket's local address
/// (connect(2) on UDP sends nothing, it only does the route lookup). With `interface`, the
/// lookup is restricted to that device like the underlay sockets.
pub fn local_address_for(peer: Ipv4Addr, interface: Option<&str>) -> io::Result<Ipv4Addr> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(dev) = interface {
        s.bind_device(Some(dev.as_bytes()))?;
    }
    s.connect(&SocketAddr::V4(SocketAddrV4::new(peer, IKE_PORT)).into())?;
    match s.local_addr()?.as_socket() {
        Some(SocketAddr::V4(a)) => Ok(*a.ip()),
        _ => Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no IPv4 route to peer",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_esp_header_strip() {
        let mut p = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 50, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
        ];
        p.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let (src, payload) = esp_from_raw(&p).unwrap();
        assert_eq!(src, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(payload, &[1, 2, 3, 4, 5, 6, 7, 8]);
        p[0] = 0x46; // options claimed but missing
        assert_eq!(esp_from_raw(&p[..22]), None);
        assert_eq!(esp_from_raw(&[0x60; 40]), None);
        assert_eq!(esp_from_raw(&[0x44; 40]), None);
    }

    #[test]
    fn only_new_sa_requests_take_the_sa_init_queue() {
        // Header: SPIi, SPIr, next payload, version, exchange, flags, message id, length.
        let header = |spi_r: u64, exchange: u8, flags: u8| {
            let mut h = Vec::new();
            h.extend_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
            h.extend_from_slice(&spi_r.to_be_bytes());
            h.extend_from_slice(&[33, 0x20, exchange, flags]);
            h.extend_from_slice(&[0; 8]);
            h
        };
        assert!(opens_ike_sa(&header(0, 34, 0x08)));
        // The responder's answer (cookie or error notifies keep SPIr zero), IKE_AUTH, and
        // anything on an SA we hold go with the established peers' IKE.
        assert!(!opens_ike_sa(&header(0, 34, 0x20)));
        assert!(!opens_ike_sa(&header(7, 34, 0x08)));
        assert!(!opens_ike_sa(&header(7, 35, 0x08)));
        assert!(!opens_ike_sa(&header(7, 37, 0x00)));
        assert!(!opens_ike_sa(&header(0, 34, 0x08)[..18]));
    }
}
