//! The Security Association payload (RFC 7296 §3.3): proposals (§3.3.1),
//! transforms (§3.3.2) and transform attributes (§3.3.5).

use super::*;

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

/// Parses an SA payload body: proposals (§3.3.1) with their transforms
/// (§3.3.2) and attributes (§3.3.5).
pub(super) fn parse_sa(b: &mut Reader<'_>) -> Result<Vec<Proposal>, ParseError> {
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

/// Appends an SA payload body. §3.3.1: the last proposal has "last
/// substruc" 0, the others 2; §3.3.2: the last transform 0, the others 3.
pub(super) fn emit_sa(props: &[Proposal], w: &mut Writer<'_>) -> Result<(), EmitError> {
    for (i, pr) in props.iter().enumerate() {
        let start = w.len();
        w.u8(if i + 1 == props.len() { 0 } else { 2 }).u8(0);
        let mark = w.reserve_u16(start);
        let spi_len = u8::try_from(pr.spi.len()).map_err(|_| EmitError::TooLong)?;
        let n = u8::try_from(pr.transforms.len()).map_err(|_| EmitError::TooLong)?;
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
                        let l = u16::try_from(v.len()).map_err(|_| EmitError::TooLong)?;
                        w.u16(a.ty.0 & 0x7fff).u16(l).bytes(v);
                    }
                }
            }
            w.patch_len_u16(tm).ok_or(EmitError::TooLong)?;
        }
        w.patch_len_u16(mark).ok_or(EmitError::TooLong)?;
    }
    Ok(())
}
