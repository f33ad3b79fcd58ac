//! IPv4 header view (RFC 791 §3.1) with header checksum compute/verify (RFC 791 §3.1,
//! RFC 1071).

use core::net::Ipv4Addr;

use crate::field::{array_at, set_array_at, set_u8_at, set_u16_at, u8_at, u16_at};
use crate::{Error, IpProtocol, checksum};

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

mod off {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_MASK: u16 = 0x1FFF;

/// A read/write view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without checks; accessors on a short buffer read zeros.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after the one length check: version 4, IHL ≥ 5 (RFC 791 §3.1: the
    /// minimum header is 5 words), and header length ≤ total length ≤ buffer length.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.version() != 4 || p.header_len() < HEADER_LEN {
            return Err(Error::Malformed);
        }
        let total = usize::from(p.total_len());
        if total < p.header_len() {
            return Err(Error::Malformed);
        }
        if total > len {
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

    /// Version field (4).
    pub fn version(&self) -> u8 {
        u8_at(self.b(), off::VER_IHL) >> 4
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(u8_at(self.b(), off::VER_IHL) & 0x0F) * 4
    }

    /// DSCP and ECN byte (RFC 2474, RFC 3168).
    pub fn dscp_ecn(&self) -> u8 {
        u8_at(self.b(), off::DSCP_ECN)
    }

    /// Total length of header and payload.
    pub fn total_len(&self) -> u16 {
        u16_at(self.b(), off::TOTAL_LEN)
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        u16_at(self.b(), off::IDENT)
    }

    /// Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        u16_at(self.b(), off::FLAGS_FRAG) & FLAG_DF != 0
    }

    /// More Fragments flag.
    pub fn more_frags(&self) -> bool {
        u16_at(self.b(), off::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (u16_at(self.b(), off::FLAGS_FRAG) & FRAG_MASK) << 3
    }

    /// True for any fragment (first, middle or last) of a fragmented datagram.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        u8_at(self.b(), off::TTL)
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(u8_at(self.b(), off::PROTOCOL))
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        u16_at(self.b(), off::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array_at::<4>(self.b(), off::SRC))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array_at::<4>(self.b(), off::DST))
    }

    /// The header including options.
    pub fn header(&self) -> &[u8] {
        self.b().get(..self.header_len()).unwrap_or_default()
    }

    /// True when the header checksum verifies (the header sums to 0xFFFF).
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.header()) == 0
    }

    /// The payload: from the end of the header to the total length (link padding excluded).
    pub fn payload(&self) -> &[u8] {
        self.b()
            .get(self.header_len()..usize::from(self.total_len()))
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets version 4 and the header length in bytes (a multiple of 4).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        let ihl = ((header_len / 4) & 0x0F) as u8;
        set_u8_at(self.bm(), off::VER_IHL, 0x40 | ihl);
    }

    /// Sets the DSCP/ECN byte.
    pub fn set_dscp_ecn(&mut self, v: u8) {
        set_u8_at(self.bm(), off::DSCP_ECN, v);
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, v: u16) {
        set_u16_at(self.bm(), off::TOTAL_LEN, v);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, v: u16) {
        set_u16_at(self.bm(), off::IDENT, v);
    }

    /// Sets flags and fragment offset to "not fragmented", with or without DF.
    pub fn set_unfragmented(&mut self, dont_frag: bool) {
        set_u16_at(
            self.bm(),
            off::FLAGS_FRAG,
            if dont_frag { FLAG_DF } else { 0 },
        );
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, v: u8) {
        set_u8_at(self.bm(), off::TTL, v);
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, v: IpProtocol) {
        set_u8_at(self.bm(), off::PROTOCOL, v.0);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_u16_at(self.bm(), off::CHECKSUM, v);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        set_array_at(self.bm(), off::SRC, a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        set_array_at(self.bm(), off::DST, a.octets());
    }

    /// Computes and stores the header checksum (RFC 791 §3.1: computed with the field zero).
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), usize::from(self.total_len()));
        self.bm().get_mut(h..t).unwrap_or_default()
    }
}

/// An IPv4 header without options, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Payload protocol.
    pub protocol: IpProtocol,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// DSCP/ECN byte.
    pub dscp_ecn: u8,
    /// Don't Fragment.
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Decodes a checked packet; rejects a bad header checksum (RFC 1122 §3.2.1.2: a
    /// datagram whose checksum fails MUST be discarded) and fragments, which the caller
    /// reassembles (or drops) before parsing the payload.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Result<Self, Error> {
        if !p.verify_checksum() || p.is_fragment() {
            return Err(Error::Malformed);
        }
        Ok(Self {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: p.payload().len(),
            ttl: p.ttl(),
            dscp_ecn: p.dscp_ecn(),
            dont_frag: p.dont_frag(),
        })
    }

    /// Header length when emitted.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (identification 0, checksum filled) into the first 20 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Ipv4Packet<T>) -> Result<(), Error> {
        let total = u16::try_from(HEADER_LEN + self.payload_len).map_err(|_| Error::Malformed)?;
        if p.b().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        p.set_version_and_header_len(HEADER_LEN);
        p.set_dscp_ecn(self.dscp_ecn);
        p.set_total_len(total);
        p.set_ident(0);
        p.set_unfragmented(self.dont_frag);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        p.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The IPv4 header of draft-mcgrew-gcm-test-01 test case #3's inner packet (a captured
    // TCP SYN; its checksum 0x2690 was computed by the capturing host, not by us).
    const HDR: &str = "4500003069a6400080062690c0a801029389155e";

    fn packet() -> Vec<u8> {
        let mut v = hex::decode(HDR).unwrap();
        v.resize(0x30, 0);
        v
    }

    #[test]
    fn parses_captured_header() {
        let buf = packet();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 48);
        assert_eq!(p.protocol(), IpProtocol::TCP);
        assert!(p.dont_frag() && !p.is_fragment());
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 1, 2));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(147, 137, 21, 94));
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 28);
    }

    #[test]
    fn fill_checksum_reproduces_captured_value() {
        let mut buf = packet();
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_checksum(0xdead);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert_eq!(p.checksum(), 0x2690);
    }

    #[test]
    fn repr_round_trip_and_rejections() {
        let repr = Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2),
            protocol: IpProtocol::GRE,
            payload_len: 12,
            ttl: 64,
            dscp_ecn: 0,
            dont_frag: false,
        };
        let mut buf = [0u8; 32];
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]))
            .unwrap();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p).unwrap(), repr);

        buf[8] = 63; // TTL change without checksum fix
        assert!(Ipv4Repr::parse(&Ipv4Packet::new_checked(&buf[..]).unwrap()).is_err());
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..19]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..31]).unwrap_err(),
            Error::Truncated
        );
        buf[0] = 0x44; // IHL 4
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..]).unwrap_err(),
            Error::Malformed
        );
        buf[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..]).unwrap_err(),
            Error::Malformed
        );
    }
}
