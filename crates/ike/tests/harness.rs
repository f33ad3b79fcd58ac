//! Deterministic in-memory initiator ↔ responder runs of the whole engine.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use dmvpn_crypto::{DhAlg, TestRng};
use dmvpn_ike::*;

/// Decides whether a datagram (direction A→B?, bytes) is delivered.
type Filter = Box<dyn FnMut(bool, &[u8]) -> bool>;

fn config(psk: &[u8]) -> Config {
    let mut c = Config::default();
    c.keyring.set_wildcard(psk);
    c
}

/// Two endpoints, A (spoke, optionally behind a NAT) and B (hub).
struct Net {
    a: Endpoint,
    b: Endpoint,
    now: Instant,
    a_priv: IpAddr,
    a_pub: IpAddr,
    b_ip: IpAddr,
    nat: bool,
    /// Return false to drop a datagram (to_b, bytes).
    filter: Filter,
    ev_a: Vec<Event>,
    ev_b: Vec<Event>,
    sent_a: Vec<Transmit>,
    sent_b: Vec<Transmit>,
}

impl Net {
    fn new(ca: Config, cb: Config, nat: bool) -> Self {
        Self {
            a: Endpoint::new(ca, Box::new(TestRng::new(1))),
            b: Endpoint::new(cb, Box::new(TestRng::new(2))),
            now: Instant::now(),
            a_priv: "10.0.0.5".parse().unwrap(),
            a_pub: if nat { "203.0.113.7" } else { "10.0.0.5" }
                .parse()
                .unwrap(),
            b_ip: "198.51.100.1".parse().unwrap(),
            nat,
            filter: Box::new(|_, _| true),
            ev_a: Vec::new(),
            ev_b: Vec::new(),
            sent_a: Vec::new(),
            sent_b: Vec::new(),
        }
    }

    fn a_local(&self) -> SocketAddr {
        SocketAddr::new(self.a_priv, 500)
    }
    fn b_local(&self) -> SocketAddr {
        SocketAddr::new(self.b_ip, 500)
    }

    /// The NAT rewrites A's source port p to p + 10000 on the public IP.
    fn nat_out(&self, s: SocketAddr) -> SocketAddr {
        if self.nat {
            SocketAddr::new(self.a_pub, s.port() + 10000)
        } else {
            s
        }
    }
    fn nat_in(&self, d: SocketAddr) -> SocketAddr {
        if self.nat {
            SocketAddr::new(self.a_priv, d.port() - 10000)
        } else {
            d
        }
    }

    /// Delivers datagrams until both sides are quiet.
    fn flush(&mut self) {
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
        while let Some(e) = self.a.poll_event() {
            self.ev_a.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.ev_b.push(e);
        }
    }

    /// Runs timers and traffic until `until`.
    fn run_for(&mut self, d: Duration) {
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

    fn initiate(&mut self) -> IkeSaId {
        let id = self
            .a
            .initiate(self.now, self.a_local(), self.b_local())
            .unwrap();
        self.flush();
        id
    }

    fn children(ev: &[Event]) -> Vec<&ChildSaInstalled> {
        ev.iter()
            .filter_map(|e| match e {
                Event::ChildSaInstalled(c) => Some(c),
                _ => None,
            })
            .collect()
    }
}

fn count(ev: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    ev.iter().filter(|e| f(e)).count()
}

fn assert_pair(a: &ChildSaInstalled, b: &ChildSaInstalled) {
    assert_eq!(a.spi_in, b.spi_out);
    assert_eq!(a.spi_out, b.spi_in);
    assert_eq!(a.key_in, b.key_out);
    assert_eq!(a.key_out, b.key_in);
    assert_ne!(a.key_in, a.key_out);
    assert_eq!(a.key_in.len(), 36);
    assert_eq!(a.mode, Mode::Transport);
}

#[test]
fn establishes_transport_child_without_nat() {
    let mut n = Net::new(config(b"keykey00"), config(b"keykey00"), false);
    n.initiate();
    assert!(matches!(
        &n.ev_a[0],
        Event::IkeSaUp {
            initiator: true,
            nat_local: false,
            nat_remote: false,
            ..
        }
    ));
    assert!(
        matches!(&n.ev_b[0], Event::IkeSaUp { initiator: false, remote_id, .. } if remote_id.ip() == Some(n.a_priv))
    );
    let (ca, cb) = (Net::children(&n.ev_a), Net::children(&n.ev_b));
    assert_eq!((ca.len(), cb.len()), (1, 1));
    assert_pair(ca[0], cb[0]);
    assert!(!ca[0].udp_encap && !cb[0].udp_encap);
    assert!(!ca[0].esn);
    assert_eq!(ca[0].local.port(), 500);
    // Exactly four messages: SA_INIT and AUTH, one each way.
    assert_eq!(n.sent_a.len() + n.sent_b.len(), 4);
    let info = n.a.ike_sas(n.now);
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].state, "Established");
    assert_eq!(info[0].children.len(), 1);
    assert_eq!(info[0].suite.unwrap().dh, DhAlg::Ecp256);
}

#[test]
fn nat_is_detected_and_ike_floats_to_4500() {
    let mut n = Net::new(config(b"k"), config(b"k"), true);
    n.initiate();
    assert!(matches!(
        &n.ev_a[0],
        Event::IkeSaUp {
            nat_local: true,
            nat_remote: false,
            ..
        }
    ));
    assert!(
        matches!(&n.ev_b[0], Event::IkeSaUp { nat_local: false, nat_remote: true, remote, .. } if remote.port() == 14500)
    );
    // IKE_AUTH went out from 4500 to 4500 and needs the non-ESP marker.
    assert_eq!(n.sent_a[1].local.port(), 4500);
    assert_eq!(n.sent_a[1].remote.port(), 4500);
    assert!(n.sent_a[1].needs_non_esp_marker(4500));
    assert!(!n.sent_a[0].needs_non_esp_marker(4500));
    let (ca, cb) = (Net::children(&n.ev_a), Net::children(&n.ev_b));
    assert_pair(ca[0], cb[0]);
    assert!(ca[0].udp_encap && cb[0].udp_encap);
    assert_eq!(cb[0].remote, SocketAddr::new(n.a_pub, 14500));
}

#[test]
fn forced_encapsulation_without_nat() {
    let mut ca = config(b"k");
    ca.force_encap = true;
    let mut n = Net::new(ca, config(b"k"), false);
    n.initiate();
    let (ca, cb) = (Net::children(&n.ev_a), Net::children(&n.ev_b));
    assert!(ca[0].udp_encap && cb[0].udp_encap);
}

#[test]
fn wrong_psk_fails_authentication_on_both_sides() {
    let mut n = Net::new(config(b"right"), config(b"wrong"), false);
    n.initiate();
    assert_eq!(count(&n.ev_b, |e| matches!(e, Event::AuthFailed { .. })), 1);
    assert_eq!(count(&n.ev_a, |e| matches!(e, Event::AuthFailed { .. })), 1);
    assert!(Net::children(&n.ev_a).is_empty());
    assert!(n.a.ike_sas(n.now).is_empty());
    assert!(n.b.ike_sas(n.now).is_empty());
}

#[test]
fn invalid_ke_retry_uses_the_group_the_responder_asks_for() {
    let mut ca = config(b"k");
    ca.ike_proposals = vec![
        IkeProposal {
            dh: DhAlg::Curve25519,
            ..IkeProposal::default()
        },
        IkeProposal::default(),
    ];
    let mut n = Net::new(ca, config(b"k"), false);
    n.initiate();
    let inits = n
        .sent_a
        .iter()
        .filter(|t| {
            Message::parse(&t.bytes).is_ok_and(|m| m.header.exchange == ExchangeType::IKE_SA_INIT)
        })
        .count();
    assert_eq!(inits, 2);
    assert_eq!(Net::children(&n.ev_a).len(), 1);
    assert_eq!(n.a.ike_sas(n.now)[0].suite.unwrap().dh, DhAlg::Ecp256);
}

#[test]
fn cookie_challenge_when_half_open_threshold_reached() {
    let mut cb = config(b"k");
    cb.cookie_threshold = 0;
    let mut n = Net::new(config(b"k"), cb, false);
    n.initiate();
    // First SA_INIT got a COOKIE answer with no responder SPI.
    let first = Message::parse(&n.sent_b[0].bytes).unwrap();
    assert_eq!(first.header.spi_r, 0);
    assert!(first.notifies().any(|x| x.ty == NotifyType::COOKIE));
    let retry = Message::parse(&n.sent_a[1].bytes).unwrap();
    assert!(matches!(&retry.payloads[0], Payload::Notify(x) if x.ty == NotifyType::COOKIE));
    assert_eq!(Net::children(&n.ev_b).len(), 1);
}

#[test]
fn lost_auth_response_is_retransmitted_and_answered_from_cache() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    let mut dropped = 0;
    n.filter = Box::new(move |to_b, bytes| {
        let m = dmvpn_ike::message::Header::parse(&mut dmvpn_wire::Reader::new(bytes)).unwrap();
        if !to_b && m.exchange == ExchangeType::IKE_AUTH && dropped == 0 {
            dropped += 1;
            return false;
        }
        true
    });
    n.initiate();
    assert!(Net::children(&n.ev_a).is_empty());
    n.run_for(Duration::from_secs(3));
    // One child on each side: the responder did not process the request twice.
    assert_eq!(Net::children(&n.ev_a).len(), 1);
    assert_eq!(Net::children(&n.ev_b).len(), 1);
    assert_pair(Net::children(&n.ev_a)[0], Net::children(&n.ev_b)[0]);
    // The retransmitted response is byte-identical to the lost one.
    let auths: Vec<&Transmit> = n.sent_b.iter().filter(|t| t.bytes[18] == 35).collect();
    assert_eq!(auths.len(), 2);
    assert_eq!(auths[0].bytes, auths[1].bytes);
}

#[test]
fn unanswered_initiator_gives_up_with_exponential_backoff() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.filter = Box::new(|to_b, _| !to_b);
    let t0 = n.now;
    n.initiate();
    n.run_for(Duration::from_secs(600));
    assert_eq!(
        count(&n.ev_a, |e| matches!(e, Event::EstablishFailed { .. })),
        1
    );
    assert_eq!(n.sent_a.len(), Retransmit::default().max_tries as usize);
    assert!(n.a.poll_timeout().is_none());
    assert!(n.a.ike_sas(n.now).is_empty());
    let _ = t0;
}

#[test]
fn dpd_on_demand_declares_a_silent_peer_dead() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    let id = n.initiate();
    n.ev_a.clear();
    // Without outbound traffic on-demand DPD sends nothing.
    n.run_for(Duration::from_secs(300));
    assert_eq!(n.sent_a.len(), 2);
    // The peer vanishes; we keep sending ESP.
    n.filter = Box::new(|_, _| false);
    let start = n.now;
    n.a.note_outbound(n.now, n.b_ip);
    let mut dead_at = None;
    for _ in 0..200 {
        n.run_for(Duration::from_secs(1));
        n.a.note_outbound(n.now, n.b_ip);
        if n.ev_a
            .iter()
            .any(|e| matches!(e, Event::PeerDead { sa, .. } if *sa == id))
        {
            dead_at = Some(n.now);
            break;
        }
    }
    let dead_at = dead_at.expect("peer declared dead");
    // Last receipt was at `start - 300 s` (establishment), so the first probe
    // goes out right away, then 4 retries 5 s apart, then 5 s of waiting.
    let probes = n.sent_a.len() - 2;
    assert_eq!(probes, 5);
    let waited = dead_at - start;
    assert!(
        waited >= Duration::from_secs(25) && waited <= Duration::from_secs(26),
        "{waited:?}"
    );
    assert!(count(&n.ev_a, |e| matches!(e, Event::ChildSaDeleted { .. })) == 1);
}

#[test]
fn dpd_probe_answered_keeps_sa_and_waits_delay_after_inbound() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.initiate();
    n.run_for(Duration::from_secs(10));
    n.a.note_inbound(n.now, n.b_ip);
    n.a.note_outbound(n.now + Duration::from_secs(1), n.b_ip);
    n.run_for(Duration::from_secs(39));
    assert_eq!(n.sent_a.len(), 2, "no probe before 40 s of silence");
    n.run_for(Duration::from_secs(2));
    assert_eq!(n.sent_a.len(), 3, "probe after 40 s");
    assert_eq!(n.sent_b.len(), 3, "probe answered");
    assert!(!n.ev_a.iter().any(|e| matches!(e, Event::PeerDead { .. })));
}

#[test]
fn delete_removes_ike_and_child_sas_on_both_sides() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.initiate();
    n.a.delete(n.now, n.b_ip).unwrap();
    n.flush();
    assert_eq!(
        count(&n.ev_b, |e| matches!(
            e,
            Event::IkeSaDown {
                reason: DownReason::DeletedByPeer,
                ..
            }
        )),
        1
    );
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::ChildSaDeleted { .. })),
        1
    );
    assert_eq!(
        count(&n.ev_a, |e| matches!(
            e,
            Event::IkeSaDown {
                reason: DownReason::DeletedLocally,
                ..
            }
        )),
        1
    );
    assert_eq!(
        count(&n.ev_a, |e| matches!(e, Event::ChildSaDeleted { .. })),
        1
    );
    assert!(n.a.ike_sas(n.now).is_empty() && n.b.ike_sas(n.now).is_empty());
    assert_eq!(n.a.delete(n.now, n.b_ip), Err(Error::NoSuchSa));
}

fn only_child(e: &Endpoint, now: Instant) -> ChildSaInfo {
    let s = e.ike_sas(now);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].children.len(), 1, "{:?}", s[0].children);
    s[0].children[0].clone()
}

#[test]
fn child_rekey_replaces_and_deletes_the_old_sa() {
    let mut ca = config(b"k");
    ca.esp.pfs = Some(DhAlg::Ecp256);
    let mut cb = config(b"k");
    cb.esp.pfs = Some(DhAlg::Ecp256);
    let mut n = Net::new(ca, cb, true);
    n.initiate();
    let old = Net::children(&n.ev_a)[0].spi_in;
    n.a.rekey_child(n.now, old).unwrap();
    n.flush();
    let (ca, cb) = (Net::children(&n.ev_a), Net::children(&n.ev_b));
    assert_eq!((ca.len(), cb.len()), (2, 2));
    assert_pair(ca[1], cb[1]);
    assert_eq!(ca[1].replaces, Some(old));
    assert_ne!(ca[1].key_in, ca[0].key_in);
    assert!(ca[1].udp_encap);
    assert_eq!(
        count(
            &n.ev_a,
            |e| matches!(e, Event::ChildSaDeleted { spi_in, .. } if *spi_in == old)
        ),
        1
    );
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::ChildSaDeleted { .. })),
        1
    );
    assert_eq!(only_child(&n.a, n.now).spi_in, ca[1].spi_in);
    assert_eq!(only_child(&n.b, n.now).spi_in, cb[1].spi_in);
}

#[test]
fn simultaneous_child_rekey_leaves_exactly_one_matching_pair() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.initiate();
    let a_old = Net::children(&n.ev_a)[0].spi_in;
    let b_old = Net::children(&n.ev_b)[0].spi_in;
    n.a.rekey_child(n.now, a_old).unwrap();
    n.b.rekey_child(n.now, b_old).unwrap();
    n.flush();
    n.run_for(Duration::from_secs(5));
    let ca = only_child(&n.a, n.now);
    let cb = only_child(&n.b, n.now);
    assert_eq!(ca.spi_in, cb.spi_out);
    assert_eq!(ca.spi_out, cb.spi_in);
    assert_ne!(ca.spi_in, a_old);
    // Two new pairs were created, one redundant pair and the old one deleted.
    assert_eq!(Net::children(&n.ev_a).len(), 3);
    assert_eq!(
        count(&n.ev_a, |e| matches!(e, Event::ChildSaDeleted { .. })),
        2
    );
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::ChildSaDeleted { .. })),
        2
    );
}

#[test]
fn ike_rekey_moves_children_and_deletes_old_sa() {
    let mut n = Net::new(config(b"k"), config(b"k"), true);
    let old = n.initiate();
    n.a.rekey_ike(n.now, old).unwrap();
    n.flush();
    let new_a = n.ev_a.iter().find_map(|e| match e {
        Event::IkeSaRekeyed { old: o, new } if *o == old => Some(*new),
        _ => None,
    });
    let new_a = new_a.expect("rekeyed on A");
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::IkeSaRekeyed { .. })),
        1
    );
    // Children survive the IKE rekey: no ChildSaDeleted anywhere.
    assert_eq!(
        count(&n.ev_a, |e| matches!(e, Event::ChildSaDeleted { .. })),
        0
    );
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::ChildSaDeleted { .. })),
        0
    );
    let sa_a = n.a.ike_sas(n.now);
    assert_eq!(sa_a.len(), 1);
    assert_eq!(sa_a[0].id, new_a);
    assert_eq!(sa_a[0].children.len(), 1);
    assert_eq!(n.b.ike_sas(n.now).len(), 1);
    // The new SA works: a child rekey over it, then a delete.
    let spi = sa_a[0].children[0].spi_in;
    n.a.rekey_child(n.now, spi).unwrap();
    n.flush();
    assert_eq!(Net::children(&n.ev_b).len(), 2);
    n.a.delete(n.now, n.b_ip).unwrap();
    n.flush();
    assert!(n.b.ike_sas(n.now).is_empty());
}

#[test]
fn lifetimes_trigger_child_and_ike_rekeys_automatically() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.initiate();
    n.run_for(Duration::from_secs(3600));
    // Child rekeyed within [lifetime - 2*margin, lifetime - margin].
    assert!(Net::children(&n.ev_a).len() >= 2);
    assert!(Net::children(&n.ev_a)[1].replaces.is_some());
    n.run_for(Duration::from_secs(24 * 3600));
    assert!(count(&n.ev_a, |e| matches!(e, Event::IkeSaRekeyed { .. })) >= 1);
    assert_eq!(n.a.ike_sas(n.now).len(), 1);
    assert_eq!(n.b.ike_sas(n.now).len(), 1);
    assert_eq!(n.a.ike_sas(n.now)[0].children.len(), 1);
    assert!(!n.ev_a.iter().any(|e| matches!(e, Event::PeerDead { .. })));
}

#[test]
fn initial_contact_clears_old_sas_of_the_same_identity() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.initiate();
    // A reboots: a fresh endpoint with the same address starts over.
    n.a = Endpoint::new(config(b"k"), Box::new(TestRng::new(99)));
    n.ev_b.clear();
    n.initiate();
    assert_eq!(
        count(&n.ev_b, |e| matches!(
            e,
            Event::IkeSaDown {
                reason: DownReason::Replaced,
                ..
            }
        )),
        1
    );
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::ChildSaDeleted { .. })),
        1
    );
    assert_eq!(n.b.ike_sas(n.now).len(), 1);
}

#[test]
fn esn_is_negotiated_only_when_both_offer_it() {
    let mut ca = config(b"k");
    ca.esp.esn = true;
    let mut cb = config(b"k");
    cb.esp.esn = true;
    let mut n = Net::new(ca.clone(), cb, false);
    n.initiate();
    assert!(Net::children(&n.ev_a)[0].esn && Net::children(&n.ev_b)[0].esn);
    let mut n = Net::new(ca, config(b"k"), false);
    n.initiate();
    assert!(!Net::children(&n.ev_a)[0].esn && !Net::children(&n.ev_b)[0].esn);
}

#[test]
fn responder_ignores_garbage_and_truncations() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.initiate();
    let auth = n.sent_a[1].bytes.clone();
    for cut in 0..auth.len() {
        n.b.handle_datagram(n.now, n.b_local(), n.a_local(), &auth[..cut]);
    }
    // Every truncation was dropped silently (no replies).
    assert!(n.b.poll_transmit().is_none());
    // A corrupted request with a new message ID fails the ICV: dropped.
    let mut flipped = auth.clone();
    flipped[23] = 2;
    n.b.handle_datagram(n.now, n.b_local(), n.a_local(), &flipped);
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    n.b.handle_datagram(n.now, n.b_local(), n.a_local(), &flipped);
    assert!(n.b.poll_event().is_none());
    assert!(n.b.poll_transmit().is_none());
}

#[test]
fn set_config_names_only_the_sas_the_new_keyring_refuses() {
    let mut n = Net::new(config(b"keykey00"), config(b"keykey00"), false);
    n.initiate();
    assert_eq!(n.b.ike_sas(n.now).len(), 1);
    // An unrelated change (another peer's key, the same wildcard): the SA stays.
    let mut same = config(b"keykey00");
    same.keyring
        .add_address("192.0.2.99".parse().unwrap(), b"other");
    assert!(n.b.set_config(same).is_empty());
    // Only a key for a different peer: A's SA is no longer allowed.
    let mut c = Config::default();
    c.keyring
        .add_address("192.0.2.99".parse().unwrap(), b"other");
    let refused = n.b.set_config(c);
    let ids: Vec<_> = n.b.ike_sas(n.now).into_iter().map(|s| s.id).collect();
    assert_eq!(refused, ids);
}
