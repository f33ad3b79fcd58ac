//! Checking received authentication (RFC 2332 §5.3.4 Authentication
//! Extension) against the Cisco cleartext key (`ip nhrp authentication`,
//! docs/interop-notes.md §11). Our own authentication extensions are built in
//! `build`.

use crate::codes::{AUTH_SPI_CLEARTEXT, ExtensionType, PacketType};
use crate::packet::{ExtensionBody, Packet};

use super::Engine;

impl Engine {
    /// RFC 2332 §5.3.4 with the Cisco cleartext key (docs/interop-notes.md §11):
    /// with a key configured, every received packet must carry exactly that
    /// key.
    pub(super) fn authentic(&self, pkt: &Packet) -> bool {
        let Some(key) = &self.config.auth_key else {
            return true;
        };
        match pkt
            .extension(ExtensionType::AUTHENTICATION)
            .map(|e| &e.body)
        {
            Some(ExtensionBody::Authentication(a)) => {
                a.spi == AUTH_SPI_CLEARTEXT && a.data.as_slice() == key.as_slice()
            }
            // An RFC 2332 §5.2.7 Error Indication has no extensions at all;
            // one that carries authentication is still checked above.
            None if pkt.packet_type == PacketType::ERROR_INDICATION && pkt.extensions.is_none() => {
                true
            }
            _ => false,
        }
    }

    /// For packets that failed to decode: only answer with an Error
    /// Indication when no key is configured, since the key cannot be checked.
    pub(super) fn authentic_raw(&self, _bytes: &[u8]) -> bool {
        self.config.auth_key.is_none()
    }
}
