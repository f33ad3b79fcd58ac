//! Injectable randomness. Protocol engines take `&mut dyn Rng` so a test can
//! drive a hub and two spokes deterministically.

/// A source of random bytes.
pub trait Rng: Send {
    /// Fills `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]);

    /// A random u32.
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        u32::from_be_bytes(b)
    }

    /// A random u64.
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_be_bytes(b)
    }
}

/// The operating system's CSPRNG through the provider.
#[derive(Debug, Default)]
pub struct SystemRng(aws_lc_rs::rand::SystemRandom);

impl SystemRng {
    /// A new handle.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Rng for SystemRng {
    fn fill(&mut self, dest: &mut [u8]) {
        use aws_lc_rs::rand::SecureRandom;
        // The system RNG only fails if the kernel cannot supply entropy; there
        // is no safe way to continue keying then.
        if self.0.fill(dest).is_err() {
            std::process::abort();
        }
    }
}

/// A deterministic generator for tests and simulations. **Not** random in any
/// cryptographic sense: never use it to key a real SA.
#[derive(Debug, Clone)]
pub struct TestRng {
    state: u64,
}

impl TestRng {
    /// A generator that yields the same stream for the same seed.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next(&mut self) -> u64 {
        // splitmix64: tiny, full-period, good enough to spread test values.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Rng for TestRng {
    fn fill(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next().to_be_bytes();
            chunk.copy_from_slice(v.get(..chunk.len()).unwrap_or(&[]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rng_is_deterministic_and_seed_dependent() {
        let (mut a, mut b, mut c) = (TestRng::new(1), TestRng::new(1), TestRng::new(2));
        let (mut x, mut y, mut z) = ([0u8; 13], [0u8; 13], [0u8; 13]);
        a.fill(&mut x);
        b.fill(&mut y);
        c.fill(&mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn system_rng_fills() {
        let mut r = SystemRng::new();
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        r.fill(&mut a);
        r.fill(&mut b);
        assert_ne!(a, b);
    }
}
