//! Which addresses simulated spoke `i` uses: an NBMA (underlay) address from the generator's
//! prefix and a tunnel address from the tunnel prefix, skipping the network and broadcast
//! addresses and the hub's own.

use std::net::Ipv4Addr;

/// An IPv4 prefix handed out host by host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    network: u32,
    prefix_len: u8,
}

impl Pool {
    /// The pool of `addr/prefix_len` (host bits of `addr` ignored). Needs at least 4 addresses.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        if !(1..=30).contains(&prefix_len) {
            return None;
        }
        let mask = u32::MAX << (32 - u32::from(prefix_len));
        Some(Self {
            network: addr.to_bits() & mask,
            prefix_len,
        })
    }

    /// Parses `A.B.C.D/LEN`.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, l) = s.split_once('/')?;
        Self::new(a.parse().ok()?, l.parse().ok()?)
    }

    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len))
    }

    /// Whether `a` is inside the prefix.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix_len));
        a.to_bits() & mask == self.network
    }

    /// The `i`-th usable host address (0-based), skipping the network and broadcast
    /// addresses and every address in `skip`; `None` when the prefix runs out.
    pub fn host(&self, i: u32, skip: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let mut skipped: Vec<u32> = skip
            .iter()
            .filter(|a| self.contains(**a))
            .map(|a| a.to_bits() - self.network)
            .filter(|o| *o != 0)
            .collect();
        skipped.sort_unstable();
        skipped.dedup();
        // Host offsets start at 1; each skipped offset at or below the candidate pushes it on.
        let mut off = u64::from(i) + 1;
        for s in skipped {
            if u64::from(s) <= off {
                off += 1;
            }
        }
        (off < self.size() - 1).then(|| Ipv4Addr::from_bits(self.network + off as u32))
    }

    /// How many hosts `host` can hand out with `skip` excluded.
    pub fn capacity(&self, skip: &[Ipv4Addr]) -> u64 {
        let mut s: Vec<Ipv4Addr> = skip.iter().copied().filter(|a| self.contains(*a)).collect();
        s.sort_unstable();
        s.dedup();
        let inner = s
            .iter()
            .filter(|a| {
                let o = u64::from(a.to_bits() - self.network);
                o != 0 && o != self.size() - 1
            })
            .count() as u64;
        self.size() - 2 - inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn hosts_skip_network_broadcast_and_the_hub() {
        let p = Pool::parse("10.250.7.9/16").unwrap();
        let hub = [a("10.250.0.1")];
        assert_eq!(p.host(0, &hub), Some(a("10.250.0.2")));
        assert_eq!(p.host(253, &hub), Some(a("10.250.0.255")));
        assert_eq!(p.host(254, &hub), Some(a("10.250.1.0")));
        assert_eq!(p.capacity(&hub), 65533);
        assert_eq!(p.host(65532, &hub), Some(a("10.250.255.254")));
        assert_eq!(p.host(65533, &hub), None);
        // Without a skip list the first host is .1.
        assert_eq!(p.host(0, &[]), Some(a("10.250.0.1")));
    }

    #[test]
    fn skipped_addresses_anywhere_are_stepped_over_once() {
        let p = Pool::parse("192.0.2.0/29").unwrap();
        // Hosts .1 to .6; skip .2 and .4 (twice listed) and one outside the prefix.
        let skip = [
            a("192.0.2.4"),
            a("192.0.2.2"),
            a("192.0.2.4"),
            a("198.51.100.1"),
        ];
        let got: Vec<_> = (0..5).map(|i| p.host(i, &skip)).collect();
        assert_eq!(
            got,
            vec![
                Some(a("192.0.2.1")),
                Some(a("192.0.2.3")),
                Some(a("192.0.2.5")),
                Some(a("192.0.2.6")),
                None
            ]
        );
        assert_eq!(p.capacity(&skip), 4);
    }

    #[test]
    fn rejects_bad_prefixes() {
        assert_eq!(Pool::parse("10.0.0.0"), None);
        assert_eq!(Pool::parse("10.0.0.0/31"), None);
        assert_eq!(Pool::parse("10.0.0.0/0"), None);
        assert_eq!(Pool::parse("10.0.0/8"), None);
        assert!(
            Pool::parse("198.18.0.0/15")
                .unwrap()
                .contains(a("198.19.255.1"))
        );
    }
}
