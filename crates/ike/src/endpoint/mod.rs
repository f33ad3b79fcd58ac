//! The sans-IO IKEv2 endpoint (RFC 7296): the [`Endpoint`] owning every IKE
//! SA, its public commands (§1.2 initiate, §1.4.1 delete, §2.8 / §2.18
//! rekey, §2.4 liveness) and the SA table. Each exchange and concern lives
//! in its own module below.

mod auth;
mod challenge;
mod cookie;
mod create_child;
mod crossed;
mod error;
mod event;
mod fragment;
mod informational;
mod jobs;
mod recovery;
mod rekey_ike;
mod sa;
mod sa_init;
mod table;
mod timers;
mod transport;
mod views;

#[cfg(test)]
mod tests;

pub use auth::MAX_IKE_SAS_PER_SOURCE;
pub use challenge::CHALLENGE_BUDGET;
use cookie::CookieSecrets;
pub use create_child::MAX_CHILD_SAS_PER_IKE_SA;
use error::ExchangeError;
pub use event::*;
pub use jobs::{Job, JobDone};
use sa::*;
use table::SaTable;
pub use views::{SaView, SaViews};

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use dmvpn_crypto::{AesGcm256, DhAlg, DhPrivate, PrfAlg, Rng, Secret, prf::constant_time_eq};
use dmvpn_wire::Reader;

use crate::codes::*;
use crate::config::{Config, DpdMode};
use crate::keys::{IkeKeys, child_keys, nat_hash, psk_auth};
use crate::message::*;
use crate::proposal::{self, EspSuite, IkeSuite};
use crate::sk;

/// Nonce length we send: at least half the PRF key size (§2.10); 32 bytes
/// covers SHA2-512's 256-bit strength.
const NONCE_LEN: usize = 32;

// Payload helpers shared by the exchanges.

/// Outcome of processing a decrypted request.
type Reply = Vec<Payload>;

fn notify(ty: NotifyType) -> Payload {
    Payload::Notify(Notify::new(ty, Vec::new()))
}

fn nonce_of(p: &[Payload]) -> Option<&Vec<u8>> {
    p.iter().find_map(|p| match p {
        Payload::Nonce(n) => Some(n),
        _ => None,
    })
}

fn sa_of(p: &[Payload]) -> Option<&Vec<Proposal>> {
    p.iter().find_map(|p| match p {
        Payload::Sa(s) => Some(s),
        _ => None,
    })
}

fn ke_of(p: &[Payload]) -> Option<&KeyExchange> {
    p.iter().find_map(|p| match p {
        Payload::Ke(k) => Some(k),
        _ => None,
    })
}

fn ts_of(p: &[Payload]) -> (Option<&Vec<TrafficSelector>>, Option<&Vec<TrafficSelector>>) {
    let i = p.iter().find_map(|p| match p {
        Payload::TsI(t) => Some(t),
        _ => None,
    });
    let r = p.iter().find_map(|p| match p {
        Payload::TsR(t) => Some(t),
        _ => None,
    });
    (i, r)
}

fn first_error(p: &[Payload]) -> Option<NotifyType> {
    notifies(p).map(|n| n.ty).find(|t| t.is_error())
}

/// The sans-IO IKEv2 endpoint owning every IKE SA of the daemon.
pub struct Endpoint {
    config: Config,
    rng: Box<dyn Rng>,
    sas: SaTable,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    cookies: CookieSecrets,
    /// Start of the current one-second window and unprotected notifies sent
    /// in it.
    unprotected_budget: (Option<Instant>, u32),
    counters: Counters,
    /// Offload mode and the jobs waiting to be polled (jobs.rs).
    offload: bool,
    jobs: VecDeque<Job>,
    /// Number of the last job created.
    next_job: u64,
}

/// What the endpoint refused without state (for the operator's counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// IKE_SA_INIT requests dropped because the half-open caps were reached
    /// ([`Config::max_half_open`], [`Config::max_half_open_per_peer`]).
    pub half_open_refused: u64,
    /// Half-open responder SAs given up for a newer IKE_SA_INIT at the hard cap (§2.6).
    pub half_open_evicted: u64,
    /// Job results that came back for an SA that is gone or no longer waits
    /// for them (deleted, timed out), dropped.
    pub jobs_late: u64,
    /// Jobs handed back with [`Endpoint::cancel_job`] (the caller's queue
    /// was full); their IKE_SA_INIT went unanswered.
    pub jobs_refused: u64,
    /// IKE_AUTH requests refused (TEMPORARY_FAILURE) because the peer's address and
    /// port, or its address, already held as many established IKE SAs as allowed
    /// ([`MAX_IKE_SAS_PER_SOURCE`], [`Config::max_sas_per_address`]).
    pub ike_sas_refused: u64,
    /// CREATE_CHILD_SA requests refused (NO_ADDITIONAL_SAS) because the IKE SA held
    /// [`MAX_CHILD_SAS_PER_IKE_SA`] Child SAs already.
    pub child_sas_refused: u64,
    /// Liveness checks sent (dead peer detection, RFC 7296 §2.4: empty INFORMATIONAL
    /// requests), each counted once however often it is retransmitted.
    pub dpd_probes_sent: u64,
    /// Liveness checks the peer answered.
    pub dpd_probes_answered: u64,
}

impl core::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Endpoint")
            .field("ike_sas", &self.sas.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A new endpoint; `rng` supplies SPIs, nonces, D-H keys and IVs' salt.
    pub fn new(config: Config, mut rng: Box<dyn Rng>) -> Self {
        let cookies = CookieSecrets::new(rng.as_mut());
        Self {
            config,
            rng,
            sas: SaTable::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            cookies,
            unprotected_budget: (None, 0),
            counters: Counters::default(),
            offload: false,
            jobs: VecDeque::new(),
            next_job: 0,
        }
    }

    /// What the endpoint refused without state.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- randomness -------------------------------------------------------

    fn new_spi(&mut self) -> u64 {
        loop {
            let s = self.rng.next_u64();
            if s != 0 && !self.sas.contains(s) {
                return s;
            }
        }
    }

    /// A fresh inbound SPI for a Child SA of IKE SA `owner`, reserved until
    /// `owner` goes back into the table without it.
    fn new_child_spi(&mut self, owner: u64) -> u32 {
        loop {
            // SPIs 1..=255 are reserved by IANA (RFC 4303 §2.1).
            let s = self.rng.next_u32();
            if s >= 256 && self.sas.reserve_spi(s, owner) {
                return s;
            }
        }
    }

    fn nonce(&mut self) -> Vec<u8> {
        let mut n = vec![0u8; NONCE_LEN];
        self.rng.fill(&mut n);
        n
    }

    fn jitter(&mut self, margin: Duration) -> Duration {
        let max = margin
            .as_millis()
            .saturating_mul(u128::from(self.config.lifetimes.jitter_percent))
            / 100;
        let max = u64::try_from(max).unwrap_or(u64::MAX);
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(self.rng.next_u64() % (max + 1))
    }

    fn rekey_deadline(&mut self, now: Instant, lifetime: Duration, margin: Duration) -> Instant {
        let lead = margin + self.jitter(margin);
        now + lifetime.saturating_sub(lead)
    }

    fn local_id(&self, sa: &IkeSa) -> Identification {
        self.config
            .local_id
            .clone()
            .unwrap_or_else(|| Identification::from_ip(sa.local.ip()))
    }

    // ---- commands ---------------------------------------------------------

    /// Starts an IKE SA (and its first, transport-mode Child SA) to `remote`
    /// from `local` (normally both on port 500).
    pub fn initiate(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<IkeSaId, Error> {
        let first = *self.config.ike_proposals.first().ok_or(Error::NoProposal)?;
        let id = self.new_spi();
        let dh = DhPrivate::generate(first.dh, self.rng.as_mut())?;
        let nonce_i = self.nonce();
        let mut sa = IkeSa::new(
            id,
            true,
            local,
            remote,
            now,
            State::ExpectSaInitResponse(ExpectSaInitResponse {
                dh,
                nonce_i,
                cookie: None,
                retries: 0,
                refused: None,
            }),
        );
        self.send_sa_init(now, &mut sa)?;
        self.put_back(sa);
        Ok(IkeSaId(id))
    }

    /// Deletes every IKE SA with `peer` (sends DELETE, §1.4.1).
    pub fn delete(&mut self, now: Instant, peer: IpAddr) -> Result<(), Error> {
        let ids = self.sas.with_peer(peer).to_vec();
        if ids.is_empty() {
            return Err(Error::NoSuchSa);
        }
        for id in ids {
            self.delete_sa(now, IkeSaId(id))?;
        }
        Ok(())
    }

    /// Deletes one IKE SA and its Child SAs.
    pub fn delete_sa(&mut self, now: Instant, sa: IkeSaId) -> Result<(), Error> {
        let mut s = self.sas.remove(sa.0).ok_or(Error::NoSuchSa)?;
        if matches!(s.state, State::Established(_)) {
            s.queue.push_front(Queued::DeleteIke);
            self.pump(now, &mut s);
        } else {
            self.close(&mut s, DownReason::DeletedLocally);
        }
        self.put_back(s);
        Ok(())
    }

    /// Rekeys the Child SA with inbound SPI `spi_in` now (ESP sequence
    /// numbers near exhaustion, RFC 4303 §3.3.3).
    pub fn rekey_child(&mut self, now: Instant, spi_in: u32) -> Result<(), Error> {
        self.queue_for_child(now, spi_in, Queued::RekeyChild(spi_in))
    }

    /// Deletes the Child SA with inbound SPI `spi_in` (an INFORMATIONAL with
    /// its DELETE, §1.4.1); its IKE SA stays up, without it.
    pub fn delete_child(&mut self, now: Instant, spi_in: u32) -> Result<(), Error> {
        self.queue_for_child(now, spi_in, Queued::DeleteChild(spi_in))
    }

    /// Queues `work` on the IKE SA that owns the Child SA with inbound SPI `spi_in`
    /// (once) and runs that SA's queue.
    fn queue_for_child(&mut self, now: Instant, spi_in: u32, work: Queued) -> Result<(), Error> {
        let id = self
            .sas
            .spi_owner(spi_in)
            .filter(|&id| {
                self.sas
                    .get(id)
                    .is_some_and(|s| s.children.iter().any(|c| c.spi_in == spi_in))
            })
            .ok_or(Error::NoSuchSa)?;
        let mut s = self.sas.remove(id).ok_or(Error::NoSuchSa)?;
        if !s.queue.contains(&work) {
            s.queue.push_back(work);
        }
        self.pump(now, &mut s);
        self.put_back(s);
        Ok(())
    }

    /// Rekeys an IKE SA now (§2.18).
    pub fn rekey_ike(&mut self, now: Instant, sa: IkeSaId) -> Result<(), Error> {
        let mut s = self.sas.remove(sa.0).ok_or(Error::NoSuchSa)?;
        if !s.queue.contains(&Queued::RekeyIke) {
            s.queue.push_back(Queued::RekeyIke);
        }
        self.pump(now, &mut s);
        self.put_back(s);
        Ok(())
    }

    /// Authenticated ESP-in-UDP from `to`'s address came from `to`'s port, not the one its
    /// IKE SA has: the peer's NAT mapping changed. The ESP packet passed its integrity and
    /// replay checks, so it is as good a proof as an authenticated IKE message (§2.23 asks
    /// for no less); follow it now, and send a liveness check over the new mapping whose
    /// authenticated answer confirms it. Returns whether an SA moved.
    pub fn peer_port_moved(&mut self, now: Instant, to: SocketAddr) -> bool {
        let mut any = false;
        for id in self.sas.with_peer(to.ip()).to_vec() {
            let Some(mut s) = self.sas.remove(id) else {
                continue;
            };
            if s.udp_encap() && s.remote != to && s.state.public() == IkeSaState::Established {
                let local = s.local;
                self.moved(&mut s, to, local);
                s.queue.push_back(Queued::Dpd);
                self.pump(now, &mut s);
                any = true;
            }
            self.put_back(s);
        }
        any
    }

    /// The peer of `sa` is at `remote` now (and we at `local`). Only an established SA's
    /// move is an event: before, it is the float to port 4500 (§2.23), and no Child SA
    /// exists yet to follow it.
    fn moved(&mut self, sa: &mut IkeSa, remote: SocketAddr, local: SocketAddr) {
        let from = sa.remote;
        sa.remote = remote;
        sa.local = local;
        if from != remote && sa.state.public() == IkeSaState::Established {
            self.events.push_back(Event::PeerMoved {
                sa: IkeSaId(sa.id),
                from,
                remote,
            });
        }
    }

    /// Testing and fuzzing: seals `plaintext`, a raw payload chain whose first payload is of
    /// type `first`, as our next request on `sa` (right SPIs, message id, flags and SK
    /// payload), so the peer's handlers behind the integrity check see payload chains no
    /// encoder would build. `None` without keys.
    #[cfg(feature = "testing")]
    pub fn seal_raw_request(
        &mut self,
        sa: IkeSaId,
        exchange: ExchangeType,
        first: crate::codes::PayloadType,
        plaintext: &[u8],
    ) -> Option<Vec<u8>> {
        let mut s = self.sas.remove(sa.0)?;
        let id = s.next_request_id;
        let out = s.out_key().and_then(|key| {
            s.iv_counter = s.iv_counter.wrapping_add(1);
            crate::sk::seal_plain(
                s.spi_i,
                s.spi_r,
                exchange,
                s.flags(false),
                id,
                first,
                plaintext.to_vec(),
                &key,
                s.iv_counter.to_be_bytes(),
            )
            .ok()
        });
        if out.is_some() {
            s.next_request_id = id.wrapping_add(1);
        }
        self.put_back(s);
        out
    }

    /// Sends a liveness check now.
    pub fn probe(&mut self, now: Instant, sa: IkeSaId) -> Result<(), Error> {
        let mut s = self.sas.remove(sa.0).ok_or(Error::NoSuchSa)?;
        s.queue.push_back(Queued::Dpd);
        self.pump(now, &mut s);
        self.put_back(s);
        Ok(())
    }

    /// The daemon sent ESP to `peer` (drives on-demand DPD).
    pub fn note_outbound(&mut self, now: Instant, peer: IpAddr) {
        for id in self.sas.with_peer(peer).to_vec() {
            if let Some(mut s) = self.sas.remove(id) {
                s.last_traffic_out = Some(now);
                self.put_back(s);
            }
        }
    }

    /// The daemon received authenticated ESP from `peer` (proof of life).
    pub fn note_inbound(&mut self, now: Instant, peer: IpAddr) {
        for id in self.sas.with_peer(peer).to_vec() {
            if let Some(mut s) = self.sas.remove(id) {
                s.last_rx = s.last_rx.max(now);
                self.put_back(s);
            }
        }
    }

    /// Replaces the configuration (proposals, keyring, lifetimes, DPD) for what happens from
    /// now on — SAs already up keep their keys. Returns the IKE SAs whose peer the new keyring
    /// has no key for, or another key than the one it authenticated with, which the caller
    /// deletes: a reload must not keep an SA that the new configuration would refuse, and a
    /// changed PSK is usually a compromised or retired one. An IKE SA rekey would keep the old
    /// authentication (§2.8 rekeys without IKE_AUTH), so the SA goes and a new one
    /// authenticates with the new key.
    pub fn set_config(&mut self, config: Config) -> Vec<IkeSaId> {
        self.config = config;
        // DPD settings are part of every SA's deadline.
        let ids: Vec<u64> = self.sas.values().map(|s| s.id).collect();
        for id in ids {
            if let Some(s) = self.sas.remove(id) {
                self.put_back(s);
            }
        }
        self.sas
            .values()
            .filter(|s| {
                let now_key = self
                    .config
                    .keyring
                    .lookup(s.remote.ip(), s.remote_id.as_ref());
                match (&s.auth_key, now_key) {
                    (_, None) => true,
                    (Some(was), Some(key)) => !constant_time_eq(was.expose(), key.expose()),
                    (None, Some(_)) => false,
                }
            })
            .map(|s| IkeSaId(s.id))
            .collect()
    }

    /// The SK_ei / SK_er of an established IKE SA (key ‖ salt each), for the operator's
    /// opt-in Wireshark key export (`ikev2_decryption_table`). `None` before IKE_SA_INIT
    /// completes. Returns (SPIi, SPIr, SK_ei, SK_er).
    pub fn export_sk_e(&self, sa: IkeSaId) -> Option<(u64, u64, Secret, Secret)> {
        let s = self.sas.get(sa.0)?;
        let k = s.keys.as_ref()?;
        Some((s.spi_i, s.spi_r, k.sk_ei.clone(), k.sk_er.clone()))
    }

    /// Whether any IKE SA with a peer at `ip` exists, in any state (being
    /// negotiated by either side, up, or being deleted). O(1).
    #[must_use]
    pub fn has_sa_with(&self, ip: IpAddr) -> bool {
        !self.sas.with_peer(ip).is_empty()
    }

    /// The IKE SAs with a peer at `ip` and their states. O(1) + their number.
    pub fn sas_with(&self, ip: IpAddr) -> impl Iterator<Item = (IkeSaId, IkeSaState)> + '_ {
        self.sas
            .with_peer(ip)
            .iter()
            .filter_map(|&id| self.sas.get(id))
            .map(|s| (IkeSaId(s.id), s.state.public()))
    }

    /// The peer's address and port of an IKE SA. O(1).
    pub fn remote_of(&self, sa: IkeSaId) -> Option<SocketAddr> {
        Some(self.sas.get(sa.0)?.remote)
    }

    /// The negotiated algorithms of an IKE SA (after IKE_SA_INIT). O(1).
    pub fn suite_of(&self, sa: IkeSaId) -> Option<IkeSuite> {
        self.sas.get(sa.0)?.suite
    }

    /// Number of IKE SAs, in any state.
    #[must_use]
    pub fn sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Introspection for the operator tool, ordered by SA id.
    pub fn ike_sas(&self, now: Instant) -> Vec<IkeSaInfo> {
        let mut v = self.sas.views().infos(now);
        v.sort_by_key(|i| i.id);
        v
    }

    /// Every SA as the operator sees it, for reading at leisure: an O(1) clone (a hub's
    /// control loop hands it to a `show` built elsewhere instead of copying 10,000 SAs).
    pub fn sa_views(&self) -> SaViews {
        self.sas.views().clone()
    }

    /// Panics unless every index of the SA table agrees with a recomputation
    /// from the SAs themselves (the `testing` harness calls it after every
    /// step).
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn check_indexes(&self) {
        self.sas.check(|s| self.sa_deadline(s));
    }

    // ---- SA bookkeeping ---------------------------------------------------

    /// Puts an SA taken out of the table back, indexed by its current
    /// content and deadline; a closed SA is dropped with its reservations.
    fn put_back(&mut self, sa: IkeSa) {
        if matches!(sa.state, State::Closed) {
            self.sas.forget(&sa);
        } else {
            let deadline = self.sa_deadline(&sa);
            self.sas.insert(sa, deadline);
        }
    }

    /// Tears an SA down locally, reporting its children.
    fn close(&mut self, sa: &mut IkeSa, reason: DownReason) {
        for c in sa.children.drain(..) {
            self.events.push_back(Event::ChildSaDeleted {
                ike_sa: IkeSaId(sa.id),
                spi_in: c.spi_in,
                spi_out: c.spi_out,
                remote: sa.remote,
            });
        }
        let reason = if sa.superseded {
            DownReason::Rekeyed
        } else {
            reason
        };
        if sa.remote_id.is_some() {
            self.events.push_back(Event::IkeSaDown {
                sa: IkeSaId(sa.id),
                remote: sa.remote,
                reason,
            });
        }
        sa.state = State::Closed;
        sa.pending = None;
    }
}
