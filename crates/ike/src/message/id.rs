//! The Identification payloads IDi and IDr (RFC 7296 §3.5).

use super::*;

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

impl Identification {
    /// §3.5: ID type, three reserved octets, the identification data.
    pub(super) fn parse(b: &mut Reader<'_>) -> Result<Self, ParseError> {
        let id_type = IdType(b.u8()?);
        b.skip(3)?;
        Ok(Self {
            id_type,
            data: b.take_rest().to_vec(),
        })
    }

    pub(super) fn emit(&self, w: &mut Writer<'_>) {
        w.bytes(&self.body());
    }
}
