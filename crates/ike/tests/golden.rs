//! Real strongSwan captures (tests/data, copied from /work/shared/golden):
//! IKE_SA_INIT parses and re-encodes byte for byte; IKE_AUTH decrypts with
//! the keys strongSwan logged and its payloads parse and re-encode.

use dmvpn_crypto::AesGcm256;
use dmvpn_ike::message::{Message, Payload, emit_payloads, parse_payloads};
use dmvpn_ike::proposal;
use dmvpn_ike::sk;
use dmvpn_ike::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");

struct Udp {
    sport: u16,
    dport: u16,
    payload: Vec<u8>,
}

/// Classic pcap (magic a1b2c3d4, either byte order), linktype 1 (Ethernet)
/// carrying IPv4; returns the UDP datagrams.
fn udp_datagrams(name: &str) -> Vec<Udp> {
    let d = std::fs::read(format!("{DATA}{name}")).unwrap();
    let magic = u32::from_le_bytes(d[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2c3d4 => true,
        0xd4c3b2a1 => false,
        m => panic!("not a classic pcap: {m:#x}"),
    };
    let u32_at = |o: usize| {
        let b: [u8; 4] = d[o..o + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    assert_eq!(u32_at(20), 1, "linktype Ethernet");
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= d.len() {
        let incl = u32_at(off + 8) as usize;
        let frame = &d[off + 16..off + 16 + incl];
        off += 16 + incl;
        if frame[12..14] != [0x08, 0x00] {
            continue; // ARP
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[9] != 17 {
            continue; // ESP (protocol 50)
        }
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let udp = &ip[ihl..total];
        out.push(Udp {
            sport: u16::from_be_bytes([udp[0], udp[1]]),
            dport: u16::from_be_bytes([udp[2], udp[3]]),
            payload: udp[8..].to_vec(),
        });
    }
    out
}

/// IKE messages: on 4500 the 4-byte zero non-ESP marker is stripped and
/// ESP-in-UDP (non-zero first word) skipped (RFC 3948 §2.2).
fn ike_messages(name: &str) -> Vec<Vec<u8>> {
    udp_datagrams(name)
        .into_iter()
        .filter_map(|u| {
            if u.sport == 4500 || u.dport == 4500 {
                u.payload
                    .strip_prefix(&[0u8, 0, 0, 0][..])
                    .map(<[u8]>::to_vec)
            } else {
                Some(u.payload)
            }
        })
        .collect()
}

struct Keys {
    spi_i: u64,
    spi_r: u64,
    sk_ei: Vec<u8>,
    sk_er: Vec<u8>,
}

fn keys(name: &str) -> Keys {
    let t = std::fs::read_to_string(format!("{DATA}{name}")).unwrap();
    let f: Vec<&str> = t.trim().split(',').collect();
    Keys {
        spi_i: u64::from_str_radix(f[0], 16).unwrap(),
        spi_r: u64::from_str_radix(f[1], 16).unwrap(),
        sk_ei: hex::decode(f[2]).unwrap(),
        sk_er: hex::decode(f[3]).unwrap(),
    }
}

fn check_capture(base: &str, esp_spis: (u32, u32)) {
    let msgs = ike_messages(&format!("{base}.pcap"));
    assert_eq!(msgs.len(), 4, "{base}: SA_INIT and AUTH pairs");
    let k = keys(&format!("{base}.ikev2_decryption_table"));

    // IKE_SA_INIT request and response: parse and re-encode byte-exactly.
    for (i, raw) in msgs[..2].iter().enumerate() {
        let m = Message::parse(raw).unwrap();
        assert_eq!(m.header.exchange, ExchangeType::IKE_SA_INIT);
        assert_eq!(m.header.is_response(), i == 1);
        assert_eq!(m.header.spi_i, k.spi_i);
        assert_eq!(&m.emit().unwrap(), raw, "{base} message {i} round trip");
        let sa = m
            .payloads
            .iter()
            .find_map(|p| {
                if let Payload::Sa(s) = p {
                    Some(s)
                } else {
                    None
                }
            })
            .unwrap();
        // Our default proposal accepts strongSwan's aes256gcm16-prfsha512-ecp256.
        let (suite, _) = proposal::select_ike(&[IkeProposal::default()], sa).unwrap();
        assert_eq!(suite.dh.ike_group(), 19);
        assert!(
            m.notifies()
                .any(|n| n.ty == NotifyType::NAT_DETECTION_SOURCE_IP)
        );
    }
    assert_eq!(Message::parse(&msgs[1]).unwrap().header.spi_r, k.spi_r);

    // IKE_AUTH: decrypt with SK_ei (request) and SK_er (response).
    let ei = AesGcm256::new(&k.sk_ei).unwrap();
    let er = AesGcm256::new(&k.sk_er).unwrap();
    for (i, raw) in msgs[2..].iter().enumerate() {
        let key = if i == 0 { &ei } else { &er };
        let wrong = if i == 0 { &er } else { &ei };
        assert!(
            sk::open(raw, wrong).is_err(),
            "the other direction's key must fail"
        );
        let o = sk::open(raw, key).unwrap();
        assert_eq!(o.header.exchange, ExchangeType::IKE_AUTH);
        assert_eq!(o.header.message_id, 1);
        let inner = parse_payloads(o.first, &o.plaintext).unwrap();
        let mut re = Vec::new();
        emit_payloads(&inner, &mut dmvpn_wire::Writer::new(&mut re)).unwrap();
        assert_eq!(re, o.plaintext, "{base} AUTH {i} inner round trip");
        let id = inner
            .iter()
            .find_map(|p| match p {
                Payload::IdI(id) | Payload::IdR(id) => Some(id.clone()),
                _ => None,
            })
            .unwrap();
        let want_ip = if i == 0 {
            "198.51.100.3"
        } else {
            "198.51.100.1"
        };
        assert_eq!(id.id_type, IdType::ID_IPV4_ADDR);
        assert_eq!(id.ip().unwrap().to_string(), want_ip);
        assert!(inner.iter().any(|p| matches!(p, Payload::Auth(a) if a.method == AuthMethod::SHARED_KEY_MIC && a.data.len() == 64)));
        assert!(
            inner
                .iter()
                .any(|p| matches!(p, Payload::Notify(n) if n.ty == NotifyType::USE_TRANSPORT_MODE))
        );
        for p in &inner {
            if let Payload::TsI(ts) | Payload::TsR(ts) = p {
                assert_eq!(ts.len(), 1);
                assert_eq!(ts[0].ip_protocol, 47);
                assert_eq!(ts[0].start, ts[0].end);
            }
        }
        let sa = inner
            .iter()
            .find_map(|p| {
                if let Payload::Sa(s) = p {
                    Some(s)
                } else {
                    None
                }
            })
            .unwrap();
        let spi = u32::from_be_bytes(sa[0].spi.clone().try_into().unwrap());
        assert_eq!(spi, if i == 0 { esp_spis.0 } else { esp_spis.1 });
        let (esp, _, _) = proposal::select_esp(&EspProposal::default(), sa, None).unwrap();
        assert!(!esp.esn);
    }
}

// ESP SPIs from the .esp_sa files: the spoke's (initiator's) inbound SPI is
// the one toward 198.51.100.3.
#[test]
fn strongswan6_natt_capture() {
    check_capture("sw6-frr10-natt", (0xc793782e, 0xc4c96f4d));
}

#[test]
fn strongswan6_plain_esp_capture() {
    check_capture("sw6-frr10-plain-esp", (0xcd702605, 0xc0099972));
}

#[test]
fn strongswan5_natt_capture() {
    check_capture("sw5-frr8-natt", (0xc38b78a9, 0xc1c302bb));
}
