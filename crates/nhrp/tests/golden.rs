//! The registration FRR nhrpd 10.3 really sent and answered
//! (/work/shared/golden/README.md, `sw6-frr10-natt.pcap` frames 7 and 8,
//! decrypted): it parses, and the engine builds the same bytes.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use dmvpn_nhrp::packet::{Body, ExtensionBody, Packet};
use dmvpn_nhrp::{
    CieCode, Config, Engine, Event, ExtensionType, NhsConfig, PacketType, SequentialRequestIds,
};

/// ESP payload of frame 7: GRE (8 bytes), NHRP, ESP trailer.
const FRAME7: &str = "\
20 00 20 01 00 00 00 64 00 01 08 00 00 00 00 00 \
00 01 00 6c 59 d4 00 34 01 03 04 00 04 04 00 02 \
00 00 00 01 c6 33 64 03 0a fa 00 09 0a fa 00 01 \
00 20 00 00 00 00 1c 20 00 00 00 00 80 04 00 00 \
80 05 00 00 80 03 00 00 00 09 00 14 00 20 00 00 \
00 00 00 00 04 00 04 00 c6 33 64 01 0a fa 00 01 \
80 07 00 0c 00 00 00 01 6b 65 79 6b 65 79 30 30 \
80 00 00 00 01 02 02 2f";

/// ESP payload of frame 8.
const FRAME8: &str = "\
20 00 20 01 00 00 00 64 00 01 08 00 00 00 00 00 \
00 40 00 80 00 1c 00 34 01 04 04 00 04 04 00 02 \
00 00 00 01 c6 33 64 03 0a fa 00 09 0a fa 00 01 \
00 20 00 00 00 00 1c 20 00 00 00 00 80 04 00 00 \
80 05 00 00 80 03 00 14 00 00 00 00 00 00 1c 20 \
04 00 04 00 c6 33 64 01 0a fa 00 01 00 09 00 14 \
00 20 00 00 00 00 00 00 04 00 04 00 c6 33 64 01 \
0a fa 00 01 80 07 00 0c 00 00 00 01 6b 65 79 6b \
65 79 30 30 80 00 00 00 01 02 02 2f";

const HUB_NBMA: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const HUB_TUN: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 250, 0, 1));
const SPOKE_NBMA: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 3));
const SPOKE_TUN: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 250, 0, 9));

/// The NHRP packet inside an ESP payload: after the 8-byte GRE header,
/// before the ESP trailer (pad 01 02, pad length 2, next header 0x2f).
fn nhrp_of(dump: &str) -> Vec<u8> {
    let all = hex::decode(dump.replace(' ', "")).unwrap();
    assert_eq!(
        &all[..8],
        &[0x20, 0x00, 0x20, 0x01, 0, 0, 0, 0x64],
        "GRE K bit, 0x2001, key 100"
    );
    let (pad_len, next) = (all[all.len() - 2] as usize, all[all.len() - 1]);
    assert_eq!(next, 0x2f);
    all[8..all.len() - 2 - pad_len].to_vec()
}

fn spoke_config() -> Config {
    let mut c = Config::spoke(
        SPOKE_TUN,
        24,
        SPOKE_NBMA,
        vec![NhsConfig {
            protocol_addr: Some(HUB_TUN),
            nbma_addr: HUB_NBMA,
            multicast: true,
        }],
    );
    c.network_id = 100;
    c.auth_key = Some(b"keykey00".to_vec());
    c.unique = false; // `nhrp registration no-unique`
    c.mtu = 0;
    c
}

fn hub_config() -> Config {
    let mut c = Config::hub(HUB_TUN, 24, HUB_NBMA);
    c.network_id = 100;
    c.auth_key = Some(b"keykey00".to_vec());
    c
}

#[test]
fn golden_registration_request_parses() {
    let req = nhrp_of(FRAME7);
    assert_eq!(req.len(), 108);
    let p = Packet::parse(&req).unwrap();
    assert_eq!(p.packet_type, PacketType::REGISTRATION_REQUEST);
    assert_eq!(p.hop_count, 1);
    assert_eq!(p.src_nbma_ip(), Some(SPOKE_NBMA));
    assert_eq!(p.src_protocol_ip(), Some(SPOKE_TUN));
    assert_eq!(p.dst_protocol_ip(), Some(HUB_TUN));
    let Body::Common {
        flags,
        request_id,
        cies,
    } = &p.body
    else {
        panic!("body")
    };
    assert_eq!((*flags, *request_id), (0x0002, 1));
    assert_eq!(cies.len(), 1);
    assert_eq!(
        (cies[0].prefix_len, cies[0].holding_time, cies[0].mtu),
        (32, 7200, 0)
    );
    let types: Vec<_> = p
        .extensions
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.ext_type())
        .collect();
    assert_eq!(
        types,
        [
            ExtensionType::FORWARD_TRANSIT_RECORD,
            ExtensionType::REVERSE_TRANSIT_RECORD,
            ExtensionType::RESPONDER_ADDRESS,
            ExtensionType::CISCO_NAT_ADDRESS,
            ExtensionType::AUTHENTICATION,
        ]
    );
    let nat = p.extension_cies(ExtensionType::CISCO_NAT_ADDRESS).unwrap();
    assert_eq!(nat[0].client_nbma_ip(), Some(HUB_NBMA));
    assert_eq!(nat[0].client_protocol_ip(), Some(HUB_TUN));
    match &p.extension(ExtensionType::AUTHENTICATION).unwrap().body {
        ExtensionBody::Authentication(a) => {
            assert_eq!((a.spi, a.data.as_slice()), (1, &b"keykey00"[..]))
        }
        other => panic!("{other:?}"),
    }
    // And the codec re-emits it unchanged, checksum included.
    assert_eq!(p.to_bytes().unwrap(), req);
}

#[test]
fn golden_registration_reply_parses() {
    let rep = nhrp_of(FRAME8);
    assert_eq!(rep.len(), 128);
    let p = Packet::parse(&rep).unwrap();
    assert_eq!(p.packet_type, PacketType::REGISTRATION_REPLY);
    assert_eq!(p.hop_count, 64);
    assert_eq!(p.request_id(), Some(1));
    assert_eq!(p.cies()[0].code, CieCode::SUCCESS);
    let ra = p.extension_cies(ExtensionType::RESPONDER_ADDRESS).unwrap();
    assert_eq!(ra[0].client_nbma_ip(), Some(HUB_NBMA));
    assert_eq!(ra[0].client_protocol_ip(), Some(HUB_TUN));
    assert_eq!(ra[0].holding_time, 7200);
    assert_eq!(p.to_bytes().unwrap(), rep);
}

#[test]
fn golden_spoke_builds_frr_registration_request_byte_for_byte() {
    let now = Instant::now();
    let mut spoke = Engine::new(spoke_config(), SequentialRequestIds::starting_at(1)).unwrap();
    spoke.register(now);
    assert_eq!(spoke.poll_event(), Some(Event::NeedSa { nbma: HUB_NBMA }));
    assert!(
        spoke.poll_transmit().is_none(),
        "nothing leaves before the SA is up"
    );
    spoke.sa_up(now, HUB_NBMA);
    let t = spoke.poll_transmit().unwrap();
    assert_eq!(t.dst_nbma, HUB_NBMA);
    assert_eq!(hex::encode(&t.bytes), hex::encode(nhrp_of(FRAME7)));
}

#[test]
fn golden_hub_builds_frr_registration_reply_byte_for_byte() {
    let now = Instant::now();
    let mut hub = Engine::new(hub_config(), SequentialRequestIds::starting_at(1)).unwrap();
    hub.handle_packet(now, SPOKE_NBMA, &nhrp_of(FRAME7));
    let t = hub.poll_transmit().unwrap();
    assert_eq!(t.dst_nbma, SPOKE_NBMA);
    assert_eq!(hex::encode(&t.bytes), hex::encode(nhrp_of(FRAME8)));
    assert_eq!(
        hub.poll_event(),
        Some(Event::PeerRegistered {
            protocol_addr: SPOKE_TUN,
            nbma: SPOKE_NBMA
        })
    );
}

#[test]
fn golden_spoke_accepts_frr_registration_reply() {
    let now = Instant::now();
    let mut spoke = Engine::new(spoke_config(), SequentialRequestIds::starting_at(1)).unwrap();
    spoke.sa_up(now, HUB_NBMA);
    spoke.register(now);
    assert!(spoke.poll_transmit().is_some());
    spoke.handle_packet(now + Duration::from_millis(20), HUB_NBMA, &nhrp_of(FRAME8));
    assert_eq!(
        spoke.poll_event(),
        Some(Event::RequestAnswered {
            kind: dmvpn_nhrp::RequestKind::Registration,
            target: HUB_NBMA,
            rtt: Duration::from_millis(20),
            accepted: true,
        })
    );
    assert_eq!(
        spoke.poll_event(),
        Some(Event::NhsUp {
            protocol_addr: Some(HUB_TUN),
            nbma: HUB_NBMA
        })
    );
    // No NAT in this capture: the reply's NAT extension has no CIE for us.
    assert_eq!(spoke.public_nbma(), None);
    // Re-registration is due at a third of the holding time, less at most a tenth of that
    // as jitter.
    let third = now + Duration::from_millis(20) + Duration::from_secs(2400);
    let due = spoke.poll_timeout().expect("a refresh deadline");
    assert!(
        due <= third && due > third - Duration::from_secs(240),
        "refresh {:?} before the third",
        third - due
    );
}
