//! Plain hashes: SHA-1 for IKEv2 NAT detection (RFC 7296 §2.23), which the
//! protocol fixes regardless of the negotiated PRF.

use aws_lc_rs::digest;

/// SHA-1 over the concatenation of `parts`.
pub fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha1_fips_180_abc() {
        assert_eq!(
            hex::encode(super::sha1(&[b"a", b"bc"])),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
