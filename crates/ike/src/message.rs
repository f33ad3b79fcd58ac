//! IKEv2 message codec: header (RFC 7296 §3.1), generic payload header and
//! chaining (§3.2), SA/proposal/transform/attribute (§3.3), KE (§3.4), ID
//! (§3.5), AUTH (§3.8), Nonce (§3.9), Notify (§3.10), Delete (§3.11), Vendor
//! ID (§3.12), Traffic Selectors (§3.13), SK (§3.14) and SKF (RFC 7383 §2.5).
//!
//! Parsing is strict about lengths (every nested length goes through its own
//! sub-reader and trailing bytes are rejected) and lenient about content it
//! does not understand: unknown non-critical payloads are kept as
//! [`Payload::Unknown`] and skipped by the engine (§2.5).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dmvpn_wire::{Reader, Truncated, Writer};

use crate::codes::*;

/// Fixed IKE header length (§3.1).
pub const HEADER_LEN: usize = 28;
/// Generic payload header length (§3.2).
pub const GENERIC_LEN: usize = 4;

/// Why a message could not be parsed, and which notify it causes (§2.21).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A length field ran past the end of its container.
    #[error("truncated message")]
    Truncated,
    /// Structurally invalid content.
    #[error("invalid syntax: {0}")]
    Syntax(&'static str),
    /// A payload we do not know had the critical bit set (§2.5).
    #[error("unsupported critical payload {0}")]
    UnsupportedCritical(PayloadType),
    /// Major version other than 2 (§2.5: MUST drop or answer
    /// INVALID_MAJOR_VERSION).
    #[error("unsupported major version {0}")]
    MajorVersion(u8),
    /// A length does not fit its 16/32-bit field when encoding.
    #[error("message too long to encode")]
    TooLong,
}

impl From<Truncated> for ParseError {
    fn from(_: Truncated) -> Self {
        Self::Truncated
    }
}

impl ParseError {
    /// The notify this error causes when answering a request (§2.21.1,
    /// §3.10.1): type and notification data.
    pub fn notify(&self) -> (NotifyType, Vec<u8>) {
        match self {
            Self::UnsupportedCritical(t) => (NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD, vec![t.0]),
            Self::MajorVersion(_) => (NotifyType::INVALID_MAJOR_VERSION, Vec::new()),
            _ => (NotifyType::INVALID_SYNTAX, Vec::new()),
        }
    }
}

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

    fn emit(&self, w: &mut Writer<'_>) {
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

/// A transform attribute (§3.3.5): TV when the AF bit is set, else TLV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    /// Two-byte value in the header (AF = 1).
    Tv(u16),
    /// Variable-length value (AF = 0).
    Tlv(Vec<u8>),
}

/// A transform attribute (§3.3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute type, without the AF bit.
    pub ty: AttributeType,
    /// The value.
    pub value: AttrValue,
}

/// A transform substructure (§3.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    /// Transform type.
    pub ty: TransformType,
    /// Transform ID, interpreted by type (see [`EncrId`], [`PrfId`], ...).
    pub id: u16,
    /// Attributes (key length).
    pub attributes: Vec<Attribute>,
}

impl Transform {
    /// A transform without attributes.
    pub fn new(ty: TransformType, id: u16) -> Self {
        Self {
            ty,
            id,
            attributes: Vec::new(),
        }
    }

    /// An ENCR transform with a key-length attribute.
    pub fn encr(id: EncrId, key_bits: u16) -> Self {
        Self {
            ty: TransformType::ENCR,
            id: id.0,
            attributes: vec![Attribute {
                ty: AttributeType::KEY_LENGTH,
                value: AttrValue::Tv(key_bits),
            }],
        }
    }

    /// The key-length attribute, if present.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes
            .iter()
            .find_map(|a| match (&a.ty, &a.value) {
                (&AttributeType::KEY_LENGTH, AttrValue::Tv(v)) => Some(*v),
                _ => None,
            })
    }
}

/// A proposal substructure (§3.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal number (first is 1; §3.3.1).
    pub number: u8,
    /// Protocol.
    pub protocol: ProtocolId,
    /// SPI: empty in IKE_SA_INIT, 8 bytes when rekeying the IKE SA, 4 for ESP.
    pub spi: Vec<u8>,
    /// Transforms.
    pub transforms: Vec<Transform>,
}

impl Proposal {
    /// The transforms of one type.
    pub fn of_type(&self, ty: TransformType) -> impl Iterator<Item = &Transform> {
        self.transforms.iter().filter(move |t| t.ty == ty)
    }
}

/// KE payload (§3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExchange {
    /// D-H group.
    pub dh_group: DhId,
    /// Public value in the group's IKE encoding.
    pub data: Vec<u8>,
}

/// IDi / IDr payload body (§3.5).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identification {
    /// ID type.
    pub id_type: IdType,
    /// Identification data.
    pub data: Vec<u8>,
}

impl Identification {
    /// ID_IPV4_ADDR / ID_IPV6_ADDR for an address (Cisco's default identity).
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Self {
                id_type: IdType::ID_IPV4_ADDR,
                data: a.octets().to_vec(),
            },
            IpAddr::V6(a) => Self {
                id_type: IdType::ID_IPV6_ADDR,
                data: a.octets().to_vec(),
            },
        }
    }

    /// ID_FQDN.
    pub fn fqdn(name: &str) -> Self {
        Self {
            id_type: IdType::ID_FQDN,
            data: name.as_bytes().to_vec(),
        }
    }

    /// ID_KEY_ID.
    pub fn key_id(id: &[u8]) -> Self {
        Self {
            id_type: IdType::ID_KEY_ID,
            data: id.to_vec(),
        }
    }

    /// The address for an IP identity.
    pub fn ip(&self) -> Option<IpAddr> {
        match self.id_type {
            IdType::ID_IPV4_ADDR => <[u8; 4]>::try_from(self.data.as_slice())
                .ok()
                .map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            IdType::ID_IPV6_ADDR => <[u8; 16]>::try_from(self.data.as_slice())
                .ok()
                .map(|a| IpAddr::V6(Ipv6Addr::from(a))),
            _ => None,
        }
    }

    /// The bytes AUTH is computed over: ID type, 3 reserved bytes, data
    /// ("RestOfInitIDPayload", §2.15).
    pub fn body(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + self.data.len());
        v.push(self.id_type.0);
        v.extend_from_slice(&[0, 0, 0]);
        v.extend_from_slice(&self.data);
        v
    }
}

impl core::fmt::Debug for Identification {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(self, f)
    }
}

impl core::fmt::Display for Identification {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if let Some(ip) = self.ip() {
            return write!(f, "{ip}");
        }
        match self.id_type {
            IdType::ID_FQDN | IdType::ID_RFC822_ADDR => {
                write!(f, "{}", String::from_utf8_lossy(&self.data))
            }
            t => {
                write!(f, "{t}:")?;
                for b in &self.data {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// AUTH payload (§3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    /// Method.
    pub method: AuthMethod,
    /// Authentication data.
    pub data: Vec<u8>,
}

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

/// One traffic selector (§3.13.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficSelector {
    /// IP protocol, 0 = any; 47 for GRE.
    pub ip_protocol: u8,
    /// First port.
    pub start_port: u16,
    /// Last port.
    pub end_port: u16,
    /// First address.
    pub start: IpAddr,
    /// Last address (same family as `start`).
    pub end: IpAddr,
}

impl TrafficSelector {
    /// The DMVPN selector: one host, GRE, all ports (wire-notes 17).
    pub fn gre_host(ip: IpAddr) -> Self {
        Self {
            ip_protocol: 47,
            start_port: 0,
            end_port: 0xffff,
            start: ip,
            end: ip,
        }
    }

    /// The TS type this selector is encoded as.
    pub fn ts_type(&self) -> TsType {
        match self.start {
            IpAddr::V4(_) => TsType::TS_IPV4_ADDR_RANGE,
            IpAddr::V6(_) => TsType::TS_IPV6_ADDR_RANGE,
        }
    }

    /// True if `ip` lies within the range and the protocol admits GRE.
    pub fn admits_gre_host(&self, ip: IpAddr) -> bool {
        (self.ip_protocol == 0 || self.ip_protocol == 47)
            && self.start_port == 0
            && self.end_port == 0xffff
            && addr_le(self.start, ip)
            && addr_le(ip, self.end)
    }
}

fn addr_le(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a <= b,
        (IpAddr::V6(a), IpAddr::V6(b)) => a <= b,
        _ => false,
    }
}

/// The SK payload as received: the first inner payload type and IV ‖
/// ciphertext ‖ ICV (§3.14). Decrypt with [`crate::sk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    /// Type of the first payload inside.
    pub first: PayloadType,
    /// IV ‖ ciphertext ‖ ICV.
    pub body: Vec<u8>,
}

/// The SKF payload (RFC 7383 §2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// First inner payload type in fragment 1, else 0.
    pub first: PayloadType,
    /// Fragment number, from 1.
    pub number: u16,
    /// Total fragments.
    pub total: u16,
    /// IV ‖ ciphertext ‖ ICV.
    pub body: Vec<u8>,
}

/// A payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Security Association.
    Sa(Vec<Proposal>),
    /// Key Exchange.
    Ke(KeyExchange),
    /// Identification - Initiator.
    IdI(Identification),
    /// Identification - Responder.
    IdR(Identification),
    /// Authentication.
    Auth(Authentication),
    /// Ni or Nr.
    Nonce(Vec<u8>),
    /// Notify.
    Notify(Notify),
    /// Delete.
    Delete(Delete),
    /// Vendor ID.
    Vendor(Vec<u8>),
    /// Traffic Selector - Initiator.
    TsI(Vec<TrafficSelector>),
    /// Traffic Selector - Responder.
    TsR(Vec<TrafficSelector>),
    /// Encrypted and Authenticated.
    Sk(Encrypted),
    /// Encrypted and Authenticated Fragment.
    Skf(Fragment),
    /// A payload type this codec does not interpret (non-critical, or
    /// critical ones kept only when the caller asked to).
    Unknown {
        /// Payload type.
        ty: PayloadType,
        /// Critical bit.
        critical: bool,
        /// Body after the generic header.
        body: Vec<u8>,
    },
}

impl Payload {
    /// The payload type code.
    pub fn ty(&self) -> PayloadType {
        match self {
            Self::Sa(_) => PayloadType::SA,
            Self::Ke(_) => PayloadType::KE,
            Self::IdI(_) => PayloadType::IDI,
            Self::IdR(_) => PayloadType::IDR,
            Self::Auth(_) => PayloadType::AUTH,
            Self::Nonce(_) => PayloadType::NONCE,
            Self::Notify(_) => PayloadType::N,
            Self::Delete(_) => PayloadType::D,
            Self::Vendor(_) => PayloadType::V,
            Self::TsI(_) => PayloadType::TSI,
            Self::TsR(_) => PayloadType::TSR,
            Self::Sk(_) => PayloadType::SK,
            Self::Skf(_) => PayloadType::SKF,
            Self::Unknown { ty, .. } => *ty,
        }
    }
}

/// Parses a payload chain that starts with a payload of type `first`.
/// Consumes all of `buf`: trailing bytes are a syntax error. An SK or SKF
/// payload ends the chain: its "next payload" names the first inner payload
/// (§3.14), and it MUST be the last payload (§3.14).
pub fn parse_payloads(first: PayloadType, buf: &[u8]) -> Result<Vec<Payload>, ParseError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    let mut next = first;
    while next != PayloadType::NONE {
        let ty = next;
        next = PayloadType(r.u8()?);
        let critical = r.u8()? & 0x80 != 0;
        let len = usize::from(r.u16()?);
        let body_len = len
            .checked_sub(GENERIC_LEN)
            .ok_or(ParseError::Syntax("payload length below 4"))?;
        let mut b = r.sub(body_len)?;
        let p = match ty {
            PayloadType::SA => Payload::Sa(parse_sa(&mut b)?),
            PayloadType::KE => {
                let dh_group = DhId(b.u16()?);
                b.skip(2)?;
                Payload::Ke(KeyExchange {
                    dh_group,
                    data: b.take_rest().to_vec(),
                })
            }
            PayloadType::IDI | PayloadType::IDR => {
                let id_type = IdType(b.u8()?);
                b.skip(3)?;
                let id = Identification {
                    id_type,
                    data: b.take_rest().to_vec(),
                };
                if ty == PayloadType::IDI {
                    Payload::IdI(id)
                } else {
                    Payload::IdR(id)
                }
            }
            PayloadType::AUTH => {
                let method = AuthMethod(b.u8()?);
                b.skip(3)?;
                Payload::Auth(Authentication {
                    method,
                    data: b.take_rest().to_vec(),
                })
            }
            PayloadType::NONCE => Payload::Nonce(b.take_rest().to_vec()),
            PayloadType::N => {
                let protocol = ProtocolId(b.u8()?);
                let spi_size = usize::from(b.u8()?);
                let nt = NotifyType(b.u16()?);
                let spi = b.take(spi_size)?.to_vec();
                Payload::Notify(Notify {
                    protocol,
                    spi,
                    ty: nt,
                    data: b.take_rest().to_vec(),
                })
            }
            PayloadType::D => {
                let protocol = ProtocolId(b.u8()?);
                let spi_size = b.u8()?;
                let n = b.u16()?;
                let mut spis = Vec::with_capacity(usize::from(n).min(64));
                for _ in 0..n {
                    spis.push(b.take(usize::from(spi_size))?.to_vec());
                }
                Payload::Delete(Delete {
                    protocol,
                    spi_size,
                    spis,
                })
            }
            PayloadType::V => Payload::Vendor(b.take_rest().to_vec()),
            PayloadType::TSI => Payload::TsI(parse_ts(&mut b)?),
            PayloadType::TSR => Payload::TsR(parse_ts(&mut b)?),
            PayloadType::SK => {
                out.push(Payload::Sk(Encrypted {
                    first: next,
                    body: b.take_rest().to_vec(),
                }));
                return end_of_chain(r, out);
            }
            PayloadType::SKF => {
                let number = b.u16()?;
                let total = b.u16()?;
                // RFC 7383 §2.5: number 1..=total, total >= 1.
                if number == 0 || number > total {
                    return Err(ParseError::Syntax("bad fragment number"));
                }
                out.push(Payload::Skf(Fragment {
                    first: next,
                    number,
                    total,
                    body: b.take_rest().to_vec(),
                }));
                return end_of_chain(r, out);
            }
            _ if critical => return Err(ParseError::UnsupportedCritical(ty)),
            _ => Payload::Unknown {
                ty,
                critical,
                body: b.take_rest().to_vec(),
            },
        };
        if !b.is_empty() {
            return Err(ParseError::Syntax("trailing bytes in payload"));
        }
        out.push(p);
    }
    end_of_chain(r, out)
}

fn end_of_chain(r: Reader<'_>, out: Vec<Payload>) -> Result<Vec<Payload>, ParseError> {
    if r.is_empty() {
        Ok(out)
    } else {
        Err(ParseError::Syntax("bytes after the last payload"))
    }
}

fn parse_sa(b: &mut Reader<'_>) -> Result<Vec<Proposal>, ParseError> {
    let mut proposals = Vec::new();
    loop {
        let last = b.u8()?;
        b.skip(1)?;
        let len = usize::from(b.u16()?);
        let mut p = b.sub(
            len.checked_sub(4)
                .ok_or(ParseError::Syntax("proposal length"))?,
        )?;
        let number = p.u8()?;
        let protocol = ProtocolId(p.u8()?);
        let spi_size = usize::from(p.u8()?);
        let n_transforms = p.u8()?;
        let spi = p.take(spi_size)?.to_vec();
        let mut transforms = Vec::with_capacity(usize::from(n_transforms));
        for i in 0..n_transforms {
            let t_last = p.u8()?;
            // §3.3.2: 0 for the last transform, 3 otherwise.
            let expect_last = i + 1 == n_transforms;
            if (t_last == 0) != expect_last || (t_last != 0 && t_last != 3) {
                return Err(ParseError::Syntax("transform count/last mismatch"));
            }
            p.skip(1)?;
            let tlen = usize::from(p.u16()?);
            let mut t = p.sub(
                tlen.checked_sub(4)
                    .ok_or(ParseError::Syntax("transform length"))?,
            )?;
            let ty = TransformType(t.u8()?);
            t.skip(1)?;
            let id = t.u16()?;
            let mut attributes = Vec::new();
            while !t.is_empty() {
                let at = t.u16()?;
                let value = if at & 0x8000 != 0 {
                    AttrValue::Tv(t.u16()?)
                } else {
                    let l = usize::from(t.u16()?);
                    AttrValue::Tlv(t.take(l)?.to_vec())
                };
                attributes.push(Attribute {
                    ty: AttributeType(at & 0x7fff),
                    value,
                });
            }
            transforms.push(Transform { ty, id, attributes });
        }
        if !p.is_empty() {
            return Err(ParseError::Syntax("trailing bytes in proposal"));
        }
        proposals.push(Proposal {
            number,
            protocol,
            spi,
            transforms,
        });
        match last {
            0 => break,
            2 => continue,
            _ => return Err(ParseError::Syntax("proposal last-substruc")),
        }
    }
    if !b.is_empty() {
        return Err(ParseError::Syntax("trailing bytes in SA"));
    }
    Ok(proposals)
}

fn parse_ts(b: &mut Reader<'_>) -> Result<Vec<TrafficSelector>, ParseError> {
    let n = b.u8()?;
    b.skip(3)?;
    let mut out = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let ty = TsType(b.u8()?);
        let ip_protocol = b.u8()?;
        let len = usize::from(b.u16()?);
        let mut s = b.sub(len.checked_sub(4).ok_or(ParseError::Syntax("TS length"))?)?;
        let start_port = s.u16()?;
        let end_port = s.u16()?;
        let (start, end) = match ty {
            TsType::TS_IPV4_ADDR_RANGE => (
                IpAddr::V4(Ipv4Addr::from(s.array::<4>()?)),
                IpAddr::V4(Ipv4Addr::from(s.array::<4>()?)),
            ),
            TsType::TS_IPV6_ADDR_RANGE => (
                IpAddr::V6(Ipv6Addr::from(s.array::<16>()?)),
                IpAddr::V6(Ipv6Addr::from(s.array::<16>()?)),
            ),
            // Fibre-channel and other selector types cannot describe GRE
            // between NBMA addresses; refusing them is TS_UNACCEPTABLE at the
            // engine level, but the codec cannot represent them.
            _ => return Err(ParseError::Syntax("unsupported TS type")),
        };
        if !s.is_empty() {
            return Err(ParseError::Syntax("trailing bytes in TS"));
        }
        out.push(TrafficSelector {
            ip_protocol,
            start_port,
            end_port,
            start,
            end,
        });
    }
    if !b.is_empty() {
        return Err(ParseError::Syntax("trailing bytes in TS payload"));
    }
    Ok(out)
}

/// Appends a payload chain. The "next payload" of each is the type of the
/// one after it; SK/SKF carry their first inner type instead (§3.14).
pub fn emit_payloads(payloads: &[Payload], w: &mut Writer<'_>) -> Result<(), ParseError> {
    let mut it = payloads.iter().peekable();
    while let Some(p) = it.next() {
        let next = match p {
            Payload::Sk(e) => e.first,
            Payload::Skf(f) => f.first,
            _ => it.peek().map_or(PayloadType::NONE, |n| n.ty()),
        };
        let start = w.len();
        w.u8(next.0);
        w.u8(match p {
            Payload::Unknown { critical: true, .. } => 0x80,
            _ => 0,
        });
        let mark = w.reserve_u16(start);
        emit_body(p, w)?;
        w.patch_len_u16(mark).ok_or(ParseError::TooLong)?;
    }
    Ok(())
}

fn emit_body(p: &Payload, w: &mut Writer<'_>) -> Result<(), ParseError> {
    match p {
        Payload::Sa(props) => {
            for (i, pr) in props.iter().enumerate() {
                let start = w.len();
                w.u8(if i + 1 == props.len() { 0 } else { 2 }).u8(0);
                let mark = w.reserve_u16(start);
                let spi_len = u8::try_from(pr.spi.len()).map_err(|_| ParseError::TooLong)?;
                let n = u8::try_from(pr.transforms.len()).map_err(|_| ParseError::TooLong)?;
                w.u8(pr.number)
                    .u8(pr.protocol.0)
                    .u8(spi_len)
                    .u8(n)
                    .bytes(&pr.spi);
                for (j, t) in pr.transforms.iter().enumerate() {
                    let ts = w.len();
                    w.u8(if j + 1 == pr.transforms.len() { 0 } else { 3 }).u8(0);
                    let tm = w.reserve_u16(ts);
                    w.u8(t.ty.0).u8(0).u16(t.id);
                    for a in &t.attributes {
                        match &a.value {
                            AttrValue::Tv(v) => {
                                w.u16(a.ty.0 | 0x8000).u16(*v);
                            }
                            AttrValue::Tlv(v) => {
                                let l = u16::try_from(v.len()).map_err(|_| ParseError::TooLong)?;
                                w.u16(a.ty.0 & 0x7fff).u16(l).bytes(v);
                            }
                        }
                    }
                    w.patch_len_u16(tm).ok_or(ParseError::TooLong)?;
                }
                w.patch_len_u16(mark).ok_or(ParseError::TooLong)?;
            }
        }
        Payload::Ke(k) => {
            w.u16(k.dh_group.0).u16(0).bytes(&k.data);
        }
        Payload::IdI(id) | Payload::IdR(id) => {
            w.bytes(&id.body());
        }
        Payload::Auth(a) => {
            w.u8(a.method.0).zeros(3).bytes(&a.data);
        }
        Payload::Nonce(n) | Payload::Vendor(n) => {
            w.bytes(n);
        }
        Payload::Notify(n) => {
            let spi_len = u8::try_from(n.spi.len()).map_err(|_| ParseError::TooLong)?;
            w.u8(n.protocol.0)
                .u8(spi_len)
                .u16(n.ty.0)
                .bytes(&n.spi)
                .bytes(&n.data);
        }
        Payload::Delete(d) => {
            let n = u16::try_from(d.spis.len()).map_err(|_| ParseError::TooLong)?;
            w.u8(d.protocol.0).u8(d.spi_size).u16(n);
            for s in &d.spis {
                if s.len() != usize::from(d.spi_size) {
                    return Err(ParseError::Syntax("delete SPI size"));
                }
                w.bytes(s);
            }
        }
        Payload::TsI(ts) | Payload::TsR(ts) => {
            let n = u8::try_from(ts.len()).map_err(|_| ParseError::TooLong)?;
            w.u8(n).zeros(3);
            for t in ts {
                let start = w.len();
                w.u8(t.ts_type().0).u8(t.ip_protocol);
                let mark = w.reserve_u16(start);
                w.u16(t.start_port).u16(t.end_port);
                match (t.start, t.end) {
                    (IpAddr::V4(a), IpAddr::V4(b)) => {
                        w.bytes(&a.octets()).bytes(&b.octets());
                    }
                    (IpAddr::V6(a), IpAddr::V6(b)) => {
                        w.bytes(&a.octets()).bytes(&b.octets());
                    }
                    _ => return Err(ParseError::Syntax("TS address families differ")),
                }
                w.patch_len_u16(mark).ok_or(ParseError::TooLong)?;
            }
        }
        Payload::Sk(e) => {
            w.bytes(&e.body);
        }
        Payload::Skf(f) => {
            w.u16(f.number).u16(f.total).bytes(&f.body);
        }
        Payload::Unknown { body, .. } => {
            w.bytes(body);
        }
    }
    Ok(())
}

/// A whole message: header and (outer) payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header; `next_payload` and `length` are recomputed by `emit`.
    pub header: Header,
    /// Payloads in order.
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Parses a datagram (without the NAT-T non-ESP marker). The header
    /// length MUST match the datagram (§3.1); anything else is malformed.
    pub fn parse(buf: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(buf);
        let header = Header::parse(&mut r)?;
        if usize::try_from(header.length).ok() != Some(buf.len()) {
            return Err(ParseError::Syntax("header length != datagram length"));
        }
        let payloads = parse_payloads(header.next_payload, r.rest())?;
        Ok(Self { header, payloads })
    }

    /// Encodes the message, filling in the first payload type and length.
    pub fn emit(&self) -> Result<Vec<u8>, ParseError> {
        let mut out = Vec::with_capacity(256);
        let mut w = Writer::new(&mut out);
        let mut h = self.header.clone();
        h.next_payload = self.payloads.first().map_or(PayloadType::NONE, Payload::ty);
        h.emit(&mut w);
        emit_payloads(&self.payloads, &mut w)?;
        let len = u32::try_from(out.len()).map_err(|_| ParseError::TooLong)?;
        if let Some(l) = out.get_mut(24..28) {
            l.copy_from_slice(&len.to_be_bytes());
        }
        Ok(out)
    }

    /// Notifies in this message.
    pub fn notifies(&self) -> impl Iterator<Item = &Notify> {
        notifies(&self.payloads)
    }
}

/// Notifies in a payload list.
pub fn notifies(p: &[Payload]) -> impl Iterator<Item = &Notify> {
    p.iter().filter_map(|p| match p {
        Payload::Notify(n) => Some(n),
        _ => None,
    })
}

/// The first notify of a type.
pub fn find_notify(p: &[Payload], ty: NotifyType) -> Option<&Notify> {
    notifies(p).find(|n| n.ty == ty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]
    }

    fn ts() -> impl Strategy<Value = TrafficSelector> {
        (any::<u8>(), any::<u16>(), any::<u16>(), ip()).prop_map(|(p, s, e, a)| TrafficSelector {
            ip_protocol: p,
            start_port: s,
            end_port: e,
            start: a,
            end: a,
        })
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    fn transform() -> impl Strategy<Value = Transform> {
        (
            1u8..6,
            any::<u16>(),
            proptest::option::of(any::<u16>()),
            proptest::option::of((0u16..0x7fff, bytes(8))),
        )
            .prop_map(|(ty, id, kl, tlv)| {
                let mut attributes = Vec::new();
                if let Some(k) = kl {
                    attributes.push(Attribute {
                        ty: AttributeType::KEY_LENGTH,
                        value: AttrValue::Tv(k),
                    });
                }
                if let Some((t, v)) = tlv {
                    attributes.push(Attribute {
                        ty: AttributeType(t),
                        value: AttrValue::Tlv(v),
                    });
                }
                Transform {
                    ty: TransformType(ty),
                    id,
                    attributes,
                }
            })
    }

    fn proposal() -> impl Strategy<Value = Proposal> {
        (
            any::<u8>(),
            1u8..4,
            prop_oneof![Just(0usize), Just(4), Just(8)],
            proptest::collection::vec(transform(), 0..6),
        )
            .prop_flat_map(|(number, proto, spi_len, transforms)| {
                proptest::collection::vec(any::<u8>(), spi_len).prop_map(move |spi| Proposal {
                    number,
                    protocol: ProtocolId(proto),
                    spi,
                    transforms: transforms.clone(),
                })
            })
    }

    fn payload() -> impl Strategy<Value = Payload> {
        prop_oneof![
            proptest::collection::vec(proposal(), 1..4).prop_map(Payload::Sa),
            (any::<u16>(), bytes(100)).prop_map(|(g, d)| Payload::Ke(KeyExchange {
                dh_group: DhId(g),
                data: d
            })),
            (any::<u8>(), bytes(40)).prop_map(|(t, d)| Payload::IdI(Identification {
                id_type: IdType(t),
                data: d
            })),
            (any::<u8>(), bytes(40)).prop_map(|(t, d)| Payload::IdR(Identification {
                id_type: IdType(t),
                data: d
            })),
            (any::<u8>(), bytes(70)).prop_map(|(m, d)| Payload::Auth(Authentication {
                method: AuthMethod(m),
                data: d
            })),
            bytes(64).prop_map(Payload::Nonce),
            (any::<u8>(), bytes(8), any::<u16>(), bytes(30)).prop_map(|(p, s, t, d)| {
                Payload::Notify(Notify {
                    protocol: ProtocolId(p),
                    spi: s,
                    ty: NotifyType(t),
                    data: d,
                })
            }),
            (
                any::<u8>(),
                prop_oneof![Just(0u8), Just(4), Just(8)],
                0usize..5
            )
                .prop_flat_map(|(p, sz, n)| {
                    proptest::collection::vec(
                        proptest::collection::vec(any::<u8>(), usize::from(sz)),
                        n,
                    )
                    .prop_map(move |spis| {
                        Payload::Delete(Delete {
                            protocol: ProtocolId(p),
                            spi_size: sz,
                            spis,
                        })
                    })
                }),
            bytes(20).prop_map(Payload::Vendor),
            proptest::collection::vec(ts(), 0..3).prop_map(Payload::TsI),
            proptest::collection::vec(ts(), 0..3).prop_map(Payload::TsR),
            (0u8..200, bytes(30)).prop_map(|(t, b)| Payload::Unknown {
                ty: PayloadType(t + 54),
                critical: false,
                body: b
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_payload_round_trips(ps in proptest::collection::vec(payload(), 0..6), first_sk in proptest::option::of((bytes(40), 1u8..60))) {
            let mut ps = ps;
            if let Some((body, first)) = first_sk {
                ps.push(Payload::Sk(Encrypted { first: PayloadType(first), body }));
            }
            let m = Message {
                header: Header {
                    spi_i: 1, spi_r: 2, next_payload: PayloadType::NONE, version: 0x20,
                    exchange: ExchangeType::INFORMATIONAL, flags: flags::RESPONSE, message_id: 7, length: 0,
                },
                payloads: ps,
            };
            let bytes = m.emit().unwrap();
            let back = Message::parse(&bytes).unwrap();
            prop_assert_eq!(&back.payloads, &m.payloads);
            prop_assert_eq!(back.emit().unwrap(), bytes);
        }

        #[test]
        fn skf_round_trips(total in 1u16..10, body in bytes(40), first in 0u8..60) {
            let number = total;
            let ps = vec![Payload::Skf(Fragment { first: PayloadType(first), number, total, body })];
            let mut out = Vec::new();
            emit_payloads(&ps, &mut Writer::new(&mut out)).unwrap();
            prop_assert_eq!(parse_payloads(PayloadType::SKF, &out).unwrap(), ps);
        }

        #[test]
        fn parser_never_panics(data in bytes(300)) {
            let _ = Message::parse(&data);
            let _ = parse_payloads(PayloadType::SA, &data);
        }
    }

    #[test]
    fn unknown_critical_payload_is_refused_and_noncritical_kept() {
        // Generic header: next 0, critical, length 5, one body byte.
        let buf = [0u8, 0x80, 0, 5, 9];
        let e = parse_payloads(PayloadType(99), &buf).unwrap_err();
        assert_eq!(e, ParseError::UnsupportedCritical(PayloadType(99)));
        assert_eq!(
            e.notify(),
            (NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD, vec![99])
        );
        let ok = parse_payloads(PayloadType(99), &[0, 0, 0, 5, 9]).unwrap();
        assert_eq!(
            ok,
            vec![Payload::Unknown {
                ty: PayloadType(99),
                critical: false,
                body: vec![9]
            }]
        );
        // Lying lengths and trailing bytes are INVALID_SYNTAX.
        assert_eq!(
            parse_payloads(PayloadType::NONCE, &[0, 0, 0, 9, 1])
                .unwrap_err()
                .notify()
                .0,
            NotifyType::INVALID_SYNTAX
        );
        assert!(parse_payloads(PayloadType::NONCE, &[0, 0, 0, 5, 1, 7]).is_err());
        assert!(parse_payloads(PayloadType::NONCE, &[0, 0, 0, 3]).is_err());
    }
}
