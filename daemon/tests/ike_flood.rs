//! IKE_SA_INIT flood (issue 13, "Evidence"): a flood namespace on the WAN bridge sends
//! syntactically valid IKE_SA_INIT requests (the `dmvpn-ike` encoder: an IKE proposal, a real
//! P-256 KE payload, a nonce, NAT detection, a fresh random SPI each) at [`FLOOD_RATE`] per
//! second from [`SOURCES`] addresses of the WAN /24, for [`SPOOFED_SECS`] s without ever
//! returning a cookie (what a flood from spoofed sources can do), then for [`ANSWERED_SECS`] s
//! returning every cookie it gets (a flood from addresses the attacker owns). Meanwhile the hub
//! and both spokes start, the spokes bring up IKE (through the cookie exchange: the flood has
//! the hub past its cookie threshold before they start) and register, pings flow spoke → hub
//! tunnel address until the flood ends, and the spokes' periodic liveness checks (an IKE
//! INFORMATIONAL every 3 s, dead after 5 unanswered tries 1 s apart) cross the hub's IKE queue
//! with the flood.
//!
//! Checked: both spokes register, ≥ 99 % of the pings are answered, the spokes' SAs survive
//! the flood (no IKE SA down, no DPD verdict), nothing is dropped from the hub's queue of
//! established peers' IKE (new-SA requests have a queue of their own), the half-open count
//! stays within the cookie threshold while cookies go unanswered and within the hard cap when
//! they are answered, and the hub's RSS stays below its baseline plus what the hard cap can
//! hold (see [`rss_bound`]). Printed: once an answered flood has filled the hard cap, each new
//! IKE_SA_INIT takes the place of the oldest half-open SA (evicted), so new peers are not
//! locked out for the half-open timeout; established peers are untouched.
//! Printed: the flood rate achieved, the cookies, SA_INIT responses and silences the flooder
//! saw, the hub's refusal and queue drop counters, the half-open peak and RSS peak per phase,
//! the hub's CPU per phase, and each spoke's time from start to IKE SA up and to registered.
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft` and `ping` (tests/install-deps.sh).
//! About 50 s.

use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use dmvpn_crypto::{DhAlg, DhPrivate, Rng, SystemRng, TestRng};
use dmvpn_ike::keys::nat_hash;
use dmvpn_ike::message::{Header, KeyExchange, Notify, flags};
use dmvpn_ike::{DhId, ExchangeType, IkeProposal, Message, NotifyType, Payload, PayloadType};
use dmvpn_tests::e2e::{
    HUB_NBMA, HUB_TUNNEL, NAT_OUTSIDE, Node, PREFIX, SPOKE_A_NBMA, TestDir, Topology, WAN_IF, ping,
};
use dmvpn_tests::scenario::{
    DPD_DELAY, DPD_RETRY, DPD_TRIES, Scenario, e2e_config, edit_config, expect, keys,
    log_secs_of_day, table, utc_secs_of_day,
};
use dmvpn_tests::{Netns, require_root_and_tools, veth_named};
use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrIn, sendmsg, setsockopt, sockopt};
use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};

/// IKE_SA_INIT requests per second, all sources together.
const FLOOD_RATE: u64 = 4000;
/// Flood sources: 198.51.100.FIRST..=LAST, unused by the topology (.1 to .4).
const FIRST_SOURCE: u8 = 100;
const LAST_SOURCE: u8 = 250;
const SOURCES: usize = (LAST_SOURCE - FIRST_SOURCE + 1) as usize;
/// Phase 1: cookies never returned.
const SPOOFED_SECS: u64 = 30;
/// Phase 2: every cookie returned at once.
const ANSWERED_SECS: u64 = 10;
/// The flood runs this long before the spokes start, so they meet the cookie exchange.
const SPOKES_AFTER: Duration = Duration::from_secs(3);
/// How long each spoke may take to register under the flood.
const REGISTER_BOUND: Duration = Duration::from_secs(40);
/// Pings spoke → hub: one every 100 ms.
const PING_INTERVAL: &str = "0.1";
const PINGS_PER_SEC: u64 = 10;
/// The share of pings that must be answered.
const PINGS_ANSWERED: f64 = 0.99;
/// What one half-open SA may cost at most, for the RSS bound: the issue measured ≈ 9 KiB (a
/// D-H private key, both nonces, the request and response kept for IKE_AUTH's signed octets,
/// SK_* keys, the table's indexes); twice that, for allocator rounding.
const HALF_OPEN_COST: u64 = 18 << 10;
/// RSS the hub may gain beyond the half-open SAs: the two 1024-deep IKE queues, transmit queues, a
/// `show ike --json` of every SA being serialized, allocator slack.
const RSS_SLACK: u64 = 32 << 20;

fn source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, FIRST_SOURCE + i as u8)
}

fn hub() -> SocketAddrV4 {
    SocketAddrV4::new(HUB_NBMA.parse().expect("HUB_NBMA"), 500)
}

/// The RSS the hub must stay below: its RSS before the flood, plus every half-open SA the hard
/// cap admits at [`HALF_OPEN_COST`] each, plus [`RSS_SLACK`]. Without the cap the answered
/// phase alone would create `FLOOD_RATE × 30 s` half-open SAs (120,000, ≥ 1 GiB at 9 KiB).
fn rss_bound(baseline: u64) -> u64 {
    let cap = dmvpn_ike::Config::default().max_half_open as u64;
    baseline + cap * HALF_OPEN_COST + RSS_SLACK
}

// ---- the flood namespace -------------------------------------------------------------------------

/// A namespace on the WAN bridge holding every flood source address on its `eth0`.
fn flood_namespace(t: &Topology, dir: &TestDir) -> Netns {
    // `dmvpne2e-<pid>-…`: removed by the topology's stale-namespace cleanup if this run dies.
    let ns = Netns::named(format!("{PREFIX}{}-flood", std::process::id()))
        .expect("creating the flood namespace");
    for s in [
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ] {
        ns.sysctl(s).expect("sysctl in the flood namespace");
    }
    veth_named(&t.wan, "flood", &ns, WAN_IF).expect("veth to the WAN bridge");
    t.wan
        .ip(&["link", "set", "flood", "master", "br0"])
        .expect("bridge port");
    t.wan.ip(&["link", "set", "flood", "up"]).expect("port up");
    let batch: String = (0..SOURCES)
        .map(|i| format!("addr add {}/24 dev {WAN_IF}\n", source(i)))
        .collect();
    let path = dir.path().join("flood-addresses.ip");
    std::fs::write(&path, batch).expect("writing the ip batch");
    ns.ip(&["-batch", path.to_str().expect("utf-8 path")])
        .expect("adding the flood addresses");
    ns.ip(&["link", "set", WAN_IF, "up"]).expect("eth0 up");
    ns
}

/// UDP 500 on every flood address at once: one socket, each datagram sent from its source
/// with IP_PKTINFO; a reply is matched to its source by the SPI it echoes ([`spi_source`]).
fn flood_socket(ns: &Netns) -> Socket {
    ns.run_in(|| {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        let _ = setsockopt(&s, sockopt::RcvBufForce, &(16 << 20));
        let _ = setsockopt(&s, sockopt::SndBufForce, &(4 << 20));
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 500)).into())
            .expect("binding UDP 500 in the flood namespace");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        s
    })
}

// ---- the flooder ---------------------------------------------------------------------------------

/// What the flooder sent and what came back.
#[derive(Debug, Default)]
struct FloodStats {
    sent: AtomicU64,
    send_errors: AtomicU64,
    /// IKE_SA_INIT responses carrying a COOKIE notify: requests the hub answered statelessly.
    cookies: AtomicU64,
    /// Full IKE_SA_INIT responses (SA, KE, Nr): a half-open SA was created for each.
    half_open: AtomicU64,
    /// Other responses (error notifies), and datagrams that did not parse.
    other: AtomicU64,
    /// Requests resent with the cookie (phase 2).
    cookie_answers: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default)]
struct FloodCounts {
    sent: u64,
    send_errors: u64,
    cookies: u64,
    half_open: u64,
    other: u64,
    cookie_answers: u64,
}

impl FloodStats {
    fn snapshot(&self) -> FloodCounts {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FloodCounts {
            sent: l(&self.sent),
            send_errors: l(&self.send_errors),
            cookies: l(&self.cookies),
            half_open: l(&self.half_open),
            other: l(&self.other),
            cookie_answers: l(&self.cookie_answers),
        }
    }
}

impl std::ops::Sub for FloodCounts {
    type Output = FloodCounts;
    fn sub(self, o: FloodCounts) -> FloodCounts {
        FloodCounts {
            sent: self.sent - o.sent,
            send_errors: self.send_errors - o.send_errors,
            cookies: self.cookies - o.cookies,
            half_open: self.half_open - o.half_open,
            other: self.other - o.other,
            cookie_answers: self.cookie_answers - o.cookie_answers,
        }
    }
}

/// The source index lives in the SPI's low 16 bits; the other 48 are random.
fn spi_source(spi_i: u64) -> Option<usize> {
    let i = (spi_i & 0xffff) as usize;
    (i < SOURCES).then_some(i)
}

/// The nonce is derived from the SPI, so a cookie (a hash over Ni, IPi and SPIi) can be
/// returned without remembering anything per request.
fn nonce_for(spi_i: u64) -> Vec<u8> {
    spi_i.to_be_bytes().repeat(4)
}

/// A first IKE_SA_INIT request from `src` (RFC 7296 §1.2), with `cookie` first if given (§2.6).
fn sa_init_request(spi_i: u64, src: Ipv4Addr, ke: &[u8], cookie: Option<&[u8]>) -> Vec<u8> {
    let mut payloads = Vec::with_capacity(6);
    if let Some(c) = cookie {
        payloads.push(Payload::Notify(Notify::new(NotifyType::COOKIE, c.to_vec())));
    }
    payloads.push(Payload::Sa(dmvpn_ike::proposal::ike_offer(
        &[IkeProposal::default()],
        None,
    )));
    payloads.push(Payload::Ke(KeyExchange {
        dh_group: DhId::from(DhAlg::Ecp256),
        data: ke.to_vec(),
    }));
    payloads.push(Payload::Nonce(nonce_for(spi_i)));
    payloads.push(Payload::Notify(Notify::new(
        NotifyType::NAT_DETECTION_SOURCE_IP,
        nat_hash(spi_i, 0, SocketAddr::V4(SocketAddrV4::new(src, 500))).to_vec(),
    )));
    payloads.push(Payload::Notify(Notify::new(
        NotifyType::NAT_DETECTION_DESTINATION_IP,
        nat_hash(spi_i, 0, SocketAddr::V4(hub())).to_vec(),
    )));
    Message {
        header: Header {
            spi_i,
            spi_r: 0,
            next_payload: PayloadType::NONE,
            version: 0x20,
            exchange: ExchangeType::IKE_SA_INIT,
            flags: flags::INITIATOR,
            message_id: 0,
            length: 0,
        },
        payloads,
    }
    .emit()
    .expect("encoding IKE_SA_INIT")
}

fn send_from(sock: &impl AsRawFd, src: Ipv4Addr, bytes: &[u8]) -> bool {
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(src).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let to = SockaddrIn::from(hub());
    sendmsg(
        sock.as_raw_fd(),
        &[IoSlice::new(bytes)],
        &[ControlMessage::Ipv4PacketInfo(&info)],
        MsgFlags::MSG_DONTWAIT,
        Some(&to),
    )
    .is_ok()
}

/// Sends [`FLOOD_RATE`] requests per second, round robin over the sources, until `stop`. A
/// stall (the machine is shared) is not made up for in one burst: at most 100 ms of backlog.
fn send_flood(sock: &Socket, ke: &[u8], stats: &FloodStats, stop: &AtomicBool) {
    let mut rng = TestRng::new(SystemRng::new().next_u64());
    let start = Instant::now();
    let mut due_base = 0u64;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * FLOOD_RATE as f64) as u64;
        if due.saturating_sub(due_base + n) > FLOOD_RATE / 10 {
            due_base = due - n - FLOOD_RATE / 10;
        }
        while due_base + n < due {
            let i = (n % SOURCES as u64) as usize;
            let spi_i = (rng.next_u64() & !0xffff) | i as u64;
            let bytes = sa_init_request(spi_i, source(i), ke, None);
            if send_from(sock, source(i), &bytes) {
                stats.sent.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.send_errors.fetch_add(1, Ordering::Relaxed);
            }
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Reads the hub's answers and counts them; while `answer` is set, returns each cookie.
fn read_replies(
    sock: &Socket,
    ke: &[u8],
    stats: &FloodStats,
    stop: &AtomicBool,
    answer: &AtomicBool,
) {
    let sock: std::net::UdpSocket = sock.try_clone().expect("socket clone").into();
    let mut buf = vec![0u8; 9000];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(msg) = Message::parse(&buf[..n]) else {
            stats.other.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let h = &msg.header;
        let cookie = match msg.payloads.first() {
            Some(Payload::Notify(n)) if n.ty == NotifyType::COOKIE => Some(n.data.clone()),
            _ => None,
        };
        if h.exchange != ExchangeType::IKE_SA_INIT || h.flags & flags::RESPONSE == 0 {
            stats.other.fetch_add(1, Ordering::Relaxed);
        } else if let Some(c) = cookie {
            stats.cookies.fetch_add(1, Ordering::Relaxed);
            if answer.load(Ordering::Relaxed)
                && let Some(i) = spi_source(h.spi_i)
            {
                let bytes = sa_init_request(h.spi_i, source(i), ke, Some(&c));
                if send_from(&sock, source(i), &bytes) {
                    stats.cookie_answers.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else if msg.payloads.iter().any(|p| matches!(p, Payload::Sa(_))) {
            stats.half_open.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.other.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Stops the flood when dropped, so a failing step (a panic inside the thread scope) does
/// not leave the scope waiting for the flood threads forever.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

// ---- the hub's figures ---------------------------------------------------------------------------

/// VmRSS of `pid`, bytes.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb << 10)
}

/// utime + stime of `pid`, seconds (USER_HZ is 100 on Linux).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Half-open responder SAs in the hub's `show ike --json`.
fn half_open(s: &Scenario<'_>) -> usize {
    s.show_json(Node::Hub, "ike")["sas"]
        .as_array()
        .map_or(0, |v| {
            v.iter()
                .filter(|sa| sa["state_detail"] == "ExpectAuthRequest")
                .count()
        })
}

/// The hub's drop counters the flood concerns (`show interface --json`).
#[derive(Debug, Default, Clone, Copy)]
struct HubDrops {
    /// IKE_SA_INIT requests dropped at the per-source half-open cap.
    refused: u64,
    /// Half-open SAs given up, oldest first, for newer requests at the hard cap.
    evicted: u64,
    /// The control plane's queue of established peers' IKE was full.
    queue_full: u64,
    /// The control plane's queue of new IKE SAs was full.
    sa_init_queue_full: u64,
    /// The kernel dropped datagrams at a full socket.
    socket_drops: u64,
}

impl std::ops::Sub for HubDrops {
    type Output = HubDrops;
    fn sub(self, o: HubDrops) -> HubDrops {
        HubDrops {
            refused: self.refused - o.refused,
            evicted: self.evicted - o.evicted,
            queue_full: self.queue_full - o.queue_full,
            sa_init_queue_full: self.sa_init_queue_full - o.sa_init_queue_full,
            socket_drops: self.socket_drops - o.socket_drops,
        }
    }
}

fn hub_drops(s: &Scenario<'_>) -> HubDrops {
    let v = s.show_json(Node::Hub, "interface");
    let d = |k: &str| v["drops"][k].as_u64().unwrap_or(0);
    HubDrops {
        refused: d("ike_half_open_refused"),
        evicted: d("ike_half_open_evicted"),
        queue_full: d("underlay_queue_full"),
        sa_init_queue_full: d("underlay_sa_init_queue_full"),
        socket_drops: d("underlay_socket_drops"),
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
}

/// Seconds from `start` to the first line of `node` satisfying `pred`, if logged yet.
fn seen_after(
    s: &Scenario<'_>,
    node: Node,
    start: SystemTime,
    pred: &dyn Fn(&str) -> bool,
) -> Option<f64> {
    let line = s.lines(node, 0, pred).into_iter().next()?;
    let at = log_secs_of_day(&line)?;
    Some((at - utc_secs_of_day(start)).rem_euclid(86_400.0))
}

/// One phase's peaks.
#[derive(Debug, Default, Clone, Copy)]
struct Peaks {
    half_open: usize,
    rss: u64,
}

impl Peaks {
    fn record(&mut self, half_open: usize, rss: u64) {
        self.half_open = self.half_open.max(half_open);
        self.rss = self.rss.max(rss);
    }
}

#[test]
fn ike_sa_init_flood_leaves_the_spokes_up_and_the_hub_bounded() {
    require_root_and_tools();
    let dir = TestDir::new("ike-flood").unwrap();
    let t = Topology::new().expect("building the topology");
    let flood_ns = flood_namespace(&t, &dir);
    let k = keys();
    let cfgs = [
        e2e_config(&dir, Node::Hub, &k),
        e2e_config(&dir, Node::SpokeA, &k),
        e2e_config(&dir, Node::SpokeB, &k),
    ];
    // Periodic liveness checks (every DPD_DELAY s whatever the traffic) keep the spokes'
    // established IKE SAs exchanging with the hub through the flood, not only ESP.
    for c in &cfgs[1..] {
        edit_config(&c.config, |t| {
            table(table(t, "ike"), "dpd")
                .insert("mode".into(), toml::Value::String("periodic".into()));
        });
    }
    let ike = dmvpn_ike::Config::default();
    let mut s = Scenario::new("ike-flood", &t);

    s.step("start the hub; its RSS before the flood");
    s.start(&cfgs[0]);
    s.wait_line(
        Node::Hub,
        "underlay sockets open",
        0,
        Duration::from_secs(10),
        &expect::underlay_open,
    );
    let pid = s
        .daemon(Node::Hub)
        .process
        .pid()
        .unwrap_or_else(|| s.fail("the hub has no PID"));
    std::thread::sleep(Duration::from_millis(500));
    let baseline = rss(pid).unwrap_or_else(|| s.fail("no VmRSS for the hub"));
    let bound = rss_bound(baseline);
    s.note(format!(
        "hub RSS {} before the flood; bound {} (+ {} half-open SAs at most × {} KiB + {})",
        mib(baseline),
        mib(bound),
        ike.max_half_open,
        HALF_OPEN_COST >> 10,
        mib(RSS_SLACK)
    ));
    s.note(format!(
        "hub IKE defaults: cookies past {} half-open SAs, hard cap {} ({} per source, twice that with cookies), half-open timeout {:?}",
        ike.cookie_threshold, ike.max_half_open, ike.max_half_open_per_peer, ike.half_open_timeout
    ));

    let sock = flood_socket(&flood_ns);
    let ke = DhPrivate::generate(DhAlg::Ecp256, &mut SystemRng::new())
        .expect("a P-256 key")
        .public_value()
        .to_vec();
    let stats = FloodStats::default();
    let stop = AtomicBool::new(false);
    let answer = AtomicBool::new(false);
    let total = Duration::from_secs(SPOOFED_SECS + ANSWERED_SECS);

    s.step(&format!(
        "flood: {FLOOD_RATE} IKE_SA_INIT/s from {SOURCES} addresses, {SPOOFED_SECS} s with cookies unanswered, then {ANSWERED_SECS} s answered; the spokes start {SPOKES_AFTER:?} in"
    ));
    let cpu0 = cpu_secs(pid).unwrap_or(0.0);
    let mut spokes_start = None;
    let mut setup: [(Option<f64>, Option<f64>); 2] = [(None, None); 2];
    let spokes = [Node::SpokeA, Node::SpokeB];
    let mut phase1 = Peaks::default();
    let mut phase2 = Peaks::default();
    let mut at_switch = (FloodCounts::default(), HubDrops::default(), 0.0);
    let mut half_open_when_spokes_started = 0;
    let mut ping_count = 0u32;
    let (ping_results, flood_elapsed) = std::thread::scope(|sc| {
        let _stop_guard = StopOnDrop(&stop);
        let start = Instant::now();
        sc.spawn(|| send_flood(&sock, &ke, &stats, &stop));
        sc.spawn(|| read_replies(&sock, &ke, &stats, &stop, &answer));
        let mut pings = Vec::new();
        let mut next_sample = start;
        while start.elapsed() < total {
            let now = start.elapsed();
            if spokes_start.is_none() && now >= SPOKES_AFTER {
                half_open_when_spokes_started = half_open(&s);
                s.note(format!(
                    "{:.1} s: {} half-open SAs, {} cookies so far; starting the spokes",
                    now.as_secs_f64(),
                    half_open_when_spokes_started,
                    stats.cookies.load(Ordering::Relaxed)
                ));
                spokes_start = Some(SystemTime::now());
                s.start(&cfgs[1]);
                s.start(&cfgs[2]);
            }
            if let Some(t0) = spokes_start {
                for (i, &node) in spokes.iter().enumerate() {
                    if setup[i].0.is_none() {
                        setup[i].0 = seen_after(&s, node, t0, &expect::ike_sa_up);
                    }
                    if setup[i].1.is_none() {
                        setup[i].1 = seen_after(&s, node, t0, &expect::registered_with_nhs);
                    }
                }
                let registered = setup.iter().all(|x| x.1.is_some());
                if registered && pings.is_empty() {
                    let left = total.saturating_sub(start.elapsed()).as_secs();
                    ping_count = (left.saturating_sub(1) * PINGS_PER_SEC) as u32;
                    s.note(format!(
                        "{:.1} s: both spokes registered; {ping_count} pings from each to {HUB_TUNNEL} while the flood lasts",
                        start.elapsed().as_secs_f64()
                    ));
                    for ns in [&t.spoke_a, &t.spoke_b] {
                        pings.push(
                            sc.spawn(move || ping(ns, HUB_TUNNEL, ping_count, PING_INTERVAL)),
                        );
                    }
                }
                if !registered
                    && SystemTime::now()
                        .duration_since(t0)
                        .is_ok_and(|d| d > REGISTER_BOUND)
                {
                    s.fail(format!(
                        "the spokes did not both register within {REGISTER_BOUND:?} under the flood (IKE up, registered, s after start: {setup:?})"
                    ));
                }
            }
            if !answer.load(Ordering::Relaxed) && now >= Duration::from_secs(SPOOFED_SECS) {
                at_switch = (
                    stats.snapshot(),
                    hub_drops(&s),
                    cpu_secs(pid).unwrap_or(0.0),
                );
                answer.store(true, Ordering::Relaxed);
                s.note(format!(
                    "{:.1} s: the flooder now returns every cookie",
                    now.as_secs_f64()
                ));
            }
            if Instant::now() >= next_sample {
                next_sample += Duration::from_secs(1);
                let r = rss(pid).unwrap_or(0);
                let h = half_open(&s);
                if answer.load(Ordering::Relaxed) {
                    phase2.record(h, r);
                } else {
                    phase1.record(h, r);
                }
                let f = stats.snapshot();
                s.note(format!(
                    "{:>4.1} s: half-open {h:>4}, hub RSS {}, sent {}, cookies {}, SA_INIT responses {}, cookies returned {}",
                    start.elapsed().as_secs_f64(),
                    mib(r),
                    f.sent,
                    f.cookies,
                    f.half_open,
                    f.cookie_answers
                ));
                s.check_alive();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        let elapsed = start.elapsed();
        let results: Vec<_> = pings
            .into_iter()
            .map(|h| h.join().expect("ping thread"))
            .collect();
        (results, elapsed)
    });
    let cpu_end = cpu_secs(pid).unwrap_or(0.0);
    let end = stats.snapshot();
    let drops_end = hub_drops(&s);
    let rss_end = rss(pid).unwrap_or(0);

    s.step("figures");
    let (f1, d1, cpu1) = at_switch;
    let f2 = end - f1;
    let secs2 = flood_elapsed.as_secs_f64() - SPOOFED_SECS as f64;
    for (name, f, secs, d, cpu, peaks) in [
        (
            "phase 1 (cookies unanswered)",
            f1,
            SPOOFED_SECS as f64,
            d1,
            cpu1 - cpu0,
            phase1,
        ),
        (
            "phase 2 (cookies returned)",
            f2,
            secs2,
            drops_end - d1,
            cpu_end - cpu1,
            phase2,
        ),
    ] {
        s.note(format!(
            "{name}, {secs:.1} s: {} requests sent ({:.0}/s, {} send errors), {} cookies returned by the flooder; \
             the hub answered {} with a cookie, {} with a full SA_INIT response (a half-open SA each), {} otherwise, \
             and {} not at all",
            f.sent + f.cookie_answers,
            (f.sent + f.cookie_answers) as f64 / secs,
            f.send_errors,
            f.cookie_answers,
            f.cookies,
            f.half_open,
            f.other,
            (f.sent + f.cookie_answers).saturating_sub(f.cookies + f.half_open + f.other),
        ));
        s.note(format!(
            "{name}: half-open peak {}, hub RSS peak {} (+{} over the baseline), hub CPU {:.1} s ({:.0} %), \
             refused at the per-source half-open cap {}, evicted at the hard cap {}, new-SA queue full {}, established peers' queue full {}, socket drops {}",
            peaks.half_open,
            mib(peaks.rss),
            mib(peaks.rss.saturating_sub(baseline)),
            cpu,
            100.0 * cpu / secs,
            d.refused,
            d.evicted,
            d.sa_init_queue_full,
            d.queue_full,
            d.socket_drops
        ));
    }
    if phase2.half_open > phase1.half_open {
        s.note(format!(
            "RSS per half-open SA (phase 2 peak over phase 1 peak): {:.1} KiB",
            phase2.rss.saturating_sub(phase1.rss) as f64
                / (phase2.half_open - phase1.half_open) as f64
                / 1024.0
        ));
    }
    s.note(format!("hub RSS after the flood: {}", mib(rss_end)));
    if phase2.half_open >= ike.max_half_open {
        s.note(format!(
            "the answered flood filled the hard cap ({}): from then on each new IKE_SA_INIT \
             took the place of the oldest half-open SA ({} evicted in phase 2), so a new spoke \
             is not locked out; established SAs were not affected",
            ike.max_half_open,
            (drops_end - d1).evicted
        ));
    }
    for (i, node) in spokes.iter().enumerate() {
        let initiations = s.lines(*node, 0, &|l| l.contains("initiating IKE")).len();
        s.note(format!(
            "{}: IKE SA up {} s and registered {} s after its start ({} IKE initiation(s))",
            node.name(),
            setup[i].0.map_or("?".into(), |x| format!("{x:.2}")),
            setup[i].1.map_or("?".into(), |x| format!("{x:.2}")),
            initiations
        ));
    }
    s.note(format!(
        "half-open SAs when the spokes started: {half_open_when_spokes_started} (cookie threshold {}: \
         every IKE_SA_INIT without a cookie was answered with one, the spokes' included)",
        ike.cookie_threshold
    ));
    s.note(format!(
        "the spokes probed the hub every {DPD_DELAY} s (periodic DPD, {DPD_TRIES} tries {DPD_RETRY} s apart) throughout"
    ));

    s.step("the spokes' pings were answered during the flood");
    for (r, node) in ping_results.iter().zip(spokes) {
        match r {
            Ok((got, out)) => {
                let share = f64::from(*got) / f64::from(ping_count.max(1));
                s.note(format!(
                    "{}: {got}/{ping_count} pings answered ({:.1} %)",
                    node.name(),
                    100.0 * share
                ));
                if share < PINGS_ANSWERED {
                    s.fail_later(format!(
                        "{}: only {got}/{ping_count} pings answered under the flood:\n{out}",
                        node.name()
                    ));
                }
            }
            Err(e) => s.fail_later(format!("{}: ping: {e:#}", node.name())),
        }
    }

    s.step("the half-open count stayed within the cookie threshold, then the hard cap");
    // Legitimate initiators (the two spokes) are half open for a moment too.
    if phase1.half_open > ike.cookie_threshold + 2 {
        s.fail_later(format!(
            "{} half-open SAs with every cookie unanswered: the threshold is {}",
            phase1.half_open, ike.cookie_threshold
        ));
    }
    if f1.cookies == 0 {
        s.fail_later("the hub never demanded a cookie during the unanswered flood");
    }
    if phase2.half_open > ike.max_half_open {
        s.fail_later(format!(
            "{} half-open SAs: the hard cap is {}",
            phase2.half_open, ike.max_half_open
        ));
    }

    s.step("established peers' IKE never waited behind the flood");
    // Only new-SA requests take the flooded queue; the spokes' liveness checks and NAT
    // keepalives have the other to themselves.
    if drops_end.queue_full > 0 {
        s.fail_later(format!(
            "{} datagrams of established peers' IKE dropped at a full control-plane queue",
            drops_end.queue_full
        ));
    }

    s.step("the hub's RSS stayed bounded");
    let peak = phase1.rss.max(phase2.rss);
    s.note(format!(
        "hub RSS peak {} (baseline {}, bound {})",
        mib(peak),
        mib(baseline),
        mib(bound)
    ));
    if peak > bound {
        s.fail_later(format!(
            "hub RSS peaked at {} over the bound {}",
            mib(peak),
            mib(bound)
        ));
    }

    s.step("the spokes' SAs outlived the flood");
    for (node, nbma) in [(Node::SpokeA, SPOKE_A_NBMA), (Node::SpokeB, NAT_OUTSIDE)] {
        s.no_line(node, 0, "an IKE SA down", &|l| l.contains("IKE SA down"));
        s.no_line(node, 0, "a DPD verdict", &expect::peer_dead);
        let sa: Option<Value> = s.ike_sa(Node::Hub, nbma);
        match sa {
            Some(sa) if sa["state"] == "established" => {}
            other => s.fail_later(format!(
                "the hub's IKE SA with {nbma} after the flood: {other:?}"
            )),
        }
    }
    drop(flood_ns);
    s.check_no_errors();
    s.check_alive();
    s.finish();
}
