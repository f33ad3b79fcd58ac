//! Fuzzes GRE decapsulation (RFC 2784/2890) as the receive path runs it, then the inner
//! IPv4/IPv6 views and the MSS clamp on whatever comes out: nothing may panic, a refused
//! packet leaves the buffer untouched, and an accepted one lost exactly the keyed header.
#![no_main]

use dmvpn_wire::{EtherType, GrePacket, Ipv4Packet, Ipv6Packet, PacketBuf, clamp_mss, gre};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((key, packet)) = data.split_first_chunk::<4>() else {
        return;
    };
    let key = u32::from_be_bytes(*key);
    if let Ok(p) = GrePacket::new_checked(packet) {
        let _ = (p.key(), p.seq(), p.protocol_type(), p.payload().len());
    }
    let Ok(mut buf) = PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, packet) else {
        return;
    };
    match gre::decap(&mut buf, key) {
        Ok(proto) => {
            assert_eq!(buf.len() + gre::KEYED_HEADER_LEN, packet.len());
            let inner = buf.as_mut_slice();
            if proto == EtherType::IPV4 {
                if let Ok(p) = Ipv4Packet::new_checked(&*inner) {
                    let _ = (p.verify_checksum(), p.payload().len(), p.src_addr());
                }
            } else if proto == EtherType::IPV6 {
                if let Ok(p) = Ipv6Packet::new_checked(&*inner) {
                    let _ = (p.payload().len(), p.next_header());
                }
            }
            let _ = clamp_mss(inner, 1360);
        }
        Err(_) => assert_eq!(buf.as_slice(), packet),
    }
});
