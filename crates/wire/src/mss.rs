//! TCP MSS clamping for SYNs crossing the tunnel (`ip tcp adjust-mss`): rewrites the MSS
//! option (RFC 9293 §3.2, §3.7.1) and fixes the TCP checksum incrementally (RFC 1624 §3).

use crate::field::{set_u16_at, u8_at, u16_at};
use crate::ipv4::Ipv4Packet;
use crate::ipv6::Ipv6Packet;
use crate::{Error, IpProtocol, checksum};

const TCP_MIN_HEADER: usize = 20;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_CHECKSUM: usize = 16;
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;

/// Lowers the MSS option of a TCP SYN (or SYN-ACK) in the IPv4 or IPv6 `packet` to at most
/// `max_mss`. Returns whether the packet changed. Packets that are not TCP SYNs, IPv4
/// non-first fragments, and IPv6 packets whose TCP header sits behind extension headers are
/// left alone. Only the IP header must be well-formed; a malformed TCP header is not ours
/// to judge and is passed through untouched.
pub fn clamp_mss(packet: &mut [u8], max_mss: u16) -> Result<bool, Error> {
    match crate::ip::version(packet) {
        Some(4) => {
            let mut p = Ipv4Packet::new_checked(packet)?;
            if p.protocol() != IpProtocol::TCP || p.frag_offset() != 0 {
                return Ok(false);
            }
            Ok(clamp_segment(p.payload_mut(), max_mss))
        }
        Some(6) => {
            let mut p = Ipv6Packet::new_checked(packet)?;
            if p.next_header() != IpProtocol::TCP {
                return Ok(false);
            }
            Ok(clamp_segment(p.payload_mut(), max_mss))
        }
        Some(_) => Err(Error::Malformed),
        None => Err(Error::Truncated),
    }
}

/// Clamps the MSS option of one TCP segment (header at offset 0).
fn clamp_segment(seg: &mut [u8], max_mss: u16) -> bool {
    if seg.len() < TCP_MIN_HEADER || u8_at(seg, 13) & TCP_FLAG_SYN == 0 {
        return false;
    }
    let data_offset = usize::from(u8_at(seg, 12) >> 4) * 4;
    if data_offset < TCP_MIN_HEADER || data_offset > seg.len() {
        return false;
    }
    let mut at = TCP_MIN_HEADER;
    while at < data_offset {
        match u8_at(seg, at) {
            OPT_END => break,
            OPT_NOP => at += 1,
            kind => {
                let len = usize::from(u8_at(seg, at + 1));
                if len < 2 || at + len > data_offset {
                    return false;
                }
                if kind == OPT_MSS && len == 4 {
                    let field = at + 2;
                    let old = u16_at(seg, field);
                    if old <= max_mss {
                        return false;
                    }
                    set_u16_at(seg, field, max_mss);
                    // The checksum sums 16-bit words from the segment start; a field at an
                    // odd offset straddles two words, which in one's-complement arithmetic
                    // is the same as the byte-swapped value (RFC 1071 §2(B)).
                    let (o, n) = if field.is_multiple_of(2) {
                        (old, max_mss)
                    } else {
                        (old.swap_bytes(), max_mss.swap_bytes())
                    };
                    let hc = u16_at(seg, TCP_CHECKSUM);
                    set_u16_at(seg, TCP_CHECKSUM, checksum::update(hc, o, n));
                    return true;
                }
                at += len;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use proptest::prelude::*;

    fn tcp_segment(nops: usize, mss: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut opts = vec![OPT_NOP; nops];
        opts.extend_from_slice(&[OPT_MSS, 4]);
        opts.extend_from_slice(&mss.to_be_bytes());
        while !opts.len().is_multiple_of(4) {
            opts.push(OPT_END);
        }
        let mut seg = vec![0u8; 20];
        seg[0..2].copy_from_slice(&40000u16.to_be_bytes());
        seg[2..4].copy_from_slice(&443u16.to_be_bytes());
        seg[12] = (((20 + opts.len()) / 4) as u8) << 4;
        seg[13] = flags;
        seg.extend_from_slice(&opts);
        seg.extend_from_slice(payload);
        seg
    }

    fn v4(seg: &[u8]) -> Vec<u8> {
        let (s, d) = (Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(192, 0, 2, 77));
        let mut seg = seg.to_vec();
        let ph = checksum::pseudo_header_v4(s, d, IpProtocol::TCP, seg.len() as u16);
        let c = !checksum::fold(checksum::sum(ph, &seg));
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        let mut pkt = vec![0u8; 20];
        let repr = crate::ipv4::Ipv4Repr {
            src_addr: s,
            dst_addr: d,
            protocol: IpProtocol::TCP,
            payload_len: seg.len(),
            ttl: 64,
            dscp_ecn: 0,
            dont_frag: true,
        };
        pkt.extend_from_slice(&seg);
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut pkt[..]))
            .unwrap();
        pkt
    }

    fn v4_tcp_checksum_ok(pkt: &[u8]) -> bool {
        let p = Ipv4Packet::new_checked(pkt).unwrap();
        let ph = checksum::pseudo_header_v4(
            p.src_addr(),
            p.dst_addr(),
            IpProtocol::TCP,
            p.payload().len() as u16,
        );
        checksum::fold(checksum::sum(ph, p.payload())) == 0xFFFF
    }

    fn v6(seg: &[u8]) -> Vec<u8> {
        let s: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let d: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
        let mut seg = seg.to_vec();
        let ph = checksum::pseudo_header_v6(s, d, IpProtocol::TCP, seg.len() as u32);
        let c = !checksum::fold(checksum::sum(ph, &seg));
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        let mut pkt = vec![0u8; 40];
        let mut p = Ipv6Packet::new_unchecked(&mut pkt[..]);
        p.set_version_class_flow(0, 0);
        p.set_payload_len(seg.len() as u16);
        p.set_next_header(IpProtocol::TCP);
        p.set_hop_limit(64);
        p.set_src_addr(s);
        p.set_dst_addr(d);
        pkt.extend_from_slice(&seg);
        pkt
    }

    fn v6_tcp_checksum_ok(pkt: &[u8]) -> bool {
        let p = Ipv6Packet::new_checked(pkt).unwrap();
        let ph = checksum::pseudo_header_v6(
            p.src_addr(),
            p.dst_addr(),
            IpProtocol::TCP,
            p.payload().len() as u32,
        );
        checksum::fold(checksum::sum(ph, p.payload())) == 0xFFFF
    }

    fn mss_of(seg_start: usize, nops: usize, pkt: &[u8]) -> u16 {
        let at = seg_start + 20 + nops + 2;
        u16::from_be_bytes([pkt[at], pkt[at + 1]])
    }

    #[test]
    fn clamps_ipv4_syn_to_1360() {
        let mut pkt = v4(&tcp_segment(0, 1460, TCP_FLAG_SYN, b""));
        assert!(v4_tcp_checksum_ok(&pkt));
        assert!(clamp_mss(&mut pkt, 1360).unwrap());
        assert_eq!(mss_of(20, 0, &pkt), 1360);
        assert!(v4_tcp_checksum_ok(&pkt));
        assert!(Ipv4Packet::new_checked(&pkt[..]).unwrap().verify_checksum());
    }

    #[test]
    fn leaves_small_mss_and_non_syn_alone() {
        let orig = v4(&tcp_segment(0, 1200, TCP_FLAG_SYN | 0x10, b""));
        let mut pkt = orig.clone();
        assert!(!clamp_mss(&mut pkt, 1360).unwrap());
        assert_eq!(pkt, orig);
        let orig = v4(&tcp_segment(0, 1460, 0x10, b"data"));
        let mut pkt = orig.clone();
        assert!(!clamp_mss(&mut pkt, 1360).unwrap());
        assert_eq!(pkt, orig);
        assert!(clamp_mss(&mut [0x45, 0], 1360).is_err());
        assert!(clamp_mss(&mut [], 1360).is_err());
    }

    proptest! {
        #[test]
        fn clamp_keeps_checksums_valid(
            nops in 0usize..4, mss in any::<u16>(), max in 500u16..9000,
            payload in proptest::collection::vec(any::<u8>(), 0..40), ipv6 in any::<bool>(),
        ) {
            let seg = tcp_segment(nops, mss, TCP_FLAG_SYN, &payload);
            let (mut pkt, hdr) = if ipv6 { (v6(&seg), 40) } else { (v4(&seg), 20) };
            let changed = clamp_mss(&mut pkt, max).unwrap();
            prop_assert_eq!(changed, mss > max);
            prop_assert_eq!(mss_of(hdr, nops, &pkt), mss.min(max));
            let ok = if ipv6 { v6_tcp_checksum_ok(&pkt) } else { v4_tcp_checksum_ok(&pkt) };
            prop_assert!(ok);
        }
    }
}
