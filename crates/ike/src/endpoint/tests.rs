use super::*;
use crate::config::EspProposal;
use dmvpn_crypto::TestRng;

fn pair() -> (Endpoint, Endpoint, Instant, SocketAddr, SocketAddr) {
    let mut c = Config::default();
    c.keyring.set_wildcard(b"k");
    let mut a = Endpoint::new(c.clone(), Box::new(TestRng::new(5)));
    let mut b = Endpoint::new(c, Box::new(TestRng::new(6)));
    let (la, lb): (SocketAddr, SocketAddr) = (
        "192.0.2.1:500".parse().unwrap(),
        "192.0.2.2:500".parse().unwrap(),
    );
    let now = Instant::now();
    a.initiate(now, la, lb).unwrap();
    for _ in 0..4 {
        while let Some(t) = a.poll_transmit() {
            b.handle_datagram(now, lb, la, &t.bytes);
        }
        while let Some(t) = b.poll_transmit() {
            a.handle_datagram(now, la, lb, &t.bytes);
        }
    }
    (a, b, now, la, lb)
}

#[test]
fn reply_without_use_transport_mode_is_refused_and_deleted() {
    let (mut a, _b, now, _, _) = pair();
    while a.poll_event().is_some() {}
    let id = a.sas.values().next().unwrap().id;
    let mut sa = a.sas.remove(id).unwrap();
    let reply = vec![
        Payload::Sa(proposal::esp_offer(
            &EspProposal::default(),
            0x4444,
            None,
            false,
        )),
        Payload::TsI(vec![TrafficSelector::gre_host(sa.local.ip())]),
        Payload::TsR(vec![TrafficSelector::gre_host(sa.remote.ip())]),
    ];
    let r = a.child_initiator_finish(now, &mut sa, &reply, 0x5555, &[1; 32], &[2; 32], None, None);
    assert_eq!(r, Err(NotifyType::NO_PROPOSAL_CHOSEN));
    assert!(
        a.poll_event().is_none(),
        "no tunnel-mode SA is ever installed"
    );
    assert_eq!(sa.queue.back(), Some(&Queued::DeleteChild(0x5555)));
    // With the notify it would have been accepted.
    let mut ok = reply.clone();
    ok.insert(0, notify(NotifyType::USE_TRANSPORT_MODE));
    assert!(
        a.child_initiator_finish(now, &mut sa, &ok, 0x6666, &[1; 32], &[2; 32], None, None)
            .is_ok()
    );
    assert!(
        matches!(a.poll_event(), Some(Event::ChildSaInstalled(c)) if c.spi_in == 0x6666 && c.spi_out == 0x4444)
    );
}

#[test]
fn fragmented_request_is_reassembled() {
    let (a, mut b, now, la, lb) = pair();
    while b.poll_event().is_some() {}
    let sa = a.sas.values().next().unwrap();
    let child = sa.children[0].spi_in;
    let keys = sa.keys.clone().unwrap();
    let key = AesGcm256::new(keys.sk_ei.expose()).unwrap();
    let inner = vec![Payload::Delete(Delete {
        protocol: ProtocolId::ESP,
        spi_size: 4,
        spis: vec![child.to_be_bytes().to_vec()],
    })];
    let mut plain = Vec::new();
    emit_payloads(&inner, &mut dmvpn_wire::Writer::new(&mut plain)).unwrap();
    let (c1, c2) = plain.split_at(5);
    let mid = sa.next_request_id;
    let f1 = sk::seal_fragment(
        sa.spi_i,
        sa.spi_r,
        ExchangeType::INFORMATIONAL,
        flags::INITIATOR,
        mid,
        PayloadType::D,
        (1, 2),
        c1,
        &key,
        [0xf1; 8],
    )
    .unwrap();
    let f2 = sk::seal_fragment(
        sa.spi_i,
        sa.spi_r,
        ExchangeType::INFORMATIONAL,
        flags::INITIATOR,
        mid,
        PayloadType::NONE,
        (2, 2),
        c2,
        &key,
        [0xf2; 8],
    )
    .unwrap();
    // Out of order; nothing happens until both are in.
    b.handle_datagram(now, lb, la, &f2);
    assert!(b.poll_event().is_none());
    b.handle_datagram(now, lb, la, &f1);
    assert!(
        matches!(b.poll_event(), Some(Event::ChildSaDeleted { spi_out, .. }) if spi_out == child)
    );
    assert!(b.poll_transmit().is_some());
}

#[test]
fn ike_sa_state_names_are_stable() {
    // Operator output and the status JSON show these names.
    let names = [
        (IkeSaState::ExpectSaInitResponse, "ExpectSaInitResponse"),
        (IkeSaState::ExpectAuthRequest, "ExpectAuthRequest"),
        (IkeSaState::ExpectAuthResponse, "ExpectAuthResponse"),
        (IkeSaState::Established, "Established"),
        (IkeSaState::Deleting, "Deleting"),
        (IkeSaState::Closed, "Closed"),
    ];
    for (st, name) in names {
        assert_eq!(st.to_string(), name);
        assert_eq!(st.as_str(), name);
        assert_eq!(name.parse::<IkeSaState>(), Ok(st));
    }
    assert!("Up".parse::<IkeSaState>().is_err());
}

#[test]
fn a_challenged_peer_that_answers_stays_and_a_silent_one_is_dead_within_the_budget() {
    // Answered: the check goes out at once, the peer answers, nothing else happens.
    let (mut a, mut b, now, la, lb) = pair();
    while a.poll_event().is_some() {}
    assert!(a.challenge(now, lb.ip()));
    let probe = a.poll_transmit().expect("a liveness check at once");
    b.handle_datagram(now, lb, la, &probe.bytes);
    let answer = b.poll_transmit().expect("the peer answers");
    let t1 = now + Duration::from_millis(50);
    a.handle_datagram(t1, la, lb, &answer.bytes);
    let mut t = t1;
    while t < now + CHALLENGE_BUDGET * 2 {
        t = a
            .poll_timeout()
            .unwrap_or(t + challenge::RESEND)
            .max(t + Duration::from_millis(10));
        a.handle_timeout(t);
        while a.poll_transmit().is_some() {}
    }
    assert!(
        !std::iter::from_fn(|| a.poll_event()).any(|e| matches!(e, Event::PeerDead { .. })),
        "an answered challenge declared the peer dead"
    );
    assert_eq!(a.sa_count(), 1);

    // Silent: resent every second, dead at the budget, well before DPD's own schedule.
    let (mut a, _b, now, _la, lb) = pair();
    while a.poll_event().is_some() {}
    assert!(a.challenge(now, lb.ip()));
    // A second claim while the check runs changes nothing.
    assert!(!a.challenge(now + Duration::from_millis(300), lb.ip()));
    let mut sends = 0;
    let mut dead_at = None;
    let mut t = now;
    while dead_at.is_none() && t < now + Duration::from_secs(60) {
        sends += std::iter::from_fn(|| a.poll_transmit()).count();
        t = a.poll_timeout().expect("a deadline while challenged");
        a.handle_timeout(t);
        if std::iter::from_fn(|| a.poll_event()).any(|e| matches!(e, Event::PeerDead { .. })) {
            dead_at = Some(t);
        }
    }
    assert_eq!(
        dead_at,
        Some(now + CHALLENGE_BUDGET),
        "verdict at the budget"
    );
    assert_eq!(sends, 4, "one check a second until the verdict");
    assert_eq!(a.sa_count(), 0);
}

/// A clone of the SA views keeps what it saw while the endpoint goes on (the control loop
/// hands one to a `show` built elsewhere), reads ages at whatever `now` it is asked, and a
/// fresh one matches `ike_sas` field for field; the table's own check compares every view
/// with its SA after each step.
#[test]
fn sa_views_are_a_snapshot_that_reads_like_ike_sas() {
    let (mut a, _b, now, _, lb) = pair();
    let views = a.sa_views();
    assert_eq!(views.len(), 1);
    let later = now + Duration::from_secs(90);
    let info = views.infos(later).pop().unwrap();
    let direct = a.ike_sas(later).pop().unwrap();
    assert_eq!(format!("{info:?}"), format!("{direct:?}"));
    assert_eq!(info.age, Duration::from_secs(90));
    assert_eq!(info.state, IkeSaState::Established);
    assert_eq!(info.children.len(), 1);
    a.check_indexes();

    a.delete(now, lb.ip()).unwrap();
    while a.poll_transmit().is_some() {}
    a.handle_timeout(now + Duration::from_secs(600));
    a.check_indexes();
    let still = views.infos(later);
    assert_eq!(still.len(), 1, "the clone still has the SA");
    assert_eq!(still[0].state, IkeSaState::Established);
    assert!(
        a.sa_views().iter().all(|v| v.id() != info.id),
        "a fresh clone has no view of the closed SA: {:?}",
        a.ike_sas(later)
    );
}
