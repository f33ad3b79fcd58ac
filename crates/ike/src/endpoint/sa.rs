//! One IKE SA and its state machine (RFC 7296 §1.2, §2.8, §2.18): the
//! per-state data, its Child SAs (§1.3, §2.17), its request window
//! (§2.3) and the SK payload keys it seals and opens with (§3.14).

use super::*;

// Per-state data: each state holds what is valid in it, and a transition
// moves it out (the IKE_SA_INIT and IKE_AUTH handlers take theirs by value).

/// Initiator, IKE_SA_INIT sent.
pub(super) struct ExpectSaInitResponse {
    pub(super) dh: DhPrivate,
    pub(super) nonce_i: Vec<u8>,
    pub(super) cookie: Option<Vec<u8>>,
    pub(super) retries: u8,
    /// The last error the (unauthenticated) responses carried, reported if
    /// no valid response comes before the timeout (§2.21.1).
    pub(super) refused: Option<NotifyType>,
}

/// What IKE_AUTH needs of the IKE_SA_INIT keys (§2.15): the PRF and
/// SK_pi / SK_pr. Held only by the states waiting for IKE_AUTH, so the
/// handlers have them without looking them up.
pub(super) struct AuthKeys {
    pub(super) prf: PrfAlg,
    pub(super) sk_pi: Secret,
    pub(super) sk_pr: Secret,
}

impl AuthKeys {
    pub(super) fn of(k: &IkeKeys) -> Self {
        Self {
            prf: k.prf,
            sk_pi: k.sk_pi.clone(),
            sk_pr: k.sk_pr.clone(),
        }
    }
}

/// Responder, IKE_SA_INIT accepted: its D-H and key derivation are out as
/// a [`Job`] (offload mode), and the response goes out when the job comes
/// back. Counted as half-open (§2.6), so the half-open caps also bound the
/// jobs outstanding.
pub(super) struct ExpectSaInitKeys {
    /// Which job answers it: a result for an earlier job of a vanished
    /// SA with a reused SPI is not taken for this one's.
    pub(super) job: u64,
    /// The request's header (its SPIi, for the response).
    pub(super) request: Header,
    pub(super) init_request: Vec<u8>,
    pub(super) nonce_i: Vec<u8>,
    pub(super) nonce_r: Vec<u8>,
    pub(super) suite: IkeSuite,
    pub(super) chosen: Proposal,
    /// Our NAT_DETECTION_SOURCE_IP data, drawn when the request came (it
    /// may be random), so finishing the job uses no randomness.
    pub(super) nat_source: Vec<u8>,
    /// The half-open timeout, counted from the request.
    pub(super) deadline: Instant,
}

/// Responder, IKE_SA_INIT answered.
pub(super) struct ExpectAuthRequest {
    pub(super) nonce_i: Vec<u8>,
    pub(super) nonce_r: Vec<u8>,
    pub(super) init_request: Vec<u8>,
    pub(super) init_response: Vec<u8>,
    pub(super) deadline: Instant,
    pub(super) keys: AuthKeys,
}

/// Initiator, IKE_AUTH sent.
pub(super) struct ExpectAuthResponse {
    pub(super) nonce_i: Vec<u8>,
    pub(super) nonce_r: Vec<u8>,
    pub(super) init_response: Vec<u8>,
    pub(super) child_spi: u32,
    pub(super) keys: AuthKeys,
}

/// Authenticated; exchanges run one at a time (window size 1, §2.3).
pub(super) struct Established {
    pub(super) rekey_at: Instant,
    pub(super) expire_at: Instant,
    /// A liveness check the node asked for (challenge.rs), while it runs.
    pub(super) challenge: Option<super::challenge::Challenge>,
}

/// Waiting for the answer to our DELETE, or (superseded by a peer's rekey)
/// for the peer's DELETE.
pub(super) struct Deleting {
    pub(super) deadline: Instant,
    /// Set when the peer rekeyed this IKE SA while our own rekey of it was
    /// in flight (§2.8.1): which new SA survives is settled once our
    /// exchange completes.
    pub(super) collision: Option<RekeyCollision>,
}

/// The peer's half of a simultaneous IKE SA rekey (§2.8.1, §2.8.2).
pub(super) struct RekeyCollision {
    /// The IKE SA the peer's exchange created (the children now live there).
    pub(super) peer_new: u64,
    /// Ni and Nr of the peer's exchange.
    pub(super) nonce_i: Vec<u8>,
    pub(super) nonce_r: Vec<u8>,
}

pub(super) enum State {
    ExpectSaInitResponse(ExpectSaInitResponse),
    ExpectSaInitKeys(ExpectSaInitKeys),
    ExpectAuthRequest(ExpectAuthRequest),
    ExpectAuthResponse(ExpectAuthResponse),
    Established(Established),
    Deleting(Deleting),
    /// Terminal: the SA is removed after the current step.
    Closed,
}

impl State {
    /// The public view of the state.
    pub(super) fn public(&self) -> IkeSaState {
        match self {
            Self::ExpectSaInitResponse(_) => IkeSaState::ExpectSaInitResponse,
            // Half-open to everyone outside: the response is only late.
            Self::ExpectSaInitKeys(_) => IkeSaState::ExpectAuthRequest,
            Self::ExpectAuthRequest(_) => IkeSaState::ExpectAuthRequest,
            Self::ExpectAuthResponse(_) => IkeSaState::ExpectAuthResponse,
            Self::Established(_) => IkeSaState::Established,
            Self::Deleting(_) => IkeSaState::Deleting,
            Self::Closed => IkeSaState::Closed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChildStatus {
    Active,
    /// Our CREATE_CHILD_SA rekeying it is in flight.
    Rekeying,
    /// A replacement exists; DELETE pending.
    Replaced,
}

pub(super) struct Child {
    pub(super) spi_in: u32,
    pub(super) spi_out: u32,
    pub(super) suite: EspSuite,
    pub(super) created: Instant,
    pub(super) rekey_at: Instant,
    pub(super) expire_at: Instant,
    pub(super) status: ChildStatus,
    /// Nonces of a peer's rekey of this child we answered while rekeying it
    /// ourselves (§2.8.1), with the new child's inbound SPI.
    pub(super) peer_rekey: Option<(u32, Vec<u8>, Vec<u8>)>,
}

pub(super) enum Req {
    SaInit,
    Auth,
    Dpd,
    DeleteIke,
    DeleteChild(Vec<u32>),
    CreateChild {
        rekey_of: Option<u32>,
        spi_in: u32,
        nonce_i: Vec<u8>,
        dh: Option<DhPrivate>,
    },
    RekeyIke {
        new_spi: u64,
        nonce_i: Vec<u8>,
        dh: DhPrivate,
    },
}

pub(super) struct Pending {
    pub(super) message_id: u32,
    pub(super) bytes: Vec<u8>,
    pub(super) tries: u32,
    pub(super) next_at: Instant,
    pub(super) req: Req,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Queued {
    Dpd,
    DeleteIke,
    DeleteChild(u32),
    RekeyChild(u32),
    RekeyIke,
}

pub(super) struct Reassembly {
    pub(super) message_id: u32,
    pub(super) total: u16,
    pub(super) first: PayloadType,
    pub(super) parts: Vec<Option<Vec<u8>>>,
}

pub(super) struct IkeSa {
    pub(super) id: u64,
    pub(super) spi_i: u64,
    pub(super) spi_r: u64,
    pub(super) initiator: bool,
    pub(super) local: SocketAddr,
    pub(super) remote: SocketAddr,
    pub(super) state: State,
    pub(super) suite: Option<IkeSuite>,
    pub(super) keys: Option<IkeKeys>,
    pub(super) remote_id: Option<Identification>,
    /// The pre-shared key the peer authenticated with (set with `remote_id`): a reload
    /// that gives the peer another key ends the SA.
    pub(super) auth_key: Option<Secret>,
    pub(super) children: Vec<Child>,
    pub(super) next_request_id: u32,
    pub(super) pending: Option<Pending>,
    pub(super) queue: VecDeque<Queued>,
    pub(super) expect_request_id: u32,
    pub(super) last_response: Option<(u32, Vec<u8>)>,
    pub(super) iv_counter: u64,
    pub(super) nat_local: bool,
    pub(super) nat_remote: bool,
    pub(super) created: Instant,
    /// When IKE_AUTH authenticated the peer (kept across IKE SA rekeys): crossed setups
    /// and INITIAL_CONTACT compare it.
    pub(super) authenticated_at: Option<Instant>,
    pub(super) last_rx: Instant,
    pub(super) last_traffic_out: Option<Instant>,
    /// When our last DPD probe went out (or the SA came up): periodic DPD
    /// probes every `delay` from here.
    pub(super) last_probe: Instant,
    pub(super) reassembly: Option<Reassembly>,
    /// Replaced by a rekeyed IKE SA (§2.18), or a redundant one from a
    /// rekey collision (§2.8.1): its end is reported as
    /// [`DownReason::Rekeyed`].
    pub(super) superseded: bool,
    /// The Message ID of our request whose unprotected INVALID_IKE_SPI
    /// answer was reported already (one hint per request, §2.21.4).
    pub(super) hinted_request: Option<u32>,
    /// The stale IKE SA this one replaces once authenticated
    /// ([`Endpoint::initiate_replacing`]).
    pub(super) replaces: Option<u64>,
    /// When an unprotected INVALID_SPI for one of its Child SAs last made us probe it
    /// (§1.5), for the rate limit.
    pub(super) hint_probe_at: Option<Instant>,
}

impl IkeSa {
    pub(super) fn new(
        id: u64,
        initiator: bool,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
        state: State,
    ) -> Self {
        Self {
            id,
            spi_i: if initiator { id } else { 0 },
            spi_r: if initiator { 0 } else { id },
            initiator,
            local,
            remote,
            state,
            suite: None,
            keys: None,
            remote_id: None,
            auth_key: None,
            children: Vec::new(),
            next_request_id: 0,
            pending: None,
            queue: VecDeque::new(),
            expect_request_id: 0,
            last_response: None,
            iv_counter: 0,
            nat_local: false,
            nat_remote: false,
            created: now,
            authenticated_at: None,
            last_rx: now,
            last_traffic_out: None,
            last_probe: now,
            reassembly: None,
            superseded: false,
            hinted_request: None,
            replaces: None,
            hint_probe_at: None,
        }
    }

    pub(super) fn flags(&self, response: bool) -> u8 {
        let mut f = 0;
        if self.initiator {
            f |= flags::INITIATOR;
        }
        if response {
            f |= flags::RESPONSE;
        }
        f
    }

    pub(super) fn out_key(&self) -> Option<AesGcm256> {
        let k = self.keys.as_ref()?;
        AesGcm256::new(if self.initiator {
            k.sk_ei.expose()
        } else {
            k.sk_er.expose()
        })
        .ok()
    }

    pub(super) fn in_key(&self) -> Option<AesGcm256> {
        let k = self.keys.as_ref()?;
        AesGcm256::new(if self.initiator {
            k.sk_er.expose()
        } else {
            k.sk_ei.expose()
        })
        .ok()
    }

    pub(super) fn seal(
        &mut self,
        exchange: ExchangeType,
        response: bool,
        message_id: u32,
        payloads: &[Payload],
    ) -> Option<Vec<u8>> {
        let key = self.out_key()?;
        self.iv_counter = self.iv_counter.wrapping_add(1);
        sk::seal(
            self.spi_i,
            self.spi_r,
            exchange,
            self.flags(response),
            message_id,
            payloads,
            &key,
            self.iv_counter.to_be_bytes(),
        )
        .ok()
    }

    pub(super) fn prf(&self) -> Option<PrfAlg> {
        self.keys.as_ref().map(|k| k.prf)
    }

    pub(super) fn udp_encap(&self) -> bool {
        self.nat_local || self.nat_remote
    }

    pub(super) fn child_by_in(&mut self, spi: u32) -> Option<&mut Child> {
        self.children.iter_mut().find(|c| c.spi_in == spi)
    }
}
