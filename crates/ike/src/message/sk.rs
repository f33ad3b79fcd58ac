//! The Encrypted payload as the codec sees it (RFC 7296 §3.14): opaque
//! IV, ciphertext and ICV; [`crate::sk`] opens and seals it.

use super::*;

/// The SK payload as received: the first inner payload type and IV ‖
/// ciphertext ‖ ICV (§3.14). Decrypt with [`crate::sk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    /// Type of the first payload inside.
    pub first: PayloadType,
    /// IV ‖ ciphertext ‖ ICV.
    pub body: Vec<u8>,
}

impl Encrypted {
    /// §3.14: the "next payload" of SK names the first inner payload.
    pub(super) fn parse(first: PayloadType, b: &mut Reader<'_>) -> Self {
        Self {
            first,
            body: b.take_rest().to_vec(),
        }
    }

    pub(super) fn emit(&self, w: &mut Writer<'_>) {
        w.bytes(&self.body);
    }
}
