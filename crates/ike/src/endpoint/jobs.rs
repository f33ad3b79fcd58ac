//! IKE's expensive computations as jobs, so a hub can spread them over
//! cores while the engine stays sans-IO and single-threaded.
//!
//! A responder's IKE_SA_INIT (RFC 7296 §1.2) costs a D-H key pair, the D-H
//! agreement and SKEYSEED / prf+ (§2.14): most of a handshake's CPU. In
//! offload mode ([`Endpoint::set_offload`]) the endpoint validates the
//! request, creates the half-open SA in state `ExpectSaInitKeys`, and hands
//! that work out as a [`Job`] ([`Endpoint::poll_job`]). [`Job::run`] is pure
//! computation (no endpoint, no clock, no randomness), so the caller can run
//! it on any thread and give the [`JobDone`] back with
//! [`Endpoint::complete_job`], in any order; the response leaves then.
//!
//! Every random value (the private scalar, our SPI, Nr, a forced-NAT source
//! hash) is drawn from the endpoint's RNG when the request arrives, and
//! finishing uses none, so the handshake bytes are the same whether the job
//! runs inline (the default, as in every simulation) or elsewhere, and
//! whatever order results come back in.
//!
//! A result is tied to its SA's SPI and to the job's number: one for an SA
//! that is gone (deleted, timed out) is dropped and counted
//! ([`Counters::jobs_late`]); its keys are wiped on drop like any `Secret`.
//! Jobs outstanding are half-open SAs, so [`Config::max_half_open`] bounds
//! them; a caller that cannot take more gives the job back with
//! [`Endpoint::cancel_job`] (counted as [`Counters::jobs_refused`]), which
//! drops the SA as if the request never came: the initiator retransmits.

use super::*;

/// The D-H and key derivation of one responder IKE_SA_INIT, to be run with
/// [`Job::run`] on any thread.
#[derive(Debug)]
pub struct Job {
    id: u64,
    sa: u64,
    work: SaInitWork,
}

/// What the computation needs: nothing secret leaves the endpoint but the
/// fresh private scalar, which lives in a [`Secret`] (wiped on drop).
#[derive(Debug)]
struct SaInitWork {
    group: DhAlg,
    scalar: Secret,
    peer_public: Vec<u8>,
    prf: PrfAlg,
    nonce_i: Vec<u8>,
    nonce_r: Vec<u8>,
    spi_i: u64,
    spi_r: u64,
}

/// A finished [`Job`], for [`Endpoint::complete_job`].
#[derive(Debug)]
pub struct JobDone {
    id: u64,
    sa: u64,
    result: Result<SaInitKeys, JobError>,
}

/// Our public value and the new IKE SA's keys.
#[derive(Debug)]
pub(super) struct SaInitKeys {
    public: Vec<u8>,
    keys: IkeKeys,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JobError {
    /// The peer's KE data is not a valid public value (off the curve, an
    /// all-zero X25519 result): answered with INVALID_SYNTAX as inline.
    PeerValue,
    /// Our own provider failed (or the drawn scalar was out of range, about
    /// 2^-32 for P-256): dropped silently, the initiator retransmits.
    Provider,
}

impl Job {
    /// The IKE SA the job belongs to (to route or shard jobs by SA).
    pub fn ike_sa(&self) -> IkeSaId {
        IkeSaId(self.sa)
    }

    /// Computes the key pair, g^ir (RFC 5903 §7, RFC 8031 §2) and the IKE
    /// SA's keys (§2.14). Pure: safe on any thread, deterministic.
    #[must_use]
    pub fn run(self) -> JobDone {
        let w = self.work;
        let result = (|| {
            let dh = DhPrivate::from_private_bytes(w.group, w.scalar.expose())
                .map_err(|_| JobError::Provider)?;
            let gir = dh.agree(&w.peer_public).map_err(|_| JobError::PeerValue)?;
            let keys = IkeKeys::derive(
                w.prf,
                &w.nonce_i,
                &w.nonce_r,
                gir.expose(),
                w.spi_i,
                w.spi_r,
            )
            .map_err(|_| JobError::Provider)?;
            Ok(SaInitKeys {
                public: dh.public_value().to_vec(),
                keys,
            })
        })();
        JobDone {
            id: self.id,
            sa: self.sa,
            result,
        }
    }
}

impl JobDone {
    /// The IKE SA the result belongs to.
    pub fn ike_sa(&self) -> IkeSaId {
        IkeSaId(self.sa)
    }
}

impl Endpoint {
    /// Offload mode: IKE_SA_INIT's D-H and key derivation come out of
    /// [`Endpoint::poll_job`] instead of running inline. Off by default (and
    /// in every simulation); the daemon turns it on when it has a worker
    /// pool. Turn it on before traffic: jobs already handed out still
    /// complete either way.
    pub fn set_offload(&mut self, on: bool) {
        self.offload = on;
    }

    /// The next job to run (offload mode), in the order the requests came.
    #[must_use]
    pub fn poll_job(&mut self) -> Option<Job> {
        self.jobs.pop_front()
    }

    /// A job's result: the SA it belongs to sends its IKE_SA_INIT response
    /// and waits for IKE_AUTH. A result whose SA is gone, or no longer
    /// waits for this job, is dropped and counted.
    pub fn complete_job(&mut self, _now: Instant, done: JobDone) {
        let Some(mut sa) = self.sas.remove(done.sa) else {
            self.counters.jobs_late += 1;
            return;
        };
        match std::mem::replace(&mut sa.state, State::Closed) {
            State::ExpectSaInitKeys(st) if st.job == done.id => {
                self.finish_sa_init(&mut sa, st, done.result);
            }
            other => {
                sa.state = other;
                self.counters.jobs_late += 1;
            }
        }
        self.put_back(sa);
    }

    /// A job the caller cannot run (its queue is full): the SA waiting for
    /// it is dropped without an answer, as under the half-open cap (§2.6);
    /// the initiator's retransmission finds room later.
    pub fn cancel_job(&mut self, job: Job) {
        self.counters.jobs_refused += 1;
        if let Some(mut sa) = self.sas.remove(job.sa) {
            if matches!(&sa.state, State::ExpectSaInitKeys(st) if st.job == job.id) {
                sa.state = State::Closed;
            }
            self.put_back(sa);
        }
    }

    /// Responder: `sa` (created for an acceptable IKE_SA_INIT, `st` what
    /// the response needs) gets its keys computed, inline or as a job.
    /// The private scalar is drawn from our RNG before our SPI and Nr, as
    /// [`DhPrivate::generate`] would.
    pub(super) fn start_sa_init_keys(
        &mut self,
        mut sa: IkeSa,
        st: ExpectSaInitKeys,
        scalar: Secret,
        peer_public: Vec<u8>,
    ) {
        let job = Job {
            id: st.job,
            sa: sa.id,
            work: SaInitWork {
                group: st.suite.dh,
                scalar,
                peer_public,
                prf: st.suite.prf,
                nonce_i: st.nonce_i.clone(),
                nonce_r: st.nonce_r.clone(),
                spi_i: sa.spi_i,
                spi_r: sa.spi_r,
            },
        };
        if self.offload {
            sa.state = State::ExpectSaInitKeys(st);
            self.jobs.push_back(job);
        } else {
            // Inline: the same computation and the same finish, without the
            // table round trip.
            let done = job.run();
            self.finish_sa_init(&mut sa, st, done.result);
        }
        self.put_back(sa);
    }

    /// Responder: sends the IKE_SA_INIT response (§1.2) with the computed
    /// keys, and the SA waits for IKE_AUTH; or refuses / drops as the inline
    /// path always did. Uses no randomness.
    fn finish_sa_init(
        &mut self,
        sa: &mut IkeSa,
        st: ExpectSaInitKeys,
        result: Result<SaInitKeys, JobError>,
    ) {
        let k = match result {
            Ok(k) => k,
            Err(e) => {
                if e == JobError::PeerValue {
                    let reply = ExchangeError::InvalidSyntax.reply();
                    self.plain_reply(sa.local, sa.remote, &st.request, 0, reply);
                }
                sa.state = State::Closed;
                return;
            }
        };
        let (local, remote, id) = (sa.local, sa.remote, sa.id);
        let reply = vec![
            Payload::Sa(vec![st.chosen]),
            Payload::Ke(KeyExchange {
                dh_group: DhId::from(st.suite.dh),
                data: k.public,
            }),
            Payload::Nonce(st.nonce_r.clone()),
            Payload::Notify(Notify::new(
                NotifyType::NAT_DETECTION_SOURCE_IP,
                st.nat_source,
            )),
            Payload::Notify(Notify::new(
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                nat_hash(st.request.spi_i, id, remote).to_vec(),
            )),
        ];
        let Some(resp) = self.plain_reply(local, remote, &st.request, id, reply) else {
            sa.state = State::Closed;
            return;
        };
        sa.suite = Some(st.suite);
        let auth_keys = AuthKeys::of(&k.keys);
        sa.keys = Some(k.keys);
        sa.last_response = Some((0, resp.clone()));
        sa.state = State::ExpectAuthRequest(ExpectAuthRequest {
            nonce_i: st.nonce_i,
            nonce_r: st.nonce_r,
            init_request: st.init_request,
            init_response: resp,
            deadline: st.deadline,
            keys: auth_keys,
        });
    }
}

#[cfg(test)]
#[path = "jobs_tests.rs"]
mod tests;
