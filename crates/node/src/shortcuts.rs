//! NHRP shortcut routes (phase 3): learned from resolution replies, installed as kernel routes
//! only once an SA to the next hop's NBMA address exists, so a peer that refuses IKE never
//! turns a working path via the hub into a blackhole.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

/// One shortcut: prefix, prefix length, tunnel next hop.
pub type Shortcut = (Ipv4Addr, u8, Ipv4Addr);

/// Shortcuts waiting for an SA, and those installed.
#[derive(Debug, Default)]
pub struct Shortcuts {
    /// Waiting for an SA to the NBMA address (the key).
    pending: HashMap<Ipv4Addr, Vec<Shortcut>>,
    /// Installed (as far as NHRP is concerned; a connected /32 needs no kernel route).
    installed: HashSet<Shortcut>,
}

impl Shortcuts {
    /// NHRP learned `s`: it is now one of ours, waiting for an SA to `wait_for` if given.
    pub fn learned(&mut self, s: Shortcut, wait_for: Option<Ipv4Addr>) {
        self.installed.insert(s);
        if let Some(nbma) = wait_for {
            self.pending.entry(nbma).or_default().push(s);
        }
    }

    /// Whether NHRP gave us `s` already (a refresh rather than a new shortcut).
    pub fn contains(&self, s: &Shortcut) -> bool {
        self.installed.contains(s)
    }

    /// The SA to `nbma` is up: the shortcuts that waited for it.
    pub fn take_pending(&mut self, nbma: Ipv4Addr) -> Vec<Shortcut> {
        self.pending.remove(&nbma).unwrap_or_default()
    }

    /// Whether shortcuts wait for an SA to `nbma`.
    pub fn waits_for(&self, nbma: Ipv4Addr) -> bool {
        self.pending.get(&nbma).is_some_and(|v| !v.is_empty())
    }

    /// The NBMA addresses shortcuts wait for an SA to.
    pub fn waiting_nbmas(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.pending
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, _)| *n)
    }

    /// IKE toward `nbma` failed: its waiting shortcuts are not installed (NHRP withdraws them).
    pub fn drop_pending(&mut self, nbma: Ipv4Addr) {
        self.pending.remove(&nbma);
    }

    /// NHRP withdrew `s`; returns whether it was one of ours.
    pub fn withdrawn(&mut self, s: Shortcut) -> bool {
        for routes in self.pending.values_mut() {
            routes.retain(|r| *r != s);
        }
        self.installed.remove(&s)
    }

    /// Every shortcut NHRP gave us.
    pub fn iter(&self) -> impl Iterator<Item = &Shortcut> {
        self.installed.iter()
    }

    /// Forgets them all (shutdown), returning them.
    pub fn take_all(&mut self) -> HashSet<Shortcut> {
        self.pending.clear();
        std::mem::take(&mut self.installed)
    }
}
