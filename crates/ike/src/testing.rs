//! An in-memory network of two endpoints for tests (feature `testing`):
//! A, a spoke optionally behind a NAT, and B, a hub, exchanging datagrams
//! in a deterministic order, with a filter to drop some and a clock that
//! jumps from one deadline to the next. Other crates reuse it to drive the
//! whole engine without sockets.
//!
//! Test code: it panics (`assert!`) where the two engines disagree about
//! addresses.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use dmvpn_crypto::TestRng;

use crate::{ChildSaInstalled, Config, Endpoint, Event, IkeSaId, Transmit};

/// Decides whether a datagram (direction A→B?, bytes) is delivered.
pub type Filter = Box<dyn FnMut(bool, &[u8]) -> bool>;

/// A default configuration with `psk` as the key for every peer.
pub fn config(psk: &[u8]) -> Config {
    let mut c = Config::default();
    c.keyring.set_wildcard(psk);
    c
}

/// Two endpoints, A (spoke, optionally behind a NAT) and B (hub).
pub struct Net {
    /// The spoke (it initiates).
    pub a: Endpoint,
    /// The hub.
    pub b: Endpoint,
    /// The shared clock.
    pub now: Instant,
    /// A's own address.
    pub a_priv: IpAddr,
    /// A's address as B sees it (the NAT's public one when `nat`).
    pub a_pub: IpAddr,
    /// B's address.
    pub b_ip: IpAddr,
    /// A is behind a NAT that maps its port p to p + 10000.
    pub nat: bool,
    /// Return false to drop a datagram (to_b, bytes).
    pub filter: Filter,
    /// Events A reported so far.
    pub ev_a: Vec<Event>,
    /// Events B reported so far.
    pub ev_b: Vec<Event>,
    /// Everything A sent.
    pub sent_a: Vec<Transmit>,
    /// Everything B sent.
    pub sent_b: Vec<Transmit>,
}

impl core::fmt::Debug for Net {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Net")
            .field("now", &self.now)
            .field("nat", &self.nat)
            .field("ev_a", &self.ev_a)
            .field("ev_b", &self.ev_b)
            .finish_non_exhaustive()
    }
}

impl Net {
    /// A with `ca` and B with `cb`, deterministic RNGs, optionally a NAT.
    pub fn new(ca: Config, cb: Config, nat: bool) -> Self {
        Self {
            a: Endpoint::new(ca, Box::new(TestRng::new(1))),
            b: Endpoint::new(cb, Box::new(TestRng::new(2))),
            now: Instant::now(),
            a_priv: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
            a_pub: IpAddr::V4(if nat {
                Ipv4Addr::new(203, 0, 113, 7)
            } else {
                Ipv4Addr::new(10, 0, 0, 5)
            }),
            b_ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
            nat,
            filter: Box::new(|_, _| true),
            ev_a: Vec::new(),
            ev_b: Vec::new(),
            sent_a: Vec::new(),
            sent_b: Vec::new(),
        }
    }

    /// A's IKE socket address.
    pub fn a_local(&self) -> SocketAddr {
        SocketAddr::new(self.a_priv, 500)
    }
    /// B's IKE socket address.
    pub fn b_local(&self) -> SocketAddr {
        SocketAddr::new(self.b_ip, 500)
    }

    /// The NAT rewrites A's source port p to p + 10000 on the public IP.
    pub fn nat_out(&self, s: SocketAddr) -> SocketAddr {
        if self.nat {
            SocketAddr::new(self.a_pub, s.port() + 10000)
        } else {
            s
        }
    }
    /// The NAT's reverse mapping for datagrams to A.
    pub fn nat_in(&self, d: SocketAddr) -> SocketAddr {
        if self.nat {
            SocketAddr::new(self.a_priv, d.port() - 10000)
        } else {
            d
        }
    }

    /// Delivers datagrams until both sides are quiet.
    pub fn flush(&mut self) {
        loop {
            let mut q: VecDeque<(bool, Transmit)> = VecDeque::new();
            while let Some(t) = self.a.poll_transmit() {
                self.sent_a.push(t.clone());
                q.push_back((true, t));
            }
            while let Some(t) = self.b.poll_transmit() {
                self.sent_b.push(t.clone());
                q.push_back((false, t));
            }
            if q.is_empty() {
                break;
            }
            while let Some((to_b, t)) = q.pop_front() {
                if !(self.filter)(to_b, &t.bytes) {
                    continue;
                }
                if to_b {
                    assert_eq!(t.remote.ip(), self.b_ip);
                    let from = self.nat_out(t.local);
                    self.b.handle_datagram(self.now, t.remote, from, &t.bytes);
                } else {
                    assert_eq!(t.remote.ip(), self.a_pub);
                    let to = self.nat_in(t.remote);
                    self.a.handle_datagram(self.now, to, t.local, &t.bytes);
                }
            }
        }
        // The SA tables' indexes (deadlines, peers, SPIs, half-open SAs)
        // must agree with the SAs after every step.
        self.a.check_indexes();
        self.b.check_indexes();
        while let Some(e) = self.a.poll_event() {
            self.ev_a.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.ev_b.push(e);
        }
    }

    /// Runs timers and traffic until `until`.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.flush();
        loop {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                    self.flush();
                }
                _ => break,
            }
        }
        self.now = until;
    }

    /// A initiates to B, and the datagrams flow until both are quiet.
    pub fn initiate(&mut self) -> IkeSaId {
        match self.a.initiate(self.now, self.a_local(), self.b_local()) {
            Ok(id) => {
                self.flush();
                id
            }
            Err(e) => panic!("initiate: {e}"),
        }
    }

    /// The Child SAs installed among `ev`.
    pub fn children(ev: &[Event]) -> Vec<&ChildSaInstalled> {
        ev.iter()
            .filter_map(|e| match e {
                Event::ChildSaInstalled(c) => Some(c),
                _ => None,
            })
            .collect()
    }
}

/// How many of `ev` satisfy `f`.
pub fn count(ev: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    ev.iter().filter(|e| f(e)).count()
}
