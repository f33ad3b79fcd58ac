//! A periodic walk over a sharded table ([`dmvpn_snapmap::SnapMap`]) split into steps, so that
//! no single turn of the control loop pays for every entry.
//!
//! The traffic sample (which peers carried packets, for DPD on demand and the rekey switch)
//! reads every outbound path and inbound SA: measured on a hub with 50,000 spokes, one pass
//! held the loop for 20–50 ms. A [`Sweep`] visits the shards in order, a step at a time, each
//! step stopping once it has seen `budget` entries; the next step is due at once (the loop
//! serves whatever else is ready in between), and once the last shard is done the next sweep
//! starts `period` after this one began. A small table is walked in one step, as before.

use std::time::{Duration, Instant};

/// Where a walk over `shards` shards stands.
#[derive(Debug, Clone, Copy)]
pub struct Sweep {
    shards: usize,
    budget: usize,
    period: Duration,
    /// The next shard to visit; `shards` never (a finished sweep starts again at 0).
    next: usize,
    /// When the sweep under way began.
    began: Option<Instant>,
}

impl Sweep {
    /// A walk over `shards` shards, at most about `budget` entries a step (a shard is never
    /// split, so a step may pass the budget by one shard), a new sweep every `period`.
    pub const fn new(shards: usize, budget: usize, period: Duration) -> Self {
        Self {
            shards,
            budget,
            period,
            next: 0,
            began: None,
        }
    }

    /// One step at `now`: `visit(i)` for the next shards, in order, until they returned
    /// `budget` entries between them or the last shard is done. Returns when the next step
    /// is due: `now` while the sweep is under way, else `period` after it began.
    pub fn step(&mut self, now: Instant, mut visit: impl FnMut(usize) -> usize) -> Instant {
        let began = *self.began.get_or_insert(now);
        let mut seen = 0;
        while self.next < self.shards && seen < self.budget {
            seen += visit(self.next);
            self.next += 1;
        }
        if self.next < self.shards {
            return now;
        }
        self.next = 0;
        self.began = None;
        began + self.period
    }

    /// Whether a sweep is under way (some shards visited, others not yet).
    #[cfg(test)]
    fn under_way(&self) -> bool {
        self.began.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(250);

    #[test]
    fn a_small_table_is_walked_in_one_step_each_period() {
        let t0 = Instant::now();
        let mut s = Sweep::new(8, 100, PERIOD);
        let mut visited = Vec::new();
        let next = s.step(t0, |i| {
            visited.push(i);
            3
        });
        assert_eq!(visited, (0..8).collect::<Vec<_>>());
        assert_eq!(next, t0 + PERIOD);
        assert!(!s.under_way());
    }

    #[test]
    fn a_large_table_is_walked_in_steps_of_the_budget_each_shard_once() {
        let t0 = Instant::now();
        let sizes = [40, 10, 70, 5, 5, 5, 90, 20];
        let mut s = Sweep::new(sizes.len(), 50, PERIOD);
        let mut steps: Vec<Vec<usize>> = Vec::new();
        let mut now = t0;
        loop {
            let mut this = Vec::new();
            let next = s.step(now, |i| {
                this.push(i);
                sizes[i]
            });
            steps.push(this);
            if next > now {
                // Finished: the next sweep starts a period after this one began.
                assert_eq!(next, t0 + PERIOD);
                break;
            }
            assert!(s.under_way());
            now += Duration::from_millis(1);
        }
        // Each step stops once it has seen the budget: 40+10, 70, 5+5+5+90, 20.
        assert_eq!(steps, vec![vec![0, 1], vec![2], vec![3, 4, 5, 6], vec![7]]);
        // A second sweep starts at shard 0 again.
        let mut first = None;
        s.step(t0 + PERIOD, |i| {
            first.get_or_insert(i);
            sizes[i]
        });
        assert_eq!(first, Some(0));
    }

    #[test]
    fn a_sweep_slower_than_its_period_is_due_again_at_once() {
        let t0 = Instant::now();
        let mut s = Sweep::new(2, 1, PERIOD);
        assert_eq!(s.step(t0, |_| 1), t0);
        let late = t0 + 2 * PERIOD;
        // Began at t0: the next sweep is overdue, so it is due now (in the past).
        assert!(s.step(late, |_| 1) <= late);
    }
}
