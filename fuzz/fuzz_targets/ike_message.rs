//! Fuzzes the IKEv2 message and payload-chain parsers (RFC 7296 §3): no
//! input may panic, and whatever parses must re-encode to something that
//! parses to the same value.
#![no_main]

use dmvpn_ike::message::{Message, parse_payloads};
use dmvpn_ike::PayloadType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let again = m.emit().expect("a parsed message re-encodes");
        assert_eq!(Message::parse(&again).expect("re-encoding parses"), m);
    }
    if let Some((first, rest)) = data.split_first() {
        let _ = parse_payloads(PayloadType(*first), rest);
    }
});
