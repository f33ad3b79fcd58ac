#![no_main]
//! Arbitrary bytes into the NHRP packet parser; whatever parses is re-emitted
//! and must parse back to the same representation. Each input is tried as it
//! is and with its packet size and checksum fixed up, so the fuzzer reaches the
//! mandatory part, CIEs and extensions instead of stopping at the checksum.

use dmvpn_nhrp::packet::{Packet, checksum};
use libfuzzer_sys::fuzz_target;

/// `data` with the fixed header's packet size and checksum made valid
/// (RFC 2332 §5.2.0.1), when it is long enough to have them.
fn fixed_up(data: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(data.len()).ok()?;
    if data.len() < 20 {
        return None;
    }
    // ar$pktsz is at 10..12, ar$chksum at 12..14, ar$op.version at 16.
    let mut v = data.to_vec();
    v[16] = 1;
    v[10..12].copy_from_slice(&len.to_be_bytes());
    v[12..14].copy_from_slice(&[0, 0]);
    let sum = checksum(&v);
    v[12..14].copy_from_slice(&sum.to_be_bytes());
    Some(v)
}

fn round_trip(data: &[u8]) {
    if let Ok(p) = Packet::parse(data) {
        let bytes = p.to_bytes().expect("a parsed packet re-encodes");
        assert_eq!(bytes.len(), p.buffer_len());
        let again = Packet::parse(&bytes).expect("re-emitted packet parses");
        assert_eq!(again, p);
    }
    let _ = Packet::peek_source(data);
}

fuzz_target!(|data: &[u8]| {
    round_trip(data);
    if let Some(v) = fixed_up(data) {
        round_trip(&v);
    }
});
