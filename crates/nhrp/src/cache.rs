//! The NHRP cache (RFC 2332 §5.2.3 registrations with their holding time,
//! §5.2.2 resolved shortcuts) as the operator sees it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

// Kept at their old paths (`cache::Counters`, `cache::NhsStatus`, …).
pub use crate::counters::{Counters, DropReason};
pub use crate::status::{NhsState, NhsStatus};

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
