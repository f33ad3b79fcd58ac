#![no_main]
//! Arbitrary bytes into the NHRP packet parser; whatever parses is re-emitted
//! and must parse back to the same representation.

use dmvpn_nhrp::packet::Packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::parse(data) {
        let bytes = p.to_bytes().expect("a parsed packet re-encodes");
        assert_eq!(bytes.len(), p.buffer_len());
        let again = Packet::parse(&bytes).expect("re-emitted packet parses");
        assert_eq!(again, p);
    }
    let _ = Packet::peek_source(data);
});
