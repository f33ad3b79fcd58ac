//! dmvpn-crypto
