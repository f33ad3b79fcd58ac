//! The anti-replay window (RFC 4303 §3.4.3) over 64-bit sequence numbers, and the
//! inference of the high-order ESN bits (RFC 4303 Appendix A2.2, RFC 4304).
//!
//! The window is a ring of 64-bit blocks indexed by `seq / 64` (the RFC 6479 layout): moving
//! the right edge clears whole blocks instead of shifting a bitmap, so a jump far ahead
//! costs at most one pass over the ring and a 4096-packet window costs the same per packet
//! as a 32-packet one.

use crate::Error;

/// Window size dmvpnd uses unless configured (docs/interop-notes.md §27: the receiver chooses).
pub const DEFAULT_WINDOW: u32 = 1024;
/// Largest window accepted.
pub const MAX_WINDOW: u32 = 1 << 16;

/// Why the window refused a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Left of the window (or 0, which no sender uses: RFC 4303 §3.3.3 starts at 1).
    TooOld,
    /// Inside the window and already received.
    Duplicate,
}

/// A sliding anti-replay window of configurable size.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    size: u64,
    /// Highest authenticated sequence number (0: none yet).
    top: u64,
    blocks: Box<[u64]>,
    mask: u64,
}

impl ReplayWindow {
    /// A window of `size` packets (1..=[`MAX_WINDOW`]). Allocates once, here.
    pub fn new(size: u32) -> Result<Self, Error> {
        if size == 0 || size > MAX_WINDOW {
            return Err(Error::ReplayWindowSize);
        }
        // One block more than the window spans, so the block holding the left edge is never
        // the block being cleared for the right edge.
        let n = (size.div_ceil(64) + 1).next_power_of_two();
        Ok(Self {
            size: u64::from(size),
            top: 0,
            blocks: vec![0u64; n as usize].into_boxed_slice(),
            mask: u64::from(n - 1),
        })
    }

    /// The configured size.
    pub fn size(&self) -> u32 {
        self.size as u32
    }

    /// Highest sequence number accepted so far.
    pub fn top(&self) -> u64 {
        self.top
    }

    fn slot(&self, seq: u64) -> (usize, u64) {
        (((seq >> 6) & self.mask) as usize, 1u64 << (seq & 63))
    }

    /// Whether `seq` would be accepted. Does not change the window: RFC 4303 §3.4.3 checks
    /// before the ICV and updates only after it verifies.
    pub fn check(&self, seq: u64) -> Result<(), Replay> {
        if seq == 0 {
            return Err(Replay::TooOld);
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= self.size {
            return Err(Replay::TooOld);
        }
        let (i, bit) = self.slot(seq);
        match self.blocks.get(i) {
            Some(b) if b & bit == 0 => Ok(()),
            _ => Err(Replay::Duplicate),
        }
    }

    /// Checks `seq` again (another core may have accepted it since [`Self::check`]) and
    /// marks it received, sliding the window if it is new on the right.
    pub fn check_and_update(&mut self, seq: u64) -> Result<(), Replay> {
        self.check(seq)?;
        if seq > self.top {
            let (old, new) = (self.top >> 6, seq >> 6);
            let stale = (new - old).min(self.mask + 1);
            for k in 1..=stale {
                if let Some(b) = self.blocks.get_mut(((old + k) & self.mask) as usize) {
                    *b = 0;
                }
            }
            self.top = seq;
        }
        let (i, bit) = self.slot(seq);
        if let Some(b) = self.blocks.get_mut(i) {
            *b |= bit;
        }
        Ok(())
    }

    /// The full 64-bit sequence number for a received low 32 bits under ESN, chosen relative
    /// to the window as RFC 4303 Appendix A2.2 specifies. `None` when the guess would fall
    /// below 0 or above 2^64 - 1 (such a packet cannot be valid).
    pub fn infer_esn(&self, seq_low: u32) -> Option<u64> {
        let th = self.top >> 32;
        let tl = self.top as u32;
        let w = self.size as u32;
        let high = if tl >= w - 1 {
            // Case A: the window lies within one sequence-number subspace.
            if seq_low >= tl - (w - 1) {
                th
            } else {
                th.checked_add(1)?
            }
        } else if seq_low >= tl.wrapping_sub(w - 1) {
            // Case B: the window spans two subspaces and seq_low is in the lower one.
            th.checked_sub(1)?
        } else {
            th
        };
        Some((high << 32) | u64::from(seq_low))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn basic_window_semantics() {
        let mut w = ReplayWindow::new(32).unwrap();
        assert_eq!(w.check(0), Err(Replay::TooOld));
        w.check_and_update(5).unwrap();
        assert_eq!(w.check(5), Err(Replay::Duplicate));
        w.check_and_update(3).unwrap();
        w.check_and_update(40).unwrap();
        assert_eq!(w.check(8), Err(Replay::TooOld));
        assert_eq!(w.check(9), Ok(()));
        w.check_and_update(1_000_000).unwrap();
        assert_eq!(w.check(999_969), Ok(()));
        assert_eq!(w.check(999_968), Err(Replay::TooOld));
        assert!(ReplayWindow::new(0).is_err());
        assert!(ReplayWindow::new(MAX_WINDOW + 1).is_err());
    }

    #[test]
    fn esn_inference_crosses_the_32_bit_boundary() {
        let mut w = ReplayWindow::new(64).unwrap();
        w.check_and_update(0xFFFF_FFF0).unwrap();
        assert_eq!(w.infer_esn(0xFFFF_FFF5), Some(0xFFFF_FFF5));
        assert_eq!(w.infer_esn(3), Some(0x1_0000_0003));
        w.check_and_update(0x1_0000_0003).unwrap();
        // Case B: still-valid packets from before the wrap map to the old subspace.
        assert_eq!(w.infer_esn(0xFFFF_FFF0), Some(0xFFFF_FFF0));
        assert_eq!(w.infer_esn(9), Some(0x1_0000_0009));
        // Nothing can lie below 0.
        assert_eq!(ReplayWindow::new(64).unwrap().infer_esn(0xFFFF_FFFF), None);
    }

    /// The reference model: the set of accepted numbers and the highest one.
    struct Model {
        seen: BTreeSet<u64>,
        max: u64,
        size: u64,
    }

    impl Model {
        fn accepts(&self, seq: u64) -> bool {
            seq != 0 && !self.seen.contains(&seq) && seq + self.size > self.max
        }
    }

    /// Sequence numbers: mostly near the current top (in order, reordered, or stale),
    /// duplicates of earlier ones, and occasional far jumps ahead.
    fn ops() -> impl Strategy<Value = Vec<(u8, u64, bool)>> {
        proptest::collection::vec(
            (0u8..10, any::<u64>(), proptest::bool::weighted(0.9)),
            1..400,
        )
    }

    fn run(size: u32, ops: Vec<(u8, u64, bool)>) -> Result<(), TestCaseError> {
        let mut w = ReplayWindow::new(size).unwrap();
        let mut m = Model {
            seen: BTreeSet::new(),
            max: 0,
            size: u64::from(size),
        };
        let mut history: Vec<u64> = Vec::new();
        let span = u64::from(size) * 2;
        for (kind, r, icv_ok) in ops {
            let seq = match kind {
                0..=3 => m.max + 1 + r % 4,
                4..=6 => m.max.saturating_sub(r % span),
                7 | 8 => history
                    .get((r as usize) % history.len().max(1))
                    .copied()
                    .unwrap_or(1),
                _ => m.max + 1 + r % (u64::from(size) * 200),
            };
            prop_assert_eq!(
                w.check(seq).is_ok(),
                m.accepts(seq),
                "check({}) top {}",
                seq,
                m.max
            );
            // A packet whose ICV fails must leave the window as it was.
            if icv_ok {
                let accepted = w.check_and_update(seq).is_ok();
                prop_assert_eq!(accepted, m.accepts(seq));
                if accepted {
                    m.seen.insert(seq);
                    m.max = m.max.max(seq);
                }
            }
            prop_assert_eq!(w.top(), m.max);
            history.push(seq);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn window_32_matches_model(ops in ops()) { run(32, ops)?; }
        #[test]
        fn window_1024_matches_model(ops in ops()) { run(1024, ops)?; }
        #[test]
        fn window_4096_matches_model(ops in ops()) { run(4096, ops)?; }

        #[test]
        fn esn_inference_recovers_any_seq_in_range(
            top in 1u64..u64::MAX / 2, ahead in 0u64..(1 << 32), size in prop::sample::select(vec![32u32, 1024, 4096]),
        ) {
            let mut w = ReplayWindow::new(size).unwrap();
            w.check_and_update(top).unwrap();
            // A2.2 recovers every seq in [top - W + 1, top + 2^32 - W].
            let seq = (top + 1).saturating_sub(u64::from(size)).max(1) + ahead % ((1 << 32) - 1);
            prop_assume!(seq <= top + (1 << 32) - u64::from(size));
            prop_assert_eq!(w.infer_esn(seq as u32), Some(seq));
        }
    }
}
