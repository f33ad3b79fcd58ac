//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624 §3, eqn. 3).

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::IpProtocol;

/// Adds `data` as big-endian 16-bit words to a running one's-complement sum (unfolded).
/// An odd trailing byte is padded with zero (RFC 1071 §4.1).
pub fn sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        if let [a, b] = w {
            acc += u64::from(u16::from_be_bytes([*a, *b]));
        }
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a running sum into 16 bits (end-around carry).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for `data`: the one's complement of its one's-complement sum.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// The pseudo-header sum for TCP/UDP over IPv4 (RFC 793 §3.1, RFC 768).
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, len: u16) -> u64 {
    let acc = sum(sum(0, &src.octets()), &dst.octets());
    acc + u64::from(protocol.0) + u64::from(len)
}

/// The pseudo-header sum for upper-layer checksums over IPv6 (RFC 8200 §8.1).
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: IpProtocol, len: u32) -> u64 {
    let acc = sum(sum(0, &src.octets()), &dst.octets());
    acc + u64::from(len >> 16) + u64::from(len & 0xFFFF) + u64::from(next_header.0)
}

/// Updates checksum field `hc` after a 16-bit word changed from `old` to `new`:
/// HC' = ~(~HC + ~m + m') (RFC 1624 §3, eqn. 3), which, unlike eqn. 2, never yields
/// the 0x0000 "-0" that RFC 1624 §3 warns about for a correct checksum.
pub fn update(hc: u16, old: u16, new: u16) -> u16 {
    let acc = u64::from(!hc) + u64::from(!old) + u64::from(new);
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 1071 §3 worked example: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
    #[test]
    fn rfc1071_example_sum() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    proptest::proptest! {
        #[test]
        fn incremental_update_matches_recompute(
            mut data in proptest::collection::vec(proptest::prelude::any::<u8>(), 2..64),
            idx in 0usize..32, new in proptest::prelude::any::<u16>(),
        ) {
            let i = (idx % (data.len() / 2)) * 2;
            let hc = checksum(&data);
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            let fresh = checksum(&data);
            let inc = update(hc, old, new);
            // 0x0000 and 0xFFFF are the same one's-complement value (an all-zero packet).
            proptest::prop_assert!(inc == fresh || (inc == 0 && fresh == 0xFFFF));
        }
    }
}
