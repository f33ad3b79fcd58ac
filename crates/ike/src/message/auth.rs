//! The Authentication payload (RFC 7296 §3.8).

use super::*;

/// AUTH payload (§3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    /// Method.
    pub method: AuthMethod,
    /// Authentication data.
    pub data: Vec<u8>,
}

impl Authentication {
    /// §3.8: auth method, three reserved octets, the authentication data.
    pub(super) fn parse(b: &mut Reader<'_>) -> Result<Self, ParseError> {
        let method = AuthMethod(b.u8()?);
        b.skip(3)?;
        Ok(Self {
            method,
            data: b.take_rest().to_vec(),
        })
    }

    pub(super) fn emit(&self, w: &mut Writer<'_>) {
        w.u8(self.method.0).zeros(3).bytes(&self.data);
    }
}
