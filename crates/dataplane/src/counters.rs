//! Dataplane counters: packets and bytes each way and drops by reason, as atomics so the
//! operator tool reads them while packets flow.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why the dataplane dropped a packet. Counted, never logged per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not an IPv4 packet (this tunnel carries IPv4).
    NotIpv4,
    /// No NHRP mapping for the next hop (hub), or no NHS (spoke).
    NoMapping,
    /// Buffer lacked head- or tailroom.
    NoRoom,
    /// Outbound SA out of sequence numbers; it must be rekeyed (RFC 4303 §3.3.3).
    SequenceExhausted,
    /// No inbound SA for the SPI.
    UnknownSpi,
    /// Refused by the anti-replay window (RFC 4303 §3.4.3).
    Replay,
    /// ICV did not verify (RFC 4303 §3.4.4).
    AuthFailed,
    /// Truncated or malformed ESP.
    MalformedEsp,
    /// ESP next header was not GRE (47).
    NotGre,
    /// GRE without the key bit, with another key, or with flags we never send.
    GreKey,
    /// GRE protocol type other than IPv4 or NHRP.
    UnsupportedProtocol,
    /// The queue of packets waiting for an SA was full.
    SaQueueFull,
    /// Waited for an SA whose setup failed or timed out, or whose peer died (DPD).
    IkeFailed,
    /// The packet workers' channel to the control plane was full (packets that need an SA,
    /// NHRP, redirect hints).
    SlowPathFull,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 14] = [
        Self::NotIpv4,
        Self::NoMapping,
        Self::NoRoom,
        Self::SequenceExhausted,
        Self::UnknownSpi,
        Self::Replay,
        Self::AuthFailed,
        Self::MalformedEsp,
        Self::NotGre,
        Self::GreKey,
        Self::UnsupportedProtocol,
        Self::SaQueueFull,
        Self::IkeFailed,
        Self::SlowPathFull,
    ];

    /// A stable snake_case name for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::NotIpv4 => "not_ipv4",
            Self::NoMapping => "no_mapping",
            Self::NoRoom => "no_room",
            Self::SequenceExhausted => "sequence_exhausted",
            Self::UnknownSpi => "unknown_spi",
            Self::Replay => "replay",
            Self::AuthFailed => "auth_failed",
            Self::MalformedEsp => "malformed_esp",
            Self::NotGre => "not_gre",
            Self::GreKey => "gre_key",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::SaQueueFull => "sa_queue_full",
            Self::IkeFailed => "ike_failed",
            Self::SlowPathFull => "slow_path_full",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Interface counters, shared by every snapshot of the tables.
#[derive(Debug, Default)]
pub struct Counters {
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl Counters {
    pub(crate) fn tx(&self, bytes: usize) {
        self.tx_packets.fetch_add(1, Ordering::Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn rx(&self, bytes: usize) {
        self.rx_packets.fetch_add(1, Ordering::Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a drop (also used by the daemon for drops it decides, e.g. a full queue).
    pub fn count_drop(&self, reason: DropReason) {
        if let Some(c) = self.drops.get(reason.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops so far for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops
            .get(reason.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// (packets, bytes) sent: inner packets sealed and handed to the underlay, and their inner
    /// bytes (before GRE and ESP), as the receive side counts them.
    pub fn tx_totals(&self) -> (u64, u64) {
        (
            self.tx_packets.load(Ordering::Relaxed),
            self.tx_bytes.load(Ordering::Relaxed),
        )
    }

    /// (packets, bytes) received: inner packets that passed ESP and GRE, and their inner bytes.
    pub fn rx_totals(&self) -> (u64, u64) {
        (
            self.rx_packets.load(Ordering::Relaxed),
            self.rx_bytes.load(Ordering::Relaxed),
        )
    }
}
