//! The joins and renderings of `status`, against engine views built by hand.

use super::*;
use dmvpn_crypto::DhAlg;
use dmvpn_ike::proposal::IkeSuite;
use dmvpn_ike::{ChildSaInfo, IkeSaId, IkeSaInfo, Mode};

fn suite() -> IkeSuite {
    IkeSuite {
        encr_key_bits: 256,
        prf: PrfAlg::HmacSha512,
        dh: DhAlg::Ecp256,
    }
}

fn child(spi_in: u32, spi_out: u32, age: u64) -> ChildSaInfo {
    ChildSaInfo {
        spi_in,
        spi_out,
        mode: Mode::Transport,
        esn: false,
        udp_encap: true,
        age: Duration::from_secs(age),
        rekey_in: Some(Duration::from_secs(3000)),
    }
}

fn ike_info(remote: &str, state: &'static str, children: Vec<ChildSaInfo>) -> IkeSaInfo {
    IkeSaInfo {
        id: IkeSaId(1),
        state: state.parse().unwrap(),
        local: "172.16.0.10:4500".parse().unwrap(),
        remote: remote.parse().unwrap(),
        spi_i: 0x8f1e_2d3c_4b5a_6978,
        spi_r: 0x0102_0304_0506_0708,
        initiator: true,
        suite: (state == "Established").then(suite),
        remote_id: None,
        age: Duration::from_secs(600),
        rekey_in: Some(Duration::from_secs(85_800)),
        nat_local: true,
        nat_remote: false,
        children,
    }
}

fn nhs(nbma: &str, tunnel: &str, state: NhsState) -> NhsStatus {
    NhsStatus {
        protocol_addr: Some(tunnel.parse().unwrap()),
        nbma_addr: nbma.parse().unwrap(),
        multicast: true,
        state,
        expires: None,
        retry_wait: Duration::ZERO,
    }
}

#[test]
fn peer_states_from_the_engines() {
    let now = Instant::now();
    let nhs_list = [
        nhs("198.51.100.1", "10.250.0.1", NhsState::Up),
        nhs("198.51.100.2", "10.250.0.2", NhsState::Registering),
        nhs("198.51.100.3", "10.250.0.3", NhsState::WaitingForSa),
        nhs("198.51.100.4", "10.250.0.4", NhsState::WaitingForSa),
    ];
    let ike = [
        ike_info(
            "198.51.100.1:4500",
            "Established",
            vec![child(0x1a2b_3c4d, 0xc0ff_ee01, 100)],
        ),
        ike_info("198.51.100.2:4500", "Established", vec![child(2, 3, 5)]),
        ike_info("198.51.100.3:500", "Established", vec![]),
        ike_info("198.51.100.4:500", "ExpectSaInitResponse", vec![]),
        // An IKE SA NHRP knows nothing about (a spoke reaching us before resolving).
        ike_info("203.0.113.7:4500", "Established", vec![child(4, 5, 5)]),
    ];
    let snap = Snapshot {
        now,
        interface: "dmvpn0",
        tunnel_addr: "10.250.0.9/24",
        role: NhrpRole::Spoke,
        cache: &[],
        nhs: &nhs_list,
        ike: &ike,
        backoff: &[],
        changes: None,
        nhs_priority: &[],
        nhs_places: &[],
        preferred_nhs: None,
        shortcuts_waiting: &[],
    };
    let mut updown = UpDown::new();
    let d = snap.dmvpn_report(&mut updown);
    let row = |nbma: &str| {
        d.peers
            .iter()
            .find(|p| p.peer_nbma.to_string() == nbma)
            .unwrap_or_else(|| panic!("no {nbma}"))
    };
    assert_eq!(row("198.51.100.1").state, PeerState::Up);
    assert_eq!(
        row("198.51.100.1").peer_tunnel,
        Some("10.250.0.1".parse().unwrap())
    );
    assert_eq!(row("198.51.100.1").attrs, vec!["S"]);
    // Up: measured from the IKE SA's age on first sight.
    assert_eq!(row("198.51.100.1").updn_secs, Some(600));
    assert_eq!(row("198.51.100.2").state, PeerState::Nhrp);
    assert_eq!(row("198.51.100.3").state, PeerState::Ipsec);
    assert_eq!(row("198.51.100.4").state, PeerState::Ike);
    // Negotiating, seen for the first time: since its IKE SA began, not 0.
    assert_eq!(row("198.51.100.4").updn_secs, Some(600));
    assert_eq!(row("203.0.113.7").state, PeerState::Nhrp);
    assert_eq!(row("203.0.113.7").peer_tunnel, None);
    assert_eq!(d.peers.len(), 5);

    let sa = snap.sa_report(|c| {
        let n = u64::from(c.spi_in);
        (
            Some(SaCounters {
                packets: n,
                bytes: n * 100,
                esp_bytes: n * 150,
                replay_drops: 1,
                auth_failures: 2,
            }),
            None,
        )
    });
    let p = &sa.peers[0];
    assert_eq!(p.nbma.to_string(), "198.51.100.1");
    assert_eq!(p.nhrp_state, NhrpPeerState::Up);
    let ike = p.ike.as_ref().unwrap();
    assert_eq!(ike.state, IkeState::Established);
    assert_eq!(ike.spi_i, "8f1e2d3c4b5a6978");
    assert_eq!(ike.encryption.as_deref(), Some("aes-gcm-256"));
    assert_eq!(ike.prf.as_deref(), Some("sha512"));
    assert_eq!(ike.dh_group, Some(19));
    assert_eq!(p.children[0].spi_in, "0x1a2b3c4d");
    assert_eq!(p.children[0].spi_out, "0xc0ffee01");
    assert_eq!(p.children[0].packets_in, 0x1a2b_3c4d);
    // ESP counts the GRE packet; the report takes the keyed GRE header (8 bytes) off.
    assert_eq!(p.children[0].inner_bytes_in, 0x1a2b_3c4d * (100 - 8));
    assert_eq!(p.children[0].esp_bytes_in, 0x1a2b_3c4d * 150);
    assert_eq!(p.children[0].packets_out, 0, "no outbound SA: zero");
    assert_eq!(p.children[0].auth_failures, 2);
    let negotiating = sa
        .peers
        .iter()
        .find(|p| p.nbma.to_string() == "198.51.100.4")
        .unwrap();
    assert_eq!(
        negotiating.ike.as_ref().unwrap().state,
        IkeState::Negotiating
    );
    assert_eq!(negotiating.ike.as_ref().unwrap().encryption, None);
    assert_eq!(negotiating.nhrp_state, NhrpPeerState::WaitingForSa);
}

#[test]
fn updown_counts_from_the_last_change() {
    let t0 = Instant::now();
    let peer: IpAddr = "198.51.100.1".parse().unwrap();
    let mut u = UpDown::new();
    assert_eq!(
        u.observe(peer, PeerState::Ike, t0, None, None),
        Duration::ZERO
    );
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(
        u.observe(peer, PeerState::Ike, t1, None, None),
        Duration::from_secs(5)
    );
    assert_eq!(
        u.observe(peer, PeerState::Up, t1, Some(Duration::from_secs(99)), None),
        Duration::ZERO
    );
    let t2 = t1 + Duration::from_secs(60);
    assert_eq!(
        u.observe(peer, PeerState::Up, t2, None, None),
        Duration::from_secs(60)
    );
    u.retain(|_| false);
    assert_eq!(
        u.observe(peer, PeerState::Up, t2, Some(Duration::from_secs(7)), None),
        Duration::from_secs(7)
    );
    // Down and up again between two queries (`clear sa`, then traffic): the node's record
    // of the new up restarts the count; an older record, or one that disagrees with the
    // state, does not.
    let t3 = t2 + Duration::from_secs(30);
    let back_up = t2 + Duration::from_secs(20);
    assert_eq!(
        u.observe(peer, PeerState::Up, t3, None, Some((true, back_up))),
        Duration::from_secs(10)
    );
    assert_eq!(
        u.observe(peer, PeerState::Up, t3, None, Some((true, t0))),
        Duration::from_secs(10)
    );
    assert_eq!(
        u.observe(peer, PeerState::Up, t3, None, Some((false, t3))),
        Duration::from_secs(10)
    );
}

#[test]
fn counters_builders() {
    let mut c = dmvpn_nhrp::Counters::default();
    c.rx[4] = 12;
    c.tx[3] = 13;
    c.drops.insert(dmvpn_nhrp::DropReason::AuthFailure, 2);
    let n = nhrp_counters(&c);
    assert_eq!(n.rx["registration_reply"], 12);
    assert_eq!(n.tx["registration_request"], 13);
    assert_eq!(n.drops["auth_failure"], 2);

    let d = dmvpn_dataplane::Counters::default();
    d.count_drop(dmvpn_dataplane::DropReason::Replay);
    let r = interface_report("dmvpn0", "10.250.0.9/24", 1400, &d, &[("tun_no_route", 4)]);
    assert_eq!(r.drops["replay"], 1);
    assert_eq!(r.drops["no_room"], 0);
    assert_eq!(r.drops["tun_no_route"], 4);
    assert_eq!(r.drops.len(), dmvpn_dataplane::DropReason::ALL.len() + 1);
}

#[test]
fn fixture_drop_names_match_the_dataplane() {
    let names: Vec<&str> = dmvpn_dataplane::DropReason::ALL
        .iter()
        .map(|r| r.name())
        .collect();
    assert_eq!(names, dmvpn_api::fixtures::DATAPLANE_DROPS);
}

#[test]
fn t1_only_once_a_shortcut_is_installed() {
    use dmvpn_nhrp::testing::{A, Net, a_tun, b_tun};
    // Spoke A is redirected and resolves B: a real shortcut entry in A's cache.
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    net.data_via_hub(A, a_tun(), b_tun());
    let now = net.now;
    let cache = net.nodes[A].engine.cache_entries(now);
    let shortcut = cache
        .iter()
        .find(|e| e.kind == EntryKind::Shortcut)
        .expect("A resolved B");
    let to_b = shortcut.effective_nbma();
    let attrs = |waiting: &[IpAddr]| {
        let snap = Snapshot {
            now,
            interface: "dmvpn0",
            tunnel_addr: "10.250.0.9/24",
            role: NhrpRole::Spoke,
            cache: &cache,
            nhs: &[],
            ike: &[],
            backoff: &[],
            changes: None,
            nhs_priority: &[],
            nhs_places: &[],
            preferred_nhs: None,
            shortcuts_waiting: waiting,
        };
        snap.dmvpn_report(&mut UpDown::new())
            .peers
            .into_iter()
            .find(|p| p.peer_nbma == to_b)
            .map(|p| p.attrs)
            .expect("B's row")
    };
    // Waiting for an SA: an NHRP entry (D, B is behind a NAT: N), no route (no T1).
    assert_eq!(attrs(&[to_b]), ["D", "N"]);
    // Installed.
    assert_eq!(attrs(&[]), ["D", "N", "T1"]);
}
