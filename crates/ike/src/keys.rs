//! Key derivation and authentication: SKEYSEED and SK_* (RFC 7296 §2.14),
//! rekeyed IKE SA keys (§2.18), Child SA KEYMAT (§2.17), the PSK AUTH value
//! (§2.15) and NAT detection hashes (§2.23). AES-GCM keys are 36 bytes (key ‖
//! salt) and there is no integrity key (RFC 5282 §7.1).

use std::net::{IpAddr, SocketAddr};

use dmvpn_crypto::{AesGcm256, PrfAlg, Secret, hash};

use crate::message::Identification;

/// Key material for one IKE SA.
#[derive(Debug, Clone)]
pub struct IkeKeys {
    /// The negotiated PRF.
    pub prf: PrfAlg,
    /// SK_d: seeds Child SA keys and the rekeyed IKE SA.
    pub sk_d: Secret,
    /// SK_ei: protects initiator → responder (key ‖ salt).
    pub sk_ei: Secret,
    /// SK_er: protects responder → initiator.
    pub sk_er: Secret,
    /// SK_pi: for the initiator's AUTH.
    pub sk_pi: Secret,
    /// SK_pr: for the responder's AUTH.
    pub sk_pr: Secret,
}

/// SKEYSEED = prf(Ni | Nr, g^ir) (§2.14).
pub fn skeyseed(prf: PrfAlg, nonce_i: &[u8], nonce_r: &[u8], gir: &[u8]) -> Secret {
    let mut key = Vec::with_capacity(nonce_i.len() + nonce_r.len());
    key.extend_from_slice(nonce_i);
    key.extend_from_slice(nonce_r);
    let s = prf.prf(&key, &[gir]);
    zeroize::Zeroize::zeroize(&mut key);
    s
}

impl IkeKeys {
    /// Derives the keys of a new IKE SA from IKE_SA_INIT (§2.14).
    pub fn derive(
        prf: PrfAlg,
        nonce_i: &[u8],
        nonce_r: &[u8],
        gir: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> Result<Self, dmvpn_crypto::Error> {
        let seed = skeyseed(prf, nonce_i, nonce_r, gir);
        Self::from_skeyseed(prf, &seed, nonce_i, nonce_r, spi_i, spi_r)
    }

    /// Derives the keys of an IKE SA created by rekeying (§2.18):
    /// SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) with the *old* SA's
    /// PRF, then the new PRF for prf+.
    #[allow(clippy::too_many_arguments)]
    pub fn derive_rekey(
        old_prf: PrfAlg,
        old_sk_d: &Secret,
        new_prf: PrfAlg,
        gir: &[u8],
        nonce_i: &[u8],
        nonce_r: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> Result<Self, dmvpn_crypto::Error> {
        let seed = old_prf.prf(old_sk_d.expose(), &[gir, nonce_i, nonce_r]);
        Self::from_skeyseed(new_prf, &seed, nonce_i, nonce_r, spi_i, spi_r)
    }

    fn from_skeyseed(
        prf: PrfAlg,
        seed: &Secret,
        nonce_i: &[u8],
        nonce_r: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> Result<Self, dmvpn_crypto::Error> {
        let p = prf.output_len();
        let e = AesGcm256::KEYMAT_LEN;
        // {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}; SK_a* are
        // empty with a combined-mode cipher (RFC 5282 §7.1).
        let lens = [p, e, e, p, p];
        let total: usize = lens.iter().sum();
        let stream = prf.prf_plus(
            seed.expose(),
            &[nonce_i, nonce_r, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()],
            total,
        )?;
        let mut parts = stream
            .split(&lens)
            .ok_or(dmvpn_crypto::Error::KeyLength)?
            .into_iter();
        let mut next = || parts.next().ok_or(dmvpn_crypto::Error::KeyLength);
        Ok(Self {
            prf,
            sk_d: next()?,
            sk_ei: next()?,
            sk_er: next()?,
            sk_pi: next()?,
            sk_pr: next()?,
        })
    }
}

/// Child SA key material (§2.17): KEYMAT = prf+(SK_d, [g^ir (new) |] Ni |
/// Nr). The initiator → responder SA takes its keys first.
#[derive(Debug, Clone)]
pub struct ChildKeys {
    /// Key ‖ salt for the SA carrying initiator → responder traffic.
    pub i_to_r: Secret,
    /// Key ‖ salt for responder → initiator.
    pub r_to_i: Secret,
}

/// Derives Child SA keys; `gir` is the fresh D-H secret with PFS (§2.17).
pub fn child_keys(
    prf: PrfAlg,
    sk_d: &Secret,
    gir: Option<&[u8]>,
    nonce_i: &[u8],
    nonce_r: &[u8],
) -> Result<ChildKeys, dmvpn_crypto::Error> {
    let e = AesGcm256::KEYMAT_LEN;
    let km = keymat(prf, sk_d, gir, nonce_i, nonce_r, 2 * e)?;
    let mut parts = km.split(&[e, e]).ok_or(dmvpn_crypto::Error::KeyLength)?;
    let r_to_i = parts.pop().ok_or(dmvpn_crypto::Error::KeyLength)?;
    let i_to_r = parts.pop().ok_or(dmvpn_crypto::Error::KeyLength)?;
    Ok(ChildKeys { i_to_r, r_to_i })
}

/// Raw KEYMAT of any length (§2.17).
pub fn keymat(
    prf: PrfAlg,
    sk_d: &Secret,
    gir: Option<&[u8]>,
    nonce_i: &[u8],
    nonce_r: &[u8],
    len: usize,
) -> Result<Secret, dmvpn_crypto::Error> {
    match gir {
        Some(g) => prf.prf_plus(sk_d.expose(), &[g, nonce_i, nonce_r], len),
        None => prf.prf_plus(sk_d.expose(), &[nonce_i, nonce_r], len),
    }
}

/// The key pad of §2.15.
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// PSK authentication data (§2.15):
/// AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>) with
/// SignedOctets = RealMessage | Nonce(peer) | prf(SK_p, RestOfIDPayload).
pub fn psk_auth(
    prf: PrfAlg,
    psk: &[u8],
    real_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &Secret,
    id: &Identification,
) -> Secret {
    let maced_id = prf.prf(sk_p.expose(), &[&id.body()]);
    let k = prf.prf(psk, &[KEY_PAD]);
    prf.prf(k.expose(), &[real_message, peer_nonce, maced_id.expose()])
}

/// NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | Port) (§2.23).
pub fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> [u8; 20] {
    let port = addr.port().to_be_bytes();
    match addr.ip() {
        IpAddr::V4(a) => hash::sha1(&[
            &spi_i.to_be_bytes(),
            &spi_r.to_be_bytes(),
            &a.octets(),
            &port,
        ]),
        IpAddr::V6(a) => hash::sha1(&[
            &spi_i.to_be_bytes(),
            &spi_r.to_be_bytes(),
            &a.octets(),
            &port,
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    // RFC 5869 A.1 as an IKEv2 known answer: SKEYSEED = prf(Ni | Nr, g^ir)
    // is HKDF-Extract(salt = Ni | Nr, IKM = g^ir), and child KEYMAT without
    // PFS, prf+(SK_d, Ni | Nr), is HKDF-Expand(PRK = SK_d, info = Ni | Nr).
    #[test]
    fn skeyseed_and_keymat_match_rfc5869_a1() {
        let salt = h("000102030405060708090a0b0c");
        let (ni, nr) = salt.split_at(6);
        let gir = [0x0bu8; 22];
        let seed = skeyseed(PrfAlg::HmacSha256, ni, nr, &gir);
        assert_eq!(
            seed.expose(),
            h("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
        );
        let info = h("f0f1f2f3f4f5f6f7f8f9");
        let (ni2, nr2) = info.split_at(4);
        let km = keymat(PrfAlg::HmacSha256, &seed, None, ni2, nr2, 42).unwrap();
        assert_eq!(
            km.expose(),
            h(
                "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
            )
        );
        // With PFS the new g^ir goes first in the seed (§2.17): same as the
        // info string being g^ir | Ni | Nr.
        let (g, rest) = info.split_at(2);
        let (a, b) = rest.split_at(3);
        let km_pfs = keymat(PrfAlg::HmacSha256, &seed, Some(g), a, b, 42).unwrap();
        assert_eq!(km_pfs.expose(), km.expose());
    }

    #[test]
    fn ike_keys_layout_and_child_split() {
        let k = IkeKeys::derive(PrfAlg::HmacSha512, &[1; 32], &[2; 32], &[3; 32], 10, 20).unwrap();
        assert_eq!(k.sk_d.len(), 64);
        assert_eq!(k.sk_ei.len(), 36);
        assert_eq!(k.sk_pr.len(), 64);
        // prf+ is one stream: SK_ei is bytes 64..100 of it.
        let seed = skeyseed(PrfAlg::HmacSha512, &[1; 32], &[2; 32], &[3; 32]);
        let stream = PrfAlg::HmacSha512
            .prf_plus(
                seed.expose(),
                &[
                    &[1; 32],
                    &[2; 32],
                    &10u64.to_be_bytes(),
                    &20u64.to_be_bytes(),
                ],
                300,
            )
            .unwrap();
        assert_eq!(k.sk_ei.expose(), &stream.expose()[64..100]);
        assert_eq!(k.sk_er.expose(), &stream.expose()[100..136]);
        assert_eq!(k.sk_pi.expose(), &stream.expose()[136..200]);
        let c = child_keys(PrfAlg::HmacSha512, &k.sk_d, None, &[1; 32], &[2; 32]).unwrap();
        let km = keymat(PrfAlg::HmacSha512, &k.sk_d, None, &[1; 32], &[2; 32], 72).unwrap();
        assert_eq!(c.i_to_r.expose(), &km.expose()[..36]);
        assert_eq!(c.r_to_i.expose(), &km.expose()[36..]);
        // The rekey seed uses the old SK_d with g^ir | Ni | Nr.
        let r = IkeKeys::derive_rekey(
            PrfAlg::HmacSha512,
            &k.sk_d,
            PrfAlg::HmacSha256,
            &[4; 32],
            &[5; 16],
            &[6; 16],
            1,
            2,
        )
        .unwrap();
        let seed2 = PrfAlg::HmacSha512.prf(k.sk_d.expose(), &[&[4; 32], &[5; 16], &[6; 16]]);
        let r2 =
            IkeKeys::from_skeyseed(PrfAlg::HmacSha256, &seed2, &[5; 16], &[6; 16], 1, 2).unwrap();
        assert_eq!(r.sk_d, r2.sk_d);
        assert_eq!(r.sk_d.len(), 32);
    }

    #[test]
    fn psk_auth_is_prf_of_prf() {
        let id = Identification::from_ip("198.51.100.3".parse().unwrap());
        let skp = Secret::from_slice(&[5; 64]);
        let a = psk_auth(PrfAlg::HmacSha512, b"secret", b"msg", b"nonce", &skp, &id);
        let inner = PrfAlg::HmacSha512.prf(b"secret", &[b"Key Pad for IKEv2"]);
        let mac = PrfAlg::HmacSha512.prf(&[5; 64], &[&[1, 0, 0, 0, 198, 51, 100, 3]]);
        let want = PrfAlg::HmacSha512.prf(inner.expose(), &[b"msgnonce", mac.expose()]);
        assert_eq!(a, want);
        assert_ne!(
            a,
            psk_auth(PrfAlg::HmacSha512, b"secreT", b"msg", b"nonce", &skp, &id)
        );
    }
}
