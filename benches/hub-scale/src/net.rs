//! The generator's underlay: three sockets for all simulated spokes. UDP 500 and UDP 4500
//! bound to the wildcard address and a raw IP protocol 50 (ESP) socket. Every spoke address
//! is local in the generator's namespace through one `local` route over the whole prefix
//! (`ip route add local 198.18.0.0/15 dev lo`), so no address is configured per spoke; a
//! datagram is sent from its spoke's address with IP_PKTINFO, and a received one is told
//! apart by its destination address (IP_PKTINFO, or the IPv4 header on the raw socket).
//! Three file descriptors whatever N is: no `ulimit -n` to raise.

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};

/// IANA protocol number of ESP.
const IPPROTO_ESP: i32 = 50;
/// Socket buffers: a burst of replies for every setup in flight, with room to spare.
const SOCKET_BUFFER: usize = 16 << 20;

/// Which socket a datagram came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// UDP 500.
    Ike,
    /// UDP 4500 (IKE behind the non-ESP marker, ESP-in-UDP, keepalives).
    NatT,
    /// Raw ESP.
    Esp,
}

/// One received datagram.
#[derive(Debug)]
pub struct Received {
    /// Source (the hub); port 0 for raw ESP.
    pub src: SocketAddrV4,
    /// Destination (a spoke); port 0 for raw ESP.
    pub dst: SocketAddrV4,
    /// Bytes: the UDP payload, or the ESP packet without its IPv4 header.
    pub len: usize,
    /// Offset of the payload in the receive buffer.
    pub offset: usize,
}

/// The sockets.
#[derive(Debug)]
pub struct Underlay {
    ike: Socket,
    natt: Socket,
    esp: Socket,
    /// `--one-address`: one UDP socket per spoke, all on one address, a port each (what a
    /// masquerading NAT in front of N spokes makes of them). Polled with the others each
    /// turn, so this mode is for a few hundred spokes, not for scale.
    per_spoke: Vec<Socket>,
    ike_port: u16,
    natt_port: u16,
    /// Sends that failed (after waiting for room) and were dropped.
    pub send_errors: u64,
}

fn udp_socket(port: u16) -> Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    setsockopt(&s, sockopt::Ipv4PacketInfo, &true)?;
    setsockopt(&s, sockopt::IpFreebind, &true)?;
    buffers(&s)?;
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    s.bind(&addr.into()).with_context(|| {
        format!("bind UDP {port} (is a dmvpnd or IKE daemon running in this namespace?)")
    })?;
    Ok(s)
}

fn buffers(s: &Socket) -> Result<()> {
    // FORCE variants pass net.core.[rw]mem_max (root); plain ones are the fallback.
    if setsockopt(s, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        s.set_recv_buffer_size(SOCKET_BUFFER)?;
    }
    if setsockopt(s, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        s.set_send_buffer_size(SOCKET_BUFFER)?;
    }
    Ok(())
}

fn pktinfo(src: Ipv4Addr) -> libc::in_pktinfo {
    libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(src).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    }
}

impl Underlay {
    /// Opens the sockets on the IKE and NAT-T ports.
    pub fn open(ike_port: u16, natt_port: u16) -> Result<Self> {
        let esp = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_ESP)))
            .context("raw ESP socket (needs root / CAP_NET_RAW)")?;
        esp.set_nonblocking(true)?;
        buffers(&esp)?;
        Ok(Self {
            ike: udp_socket(ike_port)?,
            natt: udp_socket(natt_port)?,
            esp,
            per_spoke: Vec::new(),
            ike_port,
            natt_port,
            send_errors: 0,
        })
    }

    /// Opens one UDP socket per spoke at `addr`, ports `first_port`, `first_port + 1`, ...
    pub fn open_per_spoke(&mut self, addr: Ipv4Addr, first_port: u16, n: u32) -> Result<()> {
        for i in 0..n {
            let port = u16::try_from(u32::from(first_port) + i).context("port range exhausted")?;
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_nonblocking(true)?;
            setsockopt(&s, sockopt::IpFreebind, &true)?;
            s.bind(&SocketAddr::from((addr, port)).into())
                .with_context(|| format!("bind UDP {addr}:{port}"))?;
            self.per_spoke.push(s);
        }
        Ok(())
    }

    /// Sends `bytes` (with the non-ESP marker if `marker`) on spoke `i`'s own socket.
    pub fn send_own(&mut self, i: u32, dst: SocketAddrV4, marker: bool, bytes: &[u8]) {
        let Some(sock) = self.per_spoke.get(i as usize) else {
            self.send_errors += 1;
            return;
        };
        let zero = [0u8; 4];
        let iov_m = [IoSlice::new(&zero), IoSlice::new(bytes)];
        let iov_p = [IoSlice::new(bytes)];
        let iov: &[IoSlice<'_>] = if marker { &iov_m } else { &iov_p };
        let to = SockaddrIn::from(dst);
        let ok = send_retrying(sock, |fd| {
            sendmsg(fd, iov, &[], MsgFlags::MSG_DONTWAIT, Some(&to))
        });
        if !ok {
            self.send_errors += 1;
        }
    }

    /// Spoke sockets with a datagram queued (checked with a zero-timeout poll).
    pub fn ready_own(&self) -> Result<Vec<u32>> {
        if self.per_spoke.is_empty() {
            return Ok(Vec::new());
        }
        let mut fds: Vec<PollFd<'_>> = self
            .per_spoke
            .iter()
            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(fds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.revents().is_some_and(|e| !e.is_empty()))
            .map(|(i, _)| i as u32)
            .collect())
    }

    /// Receives one datagram on spoke `i`'s socket: (source, length).
    pub fn recv_own(&self, i: u32, buf: &mut [u8]) -> Result<Option<(SocketAddrV4, usize)>> {
        let Some(sock) = self.per_spoke.get(i as usize) else {
            return Ok(None);
        };
        match nix::sys::socket::recvfrom::<SockaddrIn>(sock.as_raw_fd(), buf) {
            Ok((n, Some(from))) => Ok(Some((SocketAddrV4::new(from.ip(), from.port()), n))),
            Ok((_, None)) | Err(Errno::EAGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The NAT-T port.
    pub fn natt_port(&self) -> u16 {
        self.natt_port
    }

    /// Sends a UDP datagram from `src` (its port picks the socket) to `dst`; `marker` puts
    /// the four-byte non-ESP marker in front (RFC 3948 §2.2).
    pub fn send_udp(&mut self, src: SocketAddrV4, dst: SocketAddrV4, marker: bool, bytes: &[u8]) {
        let sock = if src.port() == self.natt_port {
            &self.natt
        } else {
            &self.ike
        };
        let zero = [0u8; 4];
        let iov_m = [IoSlice::new(&zero), IoSlice::new(bytes)];
        let iov_p = [IoSlice::new(bytes)];
        let iov: &[IoSlice<'_>] = if marker { &iov_m } else { &iov_p };
        let info = pktinfo(*src.ip());
        let to = SockaddrIn::from(dst);
        let ok = send_retrying(sock, |fd| {
            sendmsg(
                fd,
                iov,
                &[ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::MSG_DONTWAIT,
                Some(&to),
            )
        });
        if !ok {
            self.send_errors += 1;
        }
    }

    /// Sends an ESP packet from `src` to `dst` over raw IP protocol 50.
    pub fn send_esp(&mut self, src: Ipv4Addr, dst: Ipv4Addr, bytes: &[u8]) {
        let info = pktinfo(src);
        let to = SockaddrIn::from(SocketAddrV4::new(dst, 0));
        let iov = [IoSlice::new(bytes)];
        let ok = send_retrying(&self.esp, |fd| {
            sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::MSG_DONTWAIT,
                Some(&to),
            )
        });
        if !ok {
            self.send_errors += 1;
        }
    }

    /// Waits up to `timeout` for any socket to become readable; returns which are.
    pub fn wait(&self, timeout: Duration) -> Result<[bool; 3]> {
        // Rounded up: a deadline 0.3 ms away must not become a busy poll with timeout 0.
        let ms = u16::try_from(timeout.as_micros().div_ceil(1000).min(1000)).unwrap_or(1000);
        let mut fds = [
            PollFd::new(self.ike.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.natt.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.esp.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let r = |f: &PollFd<'_>| f.revents().is_some_and(|e| !e.is_empty());
        Ok([r(&fds[0]), r(&fds[1]), r(&fds[2])])
    }

    /// Receives one datagram from the socket `via` into `buf`; `None` when none is queued.
    pub fn recv(&self, via: Via, buf: &mut [u8]) -> Result<Option<Received>> {
        match via {
            Via::Ike | Via::NatT => {
                let (sock, port) = if via == Via::Ike {
                    (&self.ike, self.ike_port)
                } else {
                    (&self.natt, self.natt_port)
                };
                let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
                let mut iov = [IoSliceMut::new(buf)];
                let msg = match recvmsg::<SockaddrIn>(
                    sock.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(m) => m,
                    Err(Errno::EAGAIN) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                let Some(from) = msg.address else {
                    return Ok(None);
                };
                let mut dst = None;
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::Ipv4PacketInfo(pi) = c {
                        dst = Some(Ipv4Addr::from(u32::from_be(pi.ipi_addr.s_addr)));
                    }
                }
                let Some(dst) = dst else {
                    return Ok(None);
                };
                Ok(Some(Received {
                    src: SocketAddrV4::new(from.ip(), from.port()),
                    dst: SocketAddrV4::new(dst, port),
                    len: msg.bytes,
                    offset: 0,
                }))
            }
            Via::Esp => {
                let n =
                    match nix::sys::socket::recv(self.esp.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT)
                    {
                        Ok(n) => n,
                        Err(Errno::EAGAIN) => return Ok(None),
                        Err(e) => return Err(e.into()),
                    };
                // A raw IPv4 socket hands over the IP header too.
                let Some(pkt) = buf
                    .get(..n)
                    .and_then(|b| dmvpn_wire::Ipv4Packet::new_checked(b).ok())
                else {
                    return Ok(None);
                };
                let (src, dst, hl) = (pkt.src_addr(), pkt.dst_addr(), pkt.header_len());
                Ok(Some(Received {
                    src: SocketAddrV4::new(src, 0),
                    dst: SocketAddrV4::new(dst, 0),
                    len: n.saturating_sub(hl),
                    offset: hl,
                }))
            }
        }
    }
}

/// Sends with `f`; when the socket buffer is full, waits for room (up to 100 ms) and retries
/// a few times. False when the datagram was dropped.
fn send_retrying(sock: &Socket, f: impl Fn(i32) -> nix::Result<usize>) -> bool {
    for _ in 0..20 {
        match f(sock.as_raw_fd()) {
            Ok(_) => return true,
            Err(Errno::EAGAIN | Errno::ENOBUFS) => {
                let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::from(5u8));
            }
            Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    false
}
