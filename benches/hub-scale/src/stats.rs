//! Measurement helpers: /proc parsing for the hub's CPU time and RSS, percentiles and the
//! per-second histogram of registrations.

use std::time::Duration;

/// utime + stime (clock ticks) from the text of `/proc/PID/stat`. The command name (field 2)
/// is in parentheses and may hold spaces or parentheses itself, so fields are counted after
/// the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut f = rest.split_ascii_whitespace();
    // After the comm: state (3), ppid (4), ... utime is field 14, stime 15.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `Vm…:` line of `/proc/PID/status` in bytes (the kernel writes kB).
pub fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        let mut it = v.split_ascii_whitespace();
        let n: u64 = it.next()?.parse().ok()?;
        (it.next() == Some("kB")).then_some(n * 1024)
    })
}

/// A process's counters as /proc shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// utime + stime in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set in bytes.
    pub rss: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn sample_proc(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_ticks: parse_stat_cpu_ticks(&stat)?,
        rss: parse_status_kb(&status, "VmRSS")?,
    })
}

/// The `p`-th percentile (0..=100) by nearest rank of `sorted` (ascending); `None` if empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Counts per whole second since the start: `offsets` are times since the start.
pub fn per_second(offsets: impl IntoIterator<Item = Duration>) -> Vec<u64> {
    let mut buckets: Vec<u64> = Vec::new();
    for o in offsets {
        let i = o.as_secs() as usize;
        if buckets.len() <= i {
            buckets.resize(i + 1, 0);
        }
        if let Some(b) = buckets.get_mut(i) {
            *b += 1;
        }
    }
    buckets
}

/// Milliseconds with three decimals, for tables and JSON.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_counts_fields_after_the_last_parenthesis() {
        // A comm with a space and a parenthesis, as a kernel thread or a renamed process has.
        let stat = "4242 (dmv pnd) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 517 93 0 0 20 0 \
                    6 0 123456 987654 3210 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(517 + 93));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn status_kb_reads_one_key_in_bytes() {
        let status = "Name:\tdmvpnd\nVmPeak:\t  99999 kB\nVmRSS:\t   15360 kB\nThreads:\t6\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(15360 * 1024));
        assert_eq!(parse_status_kb(status, "VmHWM"), None);
        assert_eq!(parse_status_kb("VmRSS:\t12 pages\n", "VmRSS"), None);
        // A key that is a prefix of another must not match it.
        assert_eq!(parse_status_kb("VmRSSX:\t1 kB\n", "VmRSS"), None);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50.0), None);
        let one = [Duration::from_millis(7)];
        assert_eq!(percentile(&one, 99.0), Some(Duration::from_millis(7)));
    }

    #[test]
    fn per_second_buckets_include_empty_seconds() {
        let b = per_second([0, 999, 1000, 3500].into_iter().map(Duration::from_millis));
        assert_eq!(b, vec![2, 1, 0, 1]);
        assert!(per_second([]).is_empty());
    }
}
