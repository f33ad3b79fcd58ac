//! Property tests: every packet the codec can represent round-trips through
//! `emit` and `parse`, and parsing arbitrary bytes never panics.

use dmvpn_nhrp::packet::{Authentication, Body, Cie, Extension, ExtensionBody, Packet};
use dmvpn_nhrp::{CieCode, ErrorCode, ExtensionType, PacketType};
use proptest::collection::vec;
use proptest::prelude::*;

fn addr(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![]),
        vec(any::<u8>(), 4),
        vec(any::<u8>(), 16),
        vec(any::<u8>(), 0..=max)
    ]
}

fn cie() -> impl Strategy<Value = Cie> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u16>(),
        any::<u16>(),
        addr(63),
        addr(63),
        addr(40),
        any::<u8>(),
    )
        .prop_map(
            |(code, prefix_len, mtu, holding_time, n, s, p, preference)| Cie {
                code: CieCode(code),
                prefix_len,
                mtu,
                holding_time,
                client_nbma: n,
                client_nbma_subaddr: s,
                client_protocol: p,
                preference,
            },
        )
}

fn extension() -> impl Strategy<Value = Extension> {
    let body = prop_oneof![
        vec(cie(), 0..3).prop_map(ExtensionBody::ResponderAddress),
        vec(cie(), 0..3).prop_map(ExtensionBody::ForwardTransit),
        vec(cie(), 0..3).prop_map(ExtensionBody::ReverseTransit),
        vec(cie(), 0..3).prop_map(ExtensionBody::CiscoNatAddress),
        (any::<u16>(), any::<u16>(), vec(any::<u8>(), 0..12)).prop_map(|(reserved, spi, data)| {
            ExtensionBody::Authentication(Authentication {
                reserved,
                spi,
                data,
            })
        }),
        vec(any::<u8>(), 0..20).prop_map(ExtensionBody::VendorPrivate),
        // Unknown types: only non-compulsory ones survive parsing (RFC 2332 §5.3).
        (10u16..0x7fff, vec(any::<u8>(), 0..20)).prop_map(|(t, value)| ExtensionBody::Other {
            ext_type: ExtensionType(t),
            value
        }),
    ];
    (any::<bool>(), body).prop_map(|(c, body)| {
        let compulsory = c && !matches!(body, ExtensionBody::Other { .. });
        Extension { compulsory, body }
    })
}

fn packet() -> impl Strategy<Value = Packet> {
    let types = prop_oneof![(1u8..=6), Just(7u8), Just(8u8), (9u8..=255)];
    (
        types,
        any::<u8>(),
        addr(63),
        addr(63),
        addr(40),
        addr(40),
        (
            any::<u16>(),
            any::<u32>(),
            vec(cie(), 0..4),
            vec(any::<u8>(), 0..60),
        ),
        proptest::option::of(vec(extension(), 0..5)),
        (any::<u16>(), any::<u16>(), any::<[u8; 5]>()),
    )
        .prop_map(
            |(
                t,
                hop_count,
                sn,
                ss,
                sp,
                dp,
                (flags, id, cies, data),
                extensions,
                (afn, pt, snap),
            )| {
                let packet_type = PacketType(t);
                let body = match packet_type {
                    PacketType::ERROR_INDICATION => Body::ErrorIndication {
                        error_code: ErrorCode(flags),
                        error_offset: (id & 0xffff) as u16,
                        contents: data,
                    },
                    PacketType::TRAFFIC_INDICATION => Body::TrafficIndication {
                        traffic_code: flags,
                        data,
                    },
                    _ => Body::Common {
                        flags,
                        request_id: id,
                        cies,
                    },
                };
                Packet {
                    afn,
                    protocol_type: pt,
                    protocol_snap: snap,
                    hop_count,
                    packet_type,
                    src_nbma: sn,
                    src_nbma_subaddr: ss,
                    src_protocol: sp,
                    dst_protocol: dp,
                    body,
                    extensions,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn packet_round_trips(p in packet()) {
        let bytes = p.to_bytes().unwrap();
        prop_assert_eq!(bytes.len(), p.buffer_len());
        prop_assert_eq!(dmvpn_nhrp::packet::checksum(&bytes), 0);
        let back = Packet::parse(&bytes).unwrap();
        prop_assert_eq!(back, p);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_reparse_stably(b in vec(any::<u8>(), 0..300)) {
        if let Ok(p) = Packet::parse(&b) {
            let again = Packet::parse(&p.to_bytes().unwrap()).unwrap();
            prop_assert_eq!(again, p);
        }
    }

    #[test]
    fn mutated_valid_packets_never_panic(p in packet(), at in any::<usize>(), x in any::<u8>()) {
        let mut bytes = p.to_bytes().unwrap();
        let n = bytes.len();
        if let Some(b) = bytes.get_mut(at % n) { *b ^= x; }
        // Re-fix the checksum so the mutation reaches the deeper parser.
        bytes[12] = 0; bytes[13] = 0;
        let c = dmvpn_nhrp::packet::checksum(&bytes);
        bytes[12..14].copy_from_slice(&c.to_be_bytes());
        if let Ok(q) = Packet::parse(&bytes) {
            let again = Packet::parse(&q.to_bytes().unwrap()).unwrap();
            prop_assert_eq!(again, q);
        }
    }
}
