//! Packet counters and drop reasons (`show ip nhrp traffic`).

use std::collections::BTreeMap;

use crate::codes::PacketType;

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
    /// A request whose source the sending peer does not hold: not its registration, an NHS's
    /// or our own address (one authenticated spoke claiming another's identity); or a
    /// registration for an address another live peer holds.
    SourceMismatch,
    /// A purge for entries another NBMA address registered or answered for (RFC 2332 §5.2.5:
    /// a purge comes from the station that provided the binding).
    NotRegistrant,
    /// A resolution reply refused as a shortcut: a prefix wider than
    /// `Config::min_shortcut_prefix_len`, one covering an NHS's address or ours, or a next hop
    /// outside the tunnel prefix, our own or an NHS's.
    ShortcutRefused,
    /// A registration refused because its NBMA address already holds
    /// `Config::max_registrations_per_nbma` addresses.
    NbmaLimit,
    /// More CIEs in one packet than `engine::MAX_CIES_PER_PACKET`.
    TooManyCies,
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
    /// Registrations refused and entries not learned because the cache held
    /// `Config::max_cache_entries` entries.
    pub cache_full: u64,
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
