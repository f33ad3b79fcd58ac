//! GRE (RFC 2784 §2) with the Key extension (RFC 2890 §2.1), as mGRE DMVPN uses it:
//! flags word 0x2000 (K only), protocol type, 4-byte tunnel key on every packet.
//!
//! Receive policy (documented choice): a DMVPN tunnel is configured with a key and never
//! sends checksum or sequence numbers (Cisco's default), so [`decap`] requires K and the
//! configured key (RFC 2890 §2.1: the key identifies the traffic flow within a tunnel) and
//! rejects C, S and any version other than 0. Accepting C would mean verifying a checksum
//! no peer of ours computes; accepting S would need RFC 2890 §2.2 sequencing we don't do.

use core::fmt;

use crate::field::{set_u16_at, set_u32_at, u16_at, u32_at};
use crate::{Error, PacketBuf};

/// Checksum present (RFC 2784 §2.1).
const FLAG_C: u16 = 0x8000;
/// Key present (RFC 2890 §2).
const FLAG_K: u16 = 0x2000;
/// Sequence number present (RFC 2890 §2).
const FLAG_S: u16 = 0x1000;
/// Reserved0 bits 1, 4 and 5 (bits 2 and 3 are now K and S): RFC 2784 §2.3 says a
/// receiver MUST discard a packet with any of bits 1–5 set unless it implements RFC 1701.
const RESERVED_MUST_BE_ZERO: u16 = 0x4000 | 0x0800 | 0x0400;
/// Version (RFC 2784 §2.3.1: MUST be 0).
const VERSION_MASK: u16 = 0x0007;

/// Header length as dmvpnd sends it: flags, protocol type, key.
pub const KEYED_HEADER_LEN: usize = 8;

/// The GRE protocol type: an Ethernet type (IEEE "EtherType" registry, RFC 2784 §2.4).
/// Open: unknown values round-trip.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EtherType(pub u16);

impl EtherType {
    /// Internet Protocol version 4.
    pub const IPV4: Self = Self(0x0800);
    /// Internet Protocol version 6.
    pub const IPV6: Self = Self(0x86DD);
    /// NHRP over GRE, as Cisco DMVPN and FRR nhrpd send it (FRR `ETH_P_NHRP`;
    /// docs/interop-notes.md §1).
    pub const NHRP: Self = Self(0x2001);
}

impl fmt::Debug for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::IPV4 => f.write_str("IPv4"),
            Self::IPV6 => f.write_str("IPv6"),
            Self::NHRP => f.write_str("NHRP"),
            Self(v) => write!(f, "EtherType({v:#06x})"),
        }
    }
}

/// A read/write view of a GRE header and its payload.
#[derive(Debug, Clone)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
    /// Wraps `buffer` without checks; accessors on a short buffer read zeros.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after the one length check: the fixed 4 bytes plus every optional
    /// field the flags announce.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        let len = p.buffer.as_ref().len();
        if len < 4 || p.header_len() > len {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The 16-bit flags-and-version word.
    pub fn flags_version(&self) -> u16 {
        u16_at(self.b(), 0)
    }

    /// C bit.
    pub fn checksum_present(&self) -> bool {
        self.flags_version() & FLAG_C != 0
    }

    /// K bit.
    pub fn key_present(&self) -> bool {
        self.flags_version() & FLAG_K != 0
    }

    /// S bit.
    pub fn seq_present(&self) -> bool {
        self.flags_version() & FLAG_S != 0
    }

    /// Version number.
    pub fn version(&self) -> u8 {
        (self.flags_version() & VERSION_MASK) as u8
    }

    /// Protocol type of the payload.
    pub fn protocol_type(&self) -> EtherType {
        EtherType(u16_at(self.b(), 2))
    }

    fn key_offset(&self) -> usize {
        if self.checksum_present() { 8 } else { 4 }
    }

    /// Header length implied by the flags.
    pub fn header_len(&self) -> usize {
        4 + 4 * usize::from(self.checksum_present())
            + 4 * usize::from(self.key_present())
            + 4 * usize::from(self.seq_present())
    }

    /// The key, if K is set.
    pub fn key(&self) -> Option<u32> {
        self.key_present()
            .then(|| u32_at(self.b(), self.key_offset()))
    }

    /// The sequence number, if S is set.
    pub fn seq(&self) -> Option<u32> {
        let at = self.key_offset() + 4 * usize::from(self.key_present());
        self.seq_present().then(|| u32_at(self.b(), at))
    }

    /// The encapsulated packet.
    pub fn payload(&self) -> &[u8] {
        self.b().get(self.header_len()..).unwrap_or_default()
    }

    /// Applies the receive policy (module docs) and returns the protocol type.
    pub fn check_keyed(&self, key: u32) -> Result<EtherType, Error> {
        let fv = self.flags_version();
        if fv & RESERVED_MUST_BE_ZERO != 0 {
            return Err(Error::Malformed);
        }
        if fv & (FLAG_C | FLAG_S | VERSION_MASK) != 0 {
            return Err(Error::GreUnsupported);
        }
        match self.key() {
            None => Err(Error::GreKeyMissing),
            Some(k) if k != key => Err(Error::GreKeyMismatch),
            Some(_) => Ok(self.protocol_type()),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GrePacket<T> {
    /// Writes flags 0x2000, `protocol_type` and `key` into the first 8 bytes.
    pub fn set_keyed_header(&mut self, protocol_type: EtherType, key: u32) {
        let b = self.buffer.as_mut();
        set_u16_at(b, 0, FLAG_K);
        set_u16_at(b, 2, protocol_type.0);
        set_u32_at(b, 4, key);
    }
}

/// A GRE header as dmvpnd sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreRepr {
    /// Protocol type of the payload.
    pub protocol_type: EtherType,
    /// Tunnel key.
    pub key: u32,
}

impl GreRepr {
    /// Decodes a header under the receive policy, for a tunnel keyed `key`.
    pub fn parse<T: AsRef<[u8]>>(p: &GrePacket<T>, key: u32) -> Result<Self, Error> {
        let protocol_type = p.check_keyed(key)?;
        Ok(Self { protocol_type, key })
    }

    /// Header length when emitted.
    pub const fn buffer_len(&self) -> usize {
        KEYED_HEADER_LEN
    }

    /// Writes the header into the first 8 bytes of `p`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut GrePacket<T>) -> Result<(), Error> {
        if p.b().len() < KEYED_HEADER_LEN {
            return Err(Error::Truncated);
        }
        p.set_keyed_header(self.protocol_type, self.key);
        Ok(())
    }
}

/// Pushes a keyed GRE header in front of the packet in `buf`.
pub fn encap(buf: &mut PacketBuf, protocol_type: EtherType, key: u32) -> Result<(), Error> {
    let hdr = buf.push_front(KEYED_HEADER_LEN)?;
    GrePacket::new_unchecked(hdr).set_keyed_header(protocol_type, key);
    Ok(())
}

/// Checks the GRE header at the front of `buf` against the receive policy and `key`, pulls
/// it, and returns the payload's protocol type. On error `buf` is unchanged.
pub fn decap(buf: &mut PacketBuf, key: u32) -> Result<EtherType, Error> {
    let (proto, len) = {
        let p = GrePacket::new_checked(buf.as_slice())?;
        (p.check_keyed(key)?, p.header_len())
    };
    buf.pull_front(len)?;
    Ok(proto)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encap_writes_cisco_keyed_header_and_decap_removes_it() {
        let mut b = PacketBuf::from_slice(64, b"payload").unwrap();
        encap(&mut b, EtherType::NHRP, 100).unwrap();
        // docs/interop-notes.md §1: `tunnel key 100` → 20 00 | 20 01 | 00 00 00 64
        assert_eq!(&b.as_slice()[..8], &[0x20, 0, 0x20, 0x01, 0, 0, 0, 0x64]);
        assert_eq!(decap(&mut b, 100).unwrap(), EtherType::NHRP);
        assert_eq!(b.as_slice(), b"payload");
    }

    fn decap_bytes(bytes: &[u8], key: u32) -> Result<EtherType, Error> {
        let mut b = PacketBuf::from_slice(64, bytes).unwrap();
        let before = b.len();
        let r = decap(&mut b, key);
        if r.is_err() {
            assert_eq!(b.len(), before, "failed decap must not consume");
        }
        r
    }

    #[test]
    fn decap_enforces_policy() {
        let ok = [0x20, 0, 0x08, 0, 0, 0, 0, 0x64, 0x45];
        assert_eq!(decap_bytes(&ok, 100), Ok(EtherType::IPV4));
        assert_eq!(decap_bytes(&ok, 101), Err(Error::GreKeyMismatch));
        assert_eq!(
            decap_bytes(&[0, 0, 0x08, 0, 0x45], 100),
            Err(Error::GreKeyMissing)
        );
        // C set: 12-byte header, refused by policy
        let c = [0xA0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0x64];
        assert_eq!(decap_bytes(&c, 100), Err(Error::GreUnsupported));
        let s = [0x30, 0, 0x08, 0, 0, 0, 0, 0x64, 0, 0, 0, 1];
        assert_eq!(decap_bytes(&s, 100), Err(Error::GreUnsupported));
        let v1 = [0x20, 1, 0x08, 0, 0, 0, 0, 0x64];
        assert_eq!(decap_bytes(&v1, 100), Err(Error::GreUnsupported));
        let r1 = [0x60, 0, 0x08, 0, 0, 0, 0, 0x64];
        assert_eq!(decap_bytes(&r1, 100), Err(Error::Malformed));
        // bits 6–12 are ignored on receipt (RFC 2784 §2.2)
        let b6 = [0x23, 0xF8, 0x08, 0, 0, 0, 0, 0x64];
        assert_eq!(decap_bytes(&b6, 100), Ok(EtherType::IPV4));
        assert_eq!(decap_bytes(&ok[..7], 100), Err(Error::Truncated));
        assert_eq!(decap_bytes(&ok[..3], 100), Err(Error::Truncated));
    }

    #[test]
    fn view_reads_every_optional_field() {
        let all = [
            0xB0, 0, 0x86, 0xDD, 0xAB, 0xCD, 0, 0, 0, 0, 0, 7, 0, 0, 0, 9, 0x60,
        ];
        let p = GrePacket::new_checked(&all[..]).unwrap();
        assert_eq!(p.header_len(), 16);
        assert_eq!(p.protocol_type(), EtherType::IPV6);
        assert_eq!((p.key(), p.seq()), (Some(7), Some(9)));
        assert_eq!(p.payload(), &[0x60]);
        assert_eq!(format!("{:?}", EtherType(0x1234)), "EtherType(0x1234)");
        let repr = GreRepr {
            protocol_type: EtherType::IPV4,
            key: 0xdead_beef,
        };
        let mut out = [0u8; 8];
        repr.emit(&mut GrePacket::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(
            GreRepr::parse(&GrePacket::new_checked(&out[..]).unwrap(), 0xdead_beef),
            Ok(repr)
        );
    }
}
