//! hub-scale: N simulated DMVPN spokes against a real dmvpnd hub (issue 12, item 5).
//!
//! Every spoke does what a dmvpnd spoke does on start: IKE_SA_INIT + IKE_AUTH (PSK) with a
//! transport-mode Child SA, then an NHRP Registration Request in GRE inside ESP, and waits
//! for the Registration Reply; then it stays up (its IKE engine answers DPD and
//! INFORMATIONAL, its NHRP engine refreshes the registration) for an optional soak. At most
//! `--in-flight` spokes are between their first IKE_SA_INIT and their first accepted
//! registration at any time. The generator measures the time to register all, registrations
//! per second over time, the hub's CPU time and RSS (from /proc), the IKE handshake and
//! registration latencies, the latency of `dmvpnctl show dmvpn|nhrp --json` at that size,
//! and its own CPU time. `benches/hub-scale/run.sh` sets up the namespaces and the hub.

mod net;
mod plan;
mod report;
mod spoke;
mod stats;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use dmvpn_wire::PacketBuf;
use dmvpn_wire::udp::{UdpEncap, classify};

use crate::net::{Underlay, Via};
use crate::plan::Pool;
use crate::report::{Report, ShowResult, SoakSample};
use crate::spoke::{Counters, Ctx, Shared, Spoke};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "hub-scale",
    about = "N simulated DMVPN spokes against a dmvpnd hub"
)]
struct Args {
    /// A dmvpnd spoke configuration (with its secrets file): proposals, PSK, NHRP key,
    /// network-id, GRE key, holding time and the hub (first [[nhrp.nhs]]). Its tunnel
    /// prefix is the pool of the spokes' tunnel addresses; its own address is not used.
    #[arg(long)]
    config: PathBuf,
    /// Simulated spokes.
    #[arg(long, default_value_t = 1000)]
    spokes: u32,
    /// Setups in flight at most (first IKE_SA_INIT sent, registration not yet accepted).
    #[arg(long, default_value_t = 32)]
    in_flight: u32,
    /// Prefix of the spokes' NBMA addresses: local in this namespace (a `local` route).
    #[arg(long, default_value = "198.18.0.0/15")]
    nbma_prefix: String,
    /// Force NAT-T: a bogus NAT_DETECTION_SOURCE_IP makes both ends see a NAT, so IKE
    /// floats to UDP 4500 and ESP is UDP-encapsulated (each spoke keeps its own address).
    #[arg(long)]
    natt: bool,
    /// NAT-T from one address with N ports, as behind one masquerading NAT: every spoke on
    /// the first address of --nbma-prefix with a UDP socket of its own (ports --first-port,
    /// --first-port + 1, ...) for IKE and ESP-in-UDP alike. Its IKE engine believes it sends
    /// from port 500, so both ends detect the NAT. One socket per spoke, polled every turn:
    /// for a few hundred spokes, to see whether the hub tells them apart.
    #[arg(long)]
    one_address: bool,
    /// First UDP port of --one-address.
    #[arg(long, default_value_t = 20000)]
    first_port: u16,
    /// With --one-address, every spoke keeps the default identity (ID_IPV4_ADDR of the shared
    /// address) instead of an FQDN of its own, so their INITIAL_CONTACTs name the same peer.
    #[arg(long)]
    same_id: bool,
    /// The hub's PID, for its CPU time and RSS from /proc.
    #[arg(long)]
    hub_pid: Option<u32>,
    /// dmvpnctl binary, to time `show dmvpn --json` and `show nhrp --json` once all are up.
    #[arg(long)]
    dmvpnctl: Option<PathBuf>,
    /// The hub's control socket (for --dmvpnctl).
    #[arg(long)]
    hub_socket: Option<PathBuf>,
    /// Keep the spokes up this long after all registered, sampling the hub's RSS.
    #[arg(long, default_value_t = 0)]
    soak: u64,
    /// Interval of the RSS samples during the soak.
    #[arg(long, default_value_t = 10)]
    soak_sample: u64,
    /// Give up the setup phase after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Free text recorded with the result (e.g. how the hub was pinned).
    #[arg(long, default_value = "")]
    label: String,
    /// Write the result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn load_shared(args: &Args) -> Result<(Shared, Pool, Vec<Ipv4Addr>)> {
    let cfg = dmvpn_config::load(&args.config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let nhs = cfg
        .nhrp
        .nhs
        .first()
        .context("the spoke configuration names no [[nhrp.nhs]] (the hub)")?;
    let mut ike = dmvpn_node::ike_config(&cfg).map_err(|e| anyhow::anyhow!("IKE: {e}"))?;
    ike.force_encap = args.natt;
    // The generator sends no ESP data, so on-demand DPD would never probe; no DPD of our own.
    ike.dpd = None;
    let nhrp = dmvpn_node::nhrp_config(&cfg, Ipv4Addr::UNSPECIFIED);
    let tunnel = Pool::new(cfg.tunnel.network.addr, cfg.tunnel.network.prefix_len)
        .context("tunnel prefix too narrow")?;
    let skip: Vec<Ipv4Addr> = cfg.nhrp.nhs.iter().map(|n| n.address).collect();
    Ok((
        Shared {
            ike,
            nhrp,
            hub: nhs.nbma,
            ike_port: dmvpn_node::IKE_PORT,
            gre_key: cfg
                .tunnel
                .gre_key
                .context("the configuration has no tunnel.gre-key")?,
            replay_window: cfg.ipsec.replay_window,
            nat_keepalive: cfg.ike.nat_keepalive,
        },
        tunnel,
        skip,
    ))
}

/// The generator: spokes, their timers and the sockets.
struct Gen {
    shared: Shared,
    spokes: Vec<Spoke>,
    by_nbma: HashMap<Ipv4Addr, u32>,
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    io: Underlay,
    counters: Counters,
    buf: Vec<u8>,
    pkt: PacketBuf,
}

impl Gen {
    fn reschedule(&mut self, i: u32) {
        let Some(s) = self.spokes.get_mut(i as usize) else {
            return;
        };
        let d = s.poll_timeout();
        if d != s.deadline {
            s.deadline = d;
            if let Some(d) = d {
                self.timers.push(Reverse((d, i)));
            }
        }
    }

    fn start(&mut self, i: u32, now: Instant) {
        if let Some(s) = self.spokes.get_mut(i as usize) {
            s.start(
                now,
                &mut Ctx {
                    sh: &self.shared,
                    io: &mut self.io,
                    c: &mut self.counters,
                    pkt: &mut self.pkt,
                },
            );
        }
        self.reschedule(i);
    }

    /// Runs due timers, then waits for datagrams up to `max_wait` (or the next timer) and
    /// handles everything queued.
    fn turn(&mut self, max_wait: Duration) -> Result<()> {
        let now = Instant::now();
        while let Some(Reverse((t, i))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.spokes.get_mut(i as usize) else {
                continue;
            };
            if s.deadline != Some(t) {
                continue; // superseded
            }
            s.deadline = None;
            s.handle_timeout(
                now,
                &mut Ctx {
                    sh: &self.shared,
                    io: &mut self.io,
                    c: &mut self.counters,
                    pkt: &mut self.pkt,
                },
            );
            self.reschedule(i);
        }
        // Entries superseded by a later deadline stay in the heap until they surface: drop
        // them here, or they would wake the loop for nothing.
        while let Some(Reverse((t, i))) = self.timers.peek().copied() {
            if self
                .spokes
                .get(i as usize)
                .is_some_and(|s| s.deadline == Some(t))
            {
                break;
            }
            self.timers.pop();
        }
        let wait = self
            .timers
            .peek()
            .map_or(max_wait, |Reverse((t, _))| t.saturating_duration_since(now))
            .min(max_wait);
        let ready = self.io.wait(wait)?;
        for (via, r) in [Via::Ike, Via::NatT, Via::Esp].into_iter().zip(ready) {
            if r {
                self.drain_socket(via)?;
            }
        }
        for i in self.io.ready_own()? {
            self.drain_own(i)?;
        }
        Ok(())
    }

    /// `--one-address`: what waits on spoke `i`'s own socket.
    fn drain_own(&mut self, i: u32) -> Result<()> {
        for _ in 0..64 {
            let Some((src, len)) = self.io.recv_own(i, &mut self.buf)? else {
                return Ok(());
            };
            let now = Instant::now();
            let bytes = self.buf.get(..len).unwrap_or_default();
            let Some(s) = self.spokes.get_mut(i as usize) else {
                return Ok(());
            };
            let cx = &mut Ctx {
                sh: &self.shared,
                io: &mut self.io,
                c: &mut self.counters,
                pkt: &mut self.pkt,
            };
            // The engine's own idea of its address: port 500 until it floats to NAT-T.
            let natt = src.port() == dmvpn_node::NATT_PORT;
            let local = SocketAddrV4::new(
                s.nbma,
                if natt {
                    dmvpn_node::NATT_PORT
                } else {
                    cx.sh.ike_port
                },
            );
            if !natt {
                s.handle_ike(now, local, src, bytes, cx);
            } else {
                match classify(bytes) {
                    Ok(UdpEncap::Ike(ike)) => s.handle_ike(now, local, src, ike, cx),
                    Ok(UdpEncap::Esp(esp)) => s.handle_esp(now, *src.ip(), esp, cx),
                    Ok(UdpEncap::NatKeepalive) => {}
                    Err(_) => cx.c.other_errors += 1,
                }
            }
            self.reschedule(i);
        }
        Ok(())
    }

    fn drain_socket(&mut self, via: Via) -> Result<()> {
        // Bounded, so timers and the other sockets get their turn under load.
        for _ in 0..512 {
            let Some(rx) = self.io.recv(via, &mut self.buf)? else {
                return Ok(());
            };
            let Some(&i) = self.by_nbma.get(rx.dst.ip()) else {
                self.counters.other_errors += 1;
                continue;
            };
            let now = Instant::now();
            let bytes = self
                .buf
                .get(rx.offset..rx.offset + rx.len)
                .unwrap_or_default();
            let Some(s) = self.spokes.get_mut(i as usize) else {
                continue;
            };
            let cx = &mut Ctx {
                sh: &self.shared,
                io: &mut self.io,
                c: &mut self.counters,
                pkt: &mut self.pkt,
            };
            match via {
                Via::Ike => s.handle_ike(now, rx.dst, rx.src, bytes, cx),
                Via::Esp => s.handle_esp(now, *rx.src.ip(), bytes, cx),
                Via::NatT => match classify(bytes) {
                    Ok(UdpEncap::Ike(ike)) => s.handle_ike(now, rx.dst, rx.src, ike, cx),
                    Ok(UdpEncap::Esp(esp)) => s.handle_esp(now, *rx.src.ip(), esp, cx),
                    Ok(UdpEncap::NatKeepalive) => {}
                    Err(_) => cx.c.other_errors += 1,
                },
            }
            self.reschedule(i);
        }
        Ok(())
    }
}

fn cpu_self() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |u| {
        let t = |tv: nix::sys::time::TimeVal| {
            Duration::new(tv.tv_sec() as u64, (tv.tv_usec() as u32) * 1000)
        };
        t(u.user_time()) + t(u.system_time())
    })
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

/// Times `dmvpnctl show WHAT --json` against the hub and counts what it lists.
fn show(dmvpnctl: &PathBuf, socket: &PathBuf, what: &str) -> ShowResult {
    let t = Instant::now();
    let out = std::process::Command::new(dmvpnctl)
        .arg("--socket")
        .arg(socket)
        .args(["show", what, "--json"])
        .output();
    let elapsed = t.elapsed();
    match out {
        Ok(o) if o.status.success() => report::parse_show(what, elapsed, &o.stdout),
        Ok(o) => ShowResult::failed(
            what,
            elapsed,
            String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        ),
        Err(e) => ShowResult::failed(what, elapsed, e.to_string()),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (shared, tunnel_pool, skip) = load_shared(&args)?;
    let nbma_pool = Pool::parse(&args.nbma_prefix).context("--nbma-prefix: A.B.C.D/LEN")?;
    if u64::from(args.spokes) > tunnel_pool.capacity(&skip) {
        bail!(
            "{} spokes do not fit the tunnel prefix ({} addresses): widen the tunnel subnet",
            args.spokes,
            tunnel_pool.capacity(&skip)
        );
    }
    let hub_skip = [shared.hub];
    if u64::from(args.spokes) > nbma_pool.capacity(&hub_skip) {
        bail!("{} spokes do not fit --nbma-prefix", args.spokes);
    }
    if args.in_flight == 0 {
        bail!("--in-flight must be at least 1");
    }
    let mut io = Underlay::open(shared.ike_port, dmvpn_node::NATT_PORT)?;
    let shared_addr = nbma_pool
        .host(0, &[shared.hub])
        .context("empty --nbma-prefix")?;
    if args.one_address {
        io.open_per_spoke(shared_addr, args.first_port, args.spokes)?;
    }

    let n = args.spokes;
    let t_build = Instant::now();
    let mut spokes = Vec::with_capacity(n as usize);
    let mut by_nbma = HashMap::with_capacity(n as usize);
    for i in 0..n {
        let (Some(nbma), Some(tun)) = (nbma_pool.host(i, &hub_skip), tunnel_pool.host(i, &skip))
        else {
            bail!("address pool exhausted at spoke {i}");
        };
        let seed = u64::from(i) * 7919 + 1;
        if args.one_address {
            let id = (!args.same_id)
                .then(|| dmvpn_ike::Identification::fqdn(&format!("spoke-{i}.hub-scale")));
            let mut s = Spoke::new(&shared, shared_addr, tun, seed, id);
            s.own_socket = Some(i);
            spokes.push(s);
        } else {
            by_nbma.insert(nbma, i);
            spokes.push(Spoke::new(&shared, nbma, tun, seed, None));
        }
    }
    eprintln!(
        "hub-scale: {n} spokes prepared in {:.2} s; NBMA {}.. tunnel {}.., hub {}, {} in flight{}",
        t_build.elapsed().as_secs_f64(),
        spokes.first().map_or(Ipv4Addr::UNSPECIFIED, |s| s.nbma),
        spokes.first().map_or(Ipv4Addr::UNSPECIFIED, |s| s.tunnel),
        shared.hub,
        args.in_flight,
        if args.one_address {
            ", NAT-T from one address with a port per spoke"
        } else if args.natt {
            ", NAT-T forced"
        } else {
            ""
        }
    );
    // With --one-address the main sockets do not wake the loop for the spokes' own ones.
    let turn_wait = Duration::from_millis(if args.one_address { 1 } else { 20 });
    let soak_wait = Duration::from_millis(if args.one_address { 1 } else { 50 });
    let mut g = Gen {
        shared,
        spokes,
        by_nbma,
        timers: BinaryHeap::new(),
        io,
        counters: Counters::default(),
        buf: vec![0u8; 65536],
        pkt: PacketBuf::new(),
    };

    let hub_pid = args.hub_pid;
    let sample = || hub_pid.and_then(stats::sample_proc);
    let ticks = clock_ticks();
    let hub0 = sample();
    let gen_cpu0 = cpu_self();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.timeout);

    // ---- setup phase ----
    let mut next = 0u32;
    let mut registered = 0u32;
    let mut hub_cpu_series: Vec<f64> = Vec::new();
    let mut last_sample = (t0, hub0);
    let mut last_progress = t0;
    while registered < n && Instant::now() < deadline {
        let in_flight = next - registered;
        let mut room = args.in_flight.saturating_sub(in_flight);
        let now = Instant::now();
        while room > 0 && next < n {
            g.start(next, now);
            next += 1;
            room -= 1;
        }
        g.turn(turn_wait)?;
        registered = u32::try_from(g.counters.first_registrations).unwrap_or(u32::MAX);
        let now = Instant::now();
        if now.duration_since(last_sample.0) >= Duration::from_secs(1) {
            let s = sample();
            if let (Some(a), Some(b)) = (last_sample.1, s) {
                let secs = now.duration_since(last_sample.0).as_secs_f64();
                hub_cpu_series.push((b.cpu_ticks - a.cpu_ticks) as f64 / ticks / secs * 100.0);
            }
            last_sample = (now, s);
        }
        if now.duration_since(last_progress) >= Duration::from_secs(5) {
            last_progress = now;
            eprintln!(
                "hub-scale: {:6.1} s: {registered}/{n} registered, {} started",
                now.duration_since(t0).as_secs_f64(),
                next
            );
        }
    }
    let setup = t0.elapsed();
    let hub1 = sample();
    let gen_cpu1 = cpu_self();
    eprintln!(
        "hub-scale: {registered}/{n} registered in {:.2} s",
        setup.as_secs_f64()
    );

    // ---- dmvpnctl at this size, while the spokes stay serviced ----
    let mut shows = Vec::new();
    if let (Some(ctl), Some(sock)) = (args.dmvpnctl.clone(), args.hub_socket.clone()) {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let a = show(&ctl, &sock, "dmvpn");
            let b = show(&ctl, &sock, "nhrp");
            let _ = tx.send(vec![a, b]);
        });
        let r = loop {
            g.turn(turn_wait)?;
            match rx.try_recv() {
                Ok(r) => break r,
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => break Vec::new(),
            }
        };
        shows = r;
    }

    // ---- soak ----
    let mut soak_samples = Vec::new();
    let counters_before_soak = g.counters.clone();
    let gen_cpu_soak0 = cpu_self();
    let hub_soak0 = sample();
    if args.soak > 0 {
        let s0 = Instant::now();
        let end = s0 + Duration::from_secs(args.soak);
        let every = Duration::from_secs(args.soak_sample.max(1));
        let mut next_sample = s0;
        while Instant::now() < end {
            g.turn(soak_wait)?;
            let now = Instant::now();
            if now >= next_sample {
                next_sample += every;
                let up = g.spokes.iter().filter(|s| s.up).count() as u32;
                let s = sample();
                soak_samples.push(SoakSample {
                    t: now.duration_since(s0),
                    hub_rss: s.map(|s| s.rss),
                    hub_cpu_ticks: s.map(|s| s.cpu_ticks),
                    spokes_up: up,
                });
                eprintln!(
                    "hub-scale: soak {:5.0} s: {up}/{n} up, hub RSS {}",
                    now.duration_since(s0).as_secs_f64(),
                    s.map_or("?".into(), |s| format!("{:.1} MB", s.rss as f64 / 1e6)),
                );
            }
        }
    }
    let hub_soak1 = sample();
    let gen_cpu_soak = cpu_self().saturating_sub(gen_cpu_soak0);

    let mut handshakes: Vec<Duration> = g.spokes.iter().filter_map(|s| s.handshake).collect();
    handshakes.sort_unstable();
    let mut reg_lat: Vec<Duration> = g
        .spokes
        .iter()
        .filter_map(|s| Some(s.registered_at?.saturating_duration_since(s.started?)))
        .collect();
    reg_lat.sort_unstable();
    let offsets = g
        .spokes
        .iter()
        .filter_map(|s| s.registered_at.map(|r| r.saturating_duration_since(t0)));
    let report = Report {
        label: args.label.clone(),
        spokes: n,
        in_flight: args.in_flight,
        natt: args.natt || args.one_address,
        registered,
        setup,
        per_second: stats::per_second(offsets),
        hub_cpu_pct_per_second: hub_cpu_series,
        hub_before: hub0,
        hub_after: hub1,
        clock_ticks: ticks,
        gen_cpu: gen_cpu1.saturating_sub(gen_cpu0),
        handshakes,
        registration_latency: reg_lat,
        shows,
        soak_secs: args.soak,
        soak_samples,
        hub_soak: (hub_soak0, hub_soak1),
        gen_cpu_soak,
        spokes_up_at_end: g.spokes.iter().filter(|s| s.up).count() as u32,
        counters: g.counters.clone(),
        counters_soak: report::counter_delta(&counters_before_soak, &g.counters),
        send_errors: g.io.send_errors,
    };
    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
    }
    if registered < n {
        // A result, not a crash: no backtrace.
        eprintln!(
            "hub-scale: only {registered} of {n} spokes registered within {} s",
            args.timeout
        );
        std::process::exit(1);
    }
    Ok(())
}
