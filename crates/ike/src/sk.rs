//! The Encrypted payload with AES-GCM (RFC 7296 §3.14, RFC 5282 §3, §5) and
//! encrypted fragments (RFC 7383 §2.5).
//!
//! RFC 5282 §5.1: the AAD is the IKE header plus every payload before the SK
//! payload plus the SK generic header — i.e. every byte of the message up to
//! the IV. The 8-byte IV travels in clear; plaintext ends with the
//! Pad Length byte (§3.14), and with GCM no padding is needed.

use dmvpn_crypto::AesGcm256;
use dmvpn_wire::{Reader, Writer};

use crate::codes::{ExchangeType, PayloadType};
use crate::message::{
    EmitError, GENERIC_LEN, HEADER_LEN, Header, ParseError, Payload, emit_payloads,
};

/// Why an SK payload did not yield a plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SkError {
    /// The outer message is malformed.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// There is no SK or SKF payload.
    #[error("no encrypted payload")]
    Missing,
    /// ICV check failed: §2.21.2 says such a message MUST be dropped
    /// silently (it is not evidence of anything).
    #[error("integrity check failed")]
    Integrity,
}

/// A decrypted SK (or one SKF fragment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The outer header.
    pub header: Header,
    /// First inner payload type (0 in fragments after the first).
    pub first: PayloadType,
    /// Inner payload bytes, padding removed.
    pub plaintext: Vec<u8>,
    /// Fragment number and total, for SKF.
    pub fragment: Option<(u16, u16)>,
}

/// Decrypts the SK or SKF payload of `msg` with `key` (the sender's SK_e).
pub fn open(msg: &[u8], key: &AesGcm256) -> Result<Opened, SkError> {
    let mut r = Reader::new(msg);
    let header = Header::parse(&mut r)?;
    if usize::try_from(header.length).ok() != Some(msg.len()) {
        return Err(ParseError::Syntax("header length != datagram length").into());
    }
    // Walk the generic headers of the outer chain to find SK/SKF: we need
    // its byte offset for the AAD, so the parsed form is not enough.
    let mut ty = header.next_payload;
    loop {
        let at = r.position();
        let next = PayloadType(r.u8().map_err(ParseError::from)?);
        r.skip(1).map_err(ParseError::from)?;
        let len = usize::from(r.u16().map_err(ParseError::from)?);
        let body_len = len.checked_sub(GENERIC_LEN).ok_or(ParseError::Truncated)?;
        let mut body = r.sub(body_len).map_err(ParseError::from)?;
        match ty {
            PayloadType::SK | PayloadType::SKF => {
                // §3.14 / RFC 7383 §2.5: SK and SKF are the last payload.
                if !r.is_empty() {
                    return Err(ParseError::Syntax("bytes after SK").into());
                }
                let fragment = if ty == PayloadType::SKF {
                    let n = body.u16().map_err(ParseError::from)?;
                    let t = body.u16().map_err(ParseError::from)?;
                    if n == 0 || n > t {
                        return Err(ParseError::Syntax("bad fragment number").into());
                    }
                    Some((n, t))
                } else {
                    None
                };
                // RFC 7383 §2.5: for SKF the AAD also covers the fragment
                // number and total.
                let aad_end = at + GENERIC_LEN + if fragment.is_some() { 4 } else { 0 };
                let aad = msg.get(..aad_end).ok_or(ParseError::Truncated)?;
                let iv: [u8; 8] = body.array().map_err(ParseError::from)?;
                let mut ct = body.take_rest().to_vec();
                let n = key
                    .open_in_place(&iv, aad, &mut ct)
                    .map_err(|_| SkError::Integrity)?;
                ct.truncate(n);
                let pad = usize::from(*ct.last().ok_or(SkError::Integrity)?);
                let keep = ct
                    .len()
                    .checked_sub(pad + 1)
                    .ok_or(ParseError::Syntax("pad length"))?;
                ct.truncate(keep);
                return Ok(Opened {
                    header,
                    first: next,
                    plaintext: ct,
                    fragment,
                });
            }
            PayloadType::NONE => return Err(SkError::Missing),
            _ => {}
        }
        if next == PayloadType::NONE {
            return Err(SkError::Missing);
        }
        ty = next;
    }
}

/// Builds a message whose payloads all travel inside one SK payload.
/// `iv` MUST be unique for this key (RFC 5282 §3.1); the engine uses a
/// per-direction message counter.
#[allow(clippy::too_many_arguments)]
pub fn seal(
    spi_i: u64,
    spi_r: u64,
    exchange: ExchangeType,
    flags: u8,
    message_id: u32,
    inner: &[Payload],
    key: &AesGcm256,
    iv: [u8; 8],
) -> Result<Vec<u8>, EmitError> {
    let mut plain = Vec::with_capacity(256);
    emit_payloads(inner, &mut Writer::new(&mut plain))?;
    let first = inner.first().map_or(PayloadType::NONE, Payload::ty);
    seal_plain(
        spi_i, spi_r, exchange, flags, message_id, first, plain, key, iv,
    )
}

/// [`seal`] of an already encoded payload chain whose first payload is of type `first`
/// (any bytes: the fuzz targets seal chains no encoder would build).
#[allow(clippy::too_many_arguments)]
pub fn seal_plain(
    spi_i: u64,
    spi_r: u64,
    exchange: ExchangeType,
    flags: u8,
    message_id: u32,
    first: PayloadType,
    mut plain: Vec<u8>,
    key: &AesGcm256,
    iv: [u8; 8],
) -> Result<Vec<u8>, EmitError> {
    // Pad Length 0: GCM needs no block alignment (RFC 5282 §3).
    plain.push(0);
    let total = HEADER_LEN + GENERIC_LEN + AesGcm256::IV_LEN + plain.len() + AesGcm256::ICV_LEN;
    let total32 = u32::try_from(total).map_err(|_| EmitError::TooLong)?;
    let sk_len = u16::try_from(total - HEADER_LEN).map_err(|_| EmitError::TooLong)?;
    let mut out = Vec::with_capacity(total);
    let mut w = Writer::new(&mut out);
    w.u64(spi_i)
        .u64(spi_r)
        .u8(PayloadType::SK.0)
        .u8(0x20)
        .u8(exchange.0)
        .u8(flags)
        .u32(message_id)
        .u32(total32);
    w.u8(first.0).u8(0).u16(sk_len);
    let aad_len = w.len();
    w.bytes(&iv);
    let icv = {
        let aad = out.get(..aad_len).ok_or(EmitError::TooLong)?.to_vec();
        key.seal_in_place(&iv, &aad, &mut plain)
            .map_err(|_| EmitError::TooLong)?
    };
    out.extend_from_slice(&plain);
    out.extend_from_slice(&icv);
    Ok(out)
}

/// Builds one SKF fragment (RFC 7383 §2.5) carrying `chunk` of the inner
/// payload bytes; `first` is the first inner payload type in fragment 1 and
/// NONE in the others. The AAD covers the header and the 8-byte SKF header.
#[allow(clippy::too_many_arguments)]
pub fn seal_fragment(
    spi_i: u64,
    spi_r: u64,
    exchange: ExchangeType,
    flags: u8,
    message_id: u32,
    first: PayloadType,
    (number, total): (u16, u16),
    chunk: &[u8],
    key: &AesGcm256,
    iv: [u8; 8],
) -> Result<Vec<u8>, EmitError> {
    let mut plain = chunk.to_vec();
    plain.push(0);
    let total_len =
        HEADER_LEN + GENERIC_LEN + 4 + AesGcm256::IV_LEN + plain.len() + AesGcm256::ICV_LEN;
    let total32 = u32::try_from(total_len).map_err(|_| EmitError::TooLong)?;
    let skf_len = u16::try_from(total_len - HEADER_LEN).map_err(|_| EmitError::TooLong)?;
    let mut out = Vec::with_capacity(total_len);
    let mut w = Writer::new(&mut out);
    w.u64(spi_i)
        .u64(spi_r)
        .u8(PayloadType::SKF.0)
        .u8(0x20)
        .u8(exchange.0)
        .u8(flags)
        .u32(message_id)
        .u32(total32);
    w.u8(first.0).u8(0).u16(skf_len).u16(number).u16(total);
    let aad = out.clone();
    let icv = key
        .seal_in_place(&iv, &aad, &mut plain)
        .map_err(|_| EmitError::TooLong)?;
    out.extend_from_slice(&iv);
    out.extend_from_slice(&plain);
    out.extend_from_slice(&icv);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::NotifyType;
    use crate::message::{Notify, parse_payloads};

    #[test]
    fn seal_then_open_round_trips_and_detects_tamper() {
        let key = AesGcm256::new(&[9u8; 36]).unwrap();
        let inner = vec![
            Payload::Notify(Notify::new(NotifyType::INITIAL_CONTACT, vec![])),
            Payload::Nonce(vec![1, 2, 3]),
        ];
        let msg = seal(
            1,
            2,
            ExchangeType::INFORMATIONAL,
            0x08,
            5,
            &inner,
            &key,
            [7; 8],
        )
        .unwrap();
        let o = open(&msg, &key).unwrap();
        assert_eq!(o.header.message_id, 5);
        assert_eq!(parse_payloads(o.first, &o.plaintext).unwrap(), inner);
        // The header is in the AAD: changing the message ID breaks the ICV.
        let mut bad = msg.clone();
        bad[23] ^= 1;
        assert_eq!(open(&bad, &key), Err(SkError::Integrity));
        let other = AesGcm256::new(&[8u8; 36]).unwrap();
        assert_eq!(open(&msg, &other), Err(SkError::Integrity));
    }
}
