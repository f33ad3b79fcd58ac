//! The scenario driver of the namespace tests in `daemon/tests/` (`e2e_*.rs`, `ops_*.rs`,
//! `ospf.rs`): real dmvpnd hubs and spokes (and FRR) in the topology of [`crate::e2e`], run as
//! named steps. Every failure names the step, what was expected and ends with the last log lines
//! of every daemon (and FRR's state), and the test's scratch directory is kept.
//!
//! Rules the tests keep, so they hold on a loaded machine:
//! - every expectation on a log or on daemon state waits with a bound ([`Scenario::poll`],
//!   [`Scenario::wait_line`]) and fails with the log tails when the deadline passes; only the
//!   absence of something ([`Scenario::no_line`]) is read once, after the fact;
//! - binaries come from [`crate::bin`], nowhere else;
//! - names (namespaces, control sockets, FRR path spaces) are unique per test, and everything a
//!   test starts is stopped by its PID when the [`Scenario`] and the [`Topology`] drop.
//!
//! Log wording lives in [`expect`], the documented JSON fields in [`schema`], parsers of
//! `dmvpnctl show` text in [`show`].

pub mod expect;
pub mod schema;
pub mod show;

use std::cell::RefCell;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use serde_json::Value;

use crate::Netns;
use crate::e2e::{
    Dmvpnd, HUB_TUNNEL, Keys, LinkCounters, Node, NodeConfig, TestDir, Timers, Topology,
    route_dump, routes_with_proto, write_config_with,
};
use crate::ospf::{Frr, OspfSettings};
use schema::{array, schema_violations};

/// Route protocol of the routes dmvpnd installs (static routes and NHRP shortcuts).
pub const PROTO_DMVPND: &str = "77";
/// How long a spoke may take to bring up IKE and register.
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Test DPD timers (the examples say `dpd 40 5 on-demand`; the mode is kept).
pub const DPD_DELAY: u32 = 3;
pub const DPD_RETRY: u32 = 1;
/// Probe transmissions before a peer is declared dead (the IKE engine's `Dpd::max_tries`).
pub const DPD_TRIES: u32 = 5;
/// Test NAT keepalive interval (the examples say 20 s), so a capture holds some.
pub const NAT_KEEPALIVE: u32 = 2;
/// The spokes' `nhrp.holding-time` in [`ops_config`]: they re-register every third of it.
pub const HOLDING_TIME: u64 = 30;
/// How long daemon state (`dmvpnctl show`, kernel routes) may take to settle after the event
/// a test waited for.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Log lines of each daemon in a failure message.
const LOG_TAIL: usize = 50;
/// How often [`Scenario::poll`] retries.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// What one dmvpnctl run printed.
#[derive(Debug)]
pub struct Ctl {
    pub cmd: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Ctl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.cmd, self.code, self.stdout, self.stderr
        )
    }
}

/// One test's daemons and the step being run. Declare it after the [`Topology`] it borrows: it
/// stops FRR, then the dmvpnd daemons, before the namespaces go.
#[derive(Debug)]
pub struct Scenario<'t> {
    pub t: &'t Topology,
    daemons: Vec<Dmvpnd>,
    frr: Vec<(Node, Frr)>,
    label: &'static str,
    step: String,
    started: Instant,
    /// Failures of checks later steps do not depend on: recorded, the test goes on, and
    /// [`Scenario::finish`] reports them all.
    deferred: RefCell<Vec<String>>,
}

impl Drop for Scenario<'_> {
    fn drop(&mut self) {
        // FRR first (it has routes in the tunnel), then dmvpnd; the topology goes last.
        for (_, f) in &mut self.frr {
            if let Err(e) = f.stop() {
                eprintln!("cleanup: {e:#}");
            }
        }
    }
}

impl<'t> Scenario<'t> {
    /// `label` prefixes the progress lines (`e2e: [  1.2s] step …`).
    pub fn new(label: &'static str, t: &'t Topology) -> Self {
        Scenario {
            t,
            daemons: Vec::new(),
            frr: Vec::new(),
            label,
            step: "setup".into(),
            started: Instant::now(),
            deferred: RefCell::default(),
        }
    }

    pub fn step(&mut self, s: &str) {
        eprintln!(
            "{}: [{:>5.1}s] step {s}",
            self.label,
            self.started.elapsed().as_secs_f32()
        );
        self.step = s.to_owned();
    }

    /// Prints a note: a figure the test measured (a failover time, packets per SA, drops). It
    /// goes to the process's stderr directly, not through `eprintln!`, which the test harness
    /// captures and shows only for a failing test: the figures the issues check by must reach
    /// the CI log of a passing run too (`cargo test` prints them as they come).
    pub fn note(&self, msg: impl std::fmt::Display) {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "{}: {msg}", self.label);
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The last log lines of every daemon, FRR's view and the routers' routes.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for d in &self.daemons {
            s += &format!(
                "\n---- last {LOG_TAIL} lines of dmvpnd {} ({}) ----\n{}\n",
                d.node.name(),
                d.process.log_path().display(),
                d.tail(LOG_TAIL)
            );
        }
        for (node, f) in &self.frr {
            s += &format!("\n==== FRR on {} ====\n", node.name());
            for cmd in f.diagnostics() {
                s += &format!(
                    "# {cmd}\n{}\n",
                    f.vtysh(cmd).unwrap_or_else(|e| format!("({e:#})"))
                );
            }
            s += &f.tail(LOG_TAIL);
        }
        let mut nodes = vec![Node::Hub, Node::SpokeA, Node::SpokeB];
        for d in &self.daemons {
            if !nodes.contains(&d.node) {
                nodes.push(d.node);
            }
        }
        for node in nodes {
            s += &format!(
                "\n---- routes of {} ----\n{}",
                node.name(),
                route_dump(node.netns(self.t))
            );
        }
        s
    }

    #[track_caller]
    pub fn fail(&self, msg: impl std::fmt::Display) -> ! {
        panic!("step `{}` failed: {msg}\n{}", self.step, self.logs())
    }

    /// Records a failure that does not stop the test (see [`Scenario::finish`]).
    pub fn fail_later(&self, msg: impl std::fmt::Display) {
        eprintln!(
            "{}: step `{}` FAILED (reported at the end): {msg}",
            self.label, self.step
        );
        self.deferred
            .borrow_mut()
            .push(format!("step `{}`: {msg}", self.step));
    }

    /// Fails with every deferred failure, if any.
    #[track_caller]
    pub fn finish(&self) {
        let d = self.deferred.borrow();
        if !d.is_empty() {
            panic!(
                "{} check(s) failed:\n{}\n{}",
                d.len(),
                d.join("\n\n"),
                self.logs()
            );
        }
    }

    // ---- processes ---------------------------------------------------------------------------

    pub fn daemons(&self) -> &[Dmvpnd] {
        &self.daemons
    }

    /// `node`'s dmvpnd: the one started last (a test that kills a daemon and starts it again
    /// means the new process).
    pub fn daemon(&self, node: Node) -> &Dmvpnd {
        self.daemons
            .iter()
            .rev()
            .find(|d| d.node == node)
            .unwrap_or_else(|| self.fail(format!("{} was never started", node.name())))
    }

    fn daemon_mut(&mut self, node: Node) -> &mut Dmvpnd {
        match self.daemons.iter().rposition(|d| d.node == node) {
            Some(i) => &mut self.daemons[i],
            None => self.fail(format!("{} was never started", node.name())),
        }
    }

    /// Starts dmvpnd ([`crate::bin`]) with `cfg` in its node's namespace.
    pub fn start(&mut self, cfg: &NodeConfig) {
        let ns = cfg.node.netns(self.t);
        match Dmvpnd::start(&crate::bin("dmvpnd"), ns, cfg) {
            Ok(d) => self.daemons.push(d),
            Err(e) => self.fail(format!("starting dmvpnd for {}: {e:#}", cfg.node.name())),
        }
    }

    /// Starts zebra + ospfd in `node`'s namespace, files under `dir`.
    pub fn start_frr(&mut self, node: Node, dir: &Path, settings: &OspfSettings) {
        match Frr::start(node.netns(self.t), node.name(), dir, settings) {
            Ok(f) => self.frr.push((node, f)),
            Err(e) => self.fail(format!("starting FRR on {}: {e:#}", node.name())),
        }
    }

    /// Runs `start` (e.g. [`crate::bgp::start`]) on `node`'s namespace and keeps the FRR it
    /// started (stopped with the scenario).
    pub fn start_frr_with(&mut self, node: Node, start: impl FnOnce(&Netns) -> Result<Frr>) {
        match start(node.netns(self.t)) {
            Ok(f) => self.frr.push((node, f)),
            Err(e) => self.fail(format!("starting FRR on {}: {e:#}", node.name())),
        }
    }

    /// Stops FRR on `node` (its routing daemon, then zebra).
    pub fn stop_frr(&mut self, node: Node) {
        if let Some(i) = self.frr.iter().position(|(n, _)| *n == node) {
            let (_, mut f) = self.frr.remove(i);
            if let Err(e) = f.stop() {
                self.fail(format!("stopping FRR on {}: {e:#}", node.name()));
            }
        }
    }

    pub fn frr(&self, node: Node) -> &Frr {
        &self
            .frr
            .iter()
            .find(|(n, _)| *n == node)
            .unwrap_or_else(|| self.fail(format!("FRR on {} never started", node.name())))
            .1
    }

    /// Fails if a dmvpnd not stopped on purpose, or an FRR daemon, has exited.
    pub fn check_alive(&mut self) {
        let mut dead = Vec::new();
        for d in &mut self.daemons {
            if d.process.pid().is_some() && !d.process.running() {
                dead.push(format!("dmvpnd {}", d.node.name()));
            }
        }
        for (node, f) in &mut self.frr {
            if !f.running() {
                dead.push(format!("FRR {}", node.name()));
            }
        }
        if !dead.is_empty() {
            self.fail(format!("exited unexpectedly: {dead:?}"));
        }
    }

    /// `kill -9` of `node`'s dmvpnd (by its PID).
    pub fn kill(&mut self, node: Node) {
        if let Err(e) = self.daemon_mut(node).process.kill() {
            self.fail(format!("kill -9 dmvpnd on {}: {e:#}", node.name()));
        }
    }

    /// SIGTERM to `node`'s dmvpnd, waiting up to `timeout` for its exit (then SIGKILL).
    pub fn terminate(&mut self, node: Node, timeout: Duration) -> Result<ExitStatus> {
        self.daemon_mut(node).process.terminate(timeout)
    }

    /// Sends `signal` (e.g. "HUP") to `node`'s dmvpnd, by its PID.
    pub fn signal(&self, node: Node, signal: &str) {
        let pid = self
            .daemon(node)
            .process
            .pid()
            .unwrap_or_else(|| self.fail(format!("{} is not running", node.name())));
        let st = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .unwrap_or_else(|e| self.fail(format!("kill -s {signal} {pid}: {e}")));
        if !st.success() {
            self.fail(format!("kill -s {signal} {pid}: {st}"));
        }
    }

    // ---- waiting -------------------------------------------------------------------------------

    /// Polls `f` every 100 ms until it returns `Some` or `timeout` passes (`f` always runs at
    /// least once), then fails with `what` and the log tails. Daemons must stay alive meanwhile.
    #[track_caller]
    pub fn poll<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let end = Instant::now() + timeout;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if Instant::now() >= end {
                self.fail(format!("{what}: not within {timeout:?}"));
            }
            self.check_alive();
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// Polls `check` every 100 ms until it returns `Ok` or `timeout` passes (it always runs at
    /// least once), then fails with `what` and the last `Err` it returned: for state that settles
    /// (`dmvpnctl show`, routes, counters) with a message saying what was seen instead.
    #[track_caller]
    pub fn eventually<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Result<T, String>,
    ) -> T {
        let end = Instant::now() + timeout;
        loop {
            match check(self) {
                Ok(v) => return v,
                Err(e) if Instant::now() >= end => {
                    self.fail(format!("{what}: not within {timeout:?}; last seen: {e}"))
                }
                Err(_) => {}
            }
            self.check_alive();
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// The length of `node`'s log now: pass it as `from` to look only at what comes after.
    pub fn log_len(&self, node: Node) -> usize {
        self.daemon(node).log().len()
    }

    /// Log lines of `node` past byte `from` satisfying `pred`, as they are now.
    pub fn lines(&self, node: Node, from: usize, pred: &dyn Fn(&str) -> bool) -> Vec<String> {
        let log = self.daemon(node).log();
        log.get(from..)
            .unwrap_or_default()
            .lines()
            .filter(|l| pred(l))
            .map(str::to_owned)
            .collect()
    }

    fn find_line(&self, node: Node, from: usize, pred: &dyn Fn(&str) -> bool) -> Option<String> {
        self.lines(node, from, pred).into_iter().next()
    }

    /// Waits up to `timeout` for a line satisfying `pred` in `node`'s log past byte `from`.
    #[track_caller]
    pub fn wait_line(
        &mut self,
        node: Node,
        what: &str,
        from: usize,
        timeout: Duration,
        pred: &dyn Fn(&str) -> bool,
    ) -> String {
        let what = format!("log line `{what}` from {}", node.name());
        self.poll(&what, timeout, |s| s.find_line(node, from, pred))
    }

    /// Waits up to `timeout` for a line satisfying `pred` in the log of any of `nodes` (from the
    /// start); `(node, line)`.
    #[track_caller]
    pub fn wait_line_any(
        &mut self,
        nodes: &[Node],
        what: &str,
        timeout: Duration,
        pred: &dyn Fn(&str) -> bool,
    ) -> (Node, String) {
        let names: Vec<&str> = nodes.iter().map(|n| n.name()).collect();
        let what = format!("log line `{what}` from any of {names:?}");
        self.poll(&what, timeout, |s| {
            nodes
                .iter()
                .find_map(|&n| s.find_line(n, 0, pred).map(|l| (n, l)))
        })
    }

    /// Fails if `node` has logged a line satisfying `pred` past byte `from`: for what must not
    /// have happened (by the time the caller has waited for something that would follow it).
    #[track_caller]
    pub fn no_line(&self, node: Node, from: usize, what: &str, pred: &dyn Fn(&str) -> bool) {
        if let Some(l) = self.find_line(node, from, pred) {
            self.fail(format!("{} logged {what}: {l}", node.name()));
        }
    }

    /// Waits for spoke `node` to register: on the spoke an IKE SA, a Child SA and the NHS's
    /// reply past `from_spoke`, on the hub the accepted registration past `from_hub`.
    #[track_caller]
    pub fn wait_registered(&mut self, node: Node, from_spoke: usize, from_hub: usize) {
        let t = REGISTRATION_TIMEOUT;
        self.wait_line(node, "IKE SA up", from_spoke, t, &expect::ike_sa_up);
        let installed = &expect::child_sa_installed;
        self.wait_line(node, "child SA installed", from_spoke, t, installed);
        let nhs = &expect::registered_with_nhs;
        self.wait_line(node, "NHRP registered with NHS", from_spoke, t, nhs);
        let tunnel = node.tunnel_address();
        self.wait_line(
            Node::Hub,
            &format!("NHRP registration accepted peer={tunnel}"),
            from_hub,
            t,
            &|l| expect::registration_accepted(l, tunnel),
        );
    }

    // ---- traffic -------------------------------------------------------------------------------

    /// The full via-the-hub matrix of the e2e topology: each spoke ↔ the hub over the tunnel,
    /// and the hub's LAN ↔ each spoke's LAN.
    #[track_caller]
    pub fn reach_all_via_hub(&mut self, t: &crate::e2e::Topology) {
        use crate::e2e::{
            HUB_LAN_HOST, HUB_TUNNEL, SPOKE_A_LAN_HOST, SPOKE_A_TUNNEL, SPOKE_B_LAN_HOST,
            SPOKE_B_TUNNEL,
        };
        self.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);
        self.reach(&t.spoke_b, "spoke B (NATed)", HUB_TUNNEL);
        self.reach(&t.hub, "hub", SPOKE_A_TUNNEL);
        self.reach(&t.hub, "hub", SPOKE_B_TUNNEL);
        self.reach(&t.lan_hub, "hub LAN host", SPOKE_A_LAN_HOST);
        self.reach(&t.lan_hub, "hub LAN host", SPOKE_B_LAN_HOST);
        self.reach(&t.lan_a, "spoke A LAN host", HUB_LAN_HOST);
        self.reach(&t.lan_b, "spoke B LAN host", HUB_LAN_HOST);
    }

    /// Pings `dst` from `ns` 4 times, 200 ms apart: echoes 2..4 must be answered (the first may
    /// be spent on resolution or bringing an SA up, as IOS shows `.!!!!`).
    #[track_caller]
    pub fn reach(&mut self, ns: &Netns, from: &str, dst: &str) {
        self.check_alive();
        let out = ns
            .exec("ping", &["-n", "-c", "4", "-i", "0.2", "-W", "1", dst])
            .unwrap_or_else(|e| self.fail(format!("ping: {e:#}")));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let answered = crate::e2e::answered_echoes(&text);
        if !(2..=4).all(|s| answered.contains(&s)) {
            self.fail(format!(
                "ping {from} ({}) → {dst}: echoes 2..4 must be answered, got replies to {answered:?}\n{text}{}",
                ns.name(),
                String::from_utf8_lossy(&out.stderr),
            ));
        }
    }

    /// Waits up to `timeout` for an NHRP shortcut on spoke A toward any of `a_to` and on spoke B
    /// toward any of `b_to` ([`shortcut_route`]), pinging LAN A ↔ LAN B meanwhile (the hub
    /// redirects each spoke for its own traffic). The two routes.
    #[track_caller]
    pub fn wait_shortcuts(
        &mut self,
        a_to: &[&str],
        b_to: &[&str],
        timeout: Duration,
    ) -> (Value, Value) {
        let t = self.t;
        self.eventually("shortcuts on both spokes", timeout, |_| {
            let a = shortcut_route(&t.spoke_a, a_to);
            let b = shortcut_route(&t.spoke_b, b_to);
            if let (Some(a), Some(b)) = (&a, &b) {
                return Ok((a.clone(), b.clone()));
            }
            let _ = crate::e2e::ping(&t.lan_a, crate::e2e::SPOKE_B_LAN_HOST, 1, "1");
            let _ = crate::e2e::ping(&t.lan_b, crate::e2e::SPOKE_A_LAN_HOST, 1, "1");
            Err(format!(
                "spoke A toward {a_to:?}: {a:?}, spoke B toward {b_to:?}: {b:?}"
            ))
        })
    }

    /// Records (see [`Scenario::fail_later`]) every error line a daemon has logged.
    pub fn check_no_errors(&self) {
        for d in &self.daemons {
            let errors: Vec<String> = d
                .log()
                .lines()
                .filter(|l| expect::error(l))
                .map(str::to_owned)
                .collect();
            if !errors.is_empty() {
                self.fail_later(format!(
                    "{} logged errors:\n{}",
                    d.node.name(),
                    errors.join("\n")
                ));
            }
        }
    }

    pub fn counters(&self, ns: &Netns, dev: &str) -> LinkCounters {
        LinkCounters::read(ns, dev).unwrap_or_else(|e| self.fail(format!("{e:#}")))
    }

    // ---- dmvpnctl ------------------------------------------------------------------------------

    /// Runs `dmvpnctl --socket <node's socket> ARGS…` on the host (the control socket is a
    /// filesystem path, reachable from any namespace).
    pub fn ctl(&self, node: Node, args: &[&str]) -> Ctl {
        let socket = &self.daemon(node).config.socket;
        let bin = crate::bin("dmvpnctl");
        let out = Command::new(&bin)
            .arg("--socket")
            .arg(socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| self.fail(format!("running {}: {e}", bin.display())));
        Ctl {
            cmd: format!("dmvpnctl ({}) {}", node.name(), args.join(" ")),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `dmvpnctl ARGS…`, which must succeed with nothing on stderr; its stdout.
    #[track_caller]
    pub fn ctl_ok(&self, node: Node, args: &[&str]) -> String {
        let c = self.ctl(node, args);
        if c.code != Some(0) || !c.stderr.is_empty() {
            self.fail(format!("dmvpnctl failed: {c}"));
        }
        c.stdout
    }

    /// `show WHAT` in text.
    #[track_caller]
    pub fn show(&self, node: Node, what: &str) -> String {
        self.ctl_ok(node, &["show", what])
    }

    /// `show WHAT --json`: parsed, with `schema_version` 2 and every documented field.
    #[track_caller]
    pub fn show_json(&self, node: Node, what: &str) -> Value {
        let out = self.ctl_ok(node, &["show", what, "--json"]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| {
            self.fail(format!(
                "`dmvpnctl show {what} --json` on {} is not JSON: {e}\n{out}",
                node.name()
            ))
        });
        let bad = schema_violations(what, &v);
        if !bad.is_empty() {
            self.fail(format!(
                "`dmvpnctl show {what} --json` on {} does not follow docs/dmvpnctl.md: {bad:?}\n{out}",
                node.name()
            ));
        }
        v
    }

    /// The `show sa --json` peer whose NBMA (claimed or post-NAT) is `nbma`.
    pub fn sa_peer(&self, node: Node, nbma: &str) -> Option<Value> {
        let v = self.show_json(node, "sa");
        array(&v, "peers")
            .iter()
            .find(|p| p["nbma"] == nbma || p["post_nat_nbma"] == nbma)
            .cloned()
    }

    /// The `show nhrp --json` cache entry for the /32 of `tunnel` (not the local one).
    pub fn nhrp_entry(&self, node: Node, tunnel: &str) -> Option<Value> {
        let v = self.show_json(node, "nhrp");
        array(&v, "entries")
            .iter()
            .find(|e| e["protocol_addr"] == tunnel && e["prefix_len"] == 32 && e["kind"] != "local")
            .cloned()
    }

    /// A spoke's NHS entry for the NHS at `nbma` in `show nhrp --json`.
    pub fn nhs(&self, node: Node, nbma: &str) -> Option<Value> {
        let v = self.show_json(node, "nhrp");
        array(&v, "nhs").iter().find(|n| n["nbma"] == nbma).cloned()
    }

    /// The `show ike --json` SA with the peer at `nbma` (any port); the first if several.
    pub fn ike_sa(&self, node: Node, nbma: &str) -> Option<Value> {
        self.ike_sas(node, nbma).into_iter().next()
    }

    /// Every `show ike --json` SA with the peer at `nbma` (any port).
    pub fn ike_sas(&self, node: Node, nbma: &str) -> Vec<Value> {
        let v = self.show_json(node, "ike");
        array(&v, "sas")
            .iter()
            .filter(|s| {
                s["remote"]
                    .as_str()
                    .and_then(|r| r.strip_prefix(nbma))
                    .is_some_and(|r| r.starts_with(':'))
            })
            .cloned()
            .collect()
    }
}

// ---- setups --------------------------------------------------------------------------------

/// Fresh random keys shared by every router of a test.
pub fn keys() -> Keys {
    Keys::random().expect("random keys")
}

/// The e2e configuration of `node`: `conf/` with addresses changed and short DPD
/// ([`DPD_DELAY`], [`DPD_RETRY`]) and NAT keepalive ([`NAT_KEEPALIVE`]) timers.
pub fn e2e_config(dir: &TestDir, node: Node, keys: &Keys) -> NodeConfig {
    let timers = Timers {
        dpd: Some((DPD_DELAY, DPD_RETRY)),
        nat_keepalive: Some(NAT_KEEPALIVE),
    };
    write_config_with(dir.path(), node, keys, timers)
        .unwrap_or_else(|e| panic!("generating the {} configuration: {e:#}", node.name()))
}

/// The operations-test configuration of `node`: `conf/` with addresses changed, the spokes with
/// a short NHRP holding time ([`HOLDING_TIME`]) so they re-register soon after `clear nhrp`.
pub fn ops_config(dir: &TestDir, node: Node, keys: &Keys) -> NodeConfig {
    let cfg = write_config_with(dir.path(), node, keys, Timers::default())
        .unwrap_or_else(|e| panic!("generating the {} configuration: {e:#}", node.name()));
    if node != Node::Hub {
        edit_config(&cfg.config, |t| {
            table(t, "nhrp").insert(
                "holding-time".into(),
                toml::Value::Integer(HOLDING_TIME as i64),
            );
        });
    }
    cfg
}

/// Seconds since midnight UTC of `t`, to compare with a log line's time.
pub fn utc_secs_of_day(t: SystemTime) -> f64 {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    d.as_secs_f64().rem_euclid(86_400.0)
}

/// Seconds since midnight UTC of a dmvpnd log line (`2026-12-01T17:20:44.875341Z  INFO …`):
/// when the daemon decided, not when a poll saw it.
pub fn log_secs_of_day(line: &str) -> Option<f64> {
    let time = line
        .split_whitespace()
        .next()?
        .split('T')
        .nth(1)?
        .strip_suffix('Z')?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + sec)
}

/// Configurations for both hubs and both spokes, every spoke listing hub 1 (priority 0) and
/// hub 2 (priority 1) as NHSs with `nhs-fallback = fallback`, both in `cluster` when given.
/// The hubs do not redirect, so spoke-to-spoke traffic keeps crossing the NHS in use.
/// Returned hub, hub 2, spoke A, spoke B.
pub fn two_hub_configs(dir: &TestDir, fallback: u64, cluster: Option<i64>) -> Vec<NodeConfig> {
    let k = keys();
    let cfgs: Vec<NodeConfig> = [Node::Hub, Node::Hub2, Node::SpokeA, Node::SpokeB]
        .into_iter()
        .map(|n| e2e_config(dir, n, &k))
        .collect();
    for c in &cfgs[..2] {
        edit_config(&c.config, |t| {
            table(t, "nhrp").insert("redirect".into(), toml::Value::Boolean(false));
        });
    }
    for c in &cfgs[2..] {
        edit_config(&c.config, |t| {
            let nhrp = table(t, "nhrp");
            nhrp.insert(
                "nhs-fallback".into(),
                toml::Value::Integer(i64::try_from(fallback).unwrap_or(i64::MAX)),
            );
            let list = nhrp
                .get_mut("nhs")
                .and_then(toml::Value::as_array_mut)
                .expect("[[nhrp.nhs]]");
            let mut second = toml::Table::new();
            second.insert("address".into(), crate::e2e::HUB2_TUNNEL.into());
            second.insert("nbma".into(), crate::e2e::HUB2_NBMA.into());
            second.insert("multicast".into(), true.into());
            second.insert("priority".into(), toml::Value::Integer(1));
            list.push(toml::Value::Table(second));
            if let Some(id) = cluster {
                for n in list.iter_mut().filter_map(toml::Value::as_table_mut) {
                    n.insert("cluster".into(), toml::Value::Integer(id));
                }
            }
        });
    }
    cfgs
}

/// Reads, edits and rewrites a generated configuration file (mode kept).
pub fn edit_config(path: &Path, f: impl FnOnce(&mut toml::Table)) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut t: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f(&mut t);
    std::fs::write(
        path,
        toml::to_string(&t).expect("serializing the configuration"),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The table `key` of `t`, created if missing.
pub fn table<'a>(t: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    t.entry(key)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap_or_else(|| panic!("`{key}` is not a table"))
}

/// Starts the hub (`cfgs[0]`), waits until its underlay is open, then starts the others.
pub fn start_hub_then_spokes<'t>(
    label: &'static str,
    t: &'t Topology,
    cfgs: &[NodeConfig],
) -> Scenario<'t> {
    let mut s = Scenario::new(label, t);
    s.step("start the hub, then the spokes");
    s.start(&cfgs[0]);
    let open = &expect::underlay_open;
    s.wait_line(
        Node::Hub,
        "underlay sockets open",
        0,
        Duration::from_secs(10),
        open,
    );
    for c in &cfgs[1..] {
        s.start(c);
    }
    s
}

/// Starts the hub, then `spokes` (configurations from `config`), and waits until every spoke
/// has registered. The configurations are returned hub first.
pub fn start_registered<'t>(
    label: &'static str,
    t: &'t Topology,
    dir: &TestDir,
    spokes: &[Node],
    config: fn(&TestDir, Node, &Keys) -> NodeConfig,
) -> (Scenario<'t>, Vec<NodeConfig>) {
    let keys = keys();
    let mut cfgs = vec![config(dir, Node::Hub, &keys)];
    cfgs.extend(spokes.iter().map(|&n| config(dir, n, &keys)));
    let mut s = start_hub_then_spokes(label, t, &cfgs);
    s.step("every spoke registers");
    for &n in spokes {
        s.wait_registered(n, 0, 0);
    }
    (s, cfgs)
}

// ---- routes --------------------------------------------------------------------------------

/// Whether the `ip -j route` destination `dst` ("a.b.c.d" or "a.b.c.d/len") covers `addr`.
pub fn covers(dst: &str, addr: &str) -> bool {
    let (net, len) = dst.split_once('/').unwrap_or((dst, "32"));
    let (Ok(net), Ok(len), Ok(addr)) = (
        net.parse::<std::net::Ipv4Addr>(),
        len.parse::<u32>(),
        addr.parse::<std::net::Ipv4Addr>(),
    ) else {
        return false;
    };
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32))
    };
    u32::from(net) & mask == u32::from(addr) & mask
}

/// NHRP shortcuts on `ns`: proto-77 routes not via the hub (dmvpnd installs the configured
/// static routes, all via the hub, with the same protocol).
pub fn shortcuts(ns: &Netns) -> Vec<Value> {
    routes_with_proto(ns, PROTO_DMVPND)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["gateway"].as_str() != Some(HUB_TUNNEL))
        .collect()
}

/// A shortcut on `ns` toward any of `targets` (LAN hosts, tunnel addresses), if any.
pub fn shortcut_route(ns: &Netns, targets: &[&str]) -> Option<Value> {
    shortcuts(ns).into_iter().find(|r| {
        let dst = r["dst"].as_str().unwrap_or_default();
        dst != "default" && targets.iter().any(|a| covers(dst, a))
    })
}

/// The route the kernel of `ns` would use to `dst` (`ip -j route get`).
pub fn route_get(ns: &Netns, dst: &str) -> Value {
    ns.ip_json(&["route", "get", dst])
        .ok()
        .and_then(|v| v.get(0).cloned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn covers_matches_prefixes() {
        assert!(super::covers("172.16.13.0/24", "172.16.13.224"));
        assert!(super::covers("10.250.0.10", "10.250.0.10"));
        assert!(!super::covers("172.16.13.0/24", "172.16.3.224"));
        assert!(super::covers("0.0.0.0/0", "1.2.3.4"));
    }
}
