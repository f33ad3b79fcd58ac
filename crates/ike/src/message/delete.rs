//! The Delete payload (RFC 7296 §3.11).

use super::*;

/// Delete payload (§3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// IKE (no SPIs) or ESP.
    pub protocol: ProtocolId,
    /// SPI size: 0 for IKE, 4 for ESP.
    pub spi_size: u8,
    /// The SPIs, each `spi_size` bytes.
    pub spis: Vec<Vec<u8>>,
}

impl Delete {
    /// §3.11: protocol ID, SPI size, number of SPIs, the SPIs.
    pub(super) fn parse(b: &mut Reader<'_>) -> Result<Self, ParseError> {
        let protocol = ProtocolId(b.u8()?);
        let spi_size = b.u8()?;
        let n = b.u16()?;
        let mut spis = Vec::with_capacity(usize::from(n).min(64));
        for _ in 0..n {
            spis.push(b.take(usize::from(spi_size))?.to_vec());
        }
        Ok(Self {
            protocol,
            spi_size,
            spis,
        })
    }

    /// Every SPI must be `spi_size` octets (§3.11).
    pub(super) fn emit(&self, w: &mut Writer<'_>) -> Result<(), EmitError> {
        let n = u16::try_from(self.spis.len()).map_err(|_| EmitError::TooLong)?;
        w.u8(self.protocol.0).u8(self.spi_size).u16(n);
        for s in &self.spis {
            if s.len() != usize::from(self.spi_size) {
                return Err(EmitError::Invalid("delete SPI size"));
            }
            w.bytes(s);
        }
        Ok(())
    }
}
