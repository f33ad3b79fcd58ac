//! The Encrypted Fragment payload SKF (RFC 7383 §2.5).

use super::*;

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

impl Fragment {
    /// RFC 7383 §2.5: fragment number and total, then IV, ciphertext, ICV.
    /// The number MUST be 1..=total.
    pub(super) fn parse(first: PayloadType, b: &mut Reader<'_>) -> Result<Self, ParseError> {
        let number = b.u16()?;
        let total = b.u16()?;
        // RFC 7383 §2.5: number 1..=total, total >= 1.
        if number == 0 || number > total {
            return Err(ParseError::Syntax("bad fragment number"));
        }
        Ok(Self {
            first,
            number,
            total,
            body: b.take_rest().to_vec(),
        })
    }

    pub(super) fn emit(&self, w: &mut Writer<'_>) {
        w.u16(self.number).u16(self.total).bytes(&self.body);
    }
}
