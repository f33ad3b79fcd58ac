//! dmvpn-ike
