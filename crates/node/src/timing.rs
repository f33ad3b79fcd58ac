//! When each stage of a phase 3 shortcut happened, for the operator's latency figures: the
//! Resolution Request sent (at once on a Traffic Indication, RFC 2332 §5.2.1 and the Cisco
//! redirect), its reply, the SA to the next hop up, the route installed. Sans-IO like the rest
//! of the node: every instant is the `now` of the call that saw the stage.
//!
//! Best effort and bounded: a shortcut whose stages were not all seen (learned before a
//! restart of the timer, refreshed rather than new) is simply not timed.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use crate::shortcuts::Shortcut;

/// At most this many shortcuts are timed while they wait for an SA; more are not timed (a
/// spoke resolving thousands of prefixes at once to peers without SAs).
pub const MAX_TIMED: usize = 1024;

/// The first two stages of a shortcut, known when its reply arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The Resolution Request was first sent.
    pub requested: Instant,
    /// Its reply arrived.
    pub replied: Instant,
}

/// Shortcut stages seen so far.
#[derive(Debug, Default)]
pub struct ShortcutTimer {
    /// The last resolution answered: the NHRP engine reports the reply's timing just before
    /// the route it teaches, so the next shortcut learned is the one it caused.
    last: Option<(Ipv4Addr, Answered)>,
    /// Learned shortcuts waiting for an SA (or for the next step of the same call).
    waiting: HashMap<Shortcut, Answered>,
}

fn covers((prefix, len, _): Shortcut, target: Ipv4Addr) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0);
    u32::from(prefix) & mask == u32::from(target) & mask
}

impl ShortcutTimer {
    /// A resolution of `target` first requested at `requested` was answered at `replied`.
    pub fn answered(&mut self, target: Ipv4Addr, requested: Instant, replied: Instant) {
        self.last = Some((target, Answered { requested, replied }));
    }

    /// NHRP taught the new shortcut `s`: it is timed if the last answer was for an address it
    /// covers.
    pub fn learned(&mut self, s: Shortcut) {
        let Some((target, a)) = self.last.take() else {
            return;
        };
        if covers(s, target) && (self.waiting.len() < MAX_TIMED || self.waiting.contains_key(&s)) {
            self.waiting.insert(s, a);
        }
    }

    /// `s`'s route is installed: its first two stages, if it was timed.
    pub fn installed(&mut self, s: Shortcut) -> Option<Answered> {
        self.waiting.remove(&s)
    }

    /// `s` went away before it was installed (withdrawn, IKE failed).
    pub fn forget(&mut self, s: Shortcut) {
        self.waiting.remove(&s);
    }

    /// Forgets every shortcut waiting for an SA to a next hop that `keep` rejects.
    pub fn retain(&mut self, mut keep: impl FnMut(&Shortcut) -> bool) {
        self.waiting.retain(|s, _| keep(s));
    }

    /// Shortcuts being timed.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether none is being timed.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn an_answer_times_the_shortcut_it_taught() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(30);
        let s = (ip("10.0.103.0"), 24, ip("10.250.0.3"));
        let mut t = ShortcutTimer::default();
        t.answered(ip("10.0.103.2"), t0, t1);
        t.learned(s);
        assert_eq!(
            t.installed(s),
            Some(Answered {
                requested: t0,
                replied: t1
            })
        );
        assert_eq!(t.installed(s), None, "timed once");
    }

    #[test]
    fn a_shortcut_not_covering_the_answer_is_not_timed() {
        let t0 = Instant::now();
        let mut t = ShortcutTimer::default();
        t.answered(ip("10.0.104.2"), t0, t0);
        let s = (ip("10.0.103.0"), 24, ip("10.250.0.3"));
        t.learned(s);
        assert_eq!(t.installed(s), None);
        // The answer is used up by the first shortcut learned after it.
        t.learned((ip("10.0.104.0"), 24, ip("10.250.0.4")));
        assert!(t.is_empty());
        let host = (ip("10.250.0.4"), 32, ip("10.250.0.4"));
        t.answered(ip("10.250.0.4"), t0, t0);
        t.learned(host);
        assert_eq!(t.len(), 1);
        t.forget(host);
        assert!(t.is_empty());
    }

    #[test]
    fn waiting_shortcuts_are_bounded() {
        let t0 = Instant::now();
        let mut t = ShortcutTimer::default();
        for i in 0..(MAX_TIMED as u32 + 10) {
            let a = Ipv4Addr::from(0x0a00_0000 + (i << 8));
            t.answered(a, t0, t0);
            t.learned((a, 24, ip("10.250.0.3")));
        }
        assert_eq!(t.len(), MAX_TIMED);
        t.retain(|_| false);
        assert!(t.is_empty());
    }
}
