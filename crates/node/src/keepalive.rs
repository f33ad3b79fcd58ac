//! RFC 3948 §4 NAT keepalives: a one-byte 0xFF datagram to each peer whose IKE SA detected a
//! NAT in front of us, so the NAT's mapping outlives idle periods.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use crate::deadlines::Deadlines;

/// When each NATed peer is due its next keepalive.
#[derive(Debug)]
pub struct NatKeepalives {
    interval: Option<Duration>,
    next: Deadlines<SocketAddrV4>,
}

impl NatKeepalives {
    /// Keepalives every `interval`, or none.
    pub fn new(interval: Option<Duration>) -> Self {
        NatKeepalives {
            interval,
            next: Deadlines::default(),
        }
    }

    /// Starts keepalives to `peer` (its NAT-T address); the first goes one interval from now.
    pub fn add(&mut self, peer: SocketAddrV4, now: Instant) {
        if let Some(i) = self.interval {
            self.next.set_if_absent(peer, now + i);
        }
    }

    /// Applies a reloaded interval; scheduled peers keep their next deadline, or lose it when
    /// keepalives are switched off.
    pub fn set_interval(&mut self, interval: Option<Duration>) {
        if interval.is_none() {
            self.next.clear();
        }
        self.interval = interval;
    }

    /// Stops keepalives to `peer`.
    pub fn remove(&mut self, peer: SocketAddrV4) {
        self.next.remove(peer);
    }

    /// The next keepalive due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next.first()
    }

    /// Peers due at `now`; each is rescheduled one interval later.
    pub fn due(&mut self, now: Instant) -> Vec<SocketAddrV4> {
        let Some(interval) = self.interval else {
            return Vec::new();
        };
        let out = self.next.take_due(now);
        for &peer in &out {
            self.next.set(peer, now + interval);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn keepalive_schedule() {
        let t0 = Instant::now();
        let mut k = NatKeepalives::new(Some(Duration::from_secs(20)));
        let a = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 4500);
        let b = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 4500);
        assert_eq!(k.poll_timeout(), None);
        k.add(a, t0);
        k.add(b, t0 + Duration::from_secs(5));
        assert_eq!(k.poll_timeout(), Some(t0 + Duration::from_secs(20)));
        assert!(k.due(t0 + Duration::from_secs(19)).is_empty());
        assert_eq!(k.due(t0 + Duration::from_secs(20)), vec![a]);
        assert_eq!(k.poll_timeout(), Some(t0 + Duration::from_secs(25)));
        k.remove(b);
        assert_eq!(k.poll_timeout(), Some(t0 + Duration::from_secs(40)));
        let mut off = NatKeepalives::new(None);
        off.add(a, t0);
        assert_eq!(off.poll_timeout(), None);
    }
}
