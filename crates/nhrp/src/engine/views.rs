//! The engine as the operator sees it (`show nhrp`): the cache with our own entry and the NHSs'
//! synthesized in front of the learned ones, and the NHSs' registration states. O(N): for
//! the operator's views, never on a packet's path.

use std::time::{Duration, Instant};

use crate::cache::{CacheEntry, EntryFlags, EntryKind};
use crate::status::{NhsState, NhsStatus};

use super::Engine;
use super::nhc::NhsPhase;

impl Engine {
    /// The cache as the operator sees it: own address, NHSs, then learned entries.
    pub fn cache_entries(&self, now: Instant) -> Vec<CacheEntry> {
        let own = CacheEntry {
            kind: EntryKind::Local,
            protocol_addr: self.config.protocol_addr,
            prefix_len: 32,
            next_hop: self.config.protocol_addr,
            nbma: self.config.nbma_addr,
            post_nat_nbma: self.public_nbma,
            flags: EntryFlags {
                unique: self.config.unique,
                nat: self.public_nbma.is_some_and(|p| p != self.config.nbma_addr),
                ..EntryFlags::default()
            },
            created: self.started.unwrap_or(now),
            expires: None,
            holding_time: self.config.holding_time,
            request_id: 0,
            refresh_at: None,
        };
        let nhs = self.nhs.iter().filter_map(|n| {
            let p = n.protocol_addr?;
            let expires = match n.phase {
                NhsPhase::Registered { expires, .. } => Some(expires),
                _ => None,
            };
            Some(CacheEntry {
                kind: EntryKind::Nhs,
                protocol_addr: p,
                prefix_len: 32,
                next_hop: p,
                nbma: n.config.nbma_addr,
                post_nat_nbma: None,
                flags: EntryFlags {
                    registered: n.is_up(now),
                    ..EntryFlags::default()
                },
                // The entry is configured, so it exists from the start: its age is not the
                // registration's (`show nhrp`'s NHS status and `show dmvpn`'s UpDn give that).
                created: self.started.unwrap_or(now),
                expires,
                holding_time: self.config.holding_time,
                request_id: n.registered_id.unwrap_or(0),
                refresh_at: None,
            })
        });
        std::iter::once(own)
            .chain(nhs)
            .chain(self.cache.values().filter(|e| e.is_live(now)).cloned())
            .collect()
    }

    /// NHS states (spoke).
    pub fn nhs_status(&self, now: Instant) -> Vec<NhsStatus> {
        self.nhs
            .iter()
            .map(|n| NhsStatus {
                protocol_addr: n.protocol_addr,
                nbma_addr: n.config.nbma_addr,
                multicast: n.config.multicast,
                state: if !n.active {
                    NhsState::Standby
                } else if n.is_up(now) {
                    NhsState::Up
                } else if matches!(n.phase, NhsPhase::ExpectRegistrationReply { .. }) {
                    NhsState::Registering
                } else {
                    NhsState::WaitingForSa
                },
                expires: match n.phase {
                    NhsPhase::Registered { expires, .. } => Some(expires),
                    NhsPhase::ExpectRegistrationReply {
                        registered_until, ..
                    } => registered_until,
                    _ => None,
                },
                retry_wait: match n.phase {
                    NhsPhase::ExpectRegistrationReply { wait, .. } => wait,
                    _ => Duration::ZERO,
                },
            })
            .collect()
    }
}
