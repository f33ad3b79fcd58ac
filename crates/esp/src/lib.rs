//! dmvpn-esp
