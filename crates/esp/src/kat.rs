//! Known-answer tests: the AES-256 ESP packets of draft-mcgrew-gcm-test-01 §4 ("Test
//! Cases for the use of GCM and GMAC in IPsec ESP", D. McGrew, March 2009), test cases
//! #3, #9, #11 and #14 — every case there with a 256-bit key. Each test case gives the key,
//! SPI, (extended) sequence number, nonce = salt ‖ IV, the plaintext (payload ‖ padding ‖
//! pad length ‖ next header) and the complete ESP packet. We seal the payload with the
//! case's IV and must produce that packet byte for byte, then open it again.

use dmvpn_wire::{IpProtocol, PacketBuf, Spi};

use crate::{InboundSa, OutboundSa};

struct Case {
    name: &'static str,
    key: &'static str,
    spi: u32,
    /// The full sequence number; `esn` says whether the AAD carries all 64 bits.
    seq: u64,
    esn: bool,
    nonce: &'static str,
    plaintext: &'static str,
    packet: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "#3 (AES-256, 32-bit seq)",
        key: "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
        spi: 0x4a2c_bfe3,
        seq: 2,
        esn: false,
        nonce: "112233440102030405060708",
        plaintext: "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee000000000\
                    7002400020bf0000020405b40101040201020201",
        packet: "4a2cbfe3000000020102030405060708ff425c9b724599df7a3bcd510194e00d\
                 6a78107f1b0b1cbf06efae9d65a5d763748a637985771d347f0545659f14e99d\
                 ef842d8eb335f4eecfdbf831824b4c4915956c96",
    },
    Case {
        name: "#9 (AES-256, ESN)",
        key: "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
        spi: 0x1740_5e67,
        seq: 0x156f_3126_dd0d_b99b,
        esn: true,
        nonce: "73616c74616e640169766563",
        plaintext: "45080028732c00004006e9f90a0106120a01038f06b88023dd6bafbecb712602\
                    50101f646d540001",
        packet: "17405e67dd0db99b616e640169766563f2d69ecdbd5a0d5b8d5ef38bad4da58d\
                 1f278fde98ef67549d524a3018d9a57ff4d3a31ce673119e451626c2415771e3\
                 b7eebca614c89b35",
    },
    Case {
        name: "#11 (AES-256, ESN, non-IP payload)",
        key: "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
        spi: 0x1740_5e67,
        seq: 0x156f_3126_dd0d_b99b,
        esn: true,
        nonce: "73616c74616e640169766563",
        plaintext: "636973636f0172756c657301746865016e6574776501646566696e6501746865\
                    746563686e6f6c6f67696573017468617477696c6c01646566696e65746f6d6f\
                    72726f7701020201",
        packet: "17405e67dd0db99b616e640169766563d4b7ed86a1777f2ea13d6973d324c69e\
                 7b43f826fb56831226508bebd2dceb18d0a6df10e5487df074113e14c641024e\
                 3e6773d91a62ee429b043a10e3efe6b012a49363412364f8c0cac587f249e56b\
                 11e24f30e44ccc76",
    },
    Case {
        name: "#14 (AES-256, ESN, seq 2^64 - 1)",
        key: "6c6567616c697a656d6172696a75616e61616e64646f69746265666f72656961",
        spi: 0x796b_6963,
        seq: 0xffff_ffff_ffff_ffff,
        esn: true,
        nonce: "7475726e333021696765746d",
        plaintext: "45000030da3a00008001df3bc0a80005c0a800010800c6cd0200070061626364\
                    65666768696a6b6c6d6e6f707172737401020201",
        packet: "796b6963ffffffff333021696765746df97ab2aa356d8edce17644ac8c78e25d\
                 d24dedbb29ebf1b64a274b39b49c3a864cd3d78ca4ae68a32b42458fb57dbe82\
                 1dcc63b9d0937ba2945f669368661a329fb4c053",
    },
];

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    hex::decode(s).unwrap()
}

struct Decoded {
    keymat: Vec<u8>,
    iv: [u8; 8],
    payload: Vec<u8>,
    next_header: IpProtocol,
    packet: Vec<u8>,
}

fn decode(c: &Case) -> Decoded {
    let nonce = unhex(c.nonce);
    let mut keymat = unhex(c.key);
    keymat.extend_from_slice(&nonce[..4]);
    let pt = unhex(c.plaintext);
    let (pad_len, nh) = (pt[pt.len() - 2] as usize, pt[pt.len() - 1]);
    Decoded {
        keymat,
        iv: nonce[4..].try_into().unwrap(),
        payload: pt[..pt.len() - 2 - pad_len].to_vec(),
        next_header: IpProtocol(nh),
        packet: unhex(c.packet),
    }
}

#[test]
fn seal_reproduces_draft_packets_byte_for_byte() {
    for c in CASES {
        let d = decode(c);
        let sa = OutboundSa::new(Spi(c.spi), &d.keymat, c.esn).unwrap();
        let mut buf = PacketBuf::from_slice(64, &d.payload).unwrap();
        sa.seal_with_iv(&mut buf, d.next_header, c.seq, d.iv)
            .unwrap();
        assert_eq!(
            hex::encode(buf.as_slice()),
            hex::encode(&d.packet),
            "{}",
            c.name
        );
    }
}

#[test]
fn open_recovers_draft_payloads() {
    for c in CASES {
        let d = decode(c);
        let sa = InboundSa::new(Spi(c.spi), &d.keymat, c.esn, 1024).unwrap();
        // The receiver has seen the packet before this one, so ESN inference (RFC 4303
        // A2.2) has the right subspace.
        sa.window().check_and_update(c.seq - 1).unwrap();
        let mut buf = PacketBuf::from_slice(64, &d.packet).unwrap();
        assert_eq!(sa.open(&mut buf), Ok(d.next_header), "{}", c.name);
        assert_eq!(buf.as_slice(), &d.payload[..], "{}", c.name);
        // ...and the same packet again is a replay.
        let mut again = PacketBuf::from_slice(64, &d.packet).unwrap();
        assert_eq!(sa.open(&mut again), Err(crate::Error::Replay), "{}", c.name);
        let s = sa.stats().snapshot();
        assert_eq!((s.packets, s.replay_drops, s.auth_failures), (1, 1, 0));
    }
}

#[test]
fn draft_packets_open_under_rustcrypto_aes_gcm() {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    for c in CASES {
        let d = decode(c);
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(&d.keymat[..32]).unwrap();
        let mut nonce = d.keymat[32..].to_vec();
        nonce.extend_from_slice(&d.packet[8..16]);
        let mut aad = d.packet[..4].to_vec();
        if c.esn {
            aad.extend_from_slice(&c.seq.to_be_bytes());
        } else {
            aad.extend_from_slice(&d.packet[4..8]);
        }
        let pt = cipher
            .decrypt(
                aes_gcm::Nonce::from_slice(&nonce),
                Payload {
                    msg: &d.packet[16..],
                    aad: &aad,
                },
            )
            .unwrap();
        assert_eq!(pt, unhex(c.plaintext), "{}", c.name);
    }
}
