//! The wire crate's error type: why a header view or a buffer operation refused its input.

/// A header did not parse, or a buffer had no room for an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Fewer bytes than the header (or a length field inside it) needs.
    #[error("truncated packet")]
    Truncated,
    /// A length, version or flag field holds a value the format forbids.
    #[error("malformed header")]
    Malformed,
    /// A GRE header without the Key bit (RFC 2890 §2.1): every DMVPN packet carries the key.
    #[error("GRE key missing")]
    GreKeyMissing,
    /// A GRE key that is not this tunnel's.
    #[error("GRE key mismatch")]
    GreKeyMismatch,
    /// GRE checksum/sequence bits or a non-zero version, which this tunnel never sends.
    #[error("unsupported GRE flags or version")]
    GreUnsupported,
    /// A `PacketBuf` has not enough headroom, tailroom or data for the operation.
    #[error("no room in packet buffer")]
    NoRoom,
}
