//! One facade over the crypto provider for dmvpnd.
//!
//! - [`aead`]: AES-256-GCM as ESP uses it (RFC 4106) and as the IKEv2 SK
//!   payload uses it (RFC 5282): 32-byte key + 4-byte salt, 8-byte explicit IV,
//!   16-byte ICV, sealed and opened in place.
//! - [`prf`]: HMAC-SHA2-256/384/512 (RFC 4868) and IKEv2 prf+ (RFC 7296 §2.13).
//! - [`dh`]: ECDH groups 19 and 20 in IKE's encoding (RFC 5903) and group 31,
//!   X25519 (RFC 8031).
//! - [`rng`]: an injectable random source, so protocol engines are
//!   deterministic under test.
//! - [`Secret`]: key material that is zeroized on drop.
//!
//! Providers, chosen by measurement (see `benches/` and the README): AES-256-GCM
//! through ring, which sealed fastest on this hardware; HMAC and ECDH through
//! aws-lc-rs (as fast as ring for P-256, and it builds ECDH keys from our
//! injectable RNG and from RFC test vectors, which ring's sealed RNG trait does
//! not allow).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod aead;
pub mod dh;
pub mod hash;
pub mod prf;
pub mod rng;
mod secret;

pub use aead::AesGcm256;
pub use dh::{DhAlg, DhPrivate};
pub use prf::PrfAlg;
pub use rng::{Rng, SystemRng, TestRng};
pub use secret::Secret;

/// A crypto operation failed. Deliberately carries no detail about *why* an
/// authentication failed, so nothing leaks to a peer through error paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A key, salt or IV had the wrong length.
    #[error("bad key length")]
    KeyLength,
    /// The ICV did not verify.
    #[error("authentication failed")]
    Auth,
    /// The buffer is too short to hold what the operation needs.
    #[error("buffer too short")]
    BufferTooShort,
    /// The peer's public value is malformed or not on the curve.
    #[error("invalid public value")]
    PublicKey,
    /// The provider refused an operation (key generation, agreement).
    #[error("crypto provider failure")]
    Provider,
}
