//! Underlay (NBMA) sockets: IKE on UDP 500 and 4500 (RFC 7296 §2.23), ESP in UDP on 4500 told
//! apart from IKE by the non-ESP marker and from NAT keepalives by their single 0xFF byte
//! (RFC 3948 §2.2, §2.3), ESP without NAT on a raw IP protocol 50 socket (raw(7), RFC 4303), and
//! the local NBMA address from the route to a peer.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use dmvpn_wire::PacketBuf;

pub const IKE_PORT: u16 = 500;
pub const NATT_PORT: u16 = 4500;
/// RFC 3948 §2.2: IKE on port 4500 is preceded by four zero bytes, where ESP has its SPI
/// (SPI 0 is reserved, RFC 4303 §2.1).
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// RFC 3948 §2.3: a NAT keepalive is one octet 0xFF.
pub const NAT_KEEPALIVE: [u8; 1] = [0xFF];
const IPPROTO_ESP: i32 = 50;
/// ESP header (SPI + sequence, RFC 4303 §2) is the least an ESP packet can be.
const ESP_MIN: usize = 8;
// Datagrams are read into a `PacketBuf` (9 KiB, jumbo frames): the kernel reassembles ESP
// fragments (the hub clears DF) before our sockets see them; anything longer is truncated by
// recvfrom and then fails ESP authentication, a counted drop.

/// What a datagram on UDP 4500 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NattPayload<'a> {
    /// An IKE message, marker removed.
    Ike(&'a [u8]),
    NatKeepalive,
    /// An ESP packet starting at its SPI.
    Esp(&'a [u8]),
    /// Too short to be ESP and neither IKE nor a keepalive.
    Malformed,
}

/// Demultiplexes a UDP 4500 payload (RFC 3948 §2).
pub fn classify_natt(payload: &[u8]) -> NattPayload<'_> {
    match payload {
        [0xFF] => NattPayload::NatKeepalive,
        [0, 0, 0, 0, ike @ ..] => NattPayload::Ike(ike),
        esp if esp.len() >= ESP_MIN => NattPayload::Esp(esp),
        _ => NattPayload::Malformed,
    }
}

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

/// Counters the reader tasks keep; drops are counted, never logged per packet.
#[derive(Debug, Default)]
pub struct UnderlayStats {
    pub ike: AtomicU64,
    pub esp: AtomicU64,
    pub nat_keepalives: AtomicU64,
    pub malformed: AtomicU64,
    /// The control plane's channel was full.
    pub queue_full: AtomicU64,
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
}

impl UnderlayConfig {
    pub fn from_config(u: &dmvpn_config::Underlay) -> Self {
        UnderlayConfig {
            bind: u.local_address.unwrap_or(Ipv4Addr::UNSPECIFIED),
            interface: u.interface.clone(),
            ike_port: IKE_PORT,
            natt_port: NATT_PORT,
        }
    }
}

/// The open underlay sockets. Shared (`Arc`) between reader tasks and senders.
#[derive(Debug)]
pub struct Underlay {
    ike: UdpSocket,
    natt: UdpSocket,
    esp: UdpSocket,
    pub stats: UnderlayStats,
}

fn udp_socket(cfg: &UnderlayConfig, port: u16) -> Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(dev) = &cfg.interface {
        s.bind_device(Some(dev.as_bytes()))
            .with_context(|| format!("binding UDP {port} to interface {dev}"))?;
    }
    // Lets a restarted daemon rebind at once; dmvpnd never shares the ports (no SO_REUSEPORT).
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    let addr = SocketAddrV4::new(cfg.bind, port);
    s.bind(&SocketAddr::V4(addr).into())
        .with_context(|| format!("binding UDP {addr}"))?;
    Ok(UdpSocket::from_std(StdUdpSocket::from(s))?)
}

/// The raw socket is driven through tokio's `UdpSocket`: both are datagram sockets on which
/// tokio only issues recvfrom(2)/sendto(2), and this avoids registering a foreign fd with
/// `AsyncFd`, whose safe constructor tokio deprecated for lack of I/O safety.
fn esp_socket(cfg: &UnderlayConfig) -> Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_ESP)))
        .context("opening raw IP protocol 50 (ESP) socket (needs CAP_NET_RAW)")?;
    if let Some(dev) = &cfg.interface {
        s.bind_device(Some(dev.as_bytes()))
            .with_context(|| format!("binding the ESP socket to interface {dev}"))?;
    }
    s.set_nonblocking(true)?;
    if !cfg.bind.is_unspecified() {
        s.bind(&SocketAddr::V4(SocketAddrV4::new(cfg.bind, 0)).into())
            .with_context(|| format!("binding the ESP socket to {}", cfg.bind))?;
    }
    Ok(UdpSocket::from_std(StdUdpSocket::from(s))?)
}

impl Underlay {
    /// Opens UDP 500, UDP 4500 and the raw ESP socket. Needs CAP_NET_BIND_SERVICE and CAP_NET_RAW.
    pub fn open(cfg: &UnderlayConfig) -> Result<Arc<Self>> {
        Ok(Arc::new(Underlay {
            ike: udp_socket(cfg, cfg.ike_port)?,
            natt: udp_socket(cfg, cfg.natt_port)?,
            esp: esp_socket(cfg)?,
            stats: UnderlayStats::default(),
        }))
    }

    pub fn ike_local_addr(&self) -> io::Result<SocketAddr> {
        self.ike.local_addr()
    }

    pub fn natt_local_addr(&self) -> io::Result<SocketAddr> {
        self.natt.local_addr()
    }

    /// Sends an IKE message; on the NAT-T port it gets the non-ESP marker.
    pub async fn send_ike(&self, to: SocketAddrV4, natt: bool, message: &[u8]) -> io::Result<()> {
        if natt {
            let mut buf = Vec::with_capacity(NON_ESP_MARKER.len() + message.len());
            buf.extend_from_slice(&NON_ESP_MARKER);
            buf.extend_from_slice(message);
            self.natt.send_to(&buf, to).await.map(drop)
        } else {
            self.ike.send_to(message, to).await.map(drop)
        }
    }

    /// Sends an ESP packet (starting at the SPI): in UDP to `to` when `encap`, else as IP
    /// protocol 50 to `to`'s address (the kernel builds the IP header; DF follows the route).
    pub async fn send_esp(&self, to: SocketAddrV4, encap: bool, packet: &[u8]) -> io::Result<()> {
        if encap {
            return self.natt.send_to(packet, to).await.map(drop);
        }
        self.esp
            .send_to(packet, SocketAddrV4::new(*to.ip(), 0))
            .await
            .map(drop)
    }

    /// RFC 3948 §4: keeps the NAT mapping for port 4500 alive.
    pub async fn send_nat_keepalive(&self, to: SocketAddrV4) -> io::Result<()> {
        self.natt.send_to(&NAT_KEEPALIVE, to).await.map(drop)
    }

    /// Starts one reader task per socket. IKE and keepalives go to `tx` (the control plane);
    /// ESP goes to `esp` inside the reader task, so the per-packet path never waits on the
    /// control plane. A full channel drops the datagram and counts it.
    pub fn spawn_readers<H: EspHandler>(
        self: &Arc<Self>,
        tx: mpsc::Sender<Received>,
        esp: Arc<H>,
    ) -> Vec<JoinHandle<()>> {
        let ike = {
            let this = Arc::clone(self);
            let tx = tx.clone();
            let esp = esp.clone();
            tokio::spawn(async move { this.read_udp(false, tx, esp).await })
        };
        let natt = {
            let this = Arc::clone(self);
            let tx = tx.clone();
            let esp = esp.clone();
            tokio::spawn(async move { this.read_udp(true, tx, esp).await })
        };
        let raw = {
            let this = Arc::clone(self);
            tokio::spawn(async move { this.read_esp(esp).await })
        };
        vec![ike, natt, raw]
    }

    fn deliver(&self, tx: &mpsc::Sender<Received>, r: Received) -> bool {
        match tx.try_send(r) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    async fn read_udp<H: EspHandler>(&self, natt: bool, tx: mpsc::Sender<Received>, esp: Arc<H>) {
        let sock = if natt { &self.natt } else { &self.ike };
        // One buffer for the life of the task: ESP is opened in place in it.
        let mut buf = PacketBuf::new();
        loop {
            if buf.reset(PacketBuf::DEFAULT_HEADROOM).is_err() {
                return;
            }
            let (n, from) = match sock.recv_from(buf.spare_back_mut()).await {
                Ok(v) => v,
                Err(e) => {
                    // ICMP errors from earlier sends surface here (ECONNREFUSED…); keep reading.
                    tracing::debug!(natt, "underlay UDP receive: {e}");
                    continue;
                }
            };
            let SocketAddr::V4(from) = from else { continue };
            if buf.push_back(n).is_err() {
                continue;
            }
            let r = if natt {
                match classify_natt(buf.as_slice()) {
                    NattPayload::Ike(m) => {
                        self.stats.ike.fetch_add(1, Ordering::Relaxed);
                        Received::Ike {
                            from,
                            natt: true,
                            message: m.to_vec(),
                        }
                    }
                    NattPayload::Esp(_) => {
                        self.stats.esp.fetch_add(1, Ordering::Relaxed);
                        if !esp.handle_esp(from, true, &mut buf).await {
                            return;
                        }
                        continue;
                    }
                    NattPayload::NatKeepalive => {
                        self.stats.nat_keepalives.fetch_add(1, Ordering::Relaxed);
                        Received::NatKeepalive { from }
                    }
                    NattPayload::Malformed => {
                        self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            } else {
                self.stats.ike.fetch_add(1, Ordering::Relaxed);
                Received::Ike {
                    from,
                    natt: false,
                    message: buf.as_slice().to_vec(),
                }
            };
            if !self.deliver(&tx, r) {
                return;
            }
        }
    }

    async fn read_esp<H: EspHandler>(&self, esp: Arc<H>) {
        let mut buf = PacketBuf::new();
        loop {
            if buf.reset(PacketBuf::DEFAULT_HEADROOM).is_err() {
                return;
            }
            let n = match self.esp.recv_from(buf.spare_back_mut()).await {
                Ok((n, _)) => n,
                Err(e) => {
                    tracing::debug!("raw ESP receive: {e}");
                    continue;
                }
            };
            if buf.push_back(n).is_err() {
                continue;
            }
            // raw(7): an IPv4 raw socket receives the IP header too.
            let Some((from, header_len)) = strip_ipv4_header(buf.as_slice())
                .map(|(from, esp)| (from, n - esp.len()))
                .filter(|(_, h)| n - h >= ESP_MIN)
            else {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if buf.pull_front(header_len).is_err() {
                continue;
            }
            self.stats.esp.fetch_add(1, Ordering::Relaxed);
            if !esp
                .handle_esp(SocketAddrV4::new(from, 0), false, &mut buf)
                .await
            {
                return;
            }
        }
    }
}

/// Where received ESP goes. The daemon's dataplane opens it in place in the reader task; the
/// demultiplexer's own tests hand it to a channel instead ([`EspToChannel`]).
pub trait EspHandler: Send + Sync + 'static {
    /// Handles one ESP packet (starting at the SPI) from `from` (port 0 for raw ESP). Returns
    /// false when the receiver is gone and the reader should stop.
    fn handle_esp(
        &self,
        from: SocketAddrV4,
        encap: bool,
        buf: &mut PacketBuf,
    ) -> impl std::future::Future<Output = bool> + Send;
}

/// Forwards ESP as [`Received::Esp`] on a channel (for tests of the demultiplexer).
#[derive(Debug)]
pub struct EspToChannel(pub mpsc::Sender<Received>);

impl EspHandler for EspToChannel {
    async fn handle_esp(&self, from: SocketAddrV4, encap: bool, buf: &mut PacketBuf) -> bool {
        !matches!(
            self.0.try_send(Received::Esp {
                from,
                encap,
                packet: buf.as_slice().to_vec(),
            }),
            Err(mpsc::error::TrySendError::Closed(_))
        )
    }
}

/// Splits a received IPv4 datagram (RFC 791 §3.1) into source address and payload.
pub fn strip_ipv4_header(pkt: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    let first = *pkt.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0F) * 4;
    if ihl < 20 {
        return None;
    }
    let src: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
    Some((Ipv4Addr::from(src), pkt.get(ihl..)?))
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
    fn natt_demux() {
        assert_eq!(classify_natt(&[0xFF]), NattPayload::NatKeepalive);
        assert_eq!(
            classify_natt(&[0, 0, 0, 0, 1, 2, 3]),
            NattPayload::Ike(&[1, 2, 3])
        );
        assert_eq!(classify_natt(&[0, 0, 0, 0]), NattPayload::Ike(&[]));
        let esp = [0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1, 9];
        assert_eq!(classify_natt(&esp), NattPayload::Esp(&esp));
        assert_eq!(classify_natt(&[]), NattPayload::Malformed);
        assert_eq!(classify_natt(&[0xFF, 0xFF]), NattPayload::Malformed);
        assert_eq!(classify_natt(&[0, 0, 0]), NattPayload::Malformed);
        assert_eq!(
            classify_natt(&[1, 2, 3, 4, 5, 6, 7]),
            NattPayload::Malformed
        );
    }

    #[test]
    fn ipv4_header_strip() {
        let mut p = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 50, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
        ];
        p.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let (src, payload) = strip_ipv4_header(&p).unwrap();
        assert_eq!(src, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(payload, &[1, 2, 3, 4, 5, 6, 7, 8]);
        p[0] = 0x46; // options claimed but missing
        assert_eq!(strip_ipv4_header(&p[..22]), None);
        assert_eq!(strip_ipv4_header(&[0x60; 40]), None);
        assert_eq!(strip_ipv4_header(&[0x44; 40]), None);
    }
}
