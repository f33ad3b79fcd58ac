//! UDP header view (RFC 768) and classification of UDP-encapsulated IPsec traffic on
//! port 4500 (RFC 3948 §2.1–2.3, RFC 7296 §2.23).

use crate::Error;
use crate::field::{set_u16_at, u16_at};

/// UDP header length.
pub const HEADER_LEN: usize = 8;
/// The IKE/ESP NAT-T port (RFC 3948 §2.1, RFC 7296 §2.23).
pub const NAT_T_PORT: u16 = 4500;

/// A read/write view of a UDP datagram.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` without checks; accessors on a short buffer read zeros.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after the one length check: 8 ≤ length field ≤ buffer length.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN || usize::from(p.len()) > len {
            return Err(Error::Truncated);
        }
        if usize::from(p.len()) < HEADER_LEN {
            return Err(Error::Malformed);
        }
        Ok(p)
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        u16_at(self.buffer.as_ref(), 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        u16_at(self.buffer.as_ref(), 2)
    }

    /// Length of header and payload.
    pub fn len(&self) -> u16 {
        u16_at(self.buffer.as_ref(), 4)
    }

    /// True when the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        u16_at(self.buffer.as_ref(), 6)
    }

    /// The payload, up to the length field.
    pub fn payload(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(HEADER_LEN..usize::from(self.len()))
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Writes ports, length and a zero checksum. RFC 3948 §2.1: ESP-in-UDP over IPv4 SHOULD
    /// be sent with checksum zero (ESP has its own integrity check).
    pub fn set_header(&mut self, src_port: u16, dst_port: u16, len: u16) {
        let b = self.buffer.as_mut();
        set_u16_at(b, 0, src_port);
        set_u16_at(b, 2, dst_port);
        set_u16_at(b, 4, len);
        set_u16_at(b, 6, 0);
    }
}

/// What a UDP payload on port 4500 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpEncap<'a> {
    /// An IKE message behind the 4-byte zero non-ESP marker (RFC 3948 §2.2); the slice is
    /// the IKE message with the marker removed.
    Ike(&'a [u8]),
    /// A NAT-keepalive: a single 0xFF byte (RFC 3948 §2.3), to be dropped.
    NatKeepalive,
    /// An ESP packet (RFC 3948 §2.1): the SPI is never zero, which is what distinguishes it
    /// from the non-ESP marker.
    Esp(&'a [u8]),
}

/// Length of the non-ESP marker (RFC 3948 §2.2).
pub const NON_ESP_MARKER_LEN: usize = 4;

/// Classifies a UDP-4500 payload. Anything too short to be an ESP header (RFC 4303 §2:
/// SPI + sequence number) and not a keepalive is refused.
pub fn classify(payload: &[u8]) -> Result<UdpEncap<'_>, Error> {
    match payload {
        [0xFF] => Ok(UdpEncap::NatKeepalive),
        [0, 0, 0, 0, ike @ ..] => Ok(UdpEncap::Ike(ike)),
        esp if esp.len() >= crate::esp::HEADER_LEN => Ok(UdpEncap::Esp(esp)),
        _ => Err(Error::Truncated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_rfc3948_framings() {
        assert_eq!(classify(&[0xFF]), Ok(UdpEncap::NatKeepalive));
        assert_eq!(classify(&[0, 0, 0, 0, 1, 2]), Ok(UdpEncap::Ike(&[1, 2])));
        let esp = [0, 0, 0, 1, 0, 0, 0, 1];
        assert_eq!(classify(&esp), Ok(UdpEncap::Esp(&esp)));
        assert!(classify(&[]).is_err());
        assert!(classify(&[0xFF, 0xFF]).is_err());
        assert!(classify(&[0, 0, 0]).is_err());
        assert!(classify(&esp[..7]).is_err());
    }

    #[test]
    fn udp_view() {
        let mut b = [0u8; 12];
        UdpPacket::new_unchecked(&mut b[..]).set_header(4500, 4500, 11);
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.len(), p.checksum()),
            (4500, 4500, 11, 0)
        );
        assert_eq!(p.payload().len(), 3);
        assert_eq!(
            UdpPacket::new_checked(&b[..10]).unwrap_err(),
            Error::Truncated
        );
        b[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
    }
}
