//! Key material that is wiped from memory when dropped.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Secret bytes (SKEYSEED, SK_*, KEYMAT, PSKs). Debug never prints them.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Takes ownership of `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Copies `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    /// `len` zero bytes, to be filled in place.
    pub fn zeroed(len: usize) -> Self {
        Self(vec![0; len])
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret bytes, mutably.
    pub fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty secret.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Splits off consecutive pieces of the given lengths (as IKE carves
    /// SK_d, SK_ei, ... out of one prf+ stream). `None` if too short.
    pub fn split(&self, lens: &[usize]) -> Option<Vec<Secret>> {
        let mut at = 0usize;
        let mut out = Vec::with_capacity(lens.len());
        for &n in lens {
            let end = at.checked_add(n)?;
            out.push(Secret::from_slice(self.0.get(at..end)?));
            at = end;
        }
        Some(out)
    }
}

impl core::fmt::Debug for Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let s = Secret::from_slice(b"hunter2");
        assert_eq!(format!("{s:?}"), "Secret(7 bytes)");
    }

    #[test]
    fn split_carves_in_order_and_checks_length() {
        let s = Secret::from_slice(&[1, 2, 3, 4, 5]);
        let parts = s.split(&[2, 3]).unwrap();
        assert_eq!(parts[0].expose(), &[1, 2]);
        assert_eq!(parts[1].expose(), &[3, 4, 5]);
        assert!(s.split(&[4, 2]).is_none());
    }
}
