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
    tx: Direction,
    rx: Direction,
    drops: [AtomicU64; DropReason::ALL.len()],
}

/// One direction's packets and their two sizes.
#[derive(Debug, Default)]
struct Direction {
    packets: AtomicU64,
    inner_bytes: AtomicU64,
    esp_bytes: AtomicU64,
}

impl Direction {
    fn count(&self, inner: usize, esp: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.inner_bytes.fetch_add(inner as u64, Ordering::Relaxed);
        self.esp_bytes.fetch_add(esp as u64, Ordering::Relaxed);
    }

    fn totals(&self) -> Totals {
        Totals {
            packets: self.packets.load(Ordering::Relaxed),
            inner_bytes: self.inner_bytes.load(Ordering::Relaxed),
            esp_bytes: self.esp_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Packets through the tunnel one way, and their bytes counted two ways: the inner packet
/// (what the TUN device reads or is given, without GRE and ESP) and the ESP packet that
/// carried it (header to ICV, without the IP header or a NAT-T UDP header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub packets: u64,
    pub inner_bytes: u64,
    pub esp_bytes: u64,
}

impl Counters {
    pub(crate) fn tx(&self, inner: usize, esp: usize) {
        self.tx.count(inner, esp);
    }

    pub(crate) fn rx(&self, inner: usize, esp: usize) {
        self.rx.count(inner, esp);
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

    /// Sent: inner packets sealed and handed to the underlay.
    pub fn tx_totals(&self) -> Totals {
        self.tx.totals()
    }

    /// Received: inner packets that passed the ESP and GRE checks.
    pub fn rx_totals(&self) -> Totals {
        self.rx.totals()
    }
}
