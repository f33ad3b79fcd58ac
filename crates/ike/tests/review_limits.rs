//! Independent review of issue 13 ("every table a peer can grow must have a cap and a
//! counter"), IKE side: an authenticated peer — any holder of the shared wildcard PSK — asks
//! for new Child SAs (CREATE_CHILD_SA without REKEY_SA, RFC 7296 §1.3.1) on its one IKE SA, as
//! many as it likes. Each costs the responder an inbound SPI, keys, an entry in the node's
//! per-peer child list and in the dataplane's SPI table; nothing refuses them
//! (`Endpoint::child_responder` had no per-IKE-SA or per-peer count). Failed before the
//! review's fix: `MAX_CHILD_SAS_PER_IKE_SA`, past which the request gets NO_ADDITIONAL_SAS.

use dmvpn_ike::message::{Notify, TrafficSelector, emit_payloads};
use dmvpn_ike::testing::{Net, config};
use dmvpn_ike::{Event, ExchangeType, NotifyType, Payload, PayloadType, proposal};
use dmvpn_wire::Writer;

const PSK: &[u8] = b"review-psk-review-psk-review-psk";
const ASKED: usize = 300;

#[test]
fn a_peer_cannot_create_child_sas_without_bound() {
    let mut net = Net::new(config(PSK), config(PSK), false);
    let sa = net.initiate();
    let esp = net.a.config().esp;
    let (a, b) = (net.nat_out(net.a_local()), net.b_local());
    let mut installed = 0usize;
    for i in 0..ASKED {
        let spi = 0x1000_0000 + u32::try_from(i).unwrap();
        let payloads = vec![
            Payload::Sa(proposal::esp_offer(&esp, spi, None, false)),
            Payload::Nonce(vec![u8::try_from(i % 251).unwrap(); 32]),
            Payload::Notify(Notify::new(NotifyType::USE_TRANSPORT_MODE, Vec::new())),
            Payload::TsI(vec![TrafficSelector::gre_host(a.ip())]),
            Payload::TsR(vec![TrafficSelector::gre_host(b.ip())]),
        ];
        let mut chain = Vec::new();
        emit_payloads(&payloads, &mut Writer::new(&mut chain)).unwrap();
        let msg = net
            .a
            .seal_raw_request(sa, ExchangeType::CREATE_CHILD_SA, PayloadType::SA, &chain)
            .unwrap();
        let now = net.now;
        net.b.handle_datagram(now, b, a, &msg);
        while let Some(e) = net.b.poll_event() {
            if matches!(e, Event::ChildSaInstalled(_)) {
                installed += 1;
            }
        }
        while net.b.poll_transmit().is_some() {}
    }
    assert!(
        installed > 0,
        "fixture: not one new Child SA was accepted, the request is wrong"
    );
    assert!(
        installed <= dmvpn_ike::MAX_CHILD_SAS_PER_IKE_SA,
        "the responder installed {installed} of the {ASKED} Child SAs one peer asked for on one IKE SA"
    );
}

/// The same peer, one IKE SA after another from one address: half-open SAs are capped per
/// source (`max_half_open_per_peer`), established ones are not, so a PSK holder opening IKE
/// SAs in sequence (each with its Child SA) grows the responder's SA table without bound.
/// Capped per address and port ([`dmvpn_ike::MAX_IKE_SAS_PER_SOURCE`]) and per address
/// (many spokes behind one NAT address, each its own port), refusals counted.
#[test]
fn a_peer_cannot_open_ike_sas_without_bound() {
    const OPENED: usize = 100;
    let mut net = Net::new(config(PSK), config(PSK), false);
    for _ in 0..OPENED {
        net.initiate();
    }
    let up = net.b.sas_with(net.a_pub).count();
    assert!(up >= 1, "fixture: no SA came up");
    assert!(
        up <= dmvpn_ike::MAX_IKE_SAS_PER_SOURCE,
        "the responder holds {up} of the {OPENED} IKE SAs one peer address and port opened"
    );
    assert!(net.b.counters().ike_sas_refused > 0, "refusals are counted");
}

/// Many peers behind one NAT address, each its own port (or one peer changing ports): each
/// address and port stays under its own cap, so the per-address cap
/// (`Config::max_sas_per_address`) is what bounds them; past it IKE_AUTH is refused, counted.
#[test]
fn one_address_cannot_hold_more_ike_sas_than_its_cap_whatever_the_ports() {
    const CAP: usize = 6;
    const OPENED: u16 = 20;
    let mut responder = config(PSK);
    responder.max_sas_per_address = CAP;
    let mut net = Net::new(config(PSK), responder, false);
    for i in 0..OPENED {
        let local = std::net::SocketAddr::new(net.a_priv, 20_000 + i);
        let now = net.now;
        net.a.initiate(now, local, net.b_local()).unwrap();
        net.flush();
    }
    let up = net
        .b
        .sas_with(net.a_pub)
        .filter(|(_, s)| *s == dmvpn_ike::IkeSaState::Established)
        .count();
    assert_eq!(
        up, CAP,
        "the responder holds {up} IKE SAs from one address over {OPENED} ports (cap {CAP})"
    );
    assert_eq!(
        net.b.counters().ike_sas_refused,
        u64::from(OPENED) - CAP as u64,
        "each refusal counted"
    );
}
