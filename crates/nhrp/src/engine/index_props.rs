//! Property tests of the indexes (issue 12): a hub is driven through random registrations,
//! re-registrations from changed or NATed NBMA addresses, purges, expiries, dead SAs and
//! `clear_dynamic`, and after every step each indexed answer is checked against a brute-force
//! recomputation from `cache_entries` (what the engine did before it had indexes). The
//! pending-resolution and queue tables are checked against a model of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::pending_table::PendingTable;
use super::queue_table::{Pushed, QueueTable};
use super::resolution::PendingResolution;
use super::sa_gate::Queued;
use super::{Engine, MAX_SA_QUEUES, MappingInfo, SA_QUEUE_LEN};
use crate::cache::EntryKind;
use crate::codes::{Flags, PacketType};
use crate::config::{Config, NhsConfig, SequentialRequestIds};
use crate::packet::{Body, ip_bytes};

const KEY: &[u8] = b"keykey00";
const SPOKES: u8 = 10;
const VARIANTS: u8 = 3;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}
fn hub_tun() -> IpAddr {
    v4(10, 9, 0, 1)
}
fn hub_nbma() -> IpAddr {
    v4(198, 51, 100, 1)
}
/// Spoke `i`'s tunnel address, in the hub's /16 (so /24 registrations of neighbours share a
/// key and replace each other's next hop).
fn tun(i: u8) -> IpAddr {
    v4(10, 9, i % 3, 10 + i)
}
/// Spoke `i`'s claimed NBMA address, variant `v`.
fn nbma(i: u8, v: u8) -> IpAddr {
    v4(100, 64, v, i)
}
/// A NAT's public address; spokes share them, as behind one carrier NAT.
fn nat_public(v: u8) -> IpAddr {
    v4(203, 0, 113, v)
}
fn all_nbmas() -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = (0..SPOKES)
        .flat_map(|i| (0..VARIANTS).map(move |v| nbma(i, v)))
        .chain((0..VARIANTS).map(nat_public))
        .collect();
    v.push(hub_nbma());
    v
}
fn all_tuns() -> Vec<IpAddr> {
    (0..SPOKES).map(tun).chain([hub_tun()]).collect()
}

fn hub() -> Engine {
    let mut c = Config::hub(hub_tun(), 16, hub_nbma());
    c.auth_key = Some(KEY.to_vec());
    Engine::new(c, SequentialRequestIds::starting_at(1)).unwrap()
}

/// A Registration (or, with `purge`, Purge) Request from spoke `i` claiming `claimed`.
fn request(
    i: u8,
    claimed: IpAddr,
    prefix_len: u8,
    hold: u16,
    unique: bool,
    purge: bool,
) -> Vec<u8> {
    let mut c = Config::spoke(
        tun(i),
        16,
        claimed,
        vec![NhsConfig {
            protocol_addr: Some(hub_tun()),
            nbma_addr: hub_nbma(),
            multicast: true,
        }],
    );
    c.auth_key = Some(KEY.to_vec());
    c.unique = unique;
    let e = Engine::new(c, SequentialRequestIds::starting_at(1)).unwrap();
    let mut p = e.registration_request(0, 7 + u32::from(i)).unwrap();
    if let Body::Common { cies, flags, .. } = &mut p.body {
        for c in cies.iter_mut() {
            c.prefix_len = prefix_len;
            c.holding_time = hold;
            if purge {
                c.client_protocol = ip_bytes(tun(i));
                c.client_nbma = ip_bytes(claimed);
            }
        }
        if purge {
            p.packet_type = PacketType::PURGE_REQUEST;
            *flags = Flags::CISCO_NAT | Flags::PURGE_N;
        }
    }
    p.to_bytes().unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Register {
        spoke: u8,
        variant: u8,
        nat: Option<u8>,
        prefix_len: u8,
        hold: u16,
        unique: bool,
    },
    Purge {
        spoke: u8,
        variant: u8,
    },
    Advance(u16),
    /// Time passes but the next `handle_timeout` waits for the step after (a packet handled
    /// at a late `now` before the timer): expired entries are held meanwhile.
    AdvanceQuiet(u16),
    PeerDead(u8, u8),
    ClearDynamic,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            0..SPOKES,
            0..VARIANTS,
            proptest::option::weighted(0.4, 0..VARIANTS),
            prop_oneof![Just(32u8), Just(0xffu8), Just(24u8)],
            prop_oneof![Just(0u16), 1u16..40, Just(7200u16)],
            proptest::bool::weighted(0.3),
        )
            .prop_map(|(spoke, variant, nat, prefix_len, hold, unique)| Op::Register {
                spoke,
                variant,
                nat,
                prefix_len,
                hold,
                unique,
            }),
        2 => (0..SPOKES, 0..VARIANTS).prop_map(|(spoke, variant)| Op::Purge { spoke, variant }),
        3 => (0u16..30).prop_map(Op::Advance),
        1 => (0u16..30).prop_map(Op::AdvanceQuiet),
        1 => (0..SPOKES, 0..VARIANTS).prop_map(|(s, v)| Op::PeerDead(s, v)),
        1 => Just(Op::ClearDynamic),
    ]
}

/// The binding of `next_hop` as the engine computed it before the indexes: the first live
/// non-Local entry of `cache_entries` with that next hop.
fn brute_mapping(e: &Engine, next_hop: IpAddr, now: Instant) -> Option<MappingInfo> {
    e.cache_entries(now)
        .into_iter()
        .filter(|c| c.kind != EntryKind::Local && c.is_live(now))
        .find(|c| c.next_hop == next_hop)
        .map(|c| MappingInfo {
            nbma: c.effective_nbma(),
            kind: c.kind,
        })
}

/// `poll_timeout` as the engine computed it before the indexes: a walk of everything.
fn brute_deadline(e: &Engine) -> Option<Instant> {
    let nhs = e.nhs.iter().filter_map(super::Nhs::deadline);
    let cache = e
        .cache
        .values()
        .flat_map(|c| [c.expires, c.refresh_at])
        .flatten();
    nhs.chain(e.pending.brute_deadline())
        .chain(cache)
        .chain(e.queues.brute_deadline())
        .min()
}

/// Checks every indexed answer against brute force. A `quiet` check comes after time passed
/// without `handle_timeout` (expired entries still held): it takes no changes, leaves the
/// multicast model alone (an expiry is reported when the entry is removed) and counts held
/// entries in `next_hops_at`, as documented.
fn check(
    e: &mut Engine,
    now: Instant,
    before: &BTreeMap<IpAddr, Option<MappingInfo>>,
    multicast: &mut BTreeSet<IpAddr>,
    quiet: bool,
) -> Result<BTreeMap<IpAddr, Option<MappingInfo>>, TestCaseError> {
    e.cache.assert_consistent();
    prop_assert_eq!(e.poll_timeout(), brute_deadline(e), "poll_timeout");
    let entries = e.cache_entries(now);
    let held: Vec<_> = e.cache.values().cloned().collect();
    let mut after = BTreeMap::new();
    let changes: BTreeSet<IpAddr> = if quiet {
        BTreeSet::new()
    } else {
        e.take_mapping_changes().into_iter().collect()
    };
    for nh in all_tuns() {
        let m = brute_mapping(e, nh, now);
        prop_assert_eq!(e.mapping(nh, now), m, "mapping({})", nh);
        prop_assert_eq!(
            e.lookup_nbma(nh, now),
            m.map(|m| m.nbma),
            "lookup_nbma({})",
            nh
        );
        if !quiet && before.get(&nh).copied().flatten() != m {
            prop_assert!(
                changes.contains(&nh),
                "mapping of {} changed ({:?} -> {:?}) but was not reported in {:?}",
                nh,
                before.get(&nh),
                m,
                changes
            );
        }
        after.insert(nh, m);
    }
    for nbma in all_nbmas() {
        let mut at: Vec<IpAddr> = if quiet {
            held.iter()
                .filter(|c| c.effective_nbma() == nbma)
                .map(|c| c.next_hop)
                .collect()
        } else {
            entries
                .iter()
                .filter(|c| {
                    c.kind != EntryKind::Local && c.is_live(now) && c.effective_nbma() == nbma
                })
                .map(|c| c.next_hop)
                .collect()
        };
        at.sort_unstable();
        at.dedup();
        prop_assert_eq!(e.next_hops_at(nbma), at, "next_hops_at({})", nbma);
        let nated = entries
            .iter()
            .any(|c| c.post_nat_nbma == Some(nbma) && c.nbma != nbma);
        prop_assert_eq!(e.is_nated_peer(nbma, now), nated, "is_nated_peer({})", nbma);
    }
    if quiet {
        return Ok(before.clone());
    }
    let mut seen = BTreeSet::new();
    for (nbma, joined) in e.take_multicast_changes() {
        prop_assert!(seen.insert(nbma), "{} reported twice", nbma);
        if joined {
            prop_assert!(multicast.insert(nbma), "{} joined but was in already", nbma);
        } else {
            prop_assert!(multicast.remove(&nbma), "{} left but was not in", nbma);
        }
    }
    let shown: BTreeSet<IpAddr> = e.multicast_nbmas(now).into_iter().collect();
    prop_assert_eq!(&*multicast, &shown, "multicast changes vs multicast_nbmas");
    let indexed: BTreeSet<IpAddr> = e.cache.multicast_members().copied().collect();
    prop_assert_eq!(&indexed, &shown, "multicast index vs multicast_nbmas");
    Ok(after)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hub_indexes_agree_with_brute_force(ops in proptest::collection::vec(op(), 1..60)) {
        let mut e = hub();
        let mut now = Instant::now();
        let mut multicast = BTreeSet::new();
        let mut mappings = check(&mut e, now, &BTreeMap::new(), &mut multicast, false)?;
        for op in ops {
            let mut quiet = false;
            match op {
                Op::Register { spoke, variant, nat, prefix_len, hold, unique } => {
                    let claimed = nbma(spoke, variant);
                    let from = nat.map_or(claimed, nat_public);
                    let b = request(spoke, claimed, prefix_len, hold, unique, false);
                    e.handle_packet(now, from, &b);
                }
                Op::Purge { spoke, variant } => {
                    let b = request(spoke, nbma(spoke, variant), 32, 0, false, true);
                    e.handle_packet(now, nbma(spoke, variant), &b);
                }
                Op::Advance(s) => now += Duration::from_secs(u64::from(s)),
                Op::AdvanceQuiet(s) => {
                    now += Duration::from_secs(u64::from(s));
                    quiet = true;
                }
                Op::PeerDead(s, v) => {
                    let n = if v == 0 { nat_public(s % VARIANTS) } else { nbma(s, v) };
                    e.peer_dead(now, n);
                }
                Op::ClearDynamic => {
                    e.clear_dynamic();
                }
            }
            // A daemon honours poll_timeout: what is due runs before the next look.
            if !quiet && e.poll_timeout().is_some_and(|t| t <= now) {
                e.handle_timeout(now);
            }
            while e.poll_event().is_some() {}
            while e.poll_transmit().is_some() {}
            mappings = check(&mut e, now, &mappings, &mut multicast, quiet)?;
        }
    }
}

#[derive(Debug, Clone)]
enum TableOp {
    Insert { target: u8, id: u8, retry: u8 },
    Remove(u8),
    Expire(u8),
}

fn table_op() -> impl Strategy<Value = TableOp> {
    prop_oneof![
        3 => (0u8..8, 0u8..4, 0u8..20).prop_map(|(target, id, retry)| TableOp::Insert { target, id, retry }),
        1 => (0u8..8).prop_map(TableOp::Remove),
        1 => (0u8..20).prop_map(TableOp::Expire),
    ]
}

#[test]
fn sa_queues_are_capped() {
    let now = Instant::now();
    let mut t = QueueTable::default();
    let q = || Queued {
        deadline: now,
        packet_type: PacketType::RESOLUTION_REPLY,
        bytes: Vec::new(),
    };
    for i in 0..MAX_SA_QUEUES {
        let dst = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + u32::try_from(i).unwrap()));
        assert_eq!(t.push(dst, q()), Pushed::Started);
    }
    assert_eq!(
        t.push(v4(192, 0, 2, 1), q()),
        Pushed::Full,
        "a new address past the cap"
    );
    assert_eq!(
        t.push(v4(10, 0, 0, 0), q()),
        Pushed::Queued,
        "a known one still queues"
    );
    assert_eq!(t.expire(now), MAX_SA_QUEUES + 1);
    assert_eq!(t.push(v4(192, 0, 2, 1), q()), Pushed::Started, "room again");
}

proptest! {
    #[test]
    fn pending_table_agrees_with_a_model(ops in proptest::collection::vec(table_op(), 1..80)) {
        let t0 = Instant::now();
        let mut t = PendingTable::default();
        let mut model: BTreeMap<IpAddr, (u32, Instant)> = BTreeMap::new();
        for op in ops {
            match op {
                TableOp::Insert { target, id, retry } => {
                    let at = t0 + Duration::from_secs(u64::from(retry));
                    let target = v4(10, 0, 0, target);
                    t.insert(target, PendingResolution {
                        request_id: u32::from(id),
                        nhs_nbma: hub_nbma(),
                        wait: Duration::from_secs(1),
                        retry_at: at,
                        attempts: 1,
                        packet: Vec::new(),
                        first_sent: t0,
                    });
                    model.insert(target, (u32::from(id), at));
                }
                TableOp::Remove(target) => {
                    let target = v4(10, 0, 0, target);
                    prop_assert_eq!(t.remove(&target).is_some(), model.remove(&target).is_some());
                }
                TableOp::Expire(s) => {
                    let now = t0 + Duration::from_secs(u64::from(s));
                    let due: Vec<IpAddr> =
                        model.iter().filter(|(_, (_, r))| *r <= now).map(|(a, _)| *a).collect();
                    prop_assert_eq!(t.due(now), due);
                }
            }
            prop_assert_eq!(t.len(), model.len());
            prop_assert_eq!(t.first_deadline(), model.values().map(|(_, r)| *r).min());
            for id in 0..4u32 {
                let first = model.iter().find(|(_, (i, _))| *i == id).map(|(a, _)| *a);
                prop_assert_eq!(t.target_of(id), first);
            }
        }
    }

    #[test]
    fn queue_table_agrees_with_a_model(ops in proptest::collection::vec(table_op(), 1..80)) {
        // Insert = push to `target` at time `retry` (times only grow, as `now` does); Remove =
        // take; Expire = expire at up to 4 s before the latest time.
        let t0 = Instant::now();
        let mut clock = t0;
        let mut t = QueueTable::default();
        let mut model: BTreeMap<IpAddr, Vec<Instant>> = BTreeMap::new();
        for op in ops {
            match op {
                TableOp::Insert { target, retry, .. } => {
                    clock += Duration::from_secs(u64::from(retry % 3));
                    let dst = v4(10, 0, 0, target);
                    let q = model.entry(dst).or_default();
                    let expect = if q.len() >= SA_QUEUE_LEN {
                        Pushed::Full
                    } else if q.is_empty() {
                        Pushed::Started
                    } else {
                        Pushed::Queued
                    };
                    if expect != Pushed::Full {
                        q.push(clock);
                    }
                    let got = t.push(dst, Queued { deadline: clock, packet_type: PacketType::REGISTRATION_REQUEST, bytes: Vec::new() });
                    prop_assert_eq!(got, expect);
                }
                TableOp::Remove(target) => {
                    let dst = v4(10, 0, 0, target);
                    let got = t.take(&dst).map(|q| q.len());
                    let want = model.remove(&dst).map(|q| q.len()).filter(|n| *n > 0);
                    prop_assert_eq!(got, want);
                }
                TableOp::Expire(s) => {
                    // Up to 4 s before the latest push: queues partly expire.
                    let now = clock
                        .checked_sub(Duration::from_secs(u64::from(s % 5)))
                        .map_or(t0, |n| n.max(t0));
                    let mut want = 0;
                    for q in model.values_mut() {
                        let before = q.len();
                        q.retain(|d| *d > now);
                        want += before - q.len();
                    }
                    model.retain(|_, q| !q.is_empty());
                    prop_assert_eq!(t.expire(now), want);
                }
            }
            model.retain(|_, q| !q.is_empty());
            prop_assert_eq!(t.len(), model.len());
            prop_assert_eq!(t.first_deadline(), model.values().filter_map(|q| q.first().copied()).min());
        }
    }
}
