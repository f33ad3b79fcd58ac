//! SA behaviour through the public API: round trips, tampering, replay, the SPI table, and cross-checks against an independent AES-GCM
//! implementation (RustCrypto `aes-gcm`) in both directions.

use std::sync::Arc;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use dmvpn_esp::{
    Error, InboundSa, IpProtocol, OutboundSa, PacketBuf, SaTable, Spi, UdpEncap, esp_in_udp,
};
use proptest::prelude::*;

fn keymat(seed: u8) -> [u8; 36] {
    core::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
}

fn pair(esn: bool) -> (OutboundSa, InboundSa) {
    let k = keymat(7);
    (
        OutboundSa::new(Spi(0xc0ffee01), &k, esn).unwrap(),
        InboundSa::new(Spi(0xc0ffee01), &k, esn, 1024).unwrap(),
    )
}

fn sealed(out: &OutboundSa, payload: &[u8]) -> PacketBuf {
    let mut b = PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, payload).unwrap();
    out.seal(&mut b, IpProtocol::GRE).unwrap();
    b
}

/// Opens an ESP packet with RustCrypto, parsing it here independently of dmvpn-esp.
fn open_with_aes_gcm(keymat: &[u8; 36], pkt: &[u8], seq: u64, esn: bool) -> Vec<u8> {
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&keymat[..32]).unwrap();
    let mut nonce = keymat[32..].to_vec();
    nonce.extend_from_slice(&pkt[8..16]);
    let mut aad = pkt[..4].to_vec();
    if esn {
        aad.extend_from_slice(&seq.to_be_bytes());
    } else {
        aad.extend_from_slice(&pkt[4..8]);
    }
    let mut body = pkt[16..pkt.len() - 16].to_vec();
    let tag = aes_gcm::Tag::from_slice(&pkt[pkt.len() - 16..]);
    cipher
        .decrypt_in_place_detached(aes_gcm::Nonce::from_slice(&nonce), &aad, &mut body, tag)
        .expect("aes-gcm must open what dmvpn-esp sealed");
    body
}

proptest! {
    #[test]
    fn every_seal_opens_under_rustcrypto_and_back(
        payload in proptest::collection::vec(any::<u8>(), 0..1500),
        esn in any::<bool>(),
    ) {
        let k = keymat(3);
        let out = OutboundSa::new(Spi(0x01020304), &k, esn).unwrap();
        let inb = InboundSa::new(Spi(0x01020304), &k, esn, 1024).unwrap();
        // A fresh SA sends sequence number 1 first (RFC 4303 §3.3.3), which is also the IV.
        let b = sealed(&out, &payload);
        let pkt = b.as_slice();
        prop_assert_eq!(&pkt[..4], &[1, 2, 3, 4]);
        prop_assert_eq!(&pkt[4..8], &[0, 0, 0, 1]);
        prop_assert_eq!(&pkt[8..16], &1u64.to_be_bytes());
        let pt = open_with_aes_gcm(&k, pkt, 1, esn);
        let pad = pt[pt.len() - 2] as usize;
        prop_assert_eq!(pt[pt.len() - 1], 47);
        prop_assert_eq!(&pt[..payload.len()], &payload[..]);
        prop_assert_eq!(pt.len(), payload.len() + pad + 2);
        prop_assert_eq!(pt.len() % 4, 0);
        let mut b = b;
        prop_assert_eq!(inb.open(&mut b), Ok(IpProtocol::GRE));
        prop_assert_eq!(b.as_slice(), &payload[..]);
    }
}

#[test]
fn rustcrypto_sealed_packet_opens_here() {
    let k = keymat(9);
    let inb = InboundSa::new(Spi(0x0a0b0c0d), &k, false, 64).unwrap();
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&k[..32]).unwrap();
    let iv = [9u8, 8, 7, 6, 5, 4, 3, 2]; // any IV: the receiver must not assume IV == seq
    let mut nonce = k[32..].to_vec();
    nonce.extend_from_slice(&iv);
    let header = [0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 5];
    let mut body = b"inner packet".to_vec();
    body.extend_from_slice(&[1, 2, 2, 47]); // padding 1 2, pad length 2, next header GRE
    let tag = cipher
        .encrypt_in_place_detached(aes_gcm::Nonce::from_slice(&nonce), &header, &mut body)
        .unwrap();
    let mut pkt = header.to_vec();
    pkt.extend_from_slice(&iv);
    pkt.extend_from_slice(&body);
    pkt.extend_from_slice(&tag);
    let mut b = PacketBuf::from_slice(64, &pkt).unwrap();
    assert_eq!(inb.open(&mut b), Ok(IpProtocol::GRE));
    assert_eq!(b.as_slice(), b"inner packet");
}

#[test]
fn tampering_is_an_auth_failure_that_leaves_the_window_alone() {
    let (out, inb) = pair(false);
    let good = sealed(&out, b"hello, hub");
    for at in [0usize, 5, 9, 20, good.len() - 1] {
        let mut bad = PacketBuf::from_slice(64, good.as_slice()).unwrap();
        bad.as_mut_slice()[at] ^= 0x01;
        let r = inb.open(&mut bad);
        // Flipping the SPI is caught before decryption; everything else by the ICV.
        let want = if at < 4 {
            Error::SpiMismatch
        } else {
            Error::Auth
        };
        assert_eq!(r, Err(want), "byte {at}");
    }
    // The forgery with seq 1 did not advance the window: the real packet 1 still opens.
    let mut b = PacketBuf::from_slice(64, good.as_slice()).unwrap();
    assert_eq!(inb.open(&mut b), Ok(IpProtocol::GRE));
    let s = inb.stats().snapshot();
    assert_eq!(
        (s.packets, s.bytes, s.auth_failures, s.replay_drops),
        (1, 10, 4, 0)
    );
    assert_eq!(out.stats().snapshot().packets, 1);
}

#[test]
fn replay_and_reordering() {
    let (out, inb) = pair(false);
    let pkts: Vec<Vec<u8>> = (0..5)
        .map(|i| sealed(&out, &[i; 40]).as_slice().to_vec())
        .collect();
    for i in [4usize, 0, 2, 1, 3] {
        let mut b = PacketBuf::from_slice(64, &pkts[i]).unwrap();
        assert_eq!(inb.open(&mut b), Ok(IpProtocol::GRE), "packet {i}");
        assert_eq!(b.as_slice(), &[i as u8; 40]);
    }
    let mut b = PacketBuf::from_slice(64, &pkts[2]).unwrap();
    assert_eq!(inb.open(&mut b), Err(Error::Replay));
    assert_eq!(inb.stats().snapshot().replay_drops, 1);
}

#[test]
fn short_and_foreign_packets_are_refused() {
    let (_, inb) = pair(false);
    for len in [0usize, 7, 8, 33] {
        let mut b = PacketBuf::from_slice(64, &vec![0xc0; len]).unwrap();
        assert_eq!(inb.open(&mut b), Err(Error::Truncated), "len {len}");
    }
    let mut b = PacketBuf::from_slice(64, &[0x11; 60]).unwrap();
    assert_eq!(inb.open(&mut b), Err(Error::SpiMismatch));
}

#[test]
fn table_looks_up_by_spi_and_is_a_snapshot() {
    let (out, inb) = pair(false);
    let other = Arc::new(InboundSa::new(Spi(0x2222), &keymat(1), false, 64).unwrap());
    let t1 = SaTable::new()
        .with_inserted(Arc::new(inb))
        .with_inserted(other);
    let t0 = t1.with_removed(Spi(0xc0ffee01));
    assert_eq!((t1.len(), t0.len()), (2, 1));
    let mut b = sealed(&out, b"data");
    assert_eq!(
        t0.open(&mut PacketBuf::from_slice(64, b.as_slice()).unwrap()),
        Err(Error::UnknownSpi)
    );
    assert_eq!(t1.open(&mut b), Ok((Spi(0xc0ffee01), IpProtocol::GRE)));
    assert_eq!(b.as_slice(), b"data");
    fn send_sync<T: Send + Sync>(_: &T) {}
    send_sync(&t1);
    send_sync(&out);
}

#[test]
fn udp_encap_classification_is_reexported() {
    assert_eq!(esp_in_udp(&[0xff]), Ok(UdpEncap::NatKeepalive));
    assert!(matches!(esp_in_udp(&[0, 0, 0, 0, 1]), Ok(UdpEncap::Ike(_))));
}

#[test]
fn both_ends_count_payload_and_wire_bytes() {
    let (out, inb) = pair(false);
    // Payloads of every length mod 4, so the padding differs from packet to packet.
    let (mut payload, mut wire) = (0u64, 0u64);
    for len in [40usize, 41, 42, 43, 1400] {
        let p = sealed(&out, &vec![0x5a; len]);
        // 8 header + 8 IV + payload + pad + 2 trailer + 16 ICV (RFC 4303 §2, RFC 4106 §3).
        let pad = (4 - (len + 2) % 4) % 4;
        assert_eq!(p.len(), 8 + 8 + len + pad + 2 + 16, "len {len}");
        payload += len as u64;
        wire += p.len() as u64;
        let mut b = PacketBuf::from_slice(64, p.as_slice()).unwrap();
        assert_eq!(inb.open(&mut b), Ok(IpProtocol::GRE));
    }
    for s in [out.stats().snapshot(), inb.stats().snapshot()] {
        assert_eq!((s.packets, s.bytes, s.esp_bytes), (5, payload, wire));
    }
    // A packet that fails its ICV counts in neither.
    let mut bad = sealed(&out, b"forged");
    bad.as_mut_slice()[20] ^= 1;
    assert_eq!(inb.open(&mut bad), Err(Error::Auth));
    assert_eq!(inb.stats().snapshot().esp_bytes, wire);
}
