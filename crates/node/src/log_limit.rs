//! Rate limits for the log lines a peer can cause at will (a wrong NHRP key, a failing
//! IKE_AUTH, an initiation refused by a flood): a few lines per peer and kind per interval,
//! then a count, reported as one "N similar messages suppressed" line when the interval ends
//! or with the next line let through. Without it one misconfigured or hostile spoke fills the
//! journal and hides everything else.
//!
//! Sans-IO like the engines: time is an argument and nothing is logged here; the caller logs
//! what the verdicts say. The table is capped (a flood from many addresses would otherwise grow
//! it): keys beyond the cap share one overflow entry, and how often that happened is counted.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Lines let through per key and interval.
pub const BURST: u32 = 5;
/// The interval.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Keys tracked at once; more share the overflow entry.
pub const MAX_KEYS: usize = 1024;

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; if `suppressed` is not zero, first say that many similar lines were suppressed
    /// (the previous interval's, not reported yet).
    Log { suppressed: u64 },
    /// Count it, do not log it.
    Suppress,
}

/// Who a summary is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject<K> {
    Key(K),
    /// The keys that found the table full, together.
    Overflow,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            start: now,
            logged: 1,
            suppressed: 0,
        }
    }

    /// Counts one line at `now` in a window known to be still open.
    fn count(&mut self, burst: u32) -> Verdict {
        if self.logged < burst {
            self.logged += 1;
            Verdict::Log { suppressed: 0 }
        } else {
            self.suppressed += 1;
            Verdict::Suppress
        }
    }
}

/// The limiter: per-key windows of `interval` holding up to `burst` logged lines.
#[derive(Debug)]
pub struct LogLimit<K> {
    burst: u32,
    interval: Duration,
    max_keys: usize,
    windows: HashMap<K, Window>,
    overflow: Option<Window>,
    /// Windows in the order they opened, which is the order they end (one interval for all):
    /// `poll_summaries` pops from the front instead of scanning the table. An entry whose
    /// window was reopened since is stale and skipped.
    ends: VecDeque<(Instant, K)>,
    /// Lines that went to the overflow entry because the table was full.
    overflowed: u64,
}

impl<K: Copy + Eq + Hash> LogLimit<K> {
    pub fn new(burst: u32, interval: Duration, max_keys: usize) -> Self {
        LogLimit {
            burst: burst.max(1),
            interval,
            max_keys,
            windows: HashMap::new(),
            overflow: None,
            ends: VecDeque::new(),
            overflowed: 0,
        }
    }

    /// The verdict for one line about `key` at `now`.
    pub fn check(&mut self, now: Instant, key: K) -> Verdict {
        let interval = self.interval;
        let burst = self.burst;
        if let Some(w) = self.windows.get_mut(&key) {
            if now.saturating_duration_since(w.start) < interval {
                return w.count(burst);
            }
            // Its interval ended before a summary was polled: report it with this line.
            let suppressed = w.suppressed;
            *w = Window::new(now);
            self.ends.push_back((now + interval, key));
            return Verdict::Log { suppressed };
        }
        if self.windows.len() < self.max_keys {
            self.windows.insert(key, Window::new(now));
            self.ends.push_back((now + interval, key));
            return Verdict::Log { suppressed: 0 };
        }
        self.overflowed += 1;
        match &mut self.overflow {
            Some(w) if now.saturating_duration_since(w.start) < interval => w.count(burst),
            slot => {
                let suppressed = slot.map_or(0, |w| w.suppressed);
                *slot = Some(Window::new(now));
                Verdict::Log { suppressed }
            }
        }
    }

    /// Closes the windows whose interval has ended by `now`, forgetting their keys, and
    /// returns those that suppressed lines, with how many: one summary line each.
    pub fn poll_summaries(&mut self, now: Instant) -> Vec<(Subject<K>, u64)> {
        let mut out = Vec::new();
        while let Some(&(end, key)) = self.ends.front() {
            if end > now {
                break;
            }
            self.ends.pop_front();
            let Some(w) = self.windows.get(&key) else {
                continue;
            };
            if w.start + self.interval != end {
                continue; // reopened: a later entry in `ends` closes it
            }
            if w.suppressed > 0 {
                out.push((Subject::Key(key), w.suppressed));
            }
            self.windows.remove(&key);
        }
        if let Some(w) = self.overflow
            && w.start + self.interval <= now
        {
            if w.suppressed > 0 {
                out.push((Subject::Overflow, w.suppressed));
            }
            self.overflow = None;
        }
        out
    }

    /// Keys with an open window (at most the cap).
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Lines whose key found the table full, since start.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }
}

impl<K: Copy + Eq + Hash> Default for LogLimit<K> {
    fn default() -> Self {
        LogLimit::new(BURST, INTERVAL, MAX_KEYS)
    }
}

/// The lines the node limits, one allowance each per peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogKind {
    NhrpAuthFailed,
    IkeAuthFailed,
    IkeInitiateFailed,
    NhrpErrorIndication,
}

impl LogKind {
    fn what(self) -> &'static str {
        match self {
            LogKind::NhrpAuthFailed => "NHRP authentication failure",
            LogKind::IkeAuthFailed => "IKE authentication failure",
            LogKind::IkeInitiateFailed => "IKE initiation failure",
            LogKind::NhrpErrorIndication => "NHRP error indication",
        }
    }
}

impl crate::Node {
    /// Whether a line of `kind` about `peer` may be logged now; says first how many similar
    /// lines were suppressed before it, if any.
    pub(crate) fn log_allowed(&mut self, now: Instant, peer: IpAddr, kind: LogKind) -> bool {
        match self.log_limit.check(now, (peer, kind)) {
            Verdict::Suppress => false,
            Verdict::Log { suppressed: 0 } => true,
            Verdict::Log { suppressed } => {
                log_summary(Subject::Key((peer, kind)), suppressed);
                true
            }
        }
    }

    /// The summaries of windows that ended (called from housekeeping).
    pub(crate) fn log_limit_summaries(&mut self, now: Instant) {
        for (subject, n) in self.log_limit.poll_summaries(now) {
            log_summary(subject, n);
        }
    }
}

fn log_summary(subject: Subject<(IpAddr, LogKind)>, n: u64) {
    match subject {
        Subject::Key((peer, kind)) => tracing::warn!(
            %peer,
            "{n} similar messages suppressed ({} from this peer, more than {BURST} in {} s)",
            kind.what(),
            INTERVAL.as_secs()
        ),
        Subject::Overflow => tracing::warn!(
            "{n} similar messages suppressed (from more than {MAX_KEYS} peers at once, \
             more than {BURST} in {} s)",
            INTERVAL.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: Verdict = Verdict::Log { suppressed: 0 };

    fn limiter() -> LogLimit<u32> {
        LogLimit::new(3, Duration::from_secs(60), 4)
    }

    #[test]
    fn a_burst_then_a_count_then_one_summary() {
        let t0 = Instant::now();
        let mut l = limiter();
        let s = Duration::from_secs;
        let got: Vec<Verdict> = (0..10).map(|i| l.check(t0 + s(i), 7)).collect();
        assert_eq!(&got[..3], &[LOG; 3]);
        assert!(got[3..].iter().all(|v| *v == Verdict::Suppress), "{got:?}");
        // Another key has its own allowance.
        assert_eq!(l.check(t0 + s(10), 8), LOG);
        assert_eq!(l.poll_summaries(t0 + s(59)), vec![]);
        assert_eq!(l.poll_summaries(t0 + s(60)), vec![(Subject::Key(7), 7)]);
        // Key 8 suppressed nothing: no summary, but its window still closes on time.
        assert_eq!(l.poll_summaries(t0 + s(70)), vec![]);
        assert!(l.is_empty());
        // A new interval starts with a fresh burst and nothing owed.
        assert_eq!(l.check(t0 + s(71), 7), LOG);
    }

    #[test]
    fn the_next_line_carries_the_count_when_no_summary_was_polled() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = limiter();
        for i in 0..5 {
            l.check(t0 + s(i), 1);
        }
        assert_eq!(l.check(t0 + s(61), 1), Verdict::Log { suppressed: 2 });
        assert_eq!(l.check(t0 + s(62), 1), LOG);
        // The stale end of the first window closes nothing; the reopened one ends at 121 s.
        assert_eq!(l.poll_summaries(t0 + s(100)), vec![]);
        assert_eq!(l.len(), 1);
        assert_eq!(l.poll_summaries(t0 + s(121)), vec![]);
        assert!(l.is_empty());
    }

    #[test]
    fn the_table_is_capped_and_the_rest_share_one_entry() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = limiter();
        for k in 0..4 {
            assert_eq!(l.check(t0, k), LOG);
        }
        // A flood of new keys: the table stays at its cap, the overflow entry limits them as
        // one key, and every one is counted.
        let got: Vec<Verdict> = (100..1100).map(|k| l.check(t0 + s(1), k)).collect();
        assert_eq!(l.len(), 4);
        assert_eq!(got.iter().filter(|v| **v == LOG).count(), 3);
        assert_eq!(l.overflowed(), 1000);
        let summaries = l.poll_summaries(t0 + s(61));
        assert_eq!(summaries, vec![(Subject::Overflow, 997)]);
        assert!(l.is_empty());
        // Room again once the windows closed.
        assert_eq!(l.check(t0 + s(62), 500), LOG);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn the_queue_of_ends_stays_bounded() {
        let t0 = Instant::now();
        let mut l = limiter();
        // One key logging every 61 s for a day, polled as a node would (every 2 s).
        let mut t = t0;
        for _ in 0..1500 {
            l.check(t, 1);
            t += Duration::from_secs(61);
            l.poll_summaries(t);
            assert!(l.ends.len() <= 1, "{}", l.ends.len());
        }
    }
}
