//! ESP header view: SPI and sequence number (RFC 4303 §2.1, §2.2), followed by the
//! payload (for AES-GCM: the 8-byte explicit IV, RFC 4106 §3.1).

use core::fmt;

use crate::Error;
use crate::field::{set_u32_at, u32_at};

/// SPI + sequence number.
pub const HEADER_LEN: usize = 8;

/// A Security Parameters Index (RFC 4303 §2.1). 0 is reserved and never identifies an SA;
/// 1–255 are reserved by IANA for future use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Spi(pub u32);

impl fmt::Debug for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Spi({:#010x})", self.0)
    }
}

impl fmt::Display for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A read/write view of an ESP packet.
#[derive(Debug, Clone)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    /// Wraps `buffer` without checks; accessors on a short buffer read zeros.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking it holds the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self { buffer })
    }

    /// The SPI.
    pub fn spi(&self) -> Spi {
        Spi(u32_at(self.buffer.as_ref(), 0))
    }

    /// The (low 32 bits of the) sequence number.
    pub fn seq(&self) -> u32 {
        u32_at(self.buffer.as_ref(), 4)
    }

    /// Everything after the header (IV, ciphertext, ICV).
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EspPacket<T> {
    /// Sets the SPI.
    pub fn set_spi(&mut self, spi: Spi) {
        set_u32_at(self.buffer.as_mut(), 0, spi.0);
    }

    /// Sets the sequence number field.
    pub fn set_seq(&mut self, seq: u32) {
        set_u32_at(self.buffer.as_mut(), 4, seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields() {
        let mut b = [0u8; 10];
        let mut p = EspPacket::new_unchecked(&mut b[..]);
        p.set_spi(Spi(0x4a2c_bfe3));
        p.set_seq(2);
        assert_eq!(&b[..8], &[0x4a, 0x2c, 0xbf, 0xe3, 0, 0, 0, 2]);
        let p = EspPacket::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.spi(), p.seq(), p.payload().len()),
            (Spi(0x4a2c_bfe3), 2, 2)
        );
        assert_eq!(
            EspPacket::new_checked(&b[..7]).unwrap_err(),
            Error::Truncated
        );
    }
}
