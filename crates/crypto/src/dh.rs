//! Diffie-Hellman for IKEv2 key exchange.
//!
//! - Groups 19 and 20 (RFC 5903 §7): the KE payload carries X ‖ Y with no
//!   SEC1 point-format octet, and the shared secret g^ir is the X coordinate
//!   only.
//! - Group 31, Curve25519 (RFC 8031 §2): 32-byte u-coordinates; an all-zero
//!   shared secret MUST be rejected (RFC 8031 §2.1 / RFC 7748 §6.1).

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};

use crate::{Error, Rng, Secret};

/// Supported D-H groups (IKEv2 transform type 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhAlg {
    /// 256-bit random ECP group, IANA 19.
    Ecp256,
    /// 384-bit random ECP group, IANA 20.
    Ecp384,
    /// Curve25519, IANA 31.
    Curve25519,
}

impl DhAlg {
    /// The IANA transform ID.
    pub fn ike_group(self) -> u16 {
        match self {
            Self::Ecp256 => 19,
            Self::Ecp384 => 20,
            Self::Curve25519 => 31,
        }
    }

    /// The name IANA's Transform Type 4 registry gives the group (RFC 5903, RFC 8031).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ecp256 => "256-bit random ECP group",
            Self::Ecp384 => "384-bit random ECP group",
            Self::Curve25519 => "Curve25519",
        }
    }

    /// The group for an IANA transform ID, if supported.
    pub fn from_ike_group(id: u16) -> Option<Self> {
        match id {
            19 => Some(Self::Ecp256),
            20 => Some(Self::Ecp384),
            31 => Some(Self::Curve25519),
            _ => None,
        }
    }

    /// Length of the KE payload's key exchange data.
    pub fn public_len(self) -> usize {
        match self {
            Self::Ecp256 => 64,
            Self::Ecp384 => 96,
            Self::Curve25519 => 32,
        }
    }

    /// Length of a private scalar.
    pub fn private_len(self) -> usize {
        match self {
            Self::Ecp256 | Self::Curve25519 => 32,
            Self::Ecp384 => 48,
        }
    }

    fn algorithm(self) -> &'static agreement::Algorithm {
        match self {
            Self::Ecp256 => &agreement::ECDH_P256,
            Self::Ecp384 => &agreement::ECDH_P384,
            Self::Curve25519 => &agreement::X25519,
        }
    }

    fn is_ecp(self) -> bool {
        !matches!(self, Self::Curve25519)
    }
}

/// Our private D-H value and its public value in IKE encoding.
pub struct DhPrivate {
    alg: DhAlg,
    key: PrivateKey,
    public: Vec<u8>,
}

impl DhPrivate {
    /// Generates a key pair from `rng` (so tests can be deterministic).
    pub fn generate(alg: DhAlg, rng: &mut dyn Rng) -> Result<Self, Error> {
        let mut scalar = Secret::zeroed(alg.private_len());
        // A random 256-bit string is >= the P-256 order with probability
        // ~2^-32; retrying a few times makes failure practically impossible.
        for _ in 0..16 {
            rng.fill(scalar.expose_mut());
            if let Ok(k) = Self::from_private_bytes(alg, scalar.expose()) {
                return Ok(k);
            }
        }
        Err(Error::Provider)
    }

    /// A key pair from a known private scalar (test vectors).
    pub fn from_private_bytes(alg: DhAlg, scalar: &[u8]) -> Result<Self, Error> {
        let key =
            PrivateKey::from_private_key(alg.algorithm(), scalar).map_err(|_| Error::KeyLength)?;
        let pk = key.compute_public_key().map_err(|_| Error::Provider)?;
        let pk = pk.as_ref();
        let public = if alg.is_ecp() {
            // Strip the SEC1 uncompressed-point octet 0x04 (RFC 5903 §7).
            match pk.split_first() {
                Some((0x04, xy)) if xy.len() == alg.public_len() => xy.to_vec(),
                _ => return Err(Error::Provider),
            }
        } else {
            pk.to_vec()
        };
        Ok(Self { alg, key, public })
    }

    /// The group.
    pub fn alg(&self) -> DhAlg {
        self.alg
    }

    /// Key exchange data for our KE payload.
    pub fn public_value(&self) -> &[u8] {
        &self.public
    }

    /// Computes g^ir from the peer's KE data. Rejects a wrong length, a point
    /// not on the curve, and an all-zero X25519 result.
    pub fn agree(&self, peer: &[u8]) -> Result<Secret, Error> {
        if peer.len() != self.alg.public_len() {
            return Err(Error::PublicKey);
        }
        let mut sec1 = Vec::with_capacity(peer.len() + 1);
        if self.alg.is_ecp() {
            sec1.push(0x04);
        }
        sec1.extend_from_slice(peer);
        let shared = agreement::agree(
            &self.key,
            UnparsedPublicKey::new(self.alg.algorithm(), &sec1),
            Error::PublicKey,
            |s| Ok(Secret::from_slice(s)),
        )?;
        if shared.expose().iter().all(|&b| b == 0) {
            return Err(Error::PublicKey);
        }
        Ok(shared)
    }
}

impl core::fmt::Debug for DhPrivate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DhPrivate")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestRng;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    // RFC 5903 §8.1: 256-bit random ECP group.
    #[test]
    fn group19_rfc5903_section_8_1() {
        let i = DhPrivate::from_private_bytes(
            DhAlg::Ecp256,
            &h("C88F01F5 10D9AC3F 70A292DA A2316DE5 44E9AAB8 AFE84049 C62A9C57 862D1433"),
        )
        .unwrap();
        assert_eq!(
            i.public_value(),
            h(
                "DAD0B653 94221CF9 B051E1FE CA5787D0 98DFE637 FC90B9EF 945D0C37 72581180
               5271A046 1CDB8252 D61F1C45 6FA3E59A B1F45B33 ACCF5F58 389E0577 B8990BB3"
            )
        );
        let r = DhPrivate::from_private_bytes(
            DhAlg::Ecp256,
            &h("C6EF9C5D 78AE012A 011164AC B397CE20 88685D8F 06BF9BE0 B283AB46 476BEE53"),
        )
        .unwrap();
        let gr = h(
            "D12DFB52 89C8D4F8 1208B702 70398C34 2296970A 0BCCB74C 736FC755 4494BF63
                    56FBF3CA 366CC23E 8157854C 13C58D6A AC23F046 ADA30F83 53E74F33 039872AB",
        );
        assert_eq!(r.public_value(), gr);
        let gir = h("D6840F6B 42F6EDAF D13116E0 E1256520 2FEF8E9E CE7DCE03 812464D0 4B9442DE");
        assert_eq!(i.agree(&gr).unwrap().expose(), gir);
        assert_eq!(r.agree(i.public_value()).unwrap().expose(), gir);
        // Off the curve, and wrong length: refused, no panic.
        let mut off = gr.clone();
        off[63] ^= 1;
        assert_eq!(i.agree(&off), Err(Error::PublicKey));
        assert_eq!(i.agree(&gr[..63]), Err(Error::PublicKey));
    }

    // RFC 7748 §6.1.
    #[test]
    fn group31_rfc7748_section_6_1() {
        let a = DhPrivate::from_private_bytes(
            DhAlg::Curve25519,
            &h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
        )
        .unwrap();
        assert_eq!(
            a.public_value(),
            h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let bob_pub = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        assert_eq!(
            a.agree(&bob_pub).unwrap().expose(),
            h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        );
        // A low-order point yields the all-zero secret: refused.
        assert_eq!(a.agree(&[0u8; 32]), Err(Error::PublicKey));
    }

    #[test]
    fn generated_pairs_agree_for_every_group() {
        let mut rng = TestRng::new(7);
        for alg in [DhAlg::Ecp256, DhAlg::Ecp384, DhAlg::Curve25519] {
            let a = DhPrivate::generate(alg, &mut rng).unwrap();
            let b = DhPrivate::generate(alg, &mut rng).unwrap();
            assert_eq!(a.public_value().len(), alg.public_len());
            assert_eq!(
                a.agree(b.public_value()).unwrap(),
                b.agree(a.public_value()).unwrap()
            );
            assert_eq!(DhAlg::from_ike_group(alg.ike_group()), Some(alg));
        }
    }
}
