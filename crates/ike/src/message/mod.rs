//! IKEv2 message codec: header (RFC 7296 §3.1), generic payload header and
//! chaining (§3.2), and one module per payload with its parser and emitter
//! side by side: SA (§3.3), KE (§3.4), ID (§3.5), AUTH (§3.8), Nonce (§3.9),
//! Notify (§3.10), Delete (§3.11), Vendor ID (§3.12), Traffic Selectors
//! (§3.13), SK (§3.14) and SKF (RFC 7383 §2.5).
//!
//! Parsing is strict about lengths (every nested length goes through its own
//! sub-reader and trailing bytes are rejected) and lenient about content it
//! does not understand: unknown non-critical payloads are kept as
//! [`Payload::Unknown`] and skipped by the engine (§2.5).

mod auth;
mod delete;
mod fragment;
mod header;
mod id;
mod ke;
mod nonce;
mod notify;
mod sa;
mod sk;
mod ts;

#[cfg(test)]
mod tests;

pub use auth::*;
pub use delete::*;
pub use fragment::*;
pub use header::*;
pub use id::*;
pub use ke::*;
pub use notify::*;
pub use sa::{AttrValue, Attribute, Proposal, Transform};
pub use sk::*;
pub use ts::TrafficSelector;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dmvpn_wire::{Reader, Truncated, Writer};

use crate::codes::*;

/// Fixed IKE header length (§3.1).
pub const HEADER_LEN: usize = 28;
/// Generic payload header length (§3.2).
pub const GENERIC_LEN: usize = 4;

/// Why a message could not be parsed, and which notify it causes (§2.21).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// A length does not fit its 8/16/32-bit field.
    #[error("message too long to encode")]
    TooLong,
    /// The value cannot be represented on the wire.
    #[error("cannot encode: {0}")]
    Invalid(&'static str),
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
        // §3.2: the generic payload header.
        next = PayloadType(r.u8()?);
        let critical = r.u8()? & 0x80 != 0;
        let len = usize::from(r.u16()?);
        let body_len = len
            .checked_sub(GENERIC_LEN)
            .ok_or(ParseError::Syntax("payload length below 4"))?;
        let mut b = r.sub(body_len)?;
        let p = match ty {
            PayloadType::SK => {
                out.push(Payload::Sk(Encrypted::parse(next, &mut b)));
                return end_of_chain(r, out);
            }
            PayloadType::SKF => {
                out.push(Payload::Skf(Fragment::parse(next, &mut b)?));
                return end_of_chain(r, out);
            }
            _ => parse_body(ty, critical, &mut b)?,
        };
        if !b.is_empty() {
            return Err(ParseError::Syntax("trailing bytes in payload"));
        }
        out.push(p);
    }
    end_of_chain(r, out)
}

/// One payload body of type `ty` other than SK/SKF. §2.5: an unknown
/// payload with the critical bit set MUST be refused; others are kept.
fn parse_body(ty: PayloadType, critical: bool, b: &mut Reader<'_>) -> Result<Payload, ParseError> {
    Ok(match ty {
        PayloadType::SA => Payload::Sa(sa::parse_sa(b)?),
        PayloadType::KE => Payload::Ke(KeyExchange::parse(b)?),
        PayloadType::IDI => Payload::IdI(Identification::parse(b)?),
        PayloadType::IDR => Payload::IdR(Identification::parse(b)?),
        PayloadType::AUTH => Payload::Auth(Authentication::parse(b)?),
        PayloadType::NONCE => Payload::Nonce(nonce::parse_opaque(b)),
        PayloadType::N => Payload::Notify(Notify::parse(b)?),
        PayloadType::D => Payload::Delete(Delete::parse(b)?),
        PayloadType::V => Payload::Vendor(nonce::parse_opaque(b)),
        PayloadType::TSI => Payload::TsI(ts::parse_ts(b)?),
        PayloadType::TSR => Payload::TsR(ts::parse_ts(b)?),
        _ if critical => return Err(ParseError::UnsupportedCritical(ty)),
        _ => Payload::Unknown {
            ty,
            critical,
            body: b.take_rest().to_vec(),
        },
    })
}

fn end_of_chain(r: Reader<'_>, out: Vec<Payload>) -> Result<Vec<Payload>, ParseError> {
    if r.is_empty() {
        Ok(out)
    } else {
        Err(ParseError::Syntax("bytes after the last payload"))
    }
}

/// Appends a payload chain. The "next payload" of each is the type of the
/// one after it; SK/SKF carry their first inner type instead (§3.14).
pub fn emit_payloads(payloads: &[Payload], w: &mut Writer<'_>) -> Result<(), EmitError> {
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
        w.patch_len_u16(mark).ok_or(EmitError::TooLong)?;
    }
    Ok(())
}

fn emit_body(p: &Payload, w: &mut Writer<'_>) -> Result<(), EmitError> {
    match p {
        Payload::Sa(props) => sa::emit_sa(props, w)?,
        Payload::Ke(k) => k.emit(w),
        Payload::IdI(id) | Payload::IdR(id) => id.emit(w),
        Payload::Auth(a) => a.emit(w),
        Payload::Nonce(n) | Payload::Vendor(n) => nonce::emit_opaque(n, w),
        Payload::Notify(n) => n.emit(w)?,
        Payload::Delete(d) => d.emit(w)?,
        Payload::TsI(ts) | Payload::TsR(ts) => ts::emit_ts(ts, w)?,
        Payload::Sk(e) => e.emit(w),
        Payload::Skf(f) => f.emit(w),
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
    pub fn emit(&self) -> Result<Vec<u8>, EmitError> {
        let mut out = Vec::with_capacity(256);
        let mut w = Writer::new(&mut out);
        let mut h = self.header.clone();
        h.next_payload = self.payloads.first().map_or(PayloadType::NONE, Payload::ty);
        h.emit(&mut w);
        emit_payloads(&self.payloads, &mut w)?;
        let len = u32::try_from(out.len()).map_err(|_| EmitError::TooLong)?;
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
