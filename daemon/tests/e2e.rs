//! End-to-end tests in network namespaces (issue 5, item 7): a hub and two spokes, all the real
//! dmvpnd binary, on a WAN bridge with a NAT router (nftables masquerade) in front of spoke B,
//! and a LAN host behind each router (topology in `dmvpn_tests::e2e`). Configurations come from
//! `conf/hub.toml` and `conf/spoke.toml` with only addresses changed (and short DPD and NAT
//! keepalive timers). Checks later steps do not depend on (capture analysis, error lines) are
//! reported together at the end, so one run shows every failing check.
//!
//! Needs root, `ip`, `nft`, `ping`, `tcpdump` and `tshark` (tests/install-deps.sh). Each step
//! fails with its name, what was expected, and the last 50 log lines of every daemon; the scratch
//! directory (configs, logs, underlay capture, exported keys) is kept when a test fails.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dmvpn_tests::e2e::toml;
use dmvpn_tests::e2e::{
    Capture, Dmvpnd, ExportedKeys, HUB_LAN_HOST, HUB_NBMA, HUB_TUNNEL, Keys, LinkCounters,
    NAT_OUTSIDE, Node, NodeConfig, SPOKE_A_LAN_HOST, SPOKE_A_NBMA, SPOKE_A_TUNNEL,
    SPOKE_B_LAN_HOST, SPOKE_B_PRIVATE, SPOKE_B_TUNNEL, TUNNEL_IF, TestDir, Timers, Topology,
    Tshark, WAN_IF, conf_dir, ping, route_dump, routes_with_proto, underlay_violations,
    write_config_with,
};
use dmvpn_tests::{Netns, require_root_and_tools};

const DMVPND: &str = env!("CARGO_BIN_EXE_dmvpnd");
const DMVPNCTL: dmvpn_tests::WorkspaceBin = dmvpn_tests::WorkspaceBin("dmvpnctl");

/// Test DPD timers (the examples say `dpd 40 5 on-demand`; the mode is kept).
const DPD_DELAY: u32 = 3;
const DPD_RETRY: u32 = 1;
/// Probe transmissions before a peer is declared dead (the IKE engine's `Dpd::max_tries`).
const DPD_TRIES: u32 = 5;
/// Test NAT keepalive interval (the examples say 20 s), so the capture holds some.
const NAT_KEEPALIVE: u32 = 2;
/// Route protocol of the routes dmvpnd installs (NHRP shortcuts).
const PROTO_DMVPND: &str = "77";

const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL: usize = 50;

/// What the daemons log, as predicates over one log line (case-insensitive). The wording is the
/// daemon's; adjust here, in one place, when it changes.
mod expect {
    fn has(line: &str, words: &[&str]) -> bool {
        let l = line.to_ascii_lowercase();
        words.iter().all(|w| l.contains(&w.to_ascii_lowercase()))
    }

    fn has_any(line: &str, words: &[&str]) -> bool {
        let l = line.to_ascii_lowercase();
        words.iter().any(|w| l.contains(&w.to_ascii_lowercase()))
    }

    /// The daemon has opened its underlay sockets (ready for IKE).
    pub fn underlay_open(line: &str) -> bool {
        has(line, &["underlay sockets open"])
    }

    pub fn ike_sa_up(line: &str) -> bool {
        has(line, &["IKE SA up"])
    }

    pub fn child_sa_installed(line: &str) -> bool {
        has(line, &["child SA installed"])
    }

    /// A spoke's registration with its NHS succeeded.
    pub fn registered_with_nhs(line: &str) -> bool {
        has(line, &["NHRP registered with NHS"])
    }

    /// The hub accepted the registration of `tunnel` (an entry in its NHRP cache).
    pub fn hub_registered(line: &str, tunnel: &str) -> bool {
        has(line, &["regist", tunnel]) && !has_any(line, &["fail", "refus", "reject"])
    }

    pub fn ike_auth_failed(line: &str) -> bool {
        has(line, &["IKE authentication failed"])
    }

    pub fn nhrp_auth_failed(line: &str) -> bool {
        has(line, &["NHRP authentication failure"])
    }

    /// DPD declared the peer at `nbma` dead.
    pub fn peer_dead(line: &str, nbma: &str) -> bool {
        has(line, &["dead", nbma])
    }

    /// The NHRP cache entry of `tunnel` is gone.
    pub fn cache_dropped(line: &str, tunnel: &str) -> bool {
        has(line, &[tunnel]) && has_any(line, &["purge", "remov", "delet", "expire", "flush"])
    }

    /// An error-level line (tracing's level field).
    pub fn error(line: &str) -> bool {
        line.contains(" ERROR ")
    }
}

/// One test's daemons and the step being run, for failure messages.
struct Run<'t> {
    t: &'t Topology,
    daemons: Vec<Dmvpnd>,
    step: String,
    /// Failures of checks later steps do not depend on (capture analysis, error lines):
    /// recorded, the test goes on, and [`Run::finish`] reports them all.
    deferred: std::cell::RefCell<Vec<String>>,
}

impl<'t> Run<'t> {
    fn new(t: &'t Topology) -> Self {
        Run {
            t,
            daemons: Vec::new(),
            step: "setup".into(),
            deferred: Default::default(),
        }
    }

    fn step(&mut self, s: &str) {
        eprintln!("e2e: step {s}");
        self.step = s.to_owned();
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for d in &self.daemons {
            s += &format!(
                "\n---- last {LOG_TAIL} lines of {} ({}) ----\n{}\n",
                d.node.name(),
                d.process.log_path().display(),
                d.tail(LOG_TAIL)
            );
        }
        s
    }

    #[track_caller]
    fn fail(&self, msg: impl std::fmt::Display) -> ! {
        panic!("step `{}` failed: {msg}\n{}", self.step, self.logs())
    }

    /// Records a failure that does not stop the test (see `deferred`).
    fn fail_later(&self, msg: impl std::fmt::Display) {
        eprintln!(
            "e2e: step `{}` FAILED (reported at the end): {msg}",
            self.step
        );
        self.deferred
            .borrow_mut()
            .push(format!("step `{}`: {msg}", self.step));
    }

    /// Fails with every deferred failure, if any.
    fn finish(&self) {
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

    fn daemon(&self, node: Node) -> &Dmvpnd {
        self.daemons
            .iter()
            .find(|d| d.node == node)
            .unwrap_or_else(|| self.fail(format!("{} was never started", node.name())))
    }

    fn start(&mut self, cfg: &NodeConfig) {
        let ns = cfg.node.netns(self.t);
        match Dmvpnd::start(Path::new(DMVPND), ns, cfg) {
            Ok(d) => self.daemons.push(d),
            Err(e) => self.fail(format!("starting dmvpnd for {}: {e:#}", cfg.node.name())),
        }
    }

    /// Fails if a daemon that was not killed on purpose has exited.
    fn check_alive(&mut self) {
        let mut dead = Vec::new();
        for d in &mut self.daemons {
            if d.process.pid().is_some() && !d.process.running() {
                dead.push(d.node.name());
            }
        }
        if !dead.is_empty() {
            self.fail(format!("dmvpnd exited unexpectedly: {dead:?}"));
        }
    }

    /// The first log line of `node` (from byte `from` on) satisfying `pred`.
    fn find_line(&self, node: Node, from: usize, pred: &dyn Fn(&str) -> bool) -> Option<String> {
        let log = self.daemon(node).log();
        log.get(from..)
            .unwrap_or_default()
            .lines()
            .find(|l| pred(l))
            .map(str::to_owned)
    }

    /// Waits up to `timeout` for a line satisfying `pred` in `node`'s log, past byte `from`.
    #[track_caller]
    fn wait_line(
        &mut self,
        node: Node,
        what: &str,
        from: usize,
        timeout: Duration,
        pred: &dyn Fn(&str) -> bool,
    ) -> String {
        let end = Instant::now() + timeout;
        loop {
            if let Some(l) = self.find_line(node, from, pred) {
                return l;
            }
            if Instant::now() >= end {
                self.fail(format!(
                    "no log line `{what}` from {} within {timeout:?}",
                    node.name()
                ));
            }
            self.check_alive();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_len(&self, node: Node) -> usize {
        self.daemon(node).log().len()
    }

    /// Pings `dst` from `ns` 4 times, 200 ms apart: every echo after the first must be
    /// answered (the first may be spent on resolution, as IOS shows `.!!!!`).
    #[track_caller]
    fn reach(&mut self, ns: &Netns, from: &str, dst: &str) {
        self.check_alive();
        let out = ns
            .exec("ping", &["-n", "-c", "4", "-i", "0.2", "-W", "1", dst])
            .unwrap_or_else(|e| self.fail(format!("ping: {e:#}")));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let answered = dmvpn_tests::e2e::answered_echoes(&text);
        if !(2..=4).all(|s| answered.contains(&s)) {
            self.fail(format!(
                "ping {from} → {dst}: echoes 2..4 must be answered, got replies to {answered:?}\n{text}{}\nroutes in {}:\n{}",
                String::from_utf8_lossy(&out.stderr),
                ns.name(),
                route_dump(ns)
            ));
        }
    }

    /// `dmvpnctl show nhrp --json` of `node` (docs/dmvpnctl.md, NhrpReport).
    fn nhrp_report(&self, node: Node) -> serde_json::Value {
        let d = self.daemon(node);
        let out = Command::new(DMVPNCTL)
            .arg("--socket")
            .arg(&d.config.socket)
            .args(["show", "nhrp", "--json"])
            .output()
            .unwrap_or_else(|e| self.fail(format!("running dmvpnctl: {e}")));
        if !out.status.success() {
            self.fail(format!(
                "dmvpnctl show nhrp on {}: {}: {}",
                node.name(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            self.fail(format!(
                "dmvpnctl show nhrp --json: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            ))
        });
        // The documented report, or the response envelope around it.
        match v.get("data") {
            Some(d) => d.clone(),
            None => v,
        }
    }

    /// The NHRP cache entry of the peer `tunnel` (a /32 learned from it) in `node`'s cache.
    fn cache_entry(&self, node: Node, tunnel: &str) -> Option<serde_json::Value> {
        let report = self.nhrp_report(node);
        report["entries"]
            .as_array()
            .unwrap_or_else(|| self.fail(format!("no `entries` in the NHRP report: {report}")))
            .iter()
            .find(|e| e["protocol_addr"] == tunnel && e["kind"] != "local")
            .cloned()
    }

    fn counters(&self, ns: &Netns, dev: &str) -> LinkCounters {
        LinkCounters::read(ns, dev).unwrap_or_else(|e| self.fail(format!("{e:#}")))
    }
}

fn keys() -> Keys {
    Keys::random().expect("random keys")
}

fn config(dir: &TestDir, node: Node, keys: &Keys) -> NodeConfig {
    let timers = Timers {
        dpd: Some((DPD_DELAY, DPD_RETRY)),
        nat_keepalive: Some(NAT_KEEPALIVE),
    };
    write_config_with(dir.path(), node, keys, timers)
        .unwrap_or_else(|e| panic!("generating the {} configuration: {e:#}", node.name()))
}

/// Whether the `ip -j route` destination `dst` ("a.b.c.d" or "a.b.c.d/len") covers `addr`.
fn covers(dst: &str, addr: &str) -> bool {
    let (net, len) = dst.split_once('/').unwrap_or((dst, "32"));
    let (Ok(net), Ok(len), Ok(addr)) = (
        net.parse::<Ipv4Addr>(),
        len.parse::<u32>(),
        addr.parse::<Ipv4Addr>(),
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
fn shortcuts(ns: &Netns) -> Vec<serde_json::Value> {
    routes_with_proto(ns, PROTO_DMVPND)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["gateway"].as_str() != Some(HUB_TUNNEL))
        .collect()
}

/// A shortcut on `ns` toward `lan_host` or the peer's tunnel address, if any.
fn shortcut_route(ns: &Netns, lan_host: &str, peer_tunnel: &str) -> Option<serde_json::Value> {
    shortcuts(ns).into_iter().find(|r| {
        let dst = r["dst"].as_str().unwrap_or_default();
        dst != "default" && (covers(dst, lan_host) || covers(dst, peer_tunnel))
    })
}

#[test]
fn hub_and_two_spokes_register_ping_redirect_and_detect_a_dead_spoke() {
    require_root_and_tools();
    let dir = TestDir::new("main").unwrap();
    let t = Topology::new().expect("building the topology");
    let mut cap = Capture::start(&t.wan, "any", &dir.path().join("underlay.pcap"))
        .expect("starting tcpdump on the WAN");
    let keys = keys();
    let cfg_hub = config(&dir, Node::Hub, &keys);
    let cfg_a = config(&dir, Node::SpokeA, &keys);
    let cfg_b = config(&dir, Node::SpokeB, &keys);

    let mut r = Run::new(&t);
    r.step("0. start the hub, then the spokes");
    r.start(&cfg_hub);
    r.wait_line(
        Node::Hub,
        "underlay sockets open",
        0,
        Duration::from_secs(10),
        &expect::underlay_open,
    );
    r.start(&cfg_a);
    r.start(&cfg_b);

    r.step("1. both spokes register");
    for (spoke, tunnel) in [
        (Node::SpokeA, SPOKE_A_TUNNEL),
        (Node::SpokeB, SPOKE_B_TUNNEL),
    ] {
        r.wait_line(
            spoke,
            "IKE SA up",
            0,
            REGISTRATION_TIMEOUT,
            &expect::ike_sa_up,
        );
        r.wait_line(
            spoke,
            "child SA installed",
            0,
            REGISTRATION_TIMEOUT,
            &expect::child_sa_installed,
        );
        r.wait_line(
            spoke,
            "NHRP registered with NHS",
            0,
            REGISTRATION_TIMEOUT,
            &expect::registered_with_nhs,
        );
        r.wait_line(
            Node::Hub,
            &format!("registration of {tunnel}"),
            0,
            REGISTRATION_TIMEOUT,
            &|l| expect::hub_registered(l, tunnel),
        );
    }

    r.step("1b. the hub's NHRP cache (dmvpnctl show nhrp) holds both spokes, registered");
    for (tunnel, nbma) in [
        (SPOKE_A_TUNNEL, SPOKE_A_NBMA),
        (SPOKE_B_TUNNEL, NAT_OUTSIDE),
    ] {
        let entry = r.cache_entry(Node::Hub, tunnel).unwrap_or_else(|| {
            r.fail(format!(
                "no entry for {tunnel} in the hub's NHRP cache: {}",
                r.nhrp_report(Node::Hub)
            ))
        });
        let flags = entry["flags"].to_string();
        let packets_to = entry["post_nat_nbma"]
            .as_str()
            .or(entry["nbma"].as_str())
            .unwrap_or_default();
        if !flags.contains("registered") || packets_to != nbma {
            r.fail(format!(
                "hub's entry for {tunnel} should be registered, reached at {nbma}: {entry}"
            ));
        }
    }

    r.step("2. ping spoke ↔ hub over the tunnel, and hub LAN ↔ spoke LANs");
    r.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);
    r.reach(&t.spoke_b, "spoke B (NATed)", HUB_TUNNEL);
    r.reach(&t.hub, "hub", SPOKE_A_TUNNEL);
    r.reach(&t.hub, "hub", SPOKE_B_TUNNEL);
    r.reach(&t.lan_hub, "hub LAN host", SPOKE_A_LAN_HOST);
    r.reach(&t.lan_hub, "hub LAN host", SPOKE_B_LAN_HOST);
    r.reach(&t.lan_a, "spoke A LAN host", HUB_LAN_HOST);
    r.reach(&t.lan_b, "spoke B LAN host", HUB_LAN_HOST);

    r.step("3. the first spoke-to-spoke packet crosses the hub");
    for (ns, name) in [(&t.spoke_a, "spoke A"), (&t.spoke_b, "spoke B")] {
        let rs = shortcuts(ns);
        if !rs.is_empty() {
            r.fail(format!(
                "{name} has shortcut routes before any spoke-to-spoke traffic: {rs:?}"
            ));
        }
    }
    let hub_tun0 = r.counters(&t.hub, TUNNEL_IF);
    let (got, out) = ping(&t.lan_a, SPOKE_B_LAN_HOST, 1, "1").unwrap();
    let (hub_rx, hub_tx) = r.counters(&t.hub, TUNNEL_IF).since(&hub_tun0);
    if got != 1 {
        r.fail(format!(
            "first echo {SPOKE_A_LAN_HOST} → {SPOKE_B_LAN_HOST} unanswered:\n{out}"
        ));
    }
    if hub_rx < 1 || hub_tx < 1 {
        r.fail(format!(
            "the first echo did not cross the hub: hub {TUNNEL_IF} rx +{hub_rx}, tx +{hub_tx}"
        ));
    }

    r.step("4. the hub's redirect leads to shortcut routes (proto 77) on both spokes");
    let end = Instant::now() + Duration::from_secs(20);
    let (route_a, route_b) = loop {
        let a = shortcut_route(&t.spoke_a, SPOKE_B_LAN_HOST, SPOKE_B_TUNNEL);
        let b = shortcut_route(&t.spoke_b, SPOKE_A_LAN_HOST, SPOKE_A_TUNNEL);
        if let (Some(a), Some(b)) = (&a, &b) {
            break (a.clone(), b.clone());
        }
        if Instant::now() >= end {
            r.fail(format!(
                "no shortcut within 20 s of spoke-to-spoke traffic (A: {a:?}, B: {b:?})\nspoke A routes:\n{}\nspoke B routes:\n{}",
                route_dump(&t.spoke_a),
                route_dump(&t.spoke_b)
            ));
        }
        r.check_alive();
        // Keep traffic flowing both ways: the hub redirects each spoke for its own traffic.
        let _ = ping(&t.lan_a, SPOKE_B_LAN_HOST, 1, "1");
        let _ = ping(&t.lan_b, SPOKE_A_LAN_HOST, 1, "1");
    };
    eprintln!("e2e: shortcut on spoke A {route_a}, on spoke B {route_b}");

    r.step("5. spoke-to-spoke traffic flows directly: the hub's counters stop growing");
    // Let packets in flight and the resolution exchange settle: the first direct echo proves
    // the path before the measurement starts.
    r.reach(&t.lan_a, "spoke A LAN host", SPOKE_B_LAN_HOST);
    let hub_wan0 = r.counters(&t.hub, WAN_IF);
    let hub_tun0 = r.counters(&t.hub, TUNNEL_IF);
    let a_wan0 = r.counters(&t.spoke_a, WAN_IF);
    let (got, out) = ping(&t.lan_a, SPOKE_B_LAN_HOST, 100, "0.01").unwrap();
    let (wan_rx, _) = r.counters(&t.hub, WAN_IF).since(&hub_wan0);
    let (tun_rx, tun_tx) = r.counters(&t.hub, TUNNEL_IF).since(&hub_tun0);
    let (a_rx, a_tx) = r.counters(&t.spoke_a, WAN_IF).since(&a_wan0);
    eprintln!(
        "e2e: 100 echoes A LAN → B LAN: hub {WAN_IF} rx +{wan_rx}, hub {TUNNEL_IF} rx +{tun_rx} tx +{tun_tx}, spoke A {WAN_IF} rx +{a_rx} tx +{a_tx}"
    );
    if got != 100 {
        r.fail(format!(
            "direct path lost echoes ({got}/100 answered):\n{out}"
        ));
    }
    // 200 packets would cross the hub on the hub path; allow a few unrelated ones (DPD, ARP,
    // NAT keepalives), none of them transit packets.
    if wan_rx > 10 || tun_rx > 0 || tun_tx > 0 {
        r.fail(format!(
            "traffic still crosses the hub after the shortcut: hub {WAN_IF} rx +{wan_rx} (≤ 10 allowed), {TUNNEL_IF} rx +{tun_rx} tx +{tun_tx} (0 allowed)"
        ));
    }
    if a_tx < 100 || a_rx < 100 {
        r.fail(format!(
            "spoke A's underlay did not carry the echoes: rx +{a_rx} tx +{a_tx}"
        ));
    }

    r.step("6. ping spoke ↔ spoke tunnel addresses and LAN B → LAN A");
    r.reach(&t.spoke_a, "spoke A", SPOKE_B_TUNNEL);
    r.reach(&t.spoke_b, "spoke B", SPOKE_A_TUNNEL);
    r.reach(&t.lan_b, "spoke B LAN host", SPOKE_A_LAN_HOST);

    r.step("7. the underlay carried only IKE, ESP, NAT keepalives (and ARP)");
    cap.stop().unwrap_or_else(|e| r.fail(format!("{e:#}")));
    let plain = Tshark::plain(&dir.path().join("tshark-plain")).unwrap();
    check_underlay_capture(&r, &plain, &cap.file);

    r.step("8. the captured ESP decrypts with the exported keys; GRE and NHRP dissect cleanly");
    let exports = [&cfg_hub.key_export, &cfg_a.key_export, &cfg_b.key_export];
    let exported = ExportedKeys::read(&exports.map(|p| p.as_path()))
        .unwrap_or_else(|e| r.fail(format!("{e:#}")));
    if exported.esp_sa.is_empty() || exported.ikev2.is_empty() {
        r.fail(format!("key export incomplete: {exported:?}"));
    }
    let keyed = Tshark::with_keys(&dir.path().join("tshark-keys"), &exported).unwrap();
    check_decrypted_capture(&r, &keyed, &cap.file);

    r.step("9. no daemon logged an error so far");
    for d in &r.daemons {
        let errors: Vec<String> = d
            .log()
            .lines()
            .filter(|l| expect::error(l))
            .map(str::to_owned)
            .collect();
        if !errors.is_empty() {
            r.fail_later(format!(
                "{} logged errors:\n{}",
                d.node.name(),
                errors.join("\n")
            ));
        }
    }
    r.step("10. a killed spoke is declared dead by DPD and leaves the hub's cache");
    let from = r.log_len(Node::Hub);
    let spoke_a = r
        .daemons
        .iter_mut()
        .find(|d| d.node == Node::SpokeA)
        .expect("spoke A");
    spoke_a.process.kill().expect("kill -9 spoke A");
    let killed = Instant::now();
    let budget = Duration::from_secs(u64::from(DPD_DELAY + DPD_RETRY * DPD_TRIES + 10));
    let (mut dead, mut dropped) = (None, None);
    while dead.is_none() || dropped.is_none() {
        if killed.elapsed() > budget {
            r.fail(format!(
                "within {budget:?} of kill -9 the hub logged: peer dead: {dead:?}; cache entry of {SPOKE_A_TUNNEL} dropped: {dropped:?}"
            ));
        }
        // On-demand DPD probes when the hub has traffic for the peer.
        let _ = ping(&t.hub, SPOKE_A_TUNNEL, 1, "1");
        dead =
            dead.or_else(|| r.find_line(Node::Hub, from, &|l| expect::peer_dead(l, SPOKE_A_NBMA)));
        dropped = dropped.or_else(|| {
            r.find_line(Node::Hub, from, &|l| {
                expect::cache_dropped(l, SPOKE_A_TUNNEL)
            })
        });
    }
    if let Some(e) = r.cache_entry(Node::Hub, SPOKE_A_TUNNEL) {
        r.fail(format!(
            "the hub logged the removal, yet its NHRP cache still holds {SPOKE_A_TUNNEL}: {e}"
        ));
    }
    if r.cache_entry(Node::Hub, SPOKE_B_TUNNEL).is_none() {
        r.fail(format!(
            "spoke B left the hub's NHRP cache with spoke A: {}",
            r.nhrp_report(Node::Hub)
        ));
    }
    eprintln!(
        "e2e: spoke A declared dead after {:?}: {}; {}",
        killed.elapsed(),
        dead.unwrap_or_default(),
        dropped.unwrap_or_default()
    );
    // Spoke B is unaffected.
    r.reach(&t.hub, "hub", SPOKE_B_TUNNEL);
    r.reach(&t.lan_b, "spoke B LAN host", HUB_LAN_HOST);
    r.finish();
}

/// Every captured frame is ARP, IKE, ESP or a NAT keepalive (in particular no GRE and no NHRP
/// in clear); spoke B, behind the NAT, sent NAT keepalives.
fn check_underlay_capture(r: &Run<'_>, tshark: &Tshark, cap: &Path) {
    let t = |filter: &str| {
        tshark
            .frames(cap, filter)
            .unwrap_or_else(|e| r.fail(format!("{e:#}")))
    };
    let (all, ike, esp) = (t("frame"), t("isakmp"), t("esp"));
    let keepalive_src = tshark
        .fields(cap, "udpencap.nat_keepalive", &["ip.src"])
        .unwrap_or_else(|e| r.fail(format!("{e:#}")));
    let mut keepalives: BTreeMap<String, usize> = BTreeMap::new();
    for row in keepalive_src {
        *keepalives.entry(row.join(",")).or_default() += 1;
    }
    eprintln!(
        "e2e: underlay capture: {} frames, {} IKE, {} ESP, NAT keepalives by source {keepalives:?}",
        all.len(),
        ike.len(),
        esp.len()
    );
    if ike.is_empty() || esp.is_empty() {
        r.fail_later(format!(
            "capture {} lacks IKE ({}) or ESP ({}) frames",
            cap.display(),
            ike.len(),
            esp.len()
        ));
    }
    let bad = underlay_violations(tshark, cap, 20).unwrap_or_else(|e| r.fail(format!("{e:#}")));
    if !bad.is_empty() {
        r.fail_later(format!(
            "frames other than IKE, ESP, NAT keepalives and ARP on the underlay:\n{}",
            bad.join("\n")
        ));
    }
    if !keepalives.contains_key(NAT_OUTSIDE) {
        r.fail_later(format!(
            "no NAT keepalive from spoke B (behind the NAT, seen as {NAT_OUTSIDE}) with ike.nat-keepalive = {NAT_KEEPALIVE}; keepalives seen: {keepalives:?}"
        ));
    }
}

/// With the exported keys: every ESP packet decrypts to GRE; both spokes' NHRP registration
/// request and reply and the hub's traffic indication are there; nothing is malformed.
fn check_decrypted_capture(r: &Run<'_>, tshark: &Tshark, cap: &Path) {
    let frames = |filter: &str| {
        tshark
            .frames(cap, filter)
            .unwrap_or_else(|e| r.fail(format!("{e:#}")))
    };
    let undecrypted = frames("esp and not gre");
    if !undecrypted.is_empty() {
        r.fail_later(format!(
            "{} ESP frames did not decrypt to GRE with the exported keys:\n{}",
            undecrypted.len(),
            undecrypted
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    let bad = frames("_ws.malformed or _ws.expert.severity == error");
    if !bad.is_empty() {
        r.fail_later(format!(
            "malformed or expert-error frames after decryption:\n{}",
            bad.join("\n")
        ));
    }
    let verbose = tshark
        .run(cap, &["-n", "-V", "-Y", "nhrp"])
        .unwrap_or_else(|e| r.fail(format!("{e:#}")));
    if verbose.contains("Malformed") || verbose.contains("[Expert Info (Error") {
        let at = verbose
            .find("Malformed")
            .or_else(|| verbose.find("[Expert Info (Error"))
            .unwrap_or(0);
        let start = verbose[..at].rfind("\nFrame ").unwrap_or(0);
        r.fail_later(format!(
            "NHRP dissection has errors:\n{}",
            &verbose[start..(at + 200).min(verbose.len())]
        ));
    }
    let nhrp = tshark
        .fields(
            cap,
            "nhrp",
            &[
                "frame.number",
                "nhrp.hdr.op.type",
                "nhrp.src.prot.addr",
                "nhrp.dst.prot.addr",
                "nhrp.code",
            ],
        )
        .unwrap_or_else(|e| r.fail(format!("{e:#}")));
    let mut ops: BTreeMap<(String, String), usize> = BTreeMap::new();
    for row in &nhrp {
        let op = row.get(1).cloned().unwrap_or_default();
        let src = row.get(2).cloned().unwrap_or_default();
        *ops.entry((op, src)).or_default() += 1;
    }
    eprintln!("e2e: decrypted NHRP (op type, source) → count: {ops:?}");
    for spoke in [SPOKE_A_TUNNEL, SPOKE_B_TUNNEL] {
        // RFC 2332 op types: 3 Registration Request, 4 Registration Reply (src = the spoke's).
        for (op, name) in [("3", "Registration Request"), ("4", "Registration Reply")] {
            if !ops.contains_key(&(op.to_owned(), spoke.to_owned())) {
                r.fail_later(format!(
                    "no decrypted NHRP {name} for {spoke}; NHRP seen: {ops:?}"
                ));
            }
        }
    }
    // Cisco op type 8: Traffic Indication (the hub's redirect).
    if !ops.keys().any(|(op, _)| op == "8") {
        r.fail_later(format!(
            "no decrypted NHRP Traffic Indication (redirect); NHRP seen: {ops:?}"
        ));
    }
    if frames("isakmp.id.type").is_empty() {
        r.fail_later(
            "no IKE_AUTH decrypted with the exported IKEv2 keys (no Identification payload)",
        );
    }
}

/// Starts the hub with the right keys and spoke A with `spoke_keys`.
fn hub_and_spoke_a<'t>(
    t: &'t Topology,
    dir: &TestDir,
    hub_keys: &Keys,
    spoke_keys: &Keys,
) -> Run<'t> {
    let cfg_hub = config(dir, Node::Hub, hub_keys);
    let cfg_a = config(dir, Node::SpokeA, spoke_keys);
    let mut r = Run::new(t);
    r.step("start the hub, then spoke A");
    r.start(&cfg_hub);
    r.wait_line(
        Node::Hub,
        "underlay sockets open",
        0,
        Duration::from_secs(10),
        &expect::underlay_open,
    );
    r.start(&cfg_a);
    r
}

#[test]
fn wrong_psk_is_refused_with_a_clear_log_line_and_no_sa() {
    require_root_and_tools();
    let dir = TestDir::new("psk").unwrap();
    let t = Topology::new().expect("building the topology");
    let good = keys();
    let wrong = Keys {
        psk: format!("{}-wrong", good.psk),
        nhrp: good.nhrp.clone(),
    };
    let mut r = hub_and_spoke_a(&t, &dir, &good, &wrong);

    r.step("the PSK mismatch is logged");
    let end = Instant::now() + REGISTRATION_TIMEOUT;
    let line = loop {
        let hub = r.find_line(Node::Hub, 0, &expect::ike_auth_failed);
        let spoke = r.find_line(Node::SpokeA, 0, &expect::ike_auth_failed);
        if hub.is_some() || spoke.is_some() {
            break format!("hub: {hub:?}; spoke: {spoke:?}");
        }
        if Instant::now() >= end {
            r.fail(format!(
                "neither side logged `IKE authentication failed` within {REGISTRATION_TIMEOUT:?}"
            ));
        }
        r.check_alive();
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("e2e: {line}");

    r.step("no SA, no registration, no traffic");
    let (got, out) = ping(&t.spoke_a, HUB_TUNNEL, 3, "0.5").unwrap();
    if got != 0 {
        r.fail(format!(
            "the tunnel carries traffic with a wrong PSK:\n{out}"
        ));
    }
    for node in [Node::Hub, Node::SpokeA] {
        for (what, pred) in [
            ("IKE SA up", &expect::ike_sa_up as &dyn Fn(&str) -> bool),
            ("child SA installed", &expect::child_sa_installed),
            ("NHRP registered with NHS", &expect::registered_with_nhs),
        ] {
            if let Some(l) = r.find_line(node, 0, pred) {
                r.fail(format!(
                    "{} logged `{what}` with a wrong PSK: {l}",
                    node.name()
                ));
            }
        }
    }
    if let Some(l) = r.find_line(Node::Hub, 0, &|l| expect::hub_registered(l, SPOKE_A_TUNNEL)) {
        r.fail(format!("the hub registered spoke A with a wrong PSK: {l}"));
    }
    if let Some(e) = r.cache_entry(Node::Hub, SPOKE_A_TUNNEL) {
        r.fail(format!(
            "the hub's NHRP cache holds spoke A despite a wrong PSK: {e}"
        ));
    }
    r.check_alive();
}

#[test]
fn wrong_nhrp_key_is_refused_with_a_clear_log_line_and_no_registration() {
    require_root_and_tools();
    let dir = TestDir::new("nhrpkey").unwrap();
    let t = Topology::new().expect("building the topology");
    let good = keys();
    let wrong = Keys {
        psk: good.psk.clone(),
        nhrp: "WRONGKEY".into(),
    };
    assert_ne!(good.nhrp, wrong.nhrp);
    let mut r = hub_and_spoke_a(&t, &dir, &good, &wrong);

    r.step("the NHRP key mismatch is logged");
    let end = Instant::now() + REGISTRATION_TIMEOUT;
    let line = loop {
        let hub = r.find_line(Node::Hub, 0, &expect::nhrp_auth_failed);
        let spoke = r.find_line(Node::SpokeA, 0, &expect::nhrp_auth_failed);
        if hub.is_some() || spoke.is_some() {
            break format!("hub: {hub:?}; spoke: {spoke:?}");
        }
        if Instant::now() >= end {
            r.fail(format!(
                "neither side logged `NHRP authentication failure` within {REGISTRATION_TIMEOUT:?}"
            ));
        }
        r.check_alive();
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("e2e: {line}");

    r.step("no registration, no traffic over the tunnel");
    let (got, out) = ping(&t.spoke_a, HUB_TUNNEL, 3, "0.5").unwrap();
    if got != 0 {
        r.fail(format!(
            "the hub answers a spoke whose registration it refused:\n{out}"
        ));
    }
    if let Some(l) = r.find_line(Node::SpokeA, 0, &expect::registered_with_nhs) {
        r.fail(format!("spoke A registered with a wrong NHRP key: {l}"));
    }
    if let Some(l) = r.find_line(Node::Hub, 0, &|l| expect::hub_registered(l, SPOKE_A_TUNNEL)) {
        r.fail(format!(
            "the hub registered spoke A with a wrong NHRP key: {l}"
        ));
    }
    let report = r.nhrp_report(Node::Hub);
    if let Some(e) = r.cache_entry(Node::Hub, SPOKE_A_TUNNEL) {
        r.fail(format!(
            "the hub's NHRP cache holds spoke A despite a wrong NHRP key: {e}"
        ));
    }
    if report["counters"]["auth_failures"].as_u64().unwrap_or(0) == 0 {
        r.fail(format!(
            "the hub counted no NHRP authentication failure: {report}"
        ));
    }
    r.check_alive();
}

/// Flattens a TOML document to `dotted.key` → value (arrays of tables as `key[i].sub`).
fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        toml::Value::Array(a) if a.iter().all(toml::Value::is_table) && !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

/// Without dmvpnd running: the generated configurations are valid and differ from the examples
/// only in addresses, interface, routes, key export and DPD timers; the underlay routes, the NAT
/// hides spoke B, each LAN host reaches its router; the capture plumbing works.
#[test]
fn topology_and_generated_configs_self_check() {
    require_root_and_tools();
    let dir = TestDir::new("self").unwrap();
    let keys = keys();
    for node in [Node::Hub, Node::SpokeA, Node::SpokeB] {
        let cfg = config(&dir, node, &keys);
        let out = Command::new(DMVPND)
            .arg("--check-config")
            .arg(&cfg.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            cfg.config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&cfg.secrets).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", cfg.secrets.display());
        let example = if node == Node::Hub {
            "hub.toml"
        } else {
            "spoke.toml"
        };
        let parse = |p: &Path| -> toml::Value {
            toml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
        flatten("", &parse(&conf_dir().join(example)), &mut a);
        flatten("", &parse(&cfg.config), &mut b);
        let allowed = |k: &str| {
            k.starts_with("route[")
                || k.starts_with("debug.")
                || k.starts_with("nhrp.nhs[")
                || [
                    "underlay.interface",
                    "underlay.local-address",
                    "tunnel.address",
                    "ike.dpd.delay",
                    "ike.dpd.retry",
                    "ike.nat-keepalive",
                    "control.socket",
                ]
                .contains(&k)
        };
        let keys_all: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys_all {
            if a.get(k) != b.get(k) {
                assert!(
                    allowed(k),
                    "{}: {k} changed: {:?} → {:?}",
                    node.name(),
                    a.get(k),
                    b.get(k)
                );
            }
        }
    }

    let t = Topology::new().expect("building the topology");
    let mut cap = Capture::start(&t.wan, "any", &dir.path().join("underlay.pcap")).unwrap();
    let must_reach = |ns: &Netns, dst: &str| {
        let (got, out) = ping(ns, dst, 2, "0.2").unwrap();
        assert_eq!(got, 2, "{} → {dst}:\n{out}", ns.name());
    };
    must_reach(&t.hub, SPOKE_A_NBMA);
    must_reach(&t.spoke_a, HUB_NBMA);
    must_reach(&t.spoke_b, HUB_NBMA);
    must_reach(&t.spoke_b, SPOKE_A_NBMA);
    must_reach(&t.lan_hub, HUB_NBMA);
    must_reach(&t.lan_a, SPOKE_A_NBMA);
    must_reach(&t.lan_b, SPOKE_B_PRIVATE);
    // Spoke B's private address is not routed on the WAN, and its LAN is not reachable before
    // the tunnel exists.
    let (got, _) = ping(&t.hub, SPOKE_B_PRIVATE, 1, "1").unwrap();
    assert_eq!(
        got, 0,
        "spoke B's private address must not be reachable from the hub"
    );
    let (got, _) = ping(&t.lan_a, SPOKE_B_LAN_HOST, 1, "1").unwrap();
    assert_eq!(
        got, 0,
        "spoke B's LAN must not be reachable without the tunnel"
    );
    cap.stop().unwrap();

    let tshark = Tshark::plain(&dir.path().join("tshark")).unwrap();
    let src = |filter: &str| tshark.fields(&cap.file, filter, &["ip.src"]).unwrap();
    let from_b = src(&format!(
        "icmp.type == 8 and ip.dst == {HUB_NBMA} and ip.src == {NAT_OUTSIDE}"
    ));
    assert_eq!(
        from_b.len(),
        2,
        "spoke B's echoes reach the hub from the NAT's outside address"
    );
    assert!(
        src(&format!("ip.addr == {SPOKE_B_PRIVATE}")).is_empty(),
        "spoke B's private address leaked onto the WAN"
    );
    // IPv6 is off: nothing but ARP and our ICMP on the wire.
    let other = tshark.frames(&cap.file, "not (arp or icmp)").unwrap();
    assert!(other.is_empty(), "unexpected frames on the WAN: {other:?}");
    // The underlay check of the dmvpnd tests flags exactly the ICMP (it can fail).
    let icmp = tshark.frames(&cap.file, "icmp").unwrap();
    let flagged = underlay_violations(&tshark, &cap.file, usize::MAX).unwrap();
    assert!(
        !icmp.is_empty() && flagged == icmp,
        "{flagged:?} vs {icmp:?}"
    );
}
