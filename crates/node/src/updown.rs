//! When each peer's tunnel last came up or went down, for `show dmvpn`'s UpDn: IOS counts from
//! the last state change, so a `clear crypto session` restarts the count while a rekey does not.
//! The daemon's reports sample state only when asked; a down-and-up between two queries (`clear
//! sa`, then traffic bringing the SA back) would go unseen without this record.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Instant;

/// Peers remembered at most; past it, peers that are down are forgotten first.
pub const MAX_PEERS: usize = 65_536;

/// The last change per peer: up (an IKE SA established with nothing else up) or down (the
/// peer's last IKE SA gone).
#[derive(Debug, Default)]
pub struct PeerChanges {
    at: HashMap<Ipv4Addr, (bool, Instant)>,
    /// Changes not recorded because the table was full of peers that are up.
    pub dropped: u64,
}

impl PeerChanges {
    /// The peer's tunnel came up at `now`, unless it already was.
    pub fn up(&mut self, peer: Ipv4Addr, now: Instant) {
        self.set(peer, true, now);
    }

    /// The peer's tunnel went down at `now`, unless it already was.
    pub fn down(&mut self, peer: Ipv4Addr, now: Instant) {
        self.set(peer, false, now);
    }

    fn set(&mut self, peer: Ipv4Addr, up: bool, now: Instant) {
        if let Some(e) = self.at.get_mut(&peer) {
            if e.0 != up {
                *e = (up, now);
            }
            return;
        }
        if self.at.len() >= MAX_PEERS {
            // O(N), once per MAX_PEERS / (peers down) insertions at worst.
            self.at.retain(|_, (up, _)| *up);
            if self.at.len() >= MAX_PEERS {
                self.dropped += 1;
                return;
            }
        }
        self.at.insert(peer, (up, now));
    }

    /// Whether the peer was last seen up, and since when.
    pub fn get(&self, peer: Ipv4Addr) -> Option<(bool, Instant)> {
        self.at.get(&peer).copied()
    }

    /// Every peer's last change.
    pub fn all(&self) -> &HashMap<Ipv4Addr, (bool, Instant)> {
        &self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_changes_move_the_time() {
        let t0 = Instant::now();
        let p = Ipv4Addr::new(198, 51, 100, 3);
        let mut c = PeerChanges::default();
        c.up(p, t0);
        c.up(p, t0 + Duration::from_secs(5));
        assert_eq!(c.get(p), Some((true, t0)), "up again is no change");
        c.down(p, t0 + Duration::from_secs(9));
        c.up(p, t0 + Duration::from_secs(10));
        assert_eq!(c.get(p), Some((true, t0 + Duration::from_secs(10))));
    }

    #[test]
    fn a_full_table_forgets_peers_that_are_down_first() {
        let t0 = Instant::now();
        let mut c = PeerChanges::default();
        for i in 0..MAX_PEERS as u32 {
            let p = Ipv4Addr::from_bits(0x0a00_0000 + i);
            if i % 2 == 0 {
                c.up(p, t0);
            } else {
                c.down(p, t0);
            }
        }
        let new = Ipv4Addr::new(192, 0, 2, 1);
        c.up(new, t0);
        assert_eq!(c.get(new), Some((true, t0)));
        assert_eq!(c.all().len(), MAX_PEERS / 2 + 1);
        assert_eq!(c.get(Ipv4Addr::from_bits(0x0a00_0000)), Some((true, t0)));
        assert_eq!(c.dropped, 0);
    }
}
