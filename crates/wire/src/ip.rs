//! IP protocol numbers (IANA "Assigned Internet Protocol Numbers", RFC 5237) and the
//! version dispatch of an IP packet (RFC 791 §3.1, RFC 8200 §3).

use core::fmt;

/// An IP protocol / IPv6 next-header number. Open: unknown values round-trip.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// ICMP (RFC 792).
    pub const ICMP: Self = Self(1);
    /// IPv4 encapsulation (RFC 2003).
    pub const IPV4: Self = Self(4);
    /// TCP (RFC 9293).
    pub const TCP: Self = Self(6);
    /// UDP (RFC 768).
    pub const UDP: Self = Self(17);
    /// IPv6 encapsulation (RFC 2473).
    pub const IPV6: Self = Self(41);
    /// Generic Routing Encapsulation (RFC 2784).
    pub const GRE: Self = Self(47);
    /// Encapsulating Security Payload (RFC 4303).
    pub const ESP: Self = Self(50);
    /// ICMP for IPv6 (RFC 4443).
    pub const IPV6_ICMP: Self = Self(58);
    /// No next header: an ESP dummy packet (RFC 4303 §2.6, RFC 8200 §4.7).
    pub const IPV6_NONXT: Self = Self(59);

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::ICMP => "ICMP",
            Self::IPV4 => "IPv4",
            Self::TCP => "TCP",
            Self::UDP => "UDP",
            Self::IPV6 => "IPv6",
            Self::GRE => "GRE",
            Self::ESP => "ESP",
            Self::IPV6_ICMP => "IPv6-ICMP",
            Self::IPV6_NONXT => "IPv6-NoNxt",
            _ => return None,
        })
    }
}

impl fmt::Debug for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "IpProtocol({:#04x})", self.0),
        }
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The IP version in the first nibble, or `None` for an empty packet.
pub fn version(packet: &[u8]) -> Option<u8> {
    packet.first().map(|b| b >> 4)
}
