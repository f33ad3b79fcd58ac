use super::*;
use proptest::prelude::*;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

fn ts() -> impl Strategy<Value = TrafficSelector> {
    (any::<u8>(), any::<u16>(), any::<u16>(), ip()).prop_map(|(p, s, e, a)| TrafficSelector {
        ip_protocol: p,
        start_port: s,
        end_port: e,
        start: a,
        end: a,
    })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn transform() -> impl Strategy<Value = Transform> {
    (
        1u8..6,
        any::<u16>(),
        proptest::option::of(any::<u16>()),
        proptest::option::of((0u16..0x7fff, bytes(8))),
    )
        .prop_map(|(ty, id, kl, tlv)| {
            let mut attributes = Vec::new();
            if let Some(k) = kl {
                attributes.push(Attribute {
                    ty: AttributeType::KEY_LENGTH,
                    value: AttrValue::Tv(k),
                });
            }
            if let Some((t, v)) = tlv {
                attributes.push(Attribute {
                    ty: AttributeType(t),
                    value: AttrValue::Tlv(v),
                });
            }
            Transform {
                ty: TransformType(ty),
                id,
                attributes,
            }
        })
}

fn proposal() -> impl Strategy<Value = Proposal> {
    (
        any::<u8>(),
        1u8..4,
        prop_oneof![Just(0usize), Just(4), Just(8)],
        proptest::collection::vec(transform(), 0..6),
    )
        .prop_flat_map(|(number, proto, spi_len, transforms)| {
            proptest::collection::vec(any::<u8>(), spi_len).prop_map(move |spi| Proposal {
                number,
                protocol: ProtocolId(proto),
                spi,
                transforms: transforms.clone(),
            })
        })
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        proptest::collection::vec(proposal(), 1..4).prop_map(Payload::Sa),
        (any::<u16>(), bytes(100)).prop_map(|(g, d)| Payload::Ke(KeyExchange {
            dh_group: DhId(g),
            data: d
        })),
        (any::<u8>(), bytes(40)).prop_map(|(t, d)| Payload::IdI(Identification {
            id_type: IdType(t),
            data: d
        })),
        (any::<u8>(), bytes(40)).prop_map(|(t, d)| Payload::IdR(Identification {
            id_type: IdType(t),
            data: d
        })),
        (any::<u8>(), bytes(70)).prop_map(|(m, d)| Payload::Auth(Authentication {
            method: AuthMethod(m),
            data: d
        })),
        bytes(64).prop_map(Payload::Nonce),
        (any::<u8>(), bytes(8), any::<u16>(), bytes(30)).prop_map(|(p, s, t, d)| {
            Payload::Notify(Notify {
                protocol: ProtocolId(p),
                spi: s,
                ty: NotifyType(t),
                data: d,
            })
        }),
        (
            any::<u8>(),
            prop_oneof![Just(0u8), Just(4), Just(8)],
            0usize..5
        )
            .prop_flat_map(|(p, sz, n)| {
                proptest::collection::vec(
                    proptest::collection::vec(any::<u8>(), usize::from(sz)),
                    n,
                )
                .prop_map(move |spis| {
                    Payload::Delete(Delete {
                        protocol: ProtocolId(p),
                        spi_size: sz,
                        spis,
                    })
                })
            }),
        bytes(20).prop_map(Payload::Vendor),
        proptest::collection::vec(ts(), 0..3).prop_map(Payload::TsI),
        proptest::collection::vec(ts(), 0..3).prop_map(Payload::TsR),
        (0u8..200, bytes(30)).prop_map(|(t, b)| Payload::Unknown {
            ty: PayloadType(t + 54),
            critical: false,
            body: b
        }),
    ]
}

proptest! {
    #[test]
    fn every_payload_round_trips(ps in proptest::collection::vec(payload(), 0..6), first_sk in proptest::option::of((bytes(40), 1u8..60))) {
        let mut ps = ps;
        if let Some((body, first)) = first_sk {
            ps.push(Payload::Sk(Encrypted { first: PayloadType(first), body }));
        }
        let m = Message {
            header: Header {
                spi_i: 1, spi_r: 2, next_payload: PayloadType::NONE, version: 0x20,
                exchange: ExchangeType::INFORMATIONAL, flags: flags::RESPONSE, message_id: 7, length: 0,
            },
            payloads: ps,
        };
        let bytes = m.emit().unwrap();
        let back = Message::parse(&bytes).unwrap();
        prop_assert_eq!(&back.payloads, &m.payloads);
        prop_assert_eq!(back.emit().unwrap(), bytes);
    }

    #[test]
    fn skf_round_trips(total in 1u16..10, body in bytes(40), first in 0u8..60) {
        let number = total;
        let ps = vec![Payload::Skf(Fragment { first: PayloadType(first), number, total, body })];
        let mut out = Vec::new();
        emit_payloads(&ps, &mut Writer::new(&mut out)).unwrap();
        prop_assert_eq!(parse_payloads(PayloadType::SKF, &out).unwrap(), ps);
    }

    #[test]
    fn parser_never_panics(data in bytes(300)) {
        let _ = Message::parse(&data);
        let _ = parse_payloads(PayloadType::SA, &data);
    }
}

#[test]
fn unknown_critical_payload_is_refused_and_noncritical_kept() {
    // Generic header: next 0, critical, length 5, one body byte.
    let buf = [0u8, 0x80, 0, 5, 9];
    let e = parse_payloads(PayloadType(99), &buf).unwrap_err();
    assert_eq!(e, ParseError::UnsupportedCritical(PayloadType(99)));
    assert_eq!(
        e.notify(),
        (NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD, vec![99])
    );
    let ok = parse_payloads(PayloadType(99), &[0, 0, 0, 5, 9]).unwrap();
    assert_eq!(
        ok,
        vec![Payload::Unknown {
            ty: PayloadType(99),
            critical: false,
            body: vec![9]
        }]
    );
    // Lying lengths and trailing bytes are INVALID_SYNTAX.
    assert_eq!(
        parse_payloads(PayloadType::NONCE, &[0, 0, 0, 9, 1])
            .unwrap_err()
            .notify()
            .0,
        NotifyType::INVALID_SYNTAX
    );
    assert!(parse_payloads(PayloadType::NONCE, &[0, 0, 0, 5, 1, 7]).is_err());
    assert!(parse_payloads(PayloadType::NONCE, &[0, 0, 0, 3]).is_err());
}
