//! IPv4 prefixes (RFC 4632 §3.1 notation `a.b.c.d/len`): one type for every place that masks
//! an address or asks whether a prefix covers an address or another prefix.

use core::fmt;
use core::net::Ipv4Addr;
use core::str::FromStr;

/// Why a prefix was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// A prefix length over 32.
    #[error("IPv4 prefix length {0} is over 32")]
    PrefixTooLong(u8),
    /// Text that is not `a.b.c.d/len`.
    #[error("not an IPv4 prefix (a.b.c.d/len)")]
    Syntax,
}

/// An IPv4 address with a prefix length (0..=32).
///
/// The address keeps its host bits (`10.0.0.9/24` is an interface address on `10.0.0.0/24`);
/// [`Ipv4Cidr::network`] clears them. Equality compares address and length as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    address: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// `address/prefix_len`; refuses a length over 32.
    pub const fn new(address: Ipv4Addr, prefix_len: u8) -> Result<Self, CidrError> {
        if prefix_len > 32 {
            return Err(CidrError::PrefixTooLong(prefix_len));
        }
        Ok(Self {
            address,
            prefix_len,
        })
    }

    /// `address/32`.
    pub const fn host(address: Ipv4Addr) -> Self {
        Self {
            address,
            prefix_len: 32,
        }
    }

    /// The address as given, host bits included.
    pub const fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The prefix length.
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    fn mask_bits(&self) -> u32 {
        match self.prefix_len {
            0 => 0,
            n => u32::MAX << (32 - u32::from(n)),
        }
    }

    /// The netmask (`255.255.255.0` for a /24).
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask_bits())
    }

    /// The network address: the address with its host bits cleared.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) & self.mask_bits())
    }

    /// The same prefix with its host bits cleared (`10.0.0.9/24` → `10.0.0.0/24`).
    pub fn trunc(&self) -> Self {
        Self {
            address: self.network(),
            prefix_len: self.prefix_len,
        }
    }

    /// True when `addr` lies in this prefix.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        (u32::from(addr) ^ u32::from(self.address)) & self.mask_bits() == 0
    }

    /// True when every address of `other` lies in this prefix (it is as long or longer and
    /// its network is inside this one).
    pub fn contains_cidr(&self, other: &Ipv4Cidr) -> bool {
        self.prefix_len <= other.prefix_len && self.contains(other.address)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    /// Parses `a.b.c.d/len`; the length is decimal, without sign or leading `+`.
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr, len) = s.split_once('/').ok_or(CidrError::Syntax)?;
        let address: Ipv4Addr = addr.parse().map_err(|_| CidrError::Syntax)?;
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::Syntax);
        }
        let prefix_len: u8 = len.parse().map_err(|_| CidrError::Syntax)?;
        Self::new(address, prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn new_validates_length() {
        assert!(Ipv4Cidr::new(Ipv4Addr::LOCALHOST, 32).is_ok());
        assert_eq!(
            Ipv4Cidr::new(Ipv4Addr::LOCALHOST, 33),
            Err(CidrError::PrefixTooLong(33))
        );
        assert_eq!(Ipv4Cidr::host(Ipv4Addr::LOCALHOST).prefix_len(), 32);
    }

    #[test]
    fn mask_and_network() {
        let p = c("10.250.0.9/24");
        assert_eq!(p.mask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(p.network(), Ipv4Addr::new(10, 250, 0, 0));
        assert_eq!(p.address(), Ipv4Addr::new(10, 250, 0, 9));
        assert_eq!(p.trunc(), c("10.250.0.0/24"));
        assert_eq!(c("1.2.3.4/0").mask(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(c("1.2.3.4/0").network(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(c("1.2.3.4/32").mask(), Ipv4Addr::BROADCAST);
        assert_eq!(c("1.2.3.4/32").network(), Ipv4Addr::new(1, 2, 3, 4));
        assert_eq!(c("10.0.0.0/9").mask(), Ipv4Addr::new(255, 128, 0, 0));
    }

    #[test]
    fn contains_addresses_and_prefixes() {
        let p = c("10.0.101.0/24");
        assert!(p.contains(Ipv4Addr::new(10, 0, 101, 77)));
        assert!(!p.contains(Ipv4Addr::new(10, 0, 102, 1)));
        assert!(c("0.0.0.0/0").contains(Ipv4Addr::BROADCAST));
        assert!(p.contains_cidr(&c("10.0.101.128/25")));
        assert!(p.contains_cidr(&p));
        assert!(!p.contains_cidr(&c("10.0.0.0/16")));
        assert!(!p.contains_cidr(&c("10.0.102.0/25")));
    }

    #[test]
    fn display_and_parse() {
        assert_eq!(c("192.0.2.1/28").to_string(), "192.0.2.1/28");
        for bad in [
            "192.0.2.1",
            "192.0.2.1/",
            "192.0.2.1/+8",
            "192.0.2.1/-1",
            "192.0.2.1/0008",
            "192.0.2/8",
            "/8",
            "192.0.2.1/8/8",
            "192.0.2.1/ 8",
        ] {
            assert_eq!(bad.parse::<Ipv4Cidr>(), Err(CidrError::Syntax), "{bad}");
        }
        assert_eq!(
            "192.0.2.1/33".parse::<Ipv4Cidr>(),
            Err(CidrError::PrefixTooLong(33))
        );
        assert_eq!("192.0.2.1/999".parse::<Ipv4Cidr>(), Err(CidrError::Syntax));
    }

    proptest::proptest! {
        #[test]
        fn display_parse_round_trip(a in proptest::prelude::any::<u32>(), len in 0u8..=32) {
            let p = Ipv4Cidr::new(Ipv4Addr::from(a), len).unwrap();
            proptest::prop_assert_eq!(p.to_string().parse::<Ipv4Cidr>(), Ok(p));
        }

        #[test]
        fn contains_agrees_with_network(
            a in proptest::prelude::any::<u32>(),
            b in proptest::prelude::any::<u32>(),
            len in 0u8..=32,
        ) {
            let p = Ipv4Cidr::new(Ipv4Addr::from(a), len).unwrap();
            let q = Ipv4Cidr::new(Ipv4Addr::from(b), len).unwrap();
            proptest::prop_assert!(p.contains(p.address()));
            proptest::prop_assert!(p.contains(p.network()));
            proptest::prop_assert_eq!(p.contains(Ipv4Addr::from(b)), p.network() == q.network());
            proptest::prop_assert_eq!(u32::from(p.network()) & !u32::from(p.mask()), 0);
            proptest::prop_assert_eq!(u32::from(p.mask()).count_ones(), u32::from(len));
        }

        #[test]
        fn contains_cidr_means_every_address(
            a in proptest::prelude::any::<u32>(),
            la in 0u8..=32,
            b in proptest::prelude::any::<u32>(),
            lb in 0u8..=32,
        ) {
            let p = Ipv4Cidr::new(Ipv4Addr::from(a), la).unwrap();
            let q = Ipv4Cidr::new(Ipv4Addr::from(b), lb).unwrap();
            let last = Ipv4Addr::from(u32::from(q.network()) | !u32::from(q.mask()));
            let both_ends = p.contains(q.network()) && p.contains(last);
            proptest::prop_assert_eq!(p.contains_cidr(&q), both_ends);
        }
    }
}
