//! Fuzzes the RFC 3948 classification of UDP-4500 payloads (IKE behind the non-ESP marker,
//! NAT keepalive, ESP) and the UDP and ESP header views: nothing may panic and the
//! classification must agree with the framing rules.
#![no_main]

use dmvpn_wire::{EspPacket, UdpEncap, UdpPacket, udp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(u) = UdpPacket::new_checked(data) {
        let _ = (u.src_port(), u.dst_port(), u.checksum(), u.payload().len());
    }
    match udp::classify(data) {
        Ok(UdpEncap::NatKeepalive) => assert_eq!(data, [0xFF]),
        Ok(UdpEncap::Ike(ike)) => {
            assert_eq!(data.get(..4), Some(&[0u8; 4][..]));
            assert_eq!(ike.len() + udp::NON_ESP_MARKER_LEN, data.len());
        }
        Ok(UdpEncap::Esp(esp)) => {
            let p = EspPacket::new_checked(esp).expect("classified ESP has a header");
            assert_ne!(p.spi().0, 0, "SPI 0 is the non-ESP marker");
            let _ = (p.seq(), p.payload().len());
        }
        Err(_) => assert!(data.len() < 8 && data != [0xFF] && !data.starts_with(&[0; 4])),
    }
});
