//! Codec errors and the RFC 2332 §5.2.7 Error Indication code each one causes.

use dmvpn_wire::Truncated;
use thiserror::Error;

use crate::codes::{ErrorCode, ExtensionType};

/// Why a received NHRP packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// A length field pointed past the end of the packet.
    #[error(transparent)]
    Truncated(#[from] Truncated),
    /// `ar$pktsz` is smaller than the fixed header or larger than the datagram.
    #[error("packet size {size} invalid for a {available}-byte datagram")]
    PacketSize {
        /// The packet size field.
        size: u16,
        /// Bytes actually received.
        available: usize,
    },
    /// `ar$chksum` does not verify (RFC 2332 §5.2.0.1).
    #[error("checksum mismatch")]
    Checksum,
    /// `ar$op.version` is not 1 (RFC 2332 §5.2.0.1).
    #[error("unsupported NHRP version {0}")]
    Version(u8),
    /// An address type-and-length byte with the E.164 or reserved bit set.
    #[error("unsupported address type/length {0:#04x}")]
    AddressType(u8),
    /// `ar$extoff` points inside the mandatory part or past the packet.
    #[error("extension offset {0} outside the packet")]
    ExtensionOffset(u16),
    /// A compulsory extension this implementation does not know (RFC 2332 §5.3).
    #[error("unrecognized compulsory extension {ext_type} at offset {offset}")]
    UnrecognizedExtension {
        /// Its type.
        ext_type: ExtensionType,
        /// Its offset from the start of the NHRP packet.
        offset: u16,
    },
    /// A known extension whose value is malformed.
    #[error("invalid extension {ext_type} at offset {offset}")]
    InvalidExtension {
        /// Its type.
        ext_type: ExtensionType,
        /// Its offset from the start of the NHRP packet.
        offset: u16,
    },
}

impl ParseError {
    /// The Error Indication this error causes, or `None` when the packet is
    /// discarded silently (a bad checksum means we cannot trust any field,
    /// including the address an error would be sent to).
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Checksum | Self::PacketSize { .. } => None,
            Self::Truncated(_) | Self::Version(_) | Self::AddressType(_) => {
                Some(ErrorCode::PROTOCOL_ERROR)
            }
            Self::ExtensionOffset(_) | Self::InvalidExtension { .. } => {
                Some(ErrorCode::INVALID_EXTENSION)
            }
            // RFC 2332 §5.3: an unrecognized compulsory extension MUST cause
            // an Error Indication "Unrecognized Extension".
            Self::UnrecognizedExtension { .. } => Some(ErrorCode::UNRECOGNIZED_EXTENSION),
        }
    }

    /// The `Error Offset` to report: where in the packet the error was found.
    pub fn error_offset(&self) -> u16 {
        match self {
            Self::UnrecognizedExtension { offset, .. } | Self::InvalidExtension { offset, .. } => {
                *offset
            }
            Self::ExtensionOffset(_) => 16,
            Self::Version(_) => 17,
            _ => 0,
        }
    }
}

/// Why a packet representation could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EmitError {
    /// An NBMA address longer than the 6-bit length field allows.
    #[error("NBMA address or subaddress of {0} bytes does not fit a 6-bit length")]
    NbmaTooLong(usize),
    /// A protocol address longer than 255 bytes.
    #[error("protocol address of {0} bytes does not fit an 8-bit length")]
    ProtocolTooLong(usize),
    /// The packet or an extension is longer than a 16-bit length field.
    #[error("packet or extension longer than 65535 bytes")]
    TooLong,
    /// The body variant does not match the packet type's mandatory-part layout.
    #[error("body does not match packet type {0}")]
    BodyMismatch(crate::codes::PacketType),
    /// An `Other` extension carried a type this codec emits itself (End, or a known type).
    #[error("extension type {0} must use its own variant")]
    ReservedExtensionType(ExtensionType),
}
