//! Fuzzes `InboundSa::open` of a real SA (RFC 4303 §3.4): arbitrary bytes must never panic
//! and never authenticate; bytes sealed by the matching outbound SA must open to exactly
//! what was sealed, with or without ESN.
#![no_main]

use dmvpn_esp::{Error, InboundSa, IpProtocol, OutboundSa, PacketBuf, Spi};
use libfuzzer_sys::fuzz_target;

const SPI: Spi = Spi(0x0000_4321);
const KEYMAT: [u8; 36] = [0x11; 36];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let esn = mode & 1 != 0;
    let window = [32, 1024, 4096][usize::from(mode >> 1) % 3];
    let inbound = InboundSa::new(SPI, &KEYMAT, esn, window).expect("valid SA");
    let Ok(mut buf) = PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, rest) else {
        return;
    };
    if mode & 0x80 == 0 {
        // Raw bytes, with our SPI so they reach the replay check and the ICV.
        if let Some(spi) = buf.as_mut_slice().get_mut(..4) {
            spi.copy_from_slice(&SPI.0.to_be_bytes());
        }
        let r = inbound.open(&mut buf);
        assert!(
            matches!(r, Err(Error::Truncated | Error::Replay | Error::Auth)),
            "forged packet accepted: {r:?}"
        );
    } else {
        let outbound = OutboundSa::new(SPI, &KEYMAT, esn).expect("valid SA");
        if outbound.seal(&mut buf, IpProtocol::GRE).is_err() {
            return;
        }
        assert_eq!(inbound.open(&mut buf), Ok(IpProtocol::GRE));
        assert_eq!(buf.as_slice(), rest);
        assert!(
            inbound.open(&mut buf).is_err(),
            "an opened packet does not open twice"
        );
    }
});
