//! Example reports: the reference deployment's spoke (10.250.0.9 behind the EC2 Elastic IP's
//! 1:1 NAT) with its hub. For tests (here, in dmvpnctl and in dmvpnd) and for the samples in
//! docs/dmvpnctl.md; compiled only for tests and with the `fixtures` feature, which only
//! dev-dependencies enable.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::schema::*;

/// The dataplane's drop reason names as of this schema (`dmvpn_dataplane::DropReason::ALL`;
/// dmvpnd's tests check they still agree).
pub const DATAPLANE_DROPS: [&str; 14] = [
    "not_ipv4",
    "no_mapping",
    "no_room",
    "sequence_exhausted",
    "unknown_spi",
    "replay",
    "auth_failed",
    "malformed_esp",
    "not_gre",
    "gre_key",
    "unsupported_protocol",
    "sa_queue_full",
    "ike_failed",
    "slow_path_full",
];

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
}

pub fn ike() -> IkeSa {
    IkeSa {
        state: IkeState::Established,
        state_detail: "Established".to_owned(),
        spi_i: "8f1e2d3c4b5a6978".to_owned(),
        spi_r: "0102030405060708".to_owned(),
        initiator: true,
        encryption: Some("aes-gcm-256".to_owned()),
        prf: Some("sha512".to_owned()),
        dh_group: Some(19),
        age_secs: 1234,
        rekey_in_secs: Some(85_166),
        local: sock("172.16.0.10:4500"),
        remote: sock("198.51.100.1:4500"),
        remote_id: Some("198.51.100.1".to_owned()),
        nat_local: true,
        nat_remote: false,
        child_count: 1,
    }
}

pub fn sa() -> SaReport {
    SaReport {
        schema_version: SCHEMA_VERSION,
        interface: "dmvpn0".to_owned(),
        peers: vec![SaPeer {
            nbma: addr("198.51.100.1"),
            post_nat_nbma: None,
            tunnel_addr: Some(addr("10.250.0.1")),
            nhrp_state: NhrpPeerState::Up,
            ike: Some(ike()),
            children: vec![ChildSa {
                spi_in: "0x1a2b3c4d".to_owned(),
                spi_out: "0xc0ffee01".to_owned(),
                mode: "transport".to_owned(),
                transform: "esp-gcm-256".to_owned(),
                esn: false,
                udp_encap: true,
                packets_in: 1187,
                inner_bytes_in: 145_020,
                esp_bytes_in: 196_656,
                packets_out: 1204,
                inner_bytes_out: 150_112,
                esp_bytes_out: 202_060,
                replay_drops: 3,
                auth_failures: 2,
                age_secs: 1200,
                rekey_in_secs: Some(2400),
            }],
        }],
    }
}

pub fn dmvpn() -> DmvpnReport {
    DmvpnReport {
        schema_version: SCHEMA_VERSION,
        interface: "dmvpn0".to_owned(),
        tunnel_addr: "10.250.0.9/24".to_owned(),
        nhrp_role: NhrpRole::Spoke,
        peers: vec![
            DmvpnPeer {
                peer_nbma: addr("198.51.100.1"),
                peer_tunnel: Some(addr("10.250.0.1")),
                entries: 1,
                state: PeerState::Up,
                updn_secs: Some(252),
                attrs: vec!["S".to_owned()],
            },
            DmvpnPeer {
                peer_nbma: addr("203.0.113.7"),
                peer_tunnel: Some(addr("10.250.0.5")),
                entries: 2,
                state: PeerState::Nhrp,
                updn_secs: Some(2 * 86_400 + 3 * 3600),
                attrs: vec!["D".to_owned(), "N".to_owned(), "T1".to_owned()],
            },
        ],
    }
}

pub fn nhrp() -> NhrpReport {
    let mut rx: BTreeMap<String, u64> = NHRP_PACKET_TYPES
        .iter()
        .map(|n| ((*n).to_owned(), 0))
        .collect();
    let mut tx = rx.clone();
    tx.insert("registration_request".to_owned(), 12);
    rx.insert("registration_reply".to_owned(), 12);
    NhrpReport {
        schema_version: SCHEMA_VERSION,
        interface: "dmvpn0".to_owned(),
        entries: vec![
            NhrpEntry {
                protocol_addr: addr("10.250.0.9"),
                prefix_len: 32,
                next_hop: addr("10.250.0.9"),
                nbma: addr("172.16.0.10"),
                post_nat_nbma: Some(addr("192.0.2.10")),
                kind: NhrpKind::Local,
                flags: vec!["unique".to_owned(), "nat".to_owned()],
                age_secs: 0,
                expires_in_secs: None,
                holding_time_secs: 7200,
            },
            NhrpEntry {
                protocol_addr: addr("10.250.0.1"),
                prefix_len: 32,
                next_hop: addr("10.250.0.1"),
                nbma: addr("198.51.100.1"),
                post_nat_nbma: None,
                kind: NhrpKind::Nhs,
                flags: vec!["registered".to_owned()],
                age_secs: 0,
                expires_in_secs: Some(5946),
                holding_time_secs: 7200,
            },
        ],
        nhs: vec![NhsEntry {
            protocol_addr: Some(addr("10.250.0.1")),
            nbma: addr("198.51.100.1"),
            multicast: true,
            state: NhrpPeerState::Up,
            expires_in_secs: Some(5946),
            retry_wait_secs: 0,
            ike_retry_in_secs: None,
            ike_last_failure: None,
            status: NhsUpDown::Up,
            priority: 0,
            preferred: true,
            cluster: 0,
        }],
        counters: NhrpCounters {
            rx,
            tx,
            auth_failures: 0,
            drops: BTreeMap::from([("unexpected_reply".to_owned(), 1)]),
        },
    }
}

pub fn ike_report() -> IkeReport {
    IkeReport {
        schema_version: SCHEMA_VERSION,
        sas: vec![ike()],
        backoff: vec![IkeBackoff {
            peer: addr("198.51.100.77"),
            failures: 3,
            next_attempt_in_secs: 31,
            last_failure: Some("authentication_failed".to_owned()),
        }],
    }
}

pub fn interface() -> InterfaceReport {
    let mut drops: BTreeMap<String, u64> = DATAPLANE_DROPS
        .iter()
        .map(|r| ((*r).to_owned(), 0))
        .collect();
    drops.insert("replay".to_owned(), 3);
    drops.insert("auth_failed".to_owned(), 2);
    InterfaceReport {
        schema_version: SCHEMA_VERSION,
        interface: "dmvpn0".to_owned(),
        tunnel_addr: "10.250.0.9/24".to_owned(),
        mtu: 1400,
        tx_packets: 1204,
        tx_inner_bytes: 150_112,
        tx_esp_bytes: 202_060,
        rx_packets: 1187,
        rx_inner_bytes: 145_020,
        rx_esp_bytes: 196_656,
        drops,
    }
}

/// `explain 10.1.2.3` on the reference spoke: a LAN behind the spoke 10.250.0.5 (behind a
/// NAT: claimed 172.16.1.7, seen as 203.0.113.7), reached over a phase 3 shortcut.
pub fn explain() -> crate::ExplainReport {
    use crate::explain::*;
    let shortcut_nbma = addr("203.0.113.7");
    let entry = |protocol: &str, len: u8, kind: NhrpKind, flags: &[&str]| NhrpEntry {
        protocol_addr: addr(protocol),
        prefix_len: len,
        next_hop: addr("10.250.0.5"),
        nbma: addr("172.16.1.7"),
        post_nat_nbma: Some(shortcut_nbma),
        kind,
        flags: flags.iter().map(|f| (*f).to_owned()).collect(),
        age_secs: 75,
        expires_in_secs: Some(7125),
        holding_time_secs: 7200,
    };
    let mut ike = ike();
    ike.initiator = false;
    ike.age_secs = 75;
    ike.rekey_in_secs = Some(86_000);
    ike.remote = sock("203.0.113.7:4500");
    ike.remote_id = Some("172.16.1.7".to_owned());
    ike.nat_remote = true;
    ExplainReport {
        schema_version: SCHEMA_VERSION,
        interface: "dmvpn0".to_owned(),
        destination: addr("10.1.2.3"),
        forwarding: ExplainForwarding::Send,
        kernel: ExplainKernel {
            lookup: "tunnel".to_owned(),
            route_type: Some("unicast".to_owned()),
            interface_index: Some(5),
            gateway: Some(addr("10.250.0.5")),
            error: None,
        },
        route: Some(ExplainRoute {
            prefix: addr("10.1.2.0"),
            prefix_len: 24,
            gateway: Some(addr("10.250.0.5")),
            metric: 10,
            protocol: 77,
            source: "nhrp_shortcut".to_owned(),
        }),
        next_hop: Some(addr("10.250.0.5")),
        via_nhs_default: false,
        nbma: Some(shortcut_nbma),
        nhrp_entry: Some(entry("10.250.0.5", 32, NhrpKind::Dynamic, &["nat"])),
        nhrp_shortcut: Some(entry("10.1.2.0", 24, NhrpKind::Shortcut, &["used", "nat"])),
        outbound: Some(ExplainPath {
            spi_out: "0xc0ffee07".to_owned(),
            udp_encap: true,
            port: 4500,
        }),
        peer: Some(SaPeer {
            nbma: addr("172.16.1.7"),
            post_nat_nbma: Some(shortcut_nbma),
            tunnel_addr: Some(addr("10.250.0.5")),
            nhrp_state: NhrpPeerState::Resolved,
            ike: Some(ike),
            children: vec![ChildSa {
                spi_in: "0x2b3c4d5e".to_owned(),
                spi_out: "0xc0ffee07".to_owned(),
                mode: "transport".to_owned(),
                transform: "esp-gcm-256".to_owned(),
                esn: false,
                udp_encap: true,
                packets_in: 52,
                inner_bytes_in: 4368,
                esp_bytes_in: 6656,
                packets_out: 55,
                inner_bytes_out: 4620,
                esp_bytes_out: 7040,
                replay_drops: 0,
                auth_failures: 0,
                age_secs: 75,
                rekey_in_secs: Some(3300),
            }],
        }),
        multicast_to: Vec::new(),
        last_nhrp_event: Some(ExplainNhrpEvent {
            kind: "shortcut_installed".to_owned(),
            prefix: Some(addr("10.1.2.0")),
            prefix_len: Some(24),
            next_hop: Some(addr("10.250.0.5")),
            nbma: Some(shortcut_nbma),
            code: None,
            age_secs: 75,
        }),
        last_error: None,
        history_evicted: 0,
    }
}
