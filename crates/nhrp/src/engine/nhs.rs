//! Next hop server: Registration Requests (RFC 2332 §5.2.3) with the Cisco
//! `unique` flag and NAT address extension (docs/interop-notes.md §6 and §8), and
//! Purge Requests (§5.2.5).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use crate::cache::{CacheEntry, EntryFlags, EntryKind};
use crate::codes::{CieCode, ExtensionType, Flags, PacketType};
use crate::counters::DropReason;
use crate::packet::{Body, Cie, Packet, ip_bytes};

use super::{DEFAULT_HOP_COUNT, Engine, Event, covers, host_len, mask, secs16};

impl Engine {
    /// Hub: a Registration Request (RFC 2332 §5.2.3). Each CIE is registered or refused with its
    /// own code, and the reply goes back to the observed (post-NAT) NBMA address.
    pub(super) fn on_registration_request(
        &mut self,
        now: Instant,
        from_nbma: IpAddr,
        req: &Packet,
    ) {
        let (Some(src_proto), Some(src_nbma)) = (req.src_protocol_ip(), req.src_nbma_ip()) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let forwarded = req
            .extension_cies(ExtensionType::FORWARD_TRANSIT_RECORD)
            .is_some_and(|c| !c.is_empty());
        let mut replies = Vec::with_capacity(req.cies().len());
        for cie in req.cies() {
            let client = cie.client_protocol_ip().unwrap_or(src_proto);
            let claimed = cie.client_nbma_ip().unwrap_or(src_nbma);
            let code = self.register_client(now, client, claimed, from_nbma, cie, req);
            // The reply carries the holding time we keep the entry for (clamped), so the
            // registrant refreshes in time (RFC 2332 §5.2.4 copies the CIE into the reply).
            replies.push(Cie {
                code,
                holding_time: secs16(self.peer_holding_time(cie.holding_time)),
                ..cie.clone()
            });
        }
        let mut reply = req.clone();
        reply.packet_type = PacketType::REGISTRATION_REPLY;
        reply.hop_count = DEFAULT_HOP_COUNT;
        if let Body::Common { cies, .. } = &mut reply.body {
            *cies = replies;
        }
        // docs/interop-notes.md §8: the first-hop NHS that sees a claimed NBMA
        // different from the outer source adds the observed address.
        let nat_seen = !forwarded && from_nbma != src_nbma;
        let mtu = self.config.mtu;
        reply.extensions = self.reply_extensions(req, |c| {
            let mut v = c.to_vec();
            if nat_seen {
                v.push(Cie {
                    prefix_len: 32,
                    mtu,
                    client_nbma: ip_bytes(from_nbma),
                    client_protocol: ip_bytes(src_proto),
                    ..Cie::default()
                });
            }
            v
        });
        self.send(now, from_nbma, &reply);
    }

    /// Registers one CIE's client (its prefix from the CIE, the NBMA it
    /// `claimed`, the outer source it was `observed` from) and returns the
    /// CIE code for the reply; our own address and entries that are not
    /// dynamic are refused.
    fn register_client(
        &mut self,
        now: Instant,
        client: IpAddr,
        claimed: IpAddr,
        observed: IpAddr,
        cie: &Cie,
        req: &Packet,
    ) -> CieCode {
        let unique = req.flags() & Flags::REGISTRATION_U != 0;
        let len = host_len(cie.prefix_len);
        let key = (mask(client, len), len);
        if !client.is_ipv4() || !claimed.is_ipv4() {
            return CieCode::ADMINISTRATIVELY_PROHIBITED;
        }
        // A spoke registers its host address (/32, or 0xFF with `unique`: Cisco, FRR and we
        // send nothing else). A shorter prefix would be keyed apart from the address's own
        // /32 entry, so `conflict` would never see the live holder, while its next hop is
        // that address: the hub's mapping for it (the lowest key with that next hop) would
        // move to the registrant (review of issue 13).
        if len != 32 {
            return CieCode::ADMINISTRATIVELY_PROHIBITED;
        }
        // Our own address, or one outside the tunnel prefix, is no spoke's to register (a
        // hostile spoke could otherwise claim any address a route points at). A hub addressed
        // as a /32 (FRR style, docs/interop-notes.md) names no tunnel prefix to check against.
        let len_t = self.config.prefix_len;
        let off_prefix =
            len_t < 32 && !covers(mask(self.config.protocol_addr, len_t), len_t, client);
        if client == self.config.protocol_addr || off_prefix {
            return CieCode::ADMINISTRATIVELY_PROHIBITED;
        }
        let post_nat = (observed != claimed).then_some(observed);
        if let Some(refusal) = self.conflict(now, &key, client, claimed, observed, post_nat) {
            return refusal;
        }
        if self.nbma_quota_reached(now, observed, &key) {
            self.counters.drop(DropReason::NbmaLimit);
            return CieCode::ADMINISTRATIVELY_PROHIBITED;
        }
        // RFC 2332 §5.2.4: a registration the server cannot hold is answered with CIE code 5,
        // Insufficient Resources.
        if self.cache_full_for(&key) {
            return CieCode::INSUFFICIENT_RESOURCES;
        }
        let hold = self.peer_holding_time(cie.holding_time);
        let previous = self
            .cache
            .get(&key)
            .filter(|e| e.is_live(now))
            .map(CacheEntry::effective_nbma);
        let created = self
            .cache
            .get(&key)
            .filter(|e| e.is_live(now))
            .map_or(now, |e| e.created);
        self.cache.insert(
            now,
            key,
            CacheEntry {
                kind: EntryKind::Dynamic,
                protocol_addr: key.0,
                prefix_len: key.1,
                next_hop: client,
                nbma: claimed,
                post_nat_nbma: post_nat,
                flags: EntryFlags {
                    unique,
                    registered: true,
                    used: false,
                    nat: post_nat.is_some(),
                },
                created,
                expires: Some(now + hold),
                holding_time: hold,
                request_id: req.request_id().unwrap_or(0),
                refresh_at: None,
            },
        );
        if previous != Some(observed) {
            self.events.push_back(Event::PeerRegistered {
                protocol_addr: client,
                nbma: observed,
            });
        }
        CieCode::SUCCESS
    }

    /// Whether a live entry for `key` makes this registration a conflict, and the CIE code
    /// that refuses it: a static entry, a live holder at another NBMA address (challenged),
    /// or a unique entry whose claimed NBMA address changed behind the same address.
    fn conflict(
        &mut self,
        now: Instant,
        key: &(IpAddr, u8),
        client: IpAddr,
        claimed: IpAddr,
        observed: IpAddr,
        post_nat: Option<IpAddr>,
    ) -> Option<CieCode> {
        let old = self.cache.get(key).filter(|e| e.is_live(now))?;
        if old.kind != EntryKind::Dynamic {
            return Some(CieCode::ADMINISTRATIVELY_PROHIBITED);
        }
        let moved = old.nbma != claimed || old.post_nat_nbma != post_nat;
        let holder = old.effective_nbma();
        if moved && holder != observed {
            // Another NBMA address claims it. Not while the holder is alive, unique flag
            // or not: its SA is still up, so the claimant is another spoke (or one of
            // us, hostile). But "alive" is asked, not assumed: a spoke back from a
            // reboot with a new public address finds its old self here, dead and not
            // yet known to be, and must not wait for DPD or the holding time.
            if self.sa_ready.contains(&holder) {
                self.counters.drop(DropReason::SourceMismatch);
                self.events.push_back(Event::HolderChallenged {
                    protocol_addr: client,
                    holder,
                    claimant: observed,
                });
                return Some(CieCode::UNIQUE_ADDRESS_ALREADY_REGISTERED);
            }
            // Its SA is gone (DPD, a DELETE, or the challenge's verdict): the holder
            // is not coming back from there, and the address moves, unique or not.
        } else if old.flags.unique && moved {
            // Cisco `unique` (docs/interop-notes.md §6): from the same post-NAT address
            // a unique registration keeps its claimed NBMA address until it expires or
            // is purged.
            return Some(CieCode::UNIQUE_ADDRESS_ALREADY_REGISTERED);
        }
        None
    }

    /// Whether `observed` already holds `Config::max_registrations_per_nbma` live
    /// registrations other than `key` (a refresh of `key` always passes). Every spoke holds
    /// the NHRP key, so without this one spoke could register the whole tunnel prefix in its
    /// name. O(log N + k) through the NBMA index, k at most the cap plus entries not yet
    /// expired by `handle_timeout`.
    fn nbma_quota_reached(&self, now: Instant, observed: IpAddr, key: &(IpAddr, u8)) -> bool {
        let held = self
            .cache
            .keys_by_nbma(observed)
            .filter(|k| k != key)
            .filter_map(|k| self.cache.get(&k))
            .filter(|e| e.kind == EntryKind::Dynamic && e.flags.registered && e.is_live(now))
            .take(self.config.max_registrations_per_nbma)
            .count();
        held >= self.config.max_registrations_per_nbma
    }

    /// A Purge Request (RFC 2332 §5.2.5): forgets the dynamic and shortcut entries of each CIE's
    /// client that the sender provided, and replies unless N is set.
    ///
    /// §5.2.5: a purge is sent by the station that provided the binding (the registrant, or
    /// the responder a shortcut came from). Every spoke holds the NHRP key, so that station is
    /// known by the NBMA address the binding arrived from and by the request id that created it
    /// (random, and seen only by the two ends, inside their SA): an entry is removed only by a
    /// purge arriving from its (post-NAT) NBMA address, by one carrying its request id (IOS
    /// purges with the registration's id, docs/interop-notes.md §6, which is how a spoke whose
    /// NBMA address just changed still frees its unique entry), or, on a spoke, by an NHS. Any
    /// other entry a purge names stays, the packet is counted as [`DropReason::NotRegistrant`]
    /// and not confirmed with a reply.
    pub(super) fn on_purge_request(&mut self, now: Instant, from_nbma: IpAddr, req: &Packet) {
        let Some(src_proto) = req.src_protocol_ip() else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let from_nhs = self.nhs.iter().any(|n| n.config.nbma_addr == from_nbma);
        let mut refused = false;
        for cie in req.cies() {
            let client = cie.client_protocol_ip().unwrap_or(src_proto);
            // The entries with this next hop and those for this address itself, from the
            // indexes (O(log N + k)), removed in key order.
            let keys: BTreeSet<_> = self
                .cache
                .keys_by_next_hop(client)
                .chain(self.cache.keys_for_address(client))
                .filter(|k| {
                    self.cache.get(k).is_some_and(|e| {
                        (e.next_hop == client || e.protocol_addr == client)
                            && (e.kind == EntryKind::Dynamic || e.kind == EntryKind::Shortcut)
                    })
                })
                .collect();
            for k in keys {
                let provided = self.cache.get(&k).is_some_and(|e| {
                    from_nhs
                        || e.effective_nbma() == from_nbma
                        || req.request_id() == Some(e.request_id)
                });
                if provided {
                    self.remove_entry(k);
                } else {
                    refused = true;
                }
            }
        }
        if refused {
            self.counters.drop(DropReason::NotRegistrant);
            return;
        }
        // RFC 2332 §5.2.5: N set means the sender wants no reply.
        if req.flags() & Flags::PURGE_N != 0 {
            return;
        }
        let mut reply = req.clone();
        reply.packet_type = PacketType::PURGE_REPLY;
        reply.hop_count = DEFAULT_HOP_COUNT;
        reply.extensions = self.reply_extensions(req, <[Cie]>::to_vec);
        self.send(now, from_nbma, &reply);
    }
}
