//! NHRP code points: packet types (RFC 2332 §5.2.0.1), error codes (§5.2.7),
//! CIE codes (§5.2.0.1), extension types (§5.3, RFC 2735 and the Cisco DMVPN
//! NAT extension) and mandatory-part flag bits (§5.2.1–§5.2.5, Cisco).
//!
//! Every code point is an open newtype: a value this crate has no name for
//! still parses, round-trips and prints as hex, so a peer's new code never
//! breaks the codec (docs/interop-notes.md §14: implementations disagree on tables,
//! so the names here follow RFC 2332).

use dmvpn_wire::code_point;

code_point! {
    /// `ar$op.type` (RFC 2332 §5.2.0.1).
    PacketType(u8) {
        /// §5.2.1
        RESOLUTION_REQUEST = 1 => "Resolution Request",
        /// §5.2.2
        RESOLUTION_REPLY = 2 => "Resolution Reply",
        /// §5.2.3
        REGISTRATION_REQUEST = 3 => "Registration Request",
        /// §5.2.4
        REGISTRATION_REPLY = 4 => "Registration Reply",
        /// §5.2.5
        PURGE_REQUEST = 5 => "Purge Request",
        /// §5.2.6
        PURGE_REPLY = 6 => "Purge Reply",
        /// §5.2.7
        ERROR_INDICATION = 7 => "Error Indication",
        /// draft-detienne-dmvpn-01 (Cisco "redirect")
        TRAFFIC_INDICATION = 8 => "Traffic Indication",
    }
}

impl PacketType {
    /// True for the request types, which carry CIEs asking for something.
    pub fn is_request(self) -> bool {
        matches!(
            self,
            Self::RESOLUTION_REQUEST | Self::REGISTRATION_REQUEST | Self::PURGE_REQUEST
        )
    }

    /// True for the reply types.
    pub fn is_reply(self) -> bool {
        matches!(
            self,
            Self::RESOLUTION_REPLY | Self::REGISTRATION_REPLY | Self::PURGE_REPLY
        )
    }
}

code_point! {
    /// Error Indication `Error Code` (RFC 2332 §5.2.7; docs/interop-notes.md §14).
    ErrorCode(u16) {
        /// 1
        UNRECOGNIZED_EXTENSION = 1 => "Unrecognized Extension",
        /// 3 (FRR's header says 2; RFC 2332 says 3)
        LOOP_DETECTED = 3 => "NHRP Loop Detected",
        /// 6
        PROTOCOL_ADDRESS_UNREACHABLE = 6 => "Protocol Address Unreachable",
        /// 7
        PROTOCOL_ERROR = 7 => "Protocol Error",
        /// 8
        SDU_SIZE_EXCEEDED = 8 => "NHRP SDU Size Exceeded",
        /// 9
        INVALID_EXTENSION = 9 => "Invalid Extension",
        /// 10
        INVALID_RESOLUTION_REPLY = 10 => "Invalid NHRP Resolution Reply Received",
        /// 11
        AUTHENTICATION_FAILURE = 11 => "Authentication Failure",
        /// 15
        HOP_COUNT_EXCEEDED = 15 => "Hop Count Exceeded",
    }
}

code_point! {
    /// CIE `Code` (RFC 2332 §5.2.0.1 and the per-type sections; docs/interop-notes.md §14).
    CieCode(u8) {
        /// 0
        SUCCESS = 0 => "Success",
        /// 4
        ADMINISTRATIVELY_PROHIBITED = 4 => "Administratively Prohibited",
        /// 5
        INSUFFICIENT_RESOURCES = 5 => "Insufficient Resources",
        /// 12
        NO_BINDING_EXISTS = 12 => "No Internetworking Layer Address to NBMA Address Binding Exists",
        /// 13
        BINDING_NOT_UNIQUE = 13 => "Binding Exists But Is Not Unique",
        /// 14
        UNIQUE_ADDRESS_ALREADY_REGISTERED = 14 => "Unique Internetworking Layer Address Already Registered",
    }
}

code_point! {
    /// Extension `Type`, the 15 bits below the compulsory bit (RFC 2332 §5.3).
    ExtensionType(u16) {
        /// §5.3.0
        END = 0 => "End of Extensions",
        /// §5.3.1
        RESPONDER_ADDRESS = 3 => "Responder Address",
        /// §5.3.2
        FORWARD_TRANSIT_RECORD = 4 => "Forward Transit NHS Record",
        /// §5.3.3
        REVERSE_TRANSIT_RECORD = 5 => "Reverse Transit NHS Record",
        /// §5.3.4
        AUTHENTICATION = 7 => "Authentication",
        /// §5.3.5
        VENDOR_PRIVATE = 8 => "Vendor-Private",
        /// Cisco NAT address extension (collides with RFC 2735 Device Capabilities,
        /// docs/interop-notes.md §12)
        CISCO_NAT_ADDRESS = 9 => "Cisco NAT Address",
    }
}

/// The compulsory bit of an extension type word (RFC 2332 §5.3).
pub const EXTENSION_COMPULSORY: u16 = 0x8000;

/// `ar$afn` for IPv4 NBMA addresses (IANA address family numbers).
pub const AFN_IPV4: u16 = 0x0001;
/// `ar$afn` for IPv6 NBMA addresses.
pub const AFN_IPV6: u16 = 0x0002;
/// `ar$pro.type` for IPv4 protocol addresses (an Ethertype, RFC 2332 §5.2.0.1).
pub const PROTOCOL_TYPE_IPV4: u16 = 0x0800;
/// `ar$op.version` for NHRP (RFC 2332 §5.2.0.1).
pub const NHRP_VERSION: u8 = 1;

/// Mandatory-part flag bits (docs/interop-notes.md §5). The unique bit sits at a
/// different position in registration than in resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags;

impl Flags {
    /// Resolution "Q": requester is a router (Cisco debugs call it "router").
    pub const RESOLUTION_Q: u16 = 0x8000;
    /// Resolution "A": authoritative.
    pub const RESOLUTION_A: u16 = 0x4000;
    /// Resolution "D": stable destination association.
    pub const RESOLUTION_D: u16 = 0x2000;
    /// Resolution "U": unique.
    pub const RESOLUTION_U: u16 = 0x1000;
    /// Resolution "S": stable source binding.
    pub const RESOLUTION_S: u16 = 0x0800;
    /// Registration "U": unique (RFC 2332 §5.2.3).
    pub const REGISTRATION_U: u16 = 0x8000;
    /// Purge "N": no reply expected (RFC 2332 §5.2.5).
    pub const PURGE_N: u16 = 0x8000;
    /// Cisco "NAT supported" in registration, resolution and purge.
    pub const CISCO_NAT: u16 = 0x0002;
}

/// Traffic Indication `traffic code` 0: redirect (draft-detienne-dmvpn-01).
pub const TRAFFIC_CODE_REDIRECT: u16 = 0;

/// Authentication extension SPI 1: cleartext password (RFC 2332 §5.3.4.1).
pub const AUTH_SPI_CLEARTEXT: u16 = 1;

/// CIE prefix length 0xFF: "this host, uniquely" (what FRR and Cisco send
/// for a unique registration, docs/interop-notes.md §7).
pub const PREFIX_LEN_UNIQUE_HOST: u8 = 0xff;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_print_as_hex() {
        assert_eq!(format!("{}", PacketType(42)), "0x2a");
        assert_eq!(format!("{:?}", ErrorCode(0x1234)), "ErrorCode(0x1234)");
        assert_eq!(
            format!("{}", ErrorCode::LOOP_DETECTED),
            "NHRP Loop Detected"
        );
    }

    #[test]
    fn rfc_2332_code_values() {
        assert_eq!(ErrorCode::LOOP_DETECTED.0, 3);
        assert_eq!(ErrorCode::AUTHENTICATION_FAILURE.0, 11);
        assert_eq!(ErrorCode::HOP_COUNT_EXCEEDED.0, 15);
        assert_eq!(CieCode::NO_BINDING_EXISTS.0, 12);
        assert_eq!(CieCode::UNIQUE_ADDRESS_ALREADY_REGISTERED.0, 14);
    }
}
