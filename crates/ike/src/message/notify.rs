//! The Notify payload (RFC 7296 §3.10).

use super::*;

/// Notify payload (§3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Protocol the SPI belongs to (0 when none).
    pub protocol: ProtocolId,
    /// SPI (usually empty).
    pub spi: Vec<u8>,
    /// Notify message type.
    pub ty: NotifyType,
    /// Notification data.
    pub data: Vec<u8>,
}

impl Notify {
    /// A notify without SPI.
    pub fn new(ty: NotifyType, data: Vec<u8>) -> Self {
        Self {
            protocol: ProtocolId::NONE,
            spi: Vec::new(),
            ty,
            data,
        }
    }
}

impl Notify {
    /// §3.10: protocol ID, SPI size, notify type, SPI, notification data.
    pub(super) fn parse(b: &mut Reader<'_>) -> Result<Self, ParseError> {
        let protocol = ProtocolId(b.u8()?);
        let spi_size = usize::from(b.u8()?);
        let ty = NotifyType(b.u16()?);
        let spi = b.take(spi_size)?.to_vec();
        Ok(Self {
            protocol,
            spi,
            ty,
            data: b.take_rest().to_vec(),
        })
    }

    pub(super) fn emit(&self, w: &mut Writer<'_>) -> Result<(), EmitError> {
        let spi_len = u8::try_from(self.spi.len()).map_err(|_| EmitError::TooLong)?;
        w.u8(self.protocol.0)
            .u8(spi_len)
            .u16(self.ty.0)
            .bytes(&self.spi)
            .bytes(&self.data);
        Ok(())
    }
}
