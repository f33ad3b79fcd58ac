//! Batched and offloaded datagram I/O on the underlay sockets, through nix's safe wrappers of
//! the system calls (dmvpnd itself has no `unsafe`): `recvmmsg(2)` with UDP GRO (`UDP_GRO`,
//! udp(7)) so one call returns many ESP-in-UDP datagrams, coalesced by the kernel; one
//! `sendmsg(2)` with `UDP_SEGMENT` (GSO) for a run of equal-size datagrams to one peer;
//! `sendmmsg(2)` for raw ESP, which has no GSO; and socket buffers sized for bursts
//! (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` where CAP_NET_ADMIN allows, socket(7)), with the
//! kernel's drop counter (`SO_RXQ_OVFL`) read from every batch.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmmsg,
    sendmsg, setsockopt, sockopt,
};

/// Largest datagram GRO hands us at once (and the most a GSO send may carry): 64 KiB.
pub const GRO_BUFFER: usize = 65536;
/// Most segments one GSO send may carry (the kernel's UDP_MAX_SEGMENTS).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Most payload bytes one GSO send may carry: the UDP length field's 64 KiB less room for
/// the headers.
pub const GSO_MAX_BYTES: usize = 65000;
/// Messages per `sendmmsg` call (the headers for them are allocated once per thread).
const SEND_CHUNK: usize = 64;

/// Requests `bytes` of receive and send buffer, forcing past `rmem_max`/`wmem_max` when the
/// process has CAP_NET_ADMIN; returns what the kernel granted (it reports twice the request,
/// socket(7)).
pub fn set_buffers(fd: &impl AsFd, bytes: usize) -> (usize, usize) {
    if setsockopt(fd, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(fd, sockopt::RcvBuf, &bytes);
    }
    if setsockopt(fd, sockopt::SndBufForce, &bytes).is_err() {
        let _ = setsockopt(fd, sockopt::SndBuf, &bytes);
    }
    let rcv = nix::sys::socket::getsockopt(fd, sockopt::RcvBuf).unwrap_or(0);
    let snd = nix::sys::socket::getsockopt(fd, sockopt::SndBuf).unwrap_or(0);
    (rcv, snd)
}

/// Asks the kernel to coalesce received UDP datagrams of one flow (UDP_GRO, Linux 5.0).
pub fn enable_gro(fd: &impl AsFd) -> bool {
    setsockopt(fd, sockopt::UdpGroSegment, &true).is_ok()
}

/// Asks for the socket's drop counter on every received datagram.
pub fn enable_drop_counter(fd: &impl AsFd) -> bool {
    setsockopt(fd, sockopt::RxqOvfl, &1).is_ok()
}

/// One received message: its length in the buffer, the sender, and the GRO segment size when
/// the kernel coalesced several datagrams of that size (the last may be shorter).
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddrV4,
    pub segment: Option<usize>,
}

/// Buffers and headers for `recvmmsg`, allocated once per reader thread.
pub struct RecvBatch {
    headers: MultiHeaders<SockaddrIn>,
    bufs: Vec<Vec<u8>>,
    meta: Vec<Received>,
    /// The socket's drop count (SO_RXQ_OVFL) as last reported.
    pub kernel_drops: u32,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("messages", &self.bufs.len())
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// Room for `messages` messages of up to `size` bytes each.
    pub fn new(messages: usize, size: usize) -> Self {
        let cmsg = nix::cmsg_space!(libc::c_int, u32);
        RecvBatch {
            headers: MultiHeaders::preallocate(messages, Some(cmsg)),
            bufs: vec![vec![0u8; size]; messages],
            meta: Vec::with_capacity(messages),
            kernel_drops: 0,
        }
    }

    /// Blocks until at least one message arrives; returns how many did.
    pub fn recv(&mut self, fd: &impl AsRawFd) -> io::Result<usize> {
        self.meta.clear();
        // The kernel shrinks each header's msg_controllen to what the last message used, and
        // nix's recvmmsg does not restore it: without fresh headers a later message whose
        // control data is larger (a GRO segment size beside the drop counter) would come back
        // with it truncated, and a coalesced run would be taken for one datagram.
        self.headers =
            MultiHeaders::preallocate(self.bufs.len(), Some(nix::cmsg_space!(libc::c_int, u32)));
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let results = recvmmsg(
            fd.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )
        .map_err(io::Error::from)?;
        for r in results {
            let mut segment = None;
            let mut truncated = false;
            match r.cmsgs() {
                Err(_) => truncated = true,
                Ok(cmsgs) => {
                    for c in cmsgs {
                        match c {
                            ControlMessageOwned::UdpGroSegments(s) if s > 0 => {
                                segment = usize::try_from(s).ok();
                            }
                            ControlMessageOwned::RxqOvfl(d) => self.kernel_drops = d,
                            _ => {}
                        }
                    }
                }
            }
            let from = r.address.map_or(
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                |a: SockaddrIn| SocketAddrV4::new(a.ip(), a.port()),
            );
            self.meta.push(Received {
                // Without its control data a coalesced message cannot be split: drop it.
                len: if truncated { 0 } else { r.bytes },
                from,
                segment,
            });
        }
        Ok(self.meta.len())
    }

    /// Message `i` of the last `recv`: what arrived and its bytes.
    pub fn get(&self, i: usize) -> Option<(Received, &[u8])> {
        let m = *self.meta.get(i)?;
        let b = self.bufs.get(i)?.get(..m.len)?;
        Some((m, b))
    }
}

/// Sends `datagrams`, a run of `segment` bytes each (the last may be shorter), to `to` with
/// one GSO send (UDP_SEGMENT): the kernel gathers them from their buffers and cuts the
/// payload at `segment` bytes again, so no copy is made to lay them back to back.
pub fn send_gso(
    fd: &impl AsRawFd,
    to: SocketAddrV4,
    datagrams: &[IoSlice<'_>],
    segment: u16,
) -> io::Result<()> {
    let addr = SockaddrIn::from(to);
    let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
    sendmsg(
        fd.as_raw_fd(),
        datagrams,
        &cmsg,
        MsgFlags::empty(),
        Some(&addr),
    )
    .map(drop)
    .map_err(io::Error::from)
}

/// Preallocated headers for `sendmmsg`.
pub struct SendBatch {
    headers: MultiHeaders<SockaddrIn>,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch").finish_non_exhaustive()
    }
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl SendBatch {
    pub fn new() -> Self {
        SendBatch {
            headers: MultiHeaders::preallocate(SEND_CHUNK, None),
        }
    }

    /// Sends each packet to its address, up to 64 per system call, from arrays on the stack
    /// (nothing allocated per batch); `calls` counts the system calls. Stops at the first
    /// error, or when the kernel takes nothing.
    pub fn send<'a>(
        &mut self,
        fd: &impl AsRawFd,
        packets: impl IntoIterator<Item = (&'a [u8], SocketAddrV4)>,
        calls: &AtomicU64,
    ) -> io::Result<()> {
        let mut packets = packets.into_iter();
        loop {
            let mut slices = [[IoSlice::new(&[])]; SEND_CHUNK];
            let mut addrs = [None::<SockaddrIn>; SEND_CHUNK];
            let mut k = 0;
            for ((slice, addr), (packet, to)) in slices
                .iter_mut()
                .zip(addrs.iter_mut())
                .zip(packets.by_ref())
            {
                *slice = [IoSlice::new(packet)];
                *addr = Some(SockaddrIn::from(to));
                k += 1;
            }
            if k == 0 {
                return Ok(());
            }
            let mut start = 0;
            while start < k {
                let (Some(s), Some(a)) = (slices.get(start..k), addrs.get(start..k)) else {
                    break;
                };
                calls.fetch_add(1, Ordering::Relaxed);
                let cmsgs: [ControlMessage<'_>; 0] = [];
                let sent = sendmmsg(
                    fd.as_raw_fd(),
                    &mut self.headers,
                    s.iter(),
                    a,
                    cmsgs,
                    MsgFlags::empty(),
                )
                .map_err(io::Error::from)?
                .count();
                if sent == 0 {
                    return Ok(());
                }
                start += sent;
            }
            if k < SEND_CHUNK {
                return Ok(());
            }
        }
    }
}
