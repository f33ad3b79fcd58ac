//! The NHRP cache (RFC 2332 §5.2.3 registrations with their holding time,
//! §5.2.2 resolved shortcuts), operator-visible NHS state and counters.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::codes::PacketType;

/// How an entry got into the cache (the `show ip nhrp` type column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    /// Configured mapping.
    Static,
    /// Learned from a registration (hub) or a resolution request (spoke).
    Dynamic,
    /// A configured next hop server.
    Nhs,
    /// A resolved phase 3 shortcut.
    Shortcut,
    /// This router's own address.
    Local,
}

/// Flags shown per entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryFlags {
    /// Registered with the unique flag: a different NBMA is refused until expiry.
    pub unique: bool,
    /// Came from a registration.
    pub registered: bool,
    /// Used by the data plane since the last refresh.
    pub used: bool,
    /// The peer is behind NAT (claimed NBMA differs from the observed one).
    pub nat: bool,
}

/// One cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// Type.
    pub kind: EntryKind,
    /// Protocol prefix.
    pub protocol_addr: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Protocol next hop (the peer's tunnel address).
    pub next_hop: IpAddr,
    /// NBMA address as the peer claims it.
    pub nbma: IpAddr,
    /// NBMA address packets are sent to, when it differs (NAT).
    pub post_nat_nbma: Option<IpAddr>,
    /// Flags.
    pub flags: EntryFlags,
    /// When it was created.
    pub created: Instant,
    /// When it expires; `None` never.
    pub expires: Option<Instant>,
    /// Holding time granted.
    pub holding_time: Duration,
    /// Request id of the registration or resolution that created it.
    pub request_id: u32,
    /// Spoke: when to re-resolve a used shortcut.
    pub(crate) refresh_at: Option<Instant>,
}

impl CacheEntry {
    /// The NBMA address packets to this entry go to.
    pub fn effective_nbma(&self) -> IpAddr {
        self.post_nat_nbma.unwrap_or(self.nbma)
    }

    /// True while the entry has not expired.
    pub fn is_live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// Registration state of one NHS as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NhsState {
    /// Waiting for the daemon to bring up the IPsec SA.
    WaitingForSa,
    /// Registration sent, no reply yet, not registered.
    Registering,
    /// Registered (possibly with a refresh outstanding).
    Up,
}

/// One NHS as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NhsStatus {
    /// NHS tunnel address, configured or learned.
    pub protocol_addr: Option<IpAddr>,
    /// NHS NBMA address.
    pub nbma_addr: IpAddr,
    /// Multicast replication on.
    pub multicast: bool,
    /// State.
    pub state: NhsState,
    /// Registration expiry when up.
    pub expires: Option<Instant>,
    /// Current retransmission wait.
    pub retry_wait: Duration,
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Did not decode.
    Malformed,
    /// Checksum or packet size wrong.
    Checksum,
    /// Authentication missing or wrong.
    AuthFailure,
    /// Not IPv4 NBMA/protocol.
    UnsupportedAddressFamily,
    /// Hop count would reach zero when forwarding.
    HopCountExceeded,
    /// Own address found in a transit record.
    LoopDetected,
    /// A reply matching no outstanding request.
    UnexpectedReply,
    /// A packet type the engine does not handle in its role.
    UnhandledType,
    /// Per-NBMA hold queue full while waiting for an SA.
    QueueFull,
    /// Queued packet outlived its wait for an SA.
    QueueExpired,
    /// Traffic indication suppressed by the rate limit.
    RateLimited,
    /// Nothing to answer or forward to.
    NoRoute,
    /// A data packet header that is not IPv4.
    BadInnerPacket,
    /// A packet the codec refused to encode.
    EncodeFailed,
}

/// Packet counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Received per packet type (index = type, 0 = unknown types).
    pub rx: [u64; 9],
    /// Sent per packet type (index = type).
    pub tx: [u64; 9],
    /// Authentication failures.
    pub auth_failures: u64,
    /// Drops by reason.
    pub drops: BTreeMap<DropReason, u64>,
}

impl Counters {
    fn slot(t: PacketType) -> usize {
        if (1..=8).contains(&t.0) {
            usize::from(t.0)
        } else {
            0
        }
    }

    pub(crate) fn count_rx(&mut self, t: PacketType) {
        if let Some(c) = self.rx.get_mut(Self::slot(t)) {
            *c += 1;
        }
    }

    pub(crate) fn count_tx(&mut self, t: PacketType) {
        if let Some(c) = self.tx.get_mut(Self::slot(t)) {
            *c += 1;
        }
    }

    pub(crate) fn drop(&mut self, r: DropReason) {
        *self.drops.entry(r).or_default() += 1;
    }

    /// Received packets of a type.
    pub fn received(&self, t: PacketType) -> u64 {
        self.rx.get(Self::slot(t)).copied().unwrap_or(0)
    }

    /// Sent packets of a type.
    pub fn sent(&self, t: PacketType) -> u64 {
        self.tx.get(Self::slot(t)).copied().unwrap_or(0)
    }

    /// Drops for a reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops.get(&r).copied().unwrap_or(0)
    }
}
