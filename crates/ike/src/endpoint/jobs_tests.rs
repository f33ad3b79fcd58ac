//! The job path: inline and offloaded handshakes agree byte for byte, results
//! may come back in any order, late and refused jobs leave nothing behind.

use super::*;
use dmvpn_crypto::TestRng;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

const HUB: &str = "198.51.100.1:500";

fn config() -> Config {
    let mut c = Config::default();
    c.keyring.set_wildcard(b"k");
    c
}

fn spoke_addr(i: usize) -> SocketAddr {
    let last = u8::try_from(i + 1).unwrap();
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), 500)
}

/// A hub and `n` spokes that all initiate at once.
struct Star {
    hub: Endpoint,
    spokes: Vec<Endpoint>,
    now: Instant,
    /// Every datagram the hub sent, by destination, in order.
    from_hub: BTreeMap<SocketAddr, Vec<Vec<u8>>>,
    hub_events: Vec<Event>,
}

impl Star {
    fn new(n: usize, offload: bool) -> Self {
        let mut hub = Endpoint::new(config(), Box::new(TestRng::new(99)));
        hub.set_offload(offload);
        let now = Instant::now();
        let mut spokes = Vec::new();
        for i in 0..n {
            let mut s = Endpoint::new(config(), Box::new(TestRng::new(1000 + i as u64)));
            s.initiate(now, spoke_addr(i), HUB.parse().unwrap())
                .unwrap();
            spokes.push(s);
        }
        Self {
            hub,
            spokes,
            now,
            from_hub: BTreeMap::new(),
            hub_events: Vec::new(),
        }
    }

    /// Delivers spoke → hub datagrams (in spoke order, so the hub draws its randomness in
    /// the same order whatever happened before), then runs the hub's jobs with `order`
    /// choosing the completion order, then delivers hub → spoke. Until quiet.
    fn run(&mut self, order: impl Fn(&mut Vec<Job>)) {
        let hub_addr: SocketAddr = HUB.parse().unwrap();
        loop {
            let mut moved = false;
            for (i, s) in self.spokes.iter_mut().enumerate() {
                while let Some(t) = s.poll_transmit() {
                    moved = true;
                    self.hub
                        .handle_datagram(self.now, hub_addr, spoke_addr(i), &t.bytes);
                }
            }
            let mut jobs = Vec::new();
            while let Some(j) = self.hub.poll_job() {
                jobs.push(j);
            }
            order(&mut jobs);
            // Run them all before completing any: results come back after the fact.
            let done: Vec<JobDone> = jobs.into_iter().map(Job::run).collect();
            for d in done {
                moved = true;
                self.hub.complete_job(self.now, d);
            }
            self.hub.check_indexes();
            while let Some(t) = self.hub.poll_transmit() {
                moved = true;
                self.from_hub
                    .entry(t.remote)
                    .or_default()
                    .push(t.bytes.clone());
                let i = (0..self.spokes.len())
                    .find(|&i| spoke_addr(i) == t.remote)
                    .unwrap();
                self.spokes[i].handle_datagram(self.now, spoke_addr(i), hub_addr, &t.bytes);
            }
            while let Some(e) = self.hub.poll_event() {
                self.hub_events.push(e);
            }
            if !moved {
                break;
            }
        }
    }

    /// The hub's installed Child SAs: (remote, SPIs, keys).
    fn hub_children(&self) -> Vec<(SocketAddr, u32, u32, Secret, Secret)> {
        let mut v: Vec<_> = self
            .hub_events
            .iter()
            .filter_map(|e| match e {
                Event::ChildSaInstalled(c) => Some((
                    c.remote,
                    c.spi_in,
                    c.spi_out,
                    c.key_in.clone(),
                    c.key_out.clone(),
                )),
                _ => None,
            })
            .collect();
        v.sort_by_key(|c| c.0);
        v
    }
}

fn established(e: &Endpoint) -> usize {
    e.ike_sas(Instant::now())
        .iter()
        .filter(|s| s.state == IkeSaState::Established && !s.children.is_empty())
        .count()
}

#[test]
fn inline_and_offloaded_handshakes_are_identical_in_any_completion_order() {
    let n = 8;
    let mut inline = Star::new(n, false);
    inline.run(|_| {});
    assert!(
        inline.hub.poll_job().is_none(),
        "inline mode hands out no job"
    );
    assert_eq!(established(&inline.hub), n);

    let orders: [fn(&mut Vec<Job>); 3] = [
        |_| {},
        |j| j.reverse(),
        // Interleaved: odd ones first.
        |j| j.sort_by_key(|x| (x.ike_sa().0 % 2 == 0, x.ike_sa().0)),
    ];
    for order in orders {
        let mut off = Star::new(n, true);
        off.run(order);
        assert_eq!(established(&off.hub), n);
        for s in &off.spokes {
            assert_eq!(established(s), 1);
        }
        // The same datagrams to every spoke and the same keys installed.
        assert_eq!(off.from_hub, inline.from_hub);
        assert_eq!(off.hub_children(), inline.hub_children());
        assert_eq!(off.hub.counters().jobs_late, 0);
    }
}

#[test]
fn a_result_for_a_deleted_or_timed_out_sa_is_dropped_and_counted() {
    let mut star = Star::new(2, true);
    let hub_addr: SocketAddr = HUB.parse().unwrap();
    for (i, s) in star.spokes.iter_mut().enumerate() {
        let t = s.poll_transmit().unwrap();
        star.hub
            .handle_datagram(star.now, hub_addr, spoke_addr(i), &t.bytes);
    }
    let first = star.hub.poll_job().unwrap();
    let second = star.hub.poll_job().unwrap();
    assert!(star.hub.poll_job().is_none());
    assert!(
        star.hub.poll_transmit().is_none(),
        "no response before the keys"
    );
    assert_eq!(star.hub.sa_count(), 2);
    // Deleted locally while computing; the other one times out half-open.
    star.hub.delete_sa(star.now, first.ike_sa()).unwrap();
    let later = star.now + star.hub.config().half_open_timeout;
    star.hub.handle_timeout(later);
    assert_eq!(star.hub.sa_count(), 0);
    star.hub.check_indexes();
    star.hub.complete_job(later, second.run());
    star.hub.complete_job(later, first.run());
    assert_eq!(star.hub.counters().jobs_late, 2);
    assert_eq!(star.hub.sa_count(), 0);
    assert!(star.hub.poll_transmit().is_none());
    assert!(star.hub.poll_event().is_none());
    star.hub.check_indexes();
}

#[test]
fn a_retransmission_waits_for_the_job_and_a_refused_job_starts_over() {
    let mut star = Star::new(1, true);
    let hub_addr: SocketAddr = HUB.parse().unwrap();
    let request = star.spokes[0].poll_transmit().unwrap();
    star.hub
        .handle_datagram(star.now, hub_addr, spoke_addr(0), &request.bytes);
    // The same request again while its keys are computed: half-open already (§2.1), so
    // neither a second SA nor a second job.
    star.hub
        .handle_datagram(star.now, hub_addr, spoke_addr(0), &request.bytes);
    let job = star.hub.poll_job().unwrap();
    assert!(star.hub.poll_job().is_none());
    assert_eq!(star.hub.sa_count(), 1);
    // The pool is full: the job comes back, the SA goes, nothing is answered.
    star.hub.cancel_job(job);
    assert_eq!(star.hub.counters().jobs_refused, 1);
    assert_eq!(star.hub.sa_count(), 0);
    assert!(star.hub.poll_transmit().is_none());
    star.hub.check_indexes();
    // The spoke's retransmission is a new request, which completes.
    star.hub
        .handle_datagram(star.now, hub_addr, spoke_addr(0), &request.bytes);
    star.run(|_| {});
    assert_eq!(established(&star.hub), 1);
    assert_eq!(established(&star.spokes[0]), 1);
    assert_eq!(star.hub.counters().jobs_late, 0);
}

#[test]
fn an_invalid_public_value_is_refused_when_the_job_comes_back() {
    let mut star = Star::new(1, true);
    let hub_addr: SocketAddr = HUB.parse().unwrap();
    let t = star.spokes[0].poll_transmit().unwrap();
    let mut msg = Message::parse(&t.bytes).unwrap();
    for p in &mut msg.payloads {
        if let Payload::Ke(k) = p {
            // Right length, not a point on P-256.
            k.data = vec![0x55; k.data.len()];
        }
    }
    let bytes = msg.emit().unwrap();
    star.hub
        .handle_datagram(star.now, hub_addr, spoke_addr(0), &bytes);
    let job = star.hub.poll_job().unwrap();
    star.hub.complete_job(star.now, job.run());
    assert_eq!(star.hub.sa_count(), 0);
    let reply = star.hub.poll_transmit().unwrap();
    let reply = Message::parse(&reply.bytes).unwrap();
    assert_eq!(reply.header.spi_r, 0);
    assert!(find_notify(&reply.payloads, NotifyType::INVALID_SYNTAX).is_some());
    star.hub.check_indexes();
}
