//! IANA code points for IKEv2 (RFC 7296 §3, IANA "IKEv2 Parameters").
//!
//! Every code point is an open newtype: values this crate does not know
//! round-trip unchanged and print as hex, so a peer's extension never makes
//! the codec lose information.

use dmvpn_wire::code_point;

code_point! {
    /// Payload types (RFC 7296 §3.2, RFC 7383 §2.5).
    PayloadType(u8) {
        NONE = 0,
        SA = 33,
        KE = 34,
        IDI = 35,
        IDR = 36,
        CERT = 37,
        CERTREQ = 38,
        AUTH = 39,
        NONCE = 40,
        N = 41,
        D = 42,
        V = 43,
        TSI = 44,
        TSR = 45,
        SK = 46,
        CP = 47,
        EAP = 48,
        SKF = 53,
    }
}

code_point! {
    /// Exchange types (RFC 7296 §3.1).
    ExchangeType(u8) {
        IKE_SA_INIT = 34,
        IKE_AUTH = 35,
        CREATE_CHILD_SA = 36,
        INFORMATIONAL = 37,
    }
}

code_point! {
    /// Notify message types (RFC 7296 §3.10.1 and later RFCs).
    NotifyType(u16) {
        UNSUPPORTED_CRITICAL_PAYLOAD = 1,
        INVALID_IKE_SPI = 4,
        INVALID_MAJOR_VERSION = 5,
        INVALID_SYNTAX = 7,
        INVALID_MESSAGE_ID = 9,
        INVALID_SPI = 11,
        NO_PROPOSAL_CHOSEN = 14,
        INVALID_KE_PAYLOAD = 17,
        AUTHENTICATION_FAILED = 24,
        SINGLE_PAIR_REQUIRED = 34,
        NO_ADDITIONAL_SAS = 35,
        INTERNAL_ADDRESS_FAILURE = 36,
        FAILED_CP_REQUIRED = 37,
        TS_UNACCEPTABLE = 38,
        INVALID_SELECTORS = 39,
        TEMPORARY_FAILURE = 43,
        CHILD_SA_NOT_FOUND = 44,
        INITIAL_CONTACT = 16384,
        SET_WINDOW_SIZE = 16385,
        ADDITIONAL_TS_POSSIBLE = 16386,
        IPCOMP_SUPPORTED = 16387,
        NAT_DETECTION_SOURCE_IP = 16388,
        NAT_DETECTION_DESTINATION_IP = 16389,
        COOKIE = 16390,
        USE_TRANSPORT_MODE = 16391,
        HTTP_CERT_LOOKUP_SUPPORTED = 16392,
        REKEY_SA = 16393,
        ESP_TFC_PADDING_NOT_SUPPORTED = 16394,
        NON_FIRST_FRAGMENTS_ALSO = 16395,
        MULTIPLE_AUTH_SUPPORTED = 16404,
        REDIRECT_SUPPORTED = 16406,
        EAP_ONLY_AUTHENTICATION = 16417,
        CHILDLESS_IKEV2_SUPPORTED = 16418,
        IKEV2_MESSAGE_ID_SYNC_SUPPORTED = 16420,
        IKEV2_FRAGMENTATION_SUPPORTED = 16430,
        SIGNATURE_HASH_ALGORITHMS = 16431,
    }
}

impl NotifyType {
    /// Error types are below 16384 (RFC 7296 §3.10.1).
    pub fn is_error(self) -> bool {
        self.0 < 16384
    }
}

code_point! {
    /// Transform types (RFC 7296 §3.3.2).
    TransformType(u8) {
        ENCR = 1,
        PRF = 2,
        INTEG = 3,
        DH = 4,
        ESN = 5,
    }
}

code_point! {
    /// Transform type 1 IDs (RFC 7296 §3.3.2, RFC 5282).
    EncrId(u16) {
        ENCR_AES_CBC = 12,
        ENCR_AES_CTR = 13,
        ENCR_AES_GCM_8 = 18,
        ENCR_AES_GCM_12 = 19,
        ENCR_AES_GCM_16 = 20,
        ENCR_CHACHA20_POLY1305 = 28,
    }
}

code_point! {
    /// Transform type 2 IDs (RFC 7296 §3.3.2, RFC 4868).
    PrfId(u16) {
        PRF_HMAC_SHA1 = 2,
        PRF_HMAC_SHA2_256 = 5,
        PRF_HMAC_SHA2_384 = 6,
        PRF_HMAC_SHA2_512 = 7,
    }
}

code_point! {
    /// Transform type 3 IDs (RFC 7296 §3.3.2).
    IntegId(u16) {
        NONE = 0,
        AUTH_HMAC_SHA1_96 = 2,
        AUTH_HMAC_SHA2_256_128 = 12,
        AUTH_HMAC_SHA2_384_192 = 13,
        AUTH_HMAC_SHA2_512_256 = 14,
    }
}

code_point! {
    /// Transform type 4 IDs (RFC 7296 §3.3.2, RFC 5903, RFC 8031).
    DhId(u16) {
        NONE = 0,
        MODP_2048 = 14,
        ECP_256 = 19,
        ECP_384 = 20,
        ECP_521 = 21,
        CURVE25519 = 31,
    }
}

code_point! {
    /// Transform type 5 IDs (RFC 7296 §3.3.2).
    EsnId(u16) {
        NO_ESN = 0,
        ESN = 1,
    }
}

code_point! {
    /// Transform attribute types (RFC 7296 §3.3.5).
    AttributeType(u16) {
        KEY_LENGTH = 14,
    }
}

code_point! {
    /// Security protocol IDs (RFC 7296 §3.3.1).
    ProtocolId(u8) {
        NONE = 0,
        IKE = 1,
        AH = 2,
        ESP = 3,
    }
}

code_point! {
    /// Identification types (RFC 7296 §3.5).
    IdType(u8) {
        ID_IPV4_ADDR = 1,
        ID_FQDN = 2,
        ID_RFC822_ADDR = 3,
        ID_IPV6_ADDR = 5,
        ID_DER_ASN1_DN = 9,
        ID_DER_ASN1_GN = 10,
        ID_KEY_ID = 11,
    }
}

code_point! {
    /// Authentication methods (RFC 7296 §3.8).
    AuthMethod(u8) {
        RSA_SIG = 1,
        SHARED_KEY_MIC = 2,
        DSS_SIG = 3,
        DIGITAL_SIGNATURE = 14,
    }
}

code_point! {
    /// Traffic selector types (RFC 7296 §3.13.1).
    TsType(u8) {
        TS_IPV4_ADDR_RANGE = 7,
        TS_IPV6_ADDR_RANGE = 8,
    }
}

impl From<dmvpn_crypto::PrfAlg> for PrfId {
    fn from(p: dmvpn_crypto::PrfAlg) -> Self {
        match p {
            dmvpn_crypto::PrfAlg::HmacSha256 => Self::PRF_HMAC_SHA2_256,
            dmvpn_crypto::PrfAlg::HmacSha384 => Self::PRF_HMAC_SHA2_384,
            dmvpn_crypto::PrfAlg::HmacSha512 => Self::PRF_HMAC_SHA2_512,
        }
    }
}

impl PrfId {
    /// The PRF implementation for this ID, if supported.
    pub fn alg(self) -> Option<dmvpn_crypto::PrfAlg> {
        match self {
            Self::PRF_HMAC_SHA2_256 => Some(dmvpn_crypto::PrfAlg::HmacSha256),
            Self::PRF_HMAC_SHA2_384 => Some(dmvpn_crypto::PrfAlg::HmacSha384),
            Self::PRF_HMAC_SHA2_512 => Some(dmvpn_crypto::PrfAlg::HmacSha512),
            _ => None,
        }
    }
}

impl From<dmvpn_crypto::DhAlg> for DhId {
    fn from(d: dmvpn_crypto::DhAlg) -> Self {
        Self(d.ike_group())
    }
}

impl DhId {
    /// The D-H implementation for this group, if supported.
    pub fn alg(self) -> Option<dmvpn_crypto::DhAlg> {
        dmvpn_crypto::DhAlg::from_ike_group(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_print_as_hex_and_known_by_name() {
        assert_eq!(format!("{:?}", NotifyType(0x4321)), "NotifyType(0x4321)");
        assert_eq!(
            format!("{}", NotifyType::USE_TRANSPORT_MODE),
            "USE_TRANSPORT_MODE"
        );
        assert_eq!(NotifyType::USE_TRANSPORT_MODE.0, 16391);
        assert!(NotifyType::AUTHENTICATION_FAILED.is_error());
        assert!(!NotifyType::COOKIE.is_error());
        assert_eq!(PrfId::from(dmvpn_crypto::PrfAlg::HmacSha512), PrfId(7));
        assert_eq!(DhId(19).alg(), Some(dmvpn_crypto::DhAlg::Ecp256));
        assert_eq!(DhId(2).alg(), None);
    }
}
