//! A peer that lost its IKE SAs (RFC 7296 §2.4, §2.21.4): its unprotected INVALID_IKE_SPI
//! answer is reported as a hint that changes no state, and an IKE SA started because of it
//! replaces the stale one only once it has authenticated.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use dmvpn_crypto::TestRng;
use dmvpn_ike::message::{Header, Notify};
use dmvpn_ike::testing::*;
use dmvpn_ike::*;

fn hints(ev: &[Event]) -> Vec<IkeSaId> {
    ev.iter()
        .filter_map(|e| match e {
            Event::InvalidIkeSpi { sa, .. } => Some(*sa),
            _ => None,
        })
        .collect()
}

fn established(e: &Endpoint, n: &Net) -> Vec<IkeSaInfo> {
    e.ike_sas(n.now)
        .into_iter()
        .filter(|s| s.state == IkeSaState::Established)
        .collect()
}

/// The unprotected INVALID_IKE_SPI a peer without the SA sends for `request` (§2.21.4:
/// SPIs and Message ID copied, Response flag, never encrypted).
fn invalid_spi_answer(request: &[u8]) -> Vec<u8> {
    let h = Message::parse(request).unwrap().header;
    Message {
        header: Header {
            spi_i: h.spi_i,
            spi_r: h.spi_r,
            next_payload: PayloadType::NONE,
            version: 0x20,
            exchange: h.exchange,
            flags: message::flags::RESPONSE,
            message_id: h.message_id,
            length: 0,
        },
        payloads: vec![Payload::Notify(Notify::new(
            NotifyType::INVALID_IKE_SPI,
            Vec::new(),
        ))],
    }
    .emit()
    .unwrap()
}

/// B restarts (a new endpoint, no SAs): A's next liveness check is answered at once with
/// INVALID_IKE_SPI, which A reports once per request and which leaves A's SA up; an SA
/// started with `initiate_replacing` then takes the old one's place when it authenticates.
#[test]
fn a_restarted_peer_answers_with_invalid_ike_spi_and_the_replacing_sa_takes_over() {
    for nat in [false, true] {
        let mut n = Net::new(config(b"k"), config(b"k"), nat);
        let old = n.initiate();
        let old_child = Net::children(&n.ev_a)[0].spi_in;
        n.ev_a.clear();
        // The hub is killed and started again with the same configuration.
        n.b = Endpoint::new(config(b"k"), Box::new(TestRng::new(99)));
        n.a.probe(n.now, old).unwrap();
        n.flush();
        assert_eq!(hints(&n.ev_a), vec![old], "nat={nat}: {:?}", n.ev_a);
        assert_eq!(n.ev_a.len(), 1, "only the hint: {:?}", n.ev_a);
        // Unauthenticated: A's SA and its child are untouched.
        let up = established(&n.a, &n);
        assert_eq!(up.len(), 1);
        assert_eq!((up[0].id, up[0].children[0].spi_in), (old, old_child));
        // The probe's retransmission gets another answer: no second hint for it.
        n.run_for(Duration::from_secs(6));
        assert_eq!(hints(&n.ev_a), vec![old], "one hint per request");
        // A starts a new IKE SA in parallel.
        let new =
            n.a.initiate_replacing(n.now, n.a_local(), n.b_local(), old)
                .unwrap();
        n.flush();
        let up = established(&n.a, &n);
        assert_eq!(up.len(), 1, "the stale SA went: {up:?}");
        assert_eq!(up[0].id, new);
        assert!(n.ev_a.iter().any(|e| matches!(e,
            Event::IkeSaDown { sa, reason: DownReason::Replaced, .. } if *sa == old)));
        assert!(n.ev_a.iter().any(|e| matches!(e,
            Event::ChildSaDeleted { spi_in, .. } if *spi_in == old_child)));
        // The new child is installed before the old one is reported deleted, so the
        // dataplane always has an SA to send on.
        let installed = n
            .ev_a
            .iter()
            .position(|e| matches!(e, Event::ChildSaInstalled(c) if c.ike_sa == new))
            .unwrap();
        let deleted = n
            .ev_a
            .iter()
            .position(|e| matches!(e, Event::ChildSaDeleted { ike_sa, .. } if *ike_sa == old))
            .unwrap();
        assert!(installed < deleted);
        assert_eq!(established(&n.b, &n).len(), 1);
    }
}

/// A forged INVALID_IKE_SPI (the peer is alive): from another address it is ignored; from
/// the peer's it is a hint, and the SA it names stays up while a replacement is refused or
/// unanswered. A replacement that does authenticate carries INITIAL_CONTACT, so the live
/// peer drops its copy of the old SA too and both ends keep one.
#[test]
fn a_forged_hint_changes_nothing_until_the_replacement_authenticates() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    let old = n.initiate();
    let old_child = Net::children(&n.ev_a)[0].spi_in;
    n.ev_a.clear();
    n.ev_b.clear();
    n.a.probe(n.now, old).unwrap();
    let probe = n.a.poll_transmit().unwrap().bytes;
    let forged = invalid_spi_answer(&probe);
    let elsewhere = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 66)), 500);
    n.a.handle_datagram(n.now, n.a_local(), elsewhere, &forged);
    assert!(n.a.poll_event().is_none(), "not from the peer's address");
    n.a.handle_datagram(n.now, n.a_local(), n.b_local(), &forged);
    assert!(matches!(n.a.poll_event(), Some(Event::InvalidIkeSpi { sa, .. }) if sa == old));
    assert!(n.a.poll_transmit().is_none());
    // The real answer still completes the probe.
    n.b.handle_datagram(n.now, n.b_local(), n.a_local(), &probe);
    n.flush();
    // A replacement whose IKE_SA_INIT responses are lost times out; the old SA stays.
    n.filter = Box::new(|to_b, bytes| to_b || bytes.get(18) != Some(&34));
    n.a.initiate_replacing(n.now, n.a_local(), n.b_local(), old)
        .unwrap();
    n.run_for(Duration::from_secs(120));
    assert!(
        n.ev_a
            .iter()
            .any(|e| matches!(e, Event::EstablishTimedOut { .. }))
    );
    assert!(
        !n.ev_a
            .iter()
            .any(|e| matches!(e, Event::IkeSaDown { .. } | Event::ChildSaDeleted { .. })),
        "{:?}",
        n.ev_a
    );
    let up = established(&n.a, &n);
    assert_eq!(
        (up.len(), up[0].id, up[0].children[0].spi_in),
        (1, old, old_child)
    );
    // One that authenticates replaces it on both ends (INITIAL_CONTACT at B).
    n.filter = Box::new(|_, _| true);
    let new =
        n.a.initiate_replacing(n.now, n.a_local(), n.b_local(), old)
            .unwrap();
    n.flush();
    let (a, b) = (established(&n.a, &n), established(&n.b, &n));
    assert_eq!((a.len(), a[0].id), (1, new));
    assert_eq!(b.len(), 1, "B dropped its copy of the old SA: {b:?}");
    assert!(n.ev_b.iter().any(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Replaced,
            ..
        }
    )));
    assert_eq!(n.b.ike_sas(n.now).len(), 1);
}

/// An ordinary initiation does not replace anything: with an SA up, a second one to the same
/// peer leaves the first alone (and, not being first contact, carries no INITIAL_CONTACT, so
/// the peer keeps both too).
#[test]
fn a_plain_second_initiation_replaces_nothing() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.initiate();
    n.initiate();
    assert_eq!(established(&n.a, &n).len(), 2);
    assert_eq!(established(&n.b, &n).len(), 2);
}

/// `delete_child` (§1.4.1) removes one Child SA on both ends and leaves the IKE SA up
/// without it (what a hub sees when a spoke's Child SA expired or was deleted); an unknown
/// SPI is refused.
#[test]
fn delete_child_leaves_both_ike_sas_up_and_childless() {
    let mut n = Net::new(config(b"k"), config(b"k"), true);
    n.initiate();
    let spi = Net::children(&n.ev_a)[0].spi_in;
    assert_eq!(n.a.delete_child(n.now, 0x1234), Err(Error::NoSuchSa));
    n.a.delete_child(n.now, spi).unwrap();
    n.flush();
    for (e, ev) in [(&n.a, &n.ev_a), (&n.b, &n.ev_b)] {
        let up = established(e, &n);
        assert_eq!(up.len(), 1);
        assert!(up[0].children.is_empty(), "{up:?}");
        assert_eq!(count(ev, |e| matches!(e, Event::ChildSaDeleted { .. })), 1);
        assert_eq!(count(ev, |e| matches!(e, Event::IkeSaDown { .. })), 0);
    }
}

/// §1.5: B restarted and receives A's ESP for a Child SA it no longer has: it tells A with an
/// unprotected INVALID_SPI (random IKE SPIs, Initiator flag, the SPI as data), which A does
/// not answer but takes as a reason to probe that Child SA's IKE SA at once; the restarted
/// B answers the probe with INVALID_IKE_SPI, so A gets the hint without waiting for DPD.
/// One probe per interval however many arrive; one naming an SPI A does not send on, or from
/// another address, changes nothing; B with an IKE SA to the sender sends nothing.
#[test]
fn esp_to_a_restarted_peer_gets_invalid_spi_which_makes_us_probe_at_once() {
    for nat in [false, true] {
        let mut n = Net::new(config(b"k"), config(b"k"), nat);
        let old = n.initiate();
        let spi_out = Net::children(&n.ev_a)[0].spi_out;
        // B, with its SA, never answers ESP.
        let (b_local, a_seen) = if nat {
            (
                SocketAddr::new(n.b_ip, 4500),
                SocketAddr::new(n.a_pub, 14500),
            )
        } else {
            (n.b_local(), n.a_local())
        };
        n.b.unknown_esp_spi(n.now, b_local, a_seen, spi_out);
        assert!(n.b.poll_transmit().is_none(), "B has an IKE SA with A");
        n.b = Endpoint::new(config(b"k"), Box::new(TestRng::new(99)));
        n.ev_a.clear();
        for _ in 0..5 {
            n.b.unknown_esp_spi(n.now, b_local, a_seen, spi_out);
        }
        let notifies: Vec<_> = std::iter::from_fn(|| n.b.poll_transmit()).collect();
        assert_eq!(notifies.len(), 5);
        let m = Message::parse(&notifies[0].bytes).unwrap();
        assert!(m.header.is_initiator() && !m.header.is_response());
        assert_ne!(m.header.spi_i, 0);
        assert!(matches!(&m.payloads[..], [Payload::Notify(x)]
            if x.ty == NotifyType::INVALID_SPI && x.data == spi_out.to_be_bytes()));
        for t in &notifies {
            n.a.handle_datagram(n.now, n.nat_in(t.remote), t.local, &t.bytes);
        }
        // One probe, nothing else (no answer to the notifies).
        let probes: Vec<_> = std::iter::from_fn(|| n.a.poll_transmit()).collect();
        assert_eq!(probes.len(), 1, "nat={nat}");
        let p = Message::parse(&probes[0].bytes).unwrap().header;
        assert_eq!(p.exchange, ExchangeType::INFORMATIONAL);
        n.b.handle_datagram(
            n.now,
            probes[0].remote,
            n.nat_out(probes[0].local),
            &probes[0].bytes,
        );
        n.flush();
        assert_eq!(hints(&n.ev_a), vec![old], "nat={nat}: {:?}", n.ev_a);
        assert_eq!(established(&n.a, &n).len(), 1);
    }
    // Not our SPI, or not from the peer's address: no probe.
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.initiate();
    let spi_out = Net::children(&n.ev_a)[0].spi_out;
    let mut other = Endpoint::new(config(b"k"), Box::new(TestRng::new(5)));
    let elsewhere = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 66)), 500);
    for (from, spi) in [(n.b_local(), spi_out ^ 1), (elsewhere, spi_out)] {
        other.unknown_esp_spi(n.now, from, n.a_local(), spi);
        let t = other.poll_transmit().unwrap();
        n.a.handle_datagram(n.now, n.a_local(), from, &t.bytes);
        assert!(n.a.poll_transmit().is_none());
        assert!(n.a.poll_event().is_none());
    }
}

fn unanswered(ev: &[Event]) -> Vec<IkeSaId> {
    ev.iter()
        .filter_map(|e| match e {
            Event::ProbeUnanswered { sa, .. } => Some(*sa),
            _ => None,
        })
        .collect()
}

/// An established SA whose datagrams pass `filter` from now on, with A's liveness check sent.
fn probing(filter: Filter) -> (Net, IkeSaId) {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    let sa = n.initiate();
    n.ev_a.clear();
    n.filter = filter;
    n.a.probe(n.now, sa).unwrap();
    n.flush();
    (n, sa)
}

/// B goes silent (killed, its host still up: no INVALID_IKE_SPI, no ICMP). A's liveness check
/// is reported unanswered once, at its first retransmission (one DPD retry interval, `dpd 40 5`:
/// 5 s), with the SA left up; the check goes on, and only the spent budget (5 tries) makes B
/// dead. Its retransmissions add no second hint.
#[test]
fn a_silent_peer_is_reported_unanswered_once_per_check_and_dead_after_the_budget() {
    let (mut n, sa) = probing(Box::new(|to_b, _| !to_b));
    n.run_for(Duration::from_millis(4_900));
    assert!(unanswered(&n.ev_a).is_empty(), "too early: {:?}", n.ev_a);
    n.run_for(Duration::from_millis(200));
    assert_eq!(unanswered(&n.ev_a), vec![sa], "{:?}", n.ev_a);
    assert_eq!(established(&n.a, &n).len(), 1, "the hint leaves the SA up");
    assert_eq!(count(&n.ev_a, |e| matches!(e, Event::PeerDead { .. })), 0);
    // The rest of the budget: 4 more intervals of 5 s.
    n.run_for(Duration::from_secs(21));
    assert_eq!(unanswered(&n.ev_a), vec![sa], "one hint per check");
    assert_eq!(
        count(
            &n.ev_a,
            |e| matches!(e, Event::PeerDead { sa: s, .. } if *s == sa)
        ),
        1,
        "{:?}",
        n.ev_a
    );
}

/// The same silence on IKE, but the peer's ESP still arrives (the daemon reports it): a peer
/// that is heard is alive, and one lost DPD answer must not start a replacement, so no hint.
/// When only the first request is lost, the hint comes with the retry (nothing was heard
/// then) and the answer to the retry keeps the SA: the hint is advice, never a verdict.
#[test]
fn a_peer_heard_since_the_probe_gets_no_hint_and_one_answering_the_retry_keeps_its_sa() {
    // ESP from B after the probe went out.
    let (mut n, _) = probing(Box::new(|to_b, _| !to_b));
    n.run_for(Duration::from_secs(1));
    n.a.note_inbound(n.now, n.b_ip);
    n.run_for(Duration::from_secs(6));
    assert!(unanswered(&n.ev_a).is_empty(), "{:?}", n.ev_a);

    // Only the first request is lost; the retry is answered.
    let mut dropped = 0;
    let (mut n, sa) = probing(Box::new(move |to_b, _| {
        if to_b && dropped == 0 {
            dropped += 1;
            return false;
        }
        true
    }));
    n.run_for(Duration::from_secs(30));
    // The hint is reported as the retry goes out (nothing heard yet), never again after the
    // answer, and the SA stays.
    assert_eq!(unanswered(&n.ev_a), vec![sa]);
    assert_eq!(count(&n.ev_a, |e| matches!(e, Event::PeerDead { .. })), 0);
    assert_eq!(established(&n.a, &n).len(), 1);
}
