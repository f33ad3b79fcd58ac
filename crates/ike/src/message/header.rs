//! The IKE header (RFC 7296 §3.1).

use super::*;

/// Header flag bits (§3.1).
pub mod flags {
    /// Set in messages sent by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// "Can speak a higher major version"; we never set it.
    pub const VERSION: u8 = 0x10;
    /// Set in responses.
    pub const RESPONSE: u8 = 0x20;
}

/// The IKE header (§3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// IKE SA initiator's SPI.
    pub spi_i: u64,
    /// IKE SA responder's SPI (zero in the first IKE_SA_INIT request).
    pub spi_r: u64,
    /// Type of the first payload.
    pub next_payload: PayloadType,
    /// Major (high nibble) and minor version; 0x20 for IKEv2.
    pub version: u8,
    /// Exchange type.
    pub exchange: ExchangeType,
    /// Flag bits, see [`flags`].
    pub flags: u8,
    /// Message ID.
    pub message_id: u32,
    /// Total message length including the header.
    pub length: u32,
}

impl Header {
    /// Parses the 28-byte header.
    pub fn parse(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        let spi_i = r.u64()?;
        let spi_r = r.u64()?;
        let next_payload = PayloadType(r.u8()?);
        let version = r.u8()?;
        if version >> 4 != 2 {
            return Err(ParseError::MajorVersion(version >> 4));
        }
        Ok(Self {
            spi_i,
            spi_r,
            next_payload,
            version,
            exchange: ExchangeType(r.u8()?),
            flags: r.u8()?,
            message_id: r.u32()?,
            length: r.u32()?,
        })
    }

    /// True for a response.
    pub fn is_response(&self) -> bool {
        self.flags & flags::RESPONSE != 0
    }

    /// True when sent by the original initiator.
    pub fn is_initiator(&self) -> bool {
        self.flags & flags::INITIATOR != 0
    }

    /// Appends the 28 header bytes.
    pub(super) fn emit(&self, w: &mut Writer<'_>) {
        w.u64(self.spi_i)
            .u64(self.spi_r)
            .u8(self.next_payload.0)
            .u8(self.version)
            .u8(self.exchange.0)
            .u8(self.flags)
            .u32(self.message_id)
            .u32(self.length);
    }
}
