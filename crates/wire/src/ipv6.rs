//! IPv6 fixed header view (RFC 8200 §3).

use core::net::Ipv6Addr;

use crate::field::{
    array_at, set_array_at, set_u8_at, set_u16_at, set_u32_at, u8_at, u16_at, u32_at,
};
use crate::{Error, IpProtocol};

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

/// A read/write view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` without checks; accessors on a short buffer read zeros.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after the one length check: version 6, 40 bytes of header and the
    /// payload length within the buffer. A payload length of zero with a jumbo payload
    /// option (RFC 2675) is not supported: the tunnel MTU is far below 64 KiB.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.version() != 6 {
            return Err(Error::Malformed);
        }
        if HEADER_LEN + usize::from(p.payload_len()) > len {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Version field (6).
    pub fn version(&self) -> u8 {
        u8_at(self.b(), 0) >> 4
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        ((u32_at(self.b(), 0) >> 20) & 0xFF) as u8
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        u32_at(self.b(), 0) & 0x000F_FFFF
    }

    /// Payload length (extension headers included).
    pub fn payload_len(&self) -> u16 {
        u16_at(self.b(), 4)
    }

    /// Next header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(u8_at(self.b(), 6))
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        u8_at(self.b(), 7)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array_at::<16>(self.b(), 8))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array_at::<16>(self.b(), 24))
    }

    /// Everything after the fixed header, up to the payload length.
    pub fn payload(&self) -> &[u8] {
        self.b()
            .get(HEADER_LEN..HEADER_LEN + usize::from(self.payload_len()))
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets version 6, traffic class and flow label.
    pub fn set_version_class_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let w = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000F_FFFF);
        set_u32_at(self.bm(), 0, w);
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        set_u16_at(self.bm(), 4, v);
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, v: IpProtocol) {
        set_u8_at(self.bm(), 6, v.0);
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        set_u8_at(self.bm(), 7, v);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        set_array_at(self.bm(), 8, a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        set_array_at(self.bm(), 24, a.octets());
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        self.bm().get_mut(HEADER_LEN..end).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_and_getters_agree_and_checks_fail() {
        let mut buf = [0u8; 48];
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
        p.set_version_class_flow(0xb8, 0x12345);
        p.set_payload_len(8);
        p.set_next_header(IpProtocol::TCP);
        p.set_hop_limit(64);
        p.set_src_addr("2001:db8::1".parse().unwrap());
        p.set_dst_addr("2001:db8::2".parse().unwrap());
        assert_eq!(&buf[..8], &[0x6b, 0x81, 0x23, 0x45, 0, 8, 6, 64]);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0xb8, 0x12345)
        );
        assert_eq!(p.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload().len(), 8);
        assert_eq!(
            Ipv6Packet::new_checked(&buf[..47]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv6Packet::new_checked(&buf[..39]).unwrap_err(),
            Error::Truncated
        );
        buf[0] = 0x4b;
        assert_eq!(
            Ipv6Packet::new_checked(&buf[..]).unwrap_err(),
            Error::Malformed
        );
    }
}
