//! Pseudo-random functions for IKEv2: HMAC-SHA2 (RFC 4868) and prf+
//! (RFC 7296 §2.13).
//!
//! With an HMAC PRF, SKEYSEED = prf(Ni ‖ Nr, g^ir) is HKDF-Extract and prf+ is
//! HKDF-Expand (RFC 5869), which the tests use as known answers.

use aws_lc_rs::hmac;

use crate::{Error, Secret};

/// The PRF transforms dmvpnd supports (IKEv2 transform type 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrfAlg {
    /// PRF_HMAC_SHA2_256 (5).
    HmacSha256,
    /// PRF_HMAC_SHA2_384 (6).
    HmacSha384,
    /// PRF_HMAC_SHA2_512 (7).
    HmacSha512,
}

impl PrfAlg {
    /// Output length in bytes; RFC 4868 §2.1 also makes it the preferred key
    /// length (SK_d, SK_pi, SK_pr).
    pub fn output_len(self) -> usize {
        match self {
            Self::HmacSha256 => 32,
            Self::HmacSha384 => 48,
            Self::HmacSha512 => 64,
        }
    }

    fn algorithm(self) -> hmac::Algorithm {
        match self {
            Self::HmacSha256 => hmac::HMAC_SHA256,
            Self::HmacSha384 => hmac::HMAC_SHA384,
            Self::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    /// prf(key, parts[0] ‖ parts[1] ‖ ...), without concatenating.
    pub fn prf(self, key: &[u8], parts: &[&[u8]]) -> Secret {
        let k = hmac::Key::new(self.algorithm(), key);
        let mut ctx = hmac::Context::with_key(&k);
        for p in parts {
            ctx.update(p);
        }
        Secret::from_slice(ctx.sign().as_ref())
    }

    /// prf+(key, seed) truncated to `len` bytes (RFC 7296 §2.13):
    /// T1 = prf(K, S ‖ 0x01), Tn = prf(K, Tn-1 ‖ S ‖ n). The counter is one
    /// octet, so at most 255 blocks can be produced.
    pub fn prf_plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Result<Secret, Error> {
        let block = self.output_len();
        if len > 255 * block {
            return Err(Error::KeyLength);
        }
        let k = hmac::Key::new(self.algorithm(), key);
        let mut out = Secret::zeroed(len);
        let mut prev: Option<hmac::Tag> = None;
        for (i, chunk) in out.expose_mut().chunks_mut(block).enumerate() {
            let mut ctx = hmac::Context::with_key(&k);
            if let Some(t) = &prev {
                ctx.update(t.as_ref());
            }
            for s in seed {
                ctx.update(s);
            }
            // i < 255 by the length check above.
            ctx.update(&[(i as u8).wrapping_add(1)]);
            let t = ctx.sign();
            let n = chunk.len();
            chunk.copy_from_slice(t.as_ref().get(..n).ok_or(Error::Provider)?);
            prev = Some(t);
        }
        Ok(out)
    }
}

/// Compares two byte strings in time that depends only on their lengths
/// (AUTH payload and NAT-detection checks).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    // RFC 4231 §4.3, test case 2.
    #[test]
    fn hmac_rfc4231_case_2() {
        let k = b"Jefe";
        let d: &[&[u8]] = &[b"what do ya want ", b"for nothing?"];
        assert_eq!(
            PrfAlg::HmacSha256.prf(k, d).expose(),
            h("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert_eq!(
            PrfAlg::HmacSha384.prf(k, d).expose(),
            h(
                "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e\
               8e2240ca5e69e2c78b3239ecfab21649"
            )
        );
        assert_eq!(
            PrfAlg::HmacSha512.prf(k, d).expose(),
            h(
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
               9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
            )
        );
    }

    // RFC 5869 A.1: HKDF-Extract is SKEYSEED's prf, HKDF-Expand is prf+.
    #[test]
    fn prf_plus_equals_hkdf_rfc5869_case_1() {
        let ikm = [0x0bu8; 22];
        let salt = h("000102030405060708090a0b0c");
        let info = h("f0f1f2f3f4f5f6f7f8f9");
        let prk = PrfAlg::HmacSha256.prf(&salt, &[&ikm]);
        assert_eq!(
            prk.expose(),
            h("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
        );
        let okm = PrfAlg::HmacSha256
            .prf_plus(prk.expose(), &[&info[..4], &info[4..]], 42)
            .unwrap();
        assert_eq!(
            okm.expose(),
            h(
                "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
            )
        );
    }

    #[test]
    fn prf_plus_length_limit() {
        assert!(PrfAlg::HmacSha256.prf_plus(b"k", &[], 255 * 32).is_ok());
        assert!(
            PrfAlg::HmacSha256
                .prf_plus(b"k", &[], 255 * 32 + 1)
                .is_err()
        );
    }

    #[test]
    fn ct_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
