//! dmvpn-nhrp
