//! NHRP packet codec: fixed header (RFC 2332 §5.2.0.1), mandatory part
//! (§5.2.0.1, §5.2.7 Error Indication, draft-detienne-dmvpn-01 Traffic
//! Indication), Client Information Entries (§5.2.0.1) and extensions (§5.3,
//! with the Cisco cleartext authentication and NAT address forms).
//!
//! Addresses are kept as raw bytes so that any length round-trips; the engine
//! converts them with [`ip_from_bytes`] and refuses what it does not support.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dmvpn_wire::{Reader, Writer};

use crate::codes::{
    AFN_IPV4, AUTH_SPI_CLEARTEXT, CieCode, EXTENSION_COMPULSORY, ErrorCode, ExtensionType,
    NHRP_VERSION, PROTOCOL_TYPE_IPV4, PacketType,
};
use crate::error::{EmitError, ParseError};

/// Length of the fixed header (RFC 2332 §5.2.0.1).
pub const FIXED_HEADER_LEN: usize = 20;
/// Length of the fixed words of the mandatory part, before the addresses.
pub const MANDATORY_FIXED_LEN: usize = 8;
/// Length of a CIE before its addresses.
pub const CIE_FIXED_LEN: usize = 12;

/// Offsets of fields patched after the body is written.
const OFF_PACKET_SIZE: usize = 10;
const OFF_CHECKSUM: usize = 12;
const OFF_EXTENSION_OFFSET: usize = 14;

/// The NHRP checksum (RFC 2332 §5.2.0.1 `ar$chksum`) is the standard IP checksum (RFC 1071,
/// an odd length padded with a zero byte): the project's one implementation, in `wire`.
pub use dmvpn_wire::checksum::checksum;

/// An IP address from its on-the-wire bytes (4 or 16 long).
pub fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => {
            let a: [u8; 4] = b.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(a)))
        }
        16 => {
            let a: [u8; 16] = b.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// The on-the-wire bytes of an IP address.
pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A Client Information Entry (RFC 2332 §5.2.0.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cie {
    /// Result or request code.
    pub code: CieCode,
    /// Prefix length of the client protocol address (0xFF: unique host).
    pub prefix_len: u8,
    /// MTU of the client's path, 0 when not stated.
    pub mtu: u16,
    /// Holding time in seconds.
    pub holding_time: u16,
    /// Client NBMA address (empty: same as the packet's source).
    pub client_nbma: Vec<u8>,
    /// Client NBMA subaddress.
    pub client_nbma_subaddr: Vec<u8>,
    /// Client protocol address (empty: same as the packet's source).
    pub client_protocol: Vec<u8>,
    /// Preference.
    pub preference: u8,
}

impl Default for CieCode {
    fn default() -> Self {
        Self::SUCCESS
    }
}

impl Cie {
    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        CIE_FIXED_LEN
            + self.client_nbma.len()
            + self.client_nbma_subaddr.len()
            + self.client_protocol.len()
    }

    /// Parses one CIE.
    pub fn parse(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        let code = CieCode(r.u8()?);
        let prefix_len = r.u8()?;
        // "unused" (RFC 2332 §5.2.0.1): ignored on receipt, zero when sent.
        r.skip(2)?;
        let mtu = r.u16()?;
        let holding_time = r.u16()?;
        let nbma_len = atl_len(r.u8()?)?;
        let subaddr_len = atl_len(r.u8()?)?;
        let proto_len = usize::from(r.u8()?);
        let preference = r.u8()?;
        Ok(Self {
            code,
            prefix_len,
            mtu,
            holding_time,
            client_nbma: r.take(nbma_len)?.to_vec(),
            client_nbma_subaddr: r.take(subaddr_len)?.to_vec(),
            client_protocol: r.take(proto_len)?.to_vec(),
            preference,
        })
    }

    /// Appends the CIE.
    pub fn emit(&self, w: &mut Writer<'_>) -> Result<(), EmitError> {
        w.u8(self.code.0).u8(self.prefix_len).u16(0).u16(self.mtu);
        w.u16(self.holding_time);
        w.u8(nbma_atl(&self.client_nbma)?);
        w.u8(nbma_atl(&self.client_nbma_subaddr)?);
        w.u8(proto_len(&self.client_protocol)?);
        w.u8(self.preference);
        w.bytes(&self.client_nbma)
            .bytes(&self.client_nbma_subaddr)
            .bytes(&self.client_protocol);
        Ok(())
    }

    /// The client protocol address as an IP address.
    pub fn client_protocol_ip(&self) -> Option<IpAddr> {
        ip_from_bytes(&self.client_protocol)
    }

    /// The client NBMA address as an IP address.
    pub fn client_nbma_ip(&self) -> Option<IpAddr> {
        ip_from_bytes(&self.client_nbma)
    }
}

/// Address type-and-length byte: bit 0x40 is E.164 and 0x80 is reserved
/// (RFC 2332 §5.2.0.1 `ar$shtl`). IP NBMA addresses are never E.164.
fn atl_len(b: u8) -> Result<usize, ParseError> {
    if b & 0xc0 != 0 {
        return Err(ParseError::AddressType(b));
    }
    Ok(usize::from(b & 0x3f))
}

fn nbma_atl(a: &[u8]) -> Result<u8, EmitError> {
    u8::try_from(a.len())
        .ok()
        .filter(|l| *l <= 0x3f)
        .ok_or(EmitError::NbmaTooLong(a.len()))
}

fn proto_len(a: &[u8]) -> Result<u8, EmitError> {
    u8::try_from(a.len()).map_err(|_| EmitError::ProtocolTooLong(a.len()))
}

fn parse_cies(mut r: Reader<'_>) -> Result<Vec<Cie>, ParseError> {
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(Cie::parse(&mut r)?);
    }
    Ok(out)
}

/// The authentication extension value (RFC 2332 §5.3.4.1 in the Cisco
/// form of docs/interop-notes.md §11: reserved 0, SPI 1, then the key, no source
/// address and no padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    /// Reserved, zero.
    pub reserved: u16,
    /// Security Parameter Index; 1 = cleartext password.
    pub spi: u16,
    /// Authentication data (the cleartext key).
    pub data: Vec<u8>,
}

impl Authentication {
    /// Cisco cleartext authentication with `key`.
    pub fn cleartext(key: &[u8]) -> Self {
        Self {
            reserved: 0,
            spi: AUTH_SPI_CLEARTEXT,
            data: key.to_vec(),
        }
    }
}

/// A decoded extension value (RFC 2332 §5.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionBody {
    /// §5.3.1: the responder's own CIE (empty in requests).
    ResponderAddress(Vec<Cie>),
    /// §5.3.2: NHSs a request passed through.
    ForwardTransit(Vec<Cie>),
    /// §5.3.3: NHSs a reply passed through.
    ReverseTransit(Vec<Cie>),
    /// §5.3.4.
    Authentication(Authentication),
    /// §5.3.5: kept as bytes, not interpreted.
    VendorPrivate(Vec<u8>),
    /// Cisco NAT address extension (type 9): CIEs of (NBMA, protocol) pairs.
    CiscoNatAddress(Vec<Cie>),
    /// Any other (non-compulsory, or compulsory but tolerated) extension.
    Other {
        /// Its type (the 15 bits below the compulsory bit).
        ext_type: ExtensionType,
        /// Its raw value.
        value: Vec<u8>,
    },
}

/// One extension with its compulsory bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The C bit (RFC 2332 §5.3): a receiver that does not know the type
    /// must reject the packet.
    pub compulsory: bool,
    /// Type and value.
    pub body: ExtensionBody,
}

impl Extension {
    /// An extension with the compulsory bit set, as RFC 2332 and Cisco send
    /// the standard ones (docs/interop-notes.md §7 and §11).
    pub fn compulsory(body: ExtensionBody) -> Self {
        Self {
            compulsory: true,
            body,
        }
    }

    /// An optional extension (the Cisco NAT extension, docs/interop-notes.md §12).
    pub fn optional(body: ExtensionBody) -> Self {
        Self {
            compulsory: false,
            body,
        }
    }

    /// The extension type without the compulsory bit.
    pub fn ext_type(&self) -> ExtensionType {
        match &self.body {
            ExtensionBody::ResponderAddress(_) => ExtensionType::RESPONDER_ADDRESS,
            ExtensionBody::ForwardTransit(_) => ExtensionType::FORWARD_TRANSIT_RECORD,
            ExtensionBody::ReverseTransit(_) => ExtensionType::REVERSE_TRANSIT_RECORD,
            ExtensionBody::Authentication(_) => ExtensionType::AUTHENTICATION,
            ExtensionBody::VendorPrivate(_) => ExtensionType::VENDOR_PRIVATE,
            ExtensionBody::CiscoNatAddress(_) => ExtensionType::CISCO_NAT_ADDRESS,
            ExtensionBody::Other { ext_type, .. } => *ext_type,
        }
    }

    /// Encoded length, header included.
    pub fn buffer_len(&self) -> usize {
        4 + match &self.body {
            ExtensionBody::ResponderAddress(c)
            | ExtensionBody::ForwardTransit(c)
            | ExtensionBody::ReverseTransit(c)
            | ExtensionBody::CiscoNatAddress(c) => c.iter().map(Cie::buffer_len).sum(),
            ExtensionBody::Authentication(a) => 4 + a.data.len(),
            ExtensionBody::VendorPrivate(v) | ExtensionBody::Other { value: v, .. } => v.len(),
        }
    }

    fn parse(word: u16, offset: u16, mut r: Reader<'_>) -> Result<Self, ParseError> {
        let compulsory = word & EXTENSION_COMPULSORY != 0;
        let ext_type = ExtensionType(word & !EXTENSION_COMPULSORY);
        let invalid = ParseError::InvalidExtension { ext_type, offset };
        let body = match ext_type {
            ExtensionType::RESPONDER_ADDRESS => {
                ExtensionBody::ResponderAddress(parse_cies(r).map_err(|_| invalid)?)
            }
            ExtensionType::FORWARD_TRANSIT_RECORD => {
                ExtensionBody::ForwardTransit(parse_cies(r).map_err(|_| invalid)?)
            }
            ExtensionType::REVERSE_TRANSIT_RECORD => {
                ExtensionBody::ReverseTransit(parse_cies(r).map_err(|_| invalid)?)
            }
            ExtensionType::AUTHENTICATION => {
                let reserved = r.u16().map_err(|_| invalid.clone())?;
                let spi = r.u16().map_err(|_| invalid)?;
                ExtensionBody::Authentication(Authentication {
                    reserved,
                    spi,
                    data: r.take_rest().to_vec(),
                })
            }
            ExtensionType::VENDOR_PRIVATE => ExtensionBody::VendorPrivate(r.take_rest().to_vec()),
            ExtensionType::CISCO_NAT_ADDRESS => match parse_cies(r.clone()) {
                Ok(c) => ExtensionBody::CiscoNatAddress(c),
                // Type 9 is also RFC 2735 Device Capabilities (docs/interop-notes.md
                // §12): a value that is not a CIE list is kept raw.
                Err(_) => ExtensionBody::Other {
                    ext_type,
                    value: r.take_rest().to_vec(),
                },
            },
            _ if compulsory => {
                // RFC 2332 §5.3: a compulsory extension that is not
                // understood MUST make the packet be rejected.
                return Err(ParseError::UnrecognizedExtension { ext_type, offset });
            }
            _ => ExtensionBody::Other {
                ext_type,
                value: r.take_rest().to_vec(),
            },
        };
        Ok(Self { compulsory, body })
    }

    fn emit(&self, w: &mut Writer<'_>) -> Result<(), EmitError> {
        let t = self.ext_type();
        if let ExtensionBody::Other { ext_type, .. } = &self.body
            && is_known_extension(*ext_type)
            && *ext_type != ExtensionType::CISCO_NAT_ADDRESS
        {
            return Err(EmitError::ReservedExtensionType(*ext_type));
        }
        let word = (t.0 & !EXTENSION_COMPULSORY)
            | if self.compulsory {
                EXTENSION_COMPULSORY
            } else {
                0
            };
        w.u16(word);
        let start = w.len() + 2;
        let mark = w.reserve_u16(start);
        match &self.body {
            ExtensionBody::ResponderAddress(c)
            | ExtensionBody::ForwardTransit(c)
            | ExtensionBody::ReverseTransit(c)
            | ExtensionBody::CiscoNatAddress(c) => {
                for cie in c {
                    cie.emit(w)?;
                }
            }
            ExtensionBody::Authentication(a) => {
                w.u16(a.reserved).u16(a.spi).bytes(&a.data);
            }
            ExtensionBody::VendorPrivate(v) | ExtensionBody::Other { value: v, .. } => {
                w.bytes(v);
            }
        }
        w.patch_len_u16(mark).ok_or(EmitError::TooLong)?;
        Ok(())
    }
}

/// Types this codec decodes into their own variant.
fn is_known_extension(t: ExtensionType) -> bool {
    matches!(
        t,
        ExtensionType::END
            | ExtensionType::RESPONDER_ADDRESS
            | ExtensionType::FORWARD_TRANSIT_RECORD
            | ExtensionType::REVERSE_TRANSIT_RECORD
            | ExtensionType::AUTHENTICATION
            | ExtensionType::VENDOR_PRIVATE
            | ExtensionType::CISCO_NAT_ADDRESS
    )
}

/// The part of the mandatory header that differs by packet type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Types 1–6 (and any unknown type): flags, request id and CIEs.
    Common {
        /// Type-specific flag bits (see [`crate::codes::Flags`]).
        flags: u16,
        /// Request ID, copied into the reply.
        request_id: u32,
        /// Client Information Entries.
        cies: Vec<Cie>,
    },
    /// Type 7 (RFC 2332 §5.2.7).
    ErrorIndication {
        /// Error code.
        error_code: ErrorCode,
        /// Offset of the error in the packet in error.
        error_offset: u16,
        /// The packet in error (or its leading part).
        contents: Vec<u8>,
    },
    /// Type 8 (draft-detienne-dmvpn-01; docs/interop-notes.md §10).
    TrafficIndication {
        /// Traffic code; 0 = redirect.
        traffic_code: u16,
        /// The offending data packet's IP header and leading bytes.
        data: Vec<u8>,
    },
}

/// A whole NHRP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// `ar$afn`: NBMA address family (1 = IPv4).
    pub afn: u16,
    /// `ar$pro.type`: protocol type (0x0800 = IPv4).
    pub protocol_type: u16,
    /// `ar$pro.snap`: zero for Ethertype protocol types.
    pub protocol_snap: [u8; 5],
    /// `ar$hopcnt`.
    pub hop_count: u8,
    /// `ar$op.type`.
    pub packet_type: PacketType,
    /// Source NBMA address.
    pub src_nbma: Vec<u8>,
    /// Source NBMA subaddress.
    pub src_nbma_subaddr: Vec<u8>,
    /// Source protocol address.
    pub src_protocol: Vec<u8>,
    /// Destination protocol address.
    pub dst_protocol: Vec<u8>,
    /// Type-specific mandatory words and CIEs or payload.
    pub body: Body,
    /// Extensions; `None` means `ar$extoff` = 0. The End extension is implicit.
    pub extensions: Option<Vec<Extension>>,
}

/// What the engine needs to address an Error Indication for a packet that
/// failed to decode: its type and source, from the header and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketSource {
    /// `ar$op.type`.
    pub packet_type: PacketType,
    /// Source protocol address.
    pub src_protocol: Vec<u8>,
}

struct Head<'a> {
    hop_count: u8,
    extension_offset: usize,
    packet_type: PacketType,
    afn: u16,
    protocol_type: u16,
    protocol_snap: [u8; 5],
    words: [u8; 6],
    src_nbma: &'a [u8],
    src_nbma_subaddr: &'a [u8],
    src_protocol: &'a [u8],
    dst_protocol: &'a [u8],
    packet: &'a [u8],
    /// Position just after the mandatory addresses.
    body_start: usize,
}

fn parse_head(buf: &[u8], verify_checksum: bool) -> Result<Head<'_>, ParseError> {
    let mut r = Reader::new(buf);
    let afn = r.u16()?;
    let protocol_type = r.u16()?;
    let protocol_snap = r.array::<5>()?;
    let hop_count = r.u8()?;
    let size = r.u16()?;
    let _checksum = r.u16()?;
    let extension_offset = r.u16()?;
    let version = r.u8()?;
    let packet_type = PacketType(r.u8()?);
    let shtl = r.u8()?;
    let sstl = r.u8()?;
    let packet = buf
        .get(..usize::from(size))
        .filter(|_| usize::from(size) >= FIXED_HEADER_LEN)
        .ok_or(ParseError::PacketSize {
            size,
            available: buf.len(),
        })?;
    // RFC 2332 §5.2.0.1: the checksum covers the whole packet; a packet
    // that fails it is discarded before any field is trusted.
    if verify_checksum && checksum(packet) != 0 {
        return Err(ParseError::Checksum);
    }
    if version != NHRP_VERSION {
        return Err(ParseError::Version(version));
    }
    let mut r = Reader::new(packet);
    r.skip(FIXED_HEADER_LEN)?;
    let src_proto_len = usize::from(r.u8()?);
    let dst_proto_len = usize::from(r.u8()?);
    let words = r.array::<6>()?;
    let src_nbma = r.take(atl_len(shtl)?)?;
    let src_nbma_subaddr = r.take(atl_len(sstl)?)?;
    let src_protocol = r.take(src_proto_len)?;
    let dst_protocol = r.take(dst_proto_len)?;
    Ok(Head {
        hop_count,
        extension_offset: usize::from(extension_offset),
        packet_type,
        afn,
        protocol_type,
        protocol_snap,
        words,
        src_nbma,
        src_nbma_subaddr,
        src_protocol,
        dst_protocol,
        packet,
        body_start: r.position(),
    })
}

impl Packet {
    /// A packet with IPv4 NBMA and protocol addresses, no extensions.
    pub fn new_ipv4(packet_type: PacketType, hop_count: u8, body: Body) -> Self {
        Self {
            afn: AFN_IPV4,
            protocol_type: PROTOCOL_TYPE_IPV4,
            protocol_snap: [0; 5],
            hop_count,
            packet_type,
            src_nbma: Vec::new(),
            src_nbma_subaddr: Vec::new(),
            src_protocol: Vec::new(),
            dst_protocol: Vec::new(),
            body,
            extensions: None,
        }
    }

    /// Decodes a packet. Bytes after `ar$pktsz` are ignored (link padding).
    pub fn parse(buf: &[u8]) -> Result<Self, ParseError> {
        let h = parse_head(buf, true)?;
        let size = h.packet.len();
        let body_end = if h.extension_offset == 0 {
            size
        } else {
            if h.extension_offset < h.body_start || h.extension_offset > size {
                // Offset 16 is where `ar$extoff` lives: the field in error.
                return Err(ParseError::ExtensionOffset(
                    u16::try_from(h.extension_offset).unwrap_or(u16::MAX),
                ));
            }
            h.extension_offset
        };
        let body_bytes = h.packet.get(h.body_start..body_end).unwrap_or_default();
        let [w0, w1, w2, w3, w4, w5] = h.words;
        let body = match h.packet_type {
            PacketType::ERROR_INDICATION => Body::ErrorIndication {
                error_code: ErrorCode(u16::from_be_bytes([w2, w3])),
                error_offset: u16::from_be_bytes([w4, w5]),
                contents: body_bytes.to_vec(),
            },
            PacketType::TRAFFIC_INDICATION => Body::TrafficIndication {
                traffic_code: u16::from_be_bytes([w2, w3]),
                data: body_bytes.to_vec(),
            },
            _ => Body::Common {
                flags: u16::from_be_bytes([w0, w1]),
                request_id: u32::from_be_bytes([w2, w3, w4, w5]),
                cies: parse_cies(Reader::new(body_bytes))?,
            },
        };
        let extensions = if h.extension_offset == 0 {
            None
        } else {
            Some(parse_extensions(h.packet, body_end)?)
        };
        Ok(Self {
            afn: h.afn,
            protocol_type: h.protocol_type,
            protocol_snap: h.protocol_snap,
            hop_count: h.hop_count,
            packet_type: h.packet_type,
            src_nbma: h.src_nbma.to_vec(),
            src_nbma_subaddr: h.src_nbma_subaddr.to_vec(),
            src_protocol: h.src_protocol.to_vec(),
            dst_protocol: h.dst_protocol.to_vec(),
            body,
            extensions,
        })
    }

    /// The type and source of a packet whose full decode failed, for
    /// addressing an Error Indication. `None` when even the fixed header or
    /// the addresses are unreadable, or the checksum fails.
    pub fn peek_source(buf: &[u8]) -> Option<PacketSource> {
        let h = parse_head(buf, true).ok()?;
        Some(PacketSource {
            packet_type: h.packet_type,
            src_protocol: h.src_protocol.to_vec(),
        })
    }

    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        let body = match &self.body {
            Body::Common { cies, .. } => cies.iter().map(Cie::buffer_len).sum(),
            Body::ErrorIndication { contents, .. } => contents.len(),
            Body::TrafficIndication { data, .. } => data.len(),
        };
        let ext: usize = match &self.extensions {
            None => 0,
            Some(e) => e.iter().map(Extension::buffer_len).sum::<usize>() + 4,
        };
        FIXED_HEADER_LEN
            + MANDATORY_FIXED_LEN
            + self.src_nbma.len()
            + self.src_nbma_subaddr.len()
            + self.src_protocol.len()
            + self.dst_protocol.len()
            + body
            + ext
    }

    /// Appends the encoded packet to `out`, computing size, extension
    /// offset and checksum.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), EmitError> {
        let base = out.len();
        let result = self.emit_inner(out, base);
        if result.is_err() {
            out.truncate(base);
        }
        result
    }

    /// The encoded packet.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EmitError> {
        let mut v = Vec::with_capacity(self.buffer_len());
        self.emit(&mut v)?;
        Ok(v)
    }

    fn emit_inner(&self, out: &mut Vec<u8>, base: usize) -> Result<(), EmitError> {
        let layout_ok = match (&self.body, self.packet_type) {
            (Body::ErrorIndication { .. }, PacketType::ERROR_INDICATION)
            | (Body::TrafficIndication { .. }, PacketType::TRAFFIC_INDICATION) => true,
            (Body::Common { .. }, t) => {
                t != PacketType::ERROR_INDICATION && t != PacketType::TRAFFIC_INDICATION
            }
            _ => false,
        };
        if !layout_ok {
            return Err(EmitError::BodyMismatch(self.packet_type));
        }
        let mut w = Writer::new(out);
        w.u16(self.afn)
            .u16(self.protocol_type)
            .bytes(&self.protocol_snap);
        w.u8(self.hop_count);
        w.u16(0).u16(0).u16(0); // size, checksum, extension offset: patched below
        w.u8(NHRP_VERSION).u8(self.packet_type.0);
        w.u8(nbma_atl(&self.src_nbma)?)
            .u8(nbma_atl(&self.src_nbma_subaddr)?);
        w.u8(proto_len(&self.src_protocol)?)
            .u8(proto_len(&self.dst_protocol)?);
        match &self.body {
            Body::Common {
                flags, request_id, ..
            } => {
                w.u16(*flags).u32(*request_id);
            }
            Body::ErrorIndication {
                error_code,
                error_offset,
                ..
            } => {
                w.u16(0).u16(error_code.0).u16(*error_offset);
            }
            Body::TrafficIndication { traffic_code, .. } => {
                w.u16(0).u16(*traffic_code).u16(0);
            }
        }
        w.bytes(&self.src_nbma)
            .bytes(&self.src_nbma_subaddr)
            .bytes(&self.src_protocol)
            .bytes(&self.dst_protocol);
        match &self.body {
            Body::Common { cies, .. } => {
                for c in cies {
                    c.emit(&mut w)?;
                }
            }
            Body::ErrorIndication { contents, .. } => {
                w.bytes(contents);
            }
            Body::TrafficIndication { data, .. } => {
                w.bytes(data);
            }
        }
        if let Some(exts) = &self.extensions {
            let off = u16::try_from(w.len() - base).map_err(|_| EmitError::TooLong)?;
            w.set_u16_at(base + OFF_EXTENSION_OFFSET, off);
            for e in exts {
                e.emit(&mut w)?;
            }
            // End of extensions, compulsory bit set as Cisco sends it
            // (docs/interop-notes.md §13).
            w.u16(EXTENSION_COMPULSORY | ExtensionType::END.0).u16(0);
        }
        let size = u16::try_from(w.len() - base).map_err(|_| EmitError::TooLong)?;
        w.set_u16_at(base + OFF_PACKET_SIZE, size);
        let sum = checksum(w.as_slice().get(base..).unwrap_or_default());
        w.set_u16_at(base + OFF_CHECKSUM, sum);
        Ok(())
    }

    /// The flags of a types 1–6 packet.
    pub fn flags(&self) -> u16 {
        match &self.body {
            Body::Common { flags, .. } => *flags,
            _ => 0,
        }
    }

    /// The request id of a types 1–6 packet.
    pub fn request_id(&self) -> Option<u32> {
        match &self.body {
            Body::Common { request_id, .. } => Some(*request_id),
            _ => None,
        }
    }

    /// The CIEs of a types 1–6 packet.
    pub fn cies(&self) -> &[Cie] {
        match &self.body {
            Body::Common { cies, .. } => cies,
            _ => &[],
        }
    }

    /// The first extension of a type.
    pub fn extension(&self, t: ExtensionType) -> Option<&Extension> {
        self.extensions.as_ref()?.iter().find(|e| e.ext_type() == t)
    }

    /// The CIE list of a CIE-carrying extension, when present.
    pub fn extension_cies(&self, t: ExtensionType) -> Option<&[Cie]> {
        match &self.extension(t)?.body {
            ExtensionBody::ResponderAddress(c)
            | ExtensionBody::ForwardTransit(c)
            | ExtensionBody::ReverseTransit(c)
            | ExtensionBody::CiscoNatAddress(c) => Some(c),
            _ => None,
        }
    }

    /// Source NBMA as an IP address.
    pub fn src_nbma_ip(&self) -> Option<IpAddr> {
        ip_from_bytes(&self.src_nbma)
    }

    /// Source protocol address as an IP address.
    pub fn src_protocol_ip(&self) -> Option<IpAddr> {
        ip_from_bytes(&self.src_protocol)
    }

    /// Destination protocol address as an IP address.
    pub fn dst_protocol_ip(&self) -> Option<IpAddr> {
        ip_from_bytes(&self.dst_protocol)
    }
}

fn parse_extensions(packet: &[u8], start: usize) -> Result<Vec<Extension>, ParseError> {
    let mut r = Reader::new(packet);
    r.skip(start)?;
    let mut out = Vec::new();
    while !r.is_empty() {
        let offset = u16::try_from(r.position()).unwrap_or(u16::MAX);
        let word = r.u16()?;
        let len = usize::from(r.u16()?);
        let value = r.sub(len)?;
        if word & !EXTENSION_COMPULSORY == ExtensionType::END.0 {
            // RFC 2332 §5.3.0: End marks the last extension. Bytes after it
            // are ignored: OpenNHRP appends 16 zero bytes to Error
            // Indications for Cisco (docs/interop-notes.md §13).
            break;
        }
        out.push(Extension::parse(word, offset, value)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_note_3_checksum_pads_odd_length() {
        // 0x0102 + 0x0300 = 0x0402, complement 0xfbfd.
        assert_eq!(checksum(&[1, 2, 3]), 0xfbfd);
        assert_eq!(checksum(&[1, 2, 3, 0]), 0xfbfd);
    }

    #[test]
    fn rejects_bad_checksum_and_short_size() {
        let p = Packet::new_ipv4(
            PacketType::REGISTRATION_REQUEST,
            1,
            Body::Common {
                flags: 0,
                request_id: 7,
                cies: vec![],
            },
        );
        let mut b = p.to_bytes().unwrap();
        assert_eq!(Packet::parse(&b).unwrap(), p);
        if let Some(x) = b.get_mut(23) {
            *x ^= 1;
        }
        assert_eq!(Packet::parse(&b), Err(ParseError::Checksum));
        assert!(matches!(
            Packet::parse(&b[..19]),
            Err(ParseError::Truncated(_))
        ));
    }

    #[test]
    fn unknown_compulsory_extension_rejected_optional_kept() {
        let mut p = Packet::new_ipv4(
            PacketType::RESOLUTION_REQUEST,
            3,
            Body::Common {
                flags: 0,
                request_id: 1,
                cies: vec![],
            },
        );
        p.extensions = Some(vec![Extension::optional(ExtensionBody::Other {
            ext_type: ExtensionType(0x1234),
            value: vec![1, 2, 3],
        })]);
        let b = p.to_bytes().unwrap();
        assert_eq!(Packet::parse(&b).unwrap(), p);
        p.extensions = Some(vec![Extension::compulsory(ExtensionBody::Other {
            ext_type: ExtensionType(0x1234),
            value: vec![1, 2, 3],
        })]);
        let b = p.to_bytes().unwrap();
        let e = Packet::parse(&b).unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::UNRECOGNIZED_EXTENSION));
        assert_eq!(e.error_offset(), 28);
    }
}
