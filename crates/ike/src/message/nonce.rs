//! The Nonce (RFC 7296 §3.9) and Vendor ID (§3.12) payloads: opaque data.

use super::*;

/// §3.9 / §3.12: the body is the nonce or vendor ID itself.
pub(super) fn parse_opaque(b: &mut Reader<'_>) -> Vec<u8> {
    b.take_rest().to_vec()
}

pub(super) fn emit_opaque(data: &[u8], w: &mut Writer<'_>) {
    w.bytes(data);
}
