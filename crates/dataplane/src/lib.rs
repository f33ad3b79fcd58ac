//! dmvpn-dataplane
