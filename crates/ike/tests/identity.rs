//! With a key many peers share (the reference deployment's wildcard PSK), an address
//! identity is believed only where the address is seen: without NAT it must be the source
//! address of the IKE SA (issue 13). Deterministic in-memory runs (`dmvpn_ike::testing`).

use std::net::{IpAddr, Ipv4Addr};

use dmvpn_ike::testing::*;
use dmvpn_ike::*;

/// A spoke that claims `id` as its identity.
fn claiming(id: Identification) -> Config {
    let mut c = config(b"shared");
    c.local_id = Some(id);
    c
}

fn up(ev: &[Event]) -> usize {
    count(ev, |e| matches!(e, Event::IkeSaUp { .. }))
}

fn refused(ev: &[Event]) -> Vec<String> {
    ev.iter()
        .filter_map(|e| match e {
            Event::AuthFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 99));

#[test]
fn an_address_identity_that_is_not_the_source_is_refused_with_a_shared_key() {
    let mut n = Net::new(
        claiming(Identification::from_ip(OTHER)),
        config(b"shared"),
        false,
    );
    n.initiate();
    let reasons = refused(&n.ev_b);
    assert_eq!(up(&n.ev_b), 0, "the hub accepted {OTHER} from {}", n.a_pub);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("not the address it comes from")),
        "{reasons:?}"
    );
    assert_eq!(up(&n.ev_a), 0, "the spoke thinks it is up");
}

#[test]
fn the_source_address_as_identity_a_nat_or_a_per_peer_key_pass() {
    // The default identity: our own address, which is the source without NAT.
    let mut n = Net::new(config(b"shared"), config(b"shared"), false);
    n.initiate();
    assert_eq!(up(&n.ev_b), 1, "{:?}", refused(&n.ev_b));

    // Behind a NAT the identity is the private address; the hub cannot check it.
    let mut n = Net::new(
        claiming(Identification::from_ip(OTHER)),
        config(b"shared"),
        true,
    );
    n.initiate();
    assert_eq!(up(&n.ev_b), 1, "{:?}", refused(&n.ev_b));

    // A key for that identity alone proves who the peer is.
    let mut hub = config(b"shared");
    hub.keyring
        .add_identity(Identification::from_ip(OTHER), b"only-for-99");
    let mut spoke = claiming(Identification::from_ip(OTHER));
    spoke.keyring.set_wildcard(b"only-for-99");
    let mut n = Net::new(spoke, hub, false);
    n.initiate();
    assert_eq!(up(&n.ev_b), 1, "{:?}", refused(&n.ev_b));

    // Other identity types are not bound to an address.
    let mut n = Net::new(
        claiming(Identification::fqdn("spoke.example")),
        config(b"shared"),
        false,
    );
    n.initiate();
    assert_eq!(up(&n.ev_b), 1, "{:?}", refused(&n.ev_b));
}

#[test]
fn a_reload_that_changes_the_peers_key_ends_the_sa_and_one_that_keeps_it_does_not() {
    let mut n = Net::new(config(b"shared"), config(b"shared"), false);
    n.initiate();
    assert_eq!(n.b.ike_sas(n.now).len(), 1);
    // Same keys (another setting changed): the SA stays.
    let mut same = config(b"shared");
    same.initial_contact = !same.initial_contact;
    assert!(n.b.set_config(same).is_empty());
    // A per-address key for the spoke that equals the wildcard it used: still the same key.
    let mut same_key = config(b"shared");
    same_key.keyring.add_address(n.a_pub, b"shared");
    assert!(n.b.set_config(same_key).is_empty());
    // The wildcard changed: the SA authenticated with the old key must go.
    let sa = n.b.ike_sas(n.now)[0].id;
    assert_eq!(n.b.set_config(config(b"rotated")), vec![sa]);
    // The initiator's side sees the same: its peer's key changed.
    let sa = n.a.ike_sas(n.now)[0].id;
    assert_eq!(n.a.set_config(config(b"rotated")), vec![sa]);
}
