//! Opening SK payloads and reassembling SKF fragments (RFC 7296 §3.14,
//! §2.21.2; RFC 7383 §2.6).

use super::*;

/// Most fragments we buffer for one message (RFC 7383 §2.6 lets us bound it).
const MAX_FRAGMENTS: u16 = 32;

impl Endpoint {
    /// Decrypts an SK/SKF message, reassembling fragments (RFC 7383 §2.6).
    /// `None` = drop (integrity failure MUST be silent, §2.21.2) or wait.
    pub(super) fn decrypt(
        &mut self,
        sa: &mut IkeSa,
        h: &Header,
        bytes: &[u8],
    ) -> Option<Result<Vec<Payload>, ParseError>> {
        let key = sa.in_key()?;
        // Every error of the outer message (no SK, malformed chain, bytes
        // after SK, bad fragment numbers, ICV) comes before or with the
        // integrity check: such a message is not authenticated and MUST be
        // dropped without changing any state (§2.21.2, §2.21.4). Only
        // errors inside the authenticated plaintext are answered.
        let Ok(opened) = sk::open(bytes, &key) else {
            return None;
        };
        let (first, plain) = match opened.fragment {
            None => (opened.first, opened.plaintext),
            Some((n, total)) => {
                if total > MAX_FRAGMENTS {
                    return None;
                }
                let r = match &mut sa.reassembly {
                    Some(r) if r.message_id == h.message_id && r.total == total => r,
                    _ => sa.reassembly.insert(Reassembly {
                        message_id: h.message_id,
                        total,
                        first: PayloadType::NONE,
                        parts: vec![None; usize::from(total)],
                    }),
                };
                if n == 1 {
                    r.first = opened.first;
                }
                if let Some(slot) = r.parts.get_mut(usize::from(n) - 1) {
                    *slot = Some(opened.plaintext);
                }
                if r.parts.iter().any(Option::is_none) {
                    return None;
                }
                let r = sa.reassembly.take()?;
                let plain: Vec<u8> = r.parts.into_iter().flatten().flatten().collect();
                (r.first, plain)
            }
        };
        Some(parse_payloads(first, &plain))
    }
}
