//! How long the control loop stays busy with one event. The loop runs IKE, NHRP, DPD, the
//! control socket and the metrics scrape on one task: while one event is handled every other
//! waits, so the longest such turn is what a peer's retransmission or a DPD probe may have to
//! wait (issue 12: never more than 50 ms). One turn = the event's handler and the transmits,
//! routes and table updates it caused (`carry_out`).

use std::time::{Duration, Instant};

/// A turn longer than this is counted and, at most every [`WARN_SPACING`], logged.
pub const BUDGET: Duration = Duration::from_millis(50);
const WARN_SPACING: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct LoopStats {
    turns: u64,
    longest: Duration,
    longest_what: &'static str,
    over_budget: u64,
    /// Turns over the budget since the last warning, and when that was.
    unreported: u64,
    last_warning: Option<Instant>,
}

impl LoopStats {
    /// One turn of the loop handling `what` took `took`, ending at `now`.
    pub fn record(&mut self, now: Instant, what: &'static str, took: Duration) {
        self.turns += 1;
        if took > self.longest {
            self.longest = took;
            self.longest_what = what;
        }
        if took <= BUDGET {
            return;
        }
        self.over_budget += 1;
        self.unreported += 1;
        if self
            .last_warning
            .is_none_or(|t| now.saturating_duration_since(t) >= WARN_SPACING)
        {
            tracing::warn!(
                event = what,
                took_ms = took.as_millis(),
                turns_over_budget = self.unreported,
                budget_ms = BUDGET.as_millis(),
                "control loop busy past its budget"
            );
            self.unreported = 0;
            self.last_warning = Some(now);
        }
    }

    /// (turns, longest turn, what it handled, turns over the budget).
    pub fn summary(&self) -> (u64, Duration, &'static str, u64) {
        (
            self.turns,
            self.longest,
            self.longest_what,
            self.over_budget,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_longest_turn_and_counts_those_over_budget() {
        let t0 = Instant::now();
        let mut s = LoopStats::default();
        s.record(t0, "underlay", Duration::from_millis(2));
        s.record(t0, "timeout", Duration::from_millis(70));
        s.record(t0, "control", Duration::from_millis(60));
        s.record(t0, "underlay", Duration::from_millis(1));
        assert_eq!(s.summary(), (4, Duration::from_millis(70), "timeout", 2));
        // The second turn over budget came within the warning spacing: not reported yet.
        assert_eq!(s.unreported, 1);
        s.record(t0 + WARN_SPACING, "slow_path", Duration::from_millis(51));
        assert_eq!(s.unreported, 0);
        assert_eq!(s.summary().3, 3);
    }
}
