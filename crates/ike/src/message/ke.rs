//! The Key Exchange payload (RFC 7296 §3.4).

use super::*;

/// KE payload (§3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExchange {
    /// D-H group.
    pub dh_group: DhId,
    /// Public value in the group's IKE encoding.
    pub data: Vec<u8>,
}

impl KeyExchange {
    /// §3.4: D-H group number, two reserved octets, the public value.
    pub(super) fn parse(b: &mut Reader<'_>) -> Result<Self, ParseError> {
        let dh_group = DhId(b.u16()?);
        b.skip(2)?;
        Ok(Self {
            dh_group,
            data: b.take_rest().to_vec(),
        })
    }

    pub(super) fn emit(&self, w: &mut Writer<'_>) {
        w.u16(self.dh_group.0).u16(0).bytes(&self.data);
    }
}
