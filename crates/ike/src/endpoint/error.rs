//! Why we refuse a peer's request, and the error notify (RFC 7296 §3.10.1,
//! §2.21) each refusal is answered with. Every handler returns an
//! [`ExchangeError`]; the reply carrying it is built in one place,
//! [`ExchangeError::payload`].

use super::*;

/// A refused request and the notify it causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ExchangeError {
    /// A required payload is missing or malformed (§2.21.1, §3.10.1).
    InvalidSyntax,
    /// None of the proposals is acceptable (§2.7, §3.10.1).
    NoProposalChosen,
    /// The peer's AUTH did not verify (§2.21.2).
    AuthenticationFailed,
    /// The KE payload's group is not the one we want (§1.2, §1.3): the
    /// notify names the group we would accept.
    InvalidKePayload(DhAlg),
    /// No acceptable traffic selectors (§2.9).
    TsUnacceptable,
    /// The request cannot be served in our current state (§2.7, §2.25).
    TemporaryFailure,
    /// The peer rekeys a Child SA we do not have (§2.25); carries the SPI
    /// from its REKEY_SA.
    ChildSaNotFound(u32),
    /// §2.6: answer with only this cookie and keep no state.
    CookieRequired(Vec<u8>),
    /// The decrypted or unprotected payloads did not parse (§2.21.1).
    Malformed(ParseError),
    /// A request for an IKE SA we do not know (§1.5, §2.21.4); answered
    /// unprotected.
    InvalidIkeSpi,
    /// An IKE_SA_INIT request of a higher major version (§1.5, §2.5);
    /// answered unprotected.
    InvalidMajorVersion,
    /// The IKE SA holds as many Child SAs as we allow (§3.10.1).
    NoAdditionalSas,
}

impl ExchangeError {
    /// The notify type this refusal is answered with.
    pub(super) fn notify(&self) -> NotifyType {
        match self {
            Self::InvalidSyntax => NotifyType::INVALID_SYNTAX,
            Self::NoProposalChosen => NotifyType::NO_PROPOSAL_CHOSEN,
            Self::AuthenticationFailed => NotifyType::AUTHENTICATION_FAILED,
            Self::InvalidKePayload(_) => NotifyType::INVALID_KE_PAYLOAD,
            Self::TsUnacceptable => NotifyType::TS_UNACCEPTABLE,
            Self::TemporaryFailure => NotifyType::TEMPORARY_FAILURE,
            Self::ChildSaNotFound(_) => NotifyType::CHILD_SA_NOT_FOUND,
            Self::CookieRequired(_) => NotifyType::COOKIE,
            Self::Malformed(e) => e.notify().0,
            Self::InvalidIkeSpi => NotifyType::INVALID_IKE_SPI,
            Self::InvalidMajorVersion => NotifyType::INVALID_MAJOR_VERSION,
            Self::NoAdditionalSas => NotifyType::NO_ADDITIONAL_SAS,
        }
    }

    /// The Notify payload of the reply, with its data (§3.10.1: the
    /// accepted D-H group for INVALID_KE_PAYLOAD, the payload type for
    /// UNSUPPORTED_CRITICAL_PAYLOAD) and, for CHILD_SA_NOT_FOUND, the ESP
    /// SPI it is about.
    pub(super) fn payload(&self) -> Payload {
        let mut n = match self {
            Self::InvalidKePayload(g) => Notify::new(
                NotifyType::INVALID_KE_PAYLOAD,
                g.ike_group().to_be_bytes().to_vec(),
            ),
            Self::CookieRequired(c) => Notify::new(NotifyType::COOKIE, c.clone()),
            Self::Malformed(e) => {
                let (ty, data) = e.notify();
                Notify::new(ty, data)
            }
            other => Notify::new(other.notify(), Vec::new()),
        };
        if let Self::ChildSaNotFound(spi) = self {
            n.protocol = ProtocolId::ESP;
            n.spi = spi.to_be_bytes().to_vec();
        }
        Payload::Notify(n)
    }

    /// The whole reply to a refused request: just the notify.
    pub(super) fn reply(&self) -> Reply {
        vec![self.payload()]
    }
}
