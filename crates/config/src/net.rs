//! IPv4 prefixes in CIDR notation (RFC 4632 §3.1), as written in the configuration.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 address with a prefix length. The address may have host bits set (an interface
/// address such as `10.250.0.9/24`); [`Ipv4Net::is_network`] tells whether it names a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Net {
    /// Returns `None` for a prefix length above 32.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 32).then_some(Ipv4Net { addr, prefix_len })
    }

    /// The network mask as an address, e.g. 255.255.255.0 for /24.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask_bits(self.prefix_len))
    }

    /// The address with the host bits cleared.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & mask_bits(self.prefix_len))
    }

    /// True when no host bits are set, as a route destination requires.
    pub fn is_network(&self) -> bool {
        self.network() == self.addr
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask_bits(self.prefix_len) == u32::from(self.network())
    }
}

/// The mask of a prefix length, through the project's one prefix type.
fn mask_bits(prefix_len: u8) -> u32 {
    dmvpn_wire::Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, prefix_len.min(32))
        .map_or(0, |c| u32::from(c.mask()))
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or_else(|| {
            format!("`{s}` is not in address/prefix-length form, e.g. 10.250.0.9/24")
        })?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("`{len}` is not a prefix length (0 to 32)"))?;
        Ok(Ipv4Net { addr, prefix_len })
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let n: Ipv4Net = "10.250.0.9/24".parse().unwrap();
        assert_eq!(n.network(), Ipv4Addr::new(10, 250, 0, 0));
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert!(!n.is_network());
        assert!(n.contains(Ipv4Addr::new(10, 250, 0, 1)));
        assert!(!n.contains(Ipv4Addr::new(10, 251, 0, 1)));
        let any: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert!(any.is_network() && any.contains(Ipv4Addr::new(198, 51, 100, 1)));
        let host: Ipv4Net = "198.51.100.1/32".parse().unwrap();
        assert!(host.contains(host.addr) && !host.contains(Ipv4Addr::new(198, 51, 100, 2)));
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "10.0.0/8",
            "x/8",
            "10.0.0.1/-1",
            "10.0.0.1/",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
    }
}
