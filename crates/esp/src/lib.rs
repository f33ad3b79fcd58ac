//! ESP for dmvpnd: transport-mode Child SAs with AES-256-GCM-16 (RFC 4303, RFC 4106),
//! optional extended sequence numbers (RFC 4304), anti-replay (RFC 4303 §3.4.3), and the
//! SPI-indexed table the dataplane reads.
//!
//! - [`OutboundSa::seal`] / [`InboundSa::open`]: in place in a [`PacketBuf`], no
//!   allocation, no copy, no per-packet key setup.
//! - [`ReplayWindow`]: default 1024, up to 65536 packets.
//! - [`SaTable`]: an immutable map SPI → inbound SA. The daemon publishes a new table when
//!   IKE installs or deletes a Child SA (e.g. through `arc-swap`); SAs are `Send + Sync`
//!   (atomic outbound sequence, one lock per inbound window), so the dataplane reads the
//!   table without locking it.
//! - [`esp_in_udp`]: RFC 3948 classification of what arrives on UDP 4500.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod replay;
mod sa;
mod table;

#[cfg(test)]
mod kat;

pub use dmvpn_wire::udp::{UdpEncap, classify as esp_in_udp};
pub use dmvpn_wire::{IpProtocol, PacketBuf, Spi};
pub use replay::{DEFAULT_WINDOW, MAX_WINDOW, Replay, ReplayWindow};
pub use sa::{
    ICV_LEN, IV_LEN, InboundSa, MAX_SUFFIX_LEN, OutboundSa, PREFIX_LEN, SaCounters, SaStats,
    SendTurn, SeqBlock,
};
pub use table::SaTable;

/// Why ESP refused to seal or open a packet. On the receive path every variant is a
/// counted drop; none is logged per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The KEYMAT was not 36 bytes.
    #[error("bad key material: {0}")]
    Key(dmvpn_crypto::Error),
    /// The replay window size is 0 or above [`MAX_WINDOW`].
    #[error("replay window size out of range")]
    ReplayWindowSize,
    /// The sequence number space is used up (RFC 4303 §3.3.3): rekey, never wrap.
    #[error("sequence numbers exhausted; the SA must be rekeyed")]
    SequenceExhausted,
    /// The buffer lacks headroom or tailroom for the ESP header, IV, trailer and ICV.
    #[error("no room in packet buffer")]
    NoRoom,
    /// Shorter than ESP header + IV + trailer + ICV.
    #[error("truncated ESP packet")]
    Truncated,
    /// The packet's SPI is not this SA's.
    #[error("SPI mismatch")]
    SpiMismatch,
    /// No inbound SA has this SPI.
    #[error("unknown SPI")]
    UnknownSpi,
    /// Refused by the anti-replay window (RFC 4303 §3.4.3).
    #[error("replayed or too old")]
    Replay,
    /// The ICV did not verify (RFC 4303 §3.4.4).
    #[error("authentication failed")]
    Auth,
    /// Authentic, but the pad length exceeds the payload.
    #[error("malformed ESP trailer")]
    Malformed,
    /// Authentic, but the padding is not 1, 2, 3, ... (RFC 4303 §2.4).
    #[error("bad ESP padding")]
    BadPadding,
    /// Authentic dummy packet (next header 59, RFC 4303 §2.6): discard.
    #[error("dummy packet")]
    Dummy,
    /// The crypto provider failed to seal.
    #[error("crypto provider failure")]
    Provider,
}
