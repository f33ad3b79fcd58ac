//! dmvpn-config
