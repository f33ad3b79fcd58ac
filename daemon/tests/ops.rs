//! Operations tests (issue 6, item 5) against running daemons in network namespaces (the
//! topology of `dmvpn_tests::e2e`): every `dmvpnctl show` in text and `--json` form with
//! concrete content, `clear sa` and `clear nhrp`, configuration reload (`dmvpnctl reload` and
//! SIGHUP) and graceful shutdown (SIGTERM).
//!
//! dmvpnctl runs on the host: the control socket is a filesystem path, reachable from any
//! namespace. Needs root, `ip`, `nft` and `ping` (tests/install-deps.sh). A failing step prints
//! what it expected, the command output it got and the last log lines of every daemon; the
//! scratch directory (configurations, logs) is kept.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dmvpn_tests::e2e::toml;
use dmvpn_tests::e2e::{
    Dmvpnd, HUB_NBMA, HUB_TUNNEL, NAT_OUTSIDE, Node, NodeConfig, SPOKE_A_NBMA, SPOKE_A_TUNNEL,
    SPOKE_B_PRIVATE, SPOKE_B_TUNNEL, TUNNEL_IF, TestDir, Timers, Topology, ping, route_dump,
    routes_with_proto, write_config_with,
};
use dmvpn_tests::{Netns, require_root_and_tools};
use serde_json::Value;

const DMVPND: &str = env!("CARGO_BIN_EXE_dmvpnd");
const DMVPNCTL: dmvpn_tests::WorkspaceBin = dmvpn_tests::WorkspaceBin("dmvpnctl");

/// The spokes' `nhrp.holding-time`: they re-register every third of it (10 s), so the hub
/// learns them again soon after `clear nhrp`.
const HOLDING_TIME: u64 = 30;
/// Route protocol of the routes dmvpnd installs.
const PROTO_DMVPND: &str = "77";
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL: usize = 40;
/// A prefix no test node uses (TEST-NET-1), for a static route added by reload.
const EXTRA_PREFIX: &str = "192.0.2.0/24";
/// An address no node has, for `clear sa` of an unknown peer (TEST-NET-3).
const NO_PEER: &str = "203.0.113.99";

// ---- documented JSON fields (docs/dmvpnctl.md, schema version 1) -------------------------------

const SA_REPORT: &[&str] = &["schema_version", "interface", "peers"];
const SA_PEER: &[&str] = &[
    "nbma",
    "post_nat_nbma",
    "tunnel_addr",
    "nhrp_state",
    "ike",
    "children",
];
const IKE_SA: &[&str] = &[
    "state",
    "state_detail",
    "spi_i",
    "spi_r",
    "initiator",
    "encryption",
    "prf",
    "dh_group",
    "age_secs",
    "rekey_in_secs",
    "local",
    "remote",
    "remote_id",
    "nat_local",
    "nat_remote",
    "child_count",
];
const CHILD_SA: &[&str] = &[
    "spi_in",
    "spi_out",
    "mode",
    "transform",
    "esn",
    "udp_encap",
    "packets_in",
    "bytes_in",
    "packets_out",
    "bytes_out",
    "replay_drops",
    "auth_failures",
    "age_secs",
    "rekey_in_secs",
];
const DMVPN_REPORT: &[&str] = &[
    "schema_version",
    "interface",
    "tunnel_addr",
    "nhrp_role",
    "peers",
];
const DMVPN_PEER: &[&str] = &[
    "peer_nbma",
    "peer_tunnel",
    "entries",
    "state",
    "updn_secs",
    "attrs",
];
const NHRP_REPORT: &[&str] = &["schema_version", "interface", "entries", "nhs", "counters"];
const NHRP_ENTRY: &[&str] = &[
    "protocol_addr",
    "prefix_len",
    "next_hop",
    "nbma",
    "post_nat_nbma",
    "kind",
    "flags",
    "age_secs",
    "expires_in_secs",
    "holding_time_secs",
];
const NHS_ENTRY: &[&str] = &[
    "protocol_addr",
    "nbma",
    "multicast",
    "state",
    "expires_in_secs",
    "retry_wait_secs",
];
const NHRP_COUNTERS: &[&str] = &["rx", "tx", "auth_failures", "drops"];
const NHRP_TYPES: &[&str] = &[
    "resolution_request",
    "resolution_reply",
    "registration_request",
    "registration_reply",
    "purge_request",
    "purge_reply",
    "error_indication",
    "traffic_indication",
    "unknown",
];
const IKE_REPORT: &[&str] = &["schema_version", "sas"];
const INTERFACE_REPORT: &[&str] = &[
    "schema_version",
    "interface",
    "tunnel_addr",
    "mtu",
    "tx_packets",
    "tx_bytes",
    "rx_packets",
    "rx_bytes",
    "drops",
];
const DATAPLANE_DROPS: &[&str] = &[
    "not_ipv4",
    "no_mapping",
    "no_room",
    "sequence_exhausted",
    "unknown_spi",
    "replay",
    "auth_failed",
    "malformed_esp",
    "not_gre",
    "gre_key",
    "unsupported_protocol",
    "sa_queue_full",
];

/// Documented keys missing from the object `v` (`what` names it in the result).
fn missing(what: &str, v: &Value, keys: &[&str]) -> Vec<String> {
    match v.as_object() {
        Some(o) => keys
            .iter()
            .filter(|k| !o.contains_key(**k))
            .map(|k| format!("{what}.{k}"))
            .collect(),
        None => vec![format!("{what} is not an object: {v}")],
    }
}

fn array<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Every documented field of a report (and of its nested objects) that is missing.
fn schema_violations(what: &str, v: &Value) -> Vec<String> {
    let mut m = Vec::new();
    if v["schema_version"] != 1 {
        m.push(format!("schema_version is {}, not 1", v["schema_version"]));
    }
    match what {
        "sa" => {
            m.extend(missing("SaReport", v, SA_REPORT));
            for p in array(v, "peers") {
                m.extend(missing("SaPeer", p, SA_PEER));
                if !p["ike"].is_null() {
                    m.extend(missing("IkeSa", &p["ike"], IKE_SA));
                }
                for c in array(p, "children") {
                    m.extend(missing("ChildSa", c, CHILD_SA));
                }
            }
        }
        "dmvpn" => {
            m.extend(missing("DmvpnReport", v, DMVPN_REPORT));
            for p in array(v, "peers") {
                m.extend(missing("DmvpnPeer", p, DMVPN_PEER));
            }
        }
        "nhrp" => {
            m.extend(missing("NhrpReport", v, NHRP_REPORT));
            for e in array(v, "entries") {
                m.extend(missing("NhrpEntry", e, NHRP_ENTRY));
            }
            for n in array(v, "nhs") {
                m.extend(missing("NhsEntry", n, NHS_ENTRY));
            }
            let c = &v["counters"];
            m.extend(missing("NhrpCounters", c, NHRP_COUNTERS));
            for dir in ["rx", "tx"] {
                m.extend(missing(&format!("NhrpCounters.{dir}"), &c[dir], NHRP_TYPES));
            }
        }
        "ike" => {
            m.extend(missing("IkeReport", v, IKE_REPORT));
            for s in array(v, "sas") {
                m.extend(missing("IkeSa", s, IKE_SA));
            }
        }
        "interface" => {
            m.extend(missing("InterfaceReport", v, INTERFACE_REPORT));
            m.extend(missing(
                "InterfaceReport.drops",
                &v["drops"],
                DATAPLANE_DROPS,
            ));
        }
        other => m.push(format!("unknown report {other}")),
    }
    m
}

// ---- log lines -----------------------------------------------------------------------------------

/// What the daemons log. The wording is the daemon's; adjust here when it changes.
mod expect {
    /// The value of `key=value` in a tracing line.
    pub fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }

    /// The line's `peer` field is `addr` (with or without a port).
    pub fn peer_is(line: &str, addr: &str) -> bool {
        field(line, "peer")
            .is_some_and(|p| p == addr || p.strip_prefix(addr).is_some_and(|r| r.starts_with(':')))
    }

    pub fn underlay_open(line: &str) -> bool {
        line.contains("underlay sockets open")
    }

    pub fn registered_with_nhs(line: &str) -> bool {
        line.contains("NHRP registered with NHS")
    }

    /// The hub accepted the registration of the spoke with tunnel address `tunnel`.
    pub fn registration_accepted(line: &str, tunnel: &str) -> bool {
        line.contains("NHRP registration accepted") && peer_is(line, tunnel)
    }

    pub fn registration_removed(line: &str, tunnel: &str) -> bool {
        line.contains("NHRP registration removed") && peer_is(line, tunnel)
    }

    pub fn child_sa_installed(line: &str, nbma: &str) -> bool {
        line.contains("child SA installed") && peer_is(line, nbma)
    }

    pub fn child_sa_deleted(line: &str, nbma: &str) -> bool {
        line.contains("child SA deleted") && peer_is(line, nbma)
    }

    pub fn ike_sa_down(line: &str, nbma: &str) -> bool {
        line.contains("IKE SA down") && peer_is(line, nbma)
    }

    pub fn peer_dead(line: &str) -> bool {
        line.contains("peer dead")
    }

    pub fn ike_auth_failed(line: &str) -> bool {
        line.contains("IKE authentication failed")
    }

    pub fn reloaded(line: &str) -> bool {
        line.contains("configuration reloaded")
    }

    pub fn keyring_delete(line: &str) -> bool {
        line.contains("reload: the new keyring has no key for this peer")
    }
}

// ---- harness ---------------------------------------------------------------------------------

/// What one dmvpnctl run printed.
#[derive(Debug)]
struct Ctl {
    cmd: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
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

/// One test's daemons and the step being run, for failure messages.
struct Ops<'t> {
    t: &'t Topology,
    daemons: Vec<Dmvpnd>,
    step: String,
}

impl<'t> Ops<'t> {
    fn new(t: &'t Topology) -> Self {
        Ops {
            t,
            daemons: Vec::new(),
            step: "setup".into(),
        }
    }

    fn step(&mut self, s: &str) {
        eprintln!("ops: step {s}");
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

    /// Fails if a daemon not stopped on purpose has exited.
    fn check_alive(&mut self) {
        let dead: Vec<&str> = self
            .daemons
            .iter_mut()
            .filter_map(|d| {
                let gone = d.process.pid().is_some() && !d.process.running();
                gone.then_some(d.node.name())
            })
            .collect();
        if !dead.is_empty() {
            self.fail(format!("dmvpnd exited unexpectedly: {dead:?}"));
        }
    }

    fn log_len(&self, node: Node) -> usize {
        self.daemon(node).log().len()
    }

    /// Log lines of `node` past byte `from` satisfying `pred`.
    fn lines(&self, node: Node, from: usize, pred: &dyn Fn(&str) -> bool) -> Vec<String> {
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

    /// Polls `f` every 100 ms for up to `timeout` (daemons must stay alive meanwhile).
    #[track_caller]
    fn poll<T>(
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
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[track_caller]
    fn wait_line(
        &mut self,
        node: Node,
        what: &str,
        from: usize,
        timeout: Duration,
        pred: &dyn Fn(&str) -> bool,
    ) -> String {
        let what = format!("log line `{what}` from {}", node.name());
        self.poll(&what, timeout, |r| r.find_line(node, from, pred))
    }

    /// Pings `dst` from `ns` 4 times, 200 ms apart: echoes 2..4 must be answered (the first
    /// may be spent bringing an SA up).
    #[track_caller]
    fn reach(&mut self, ns: &Netns, dst: &str) {
        self.check_alive();
        let out = ns
            .exec("ping", &["-n", "-c", "4", "-i", "0.2", "-W", "1", dst])
            .unwrap_or_else(|e| self.fail(format!("ping: {e:#}")));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let answered = dmvpn_tests::e2e::answered_echoes(&text);
        if !(2..=4).all(|s| answered.contains(&s)) {
            self.fail(format!(
                "ping {} → {dst}: echoes 2..4 must be answered, got replies to {answered:?}\n{text}\nroutes:\n{}",
                ns.name(),
                route_dump(ns)
            ));
        }
    }

    /// Runs `dmvpnctl --socket <node's socket> ARGS…` on the host.
    fn ctl(&self, node: Node, args: &[&str]) -> Ctl {
        let socket = &self.daemon(node).config.socket;
        let out = Command::new(DMVPNCTL)
            .arg("--socket")
            .arg(socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| self.fail(format!("running {DMVPNCTL}: {e}")));
        Ctl {
            cmd: format!("dmvpnctl ({}) {}", node.name(), args.join(" ")),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `dmvpnctl ARGS…`, which must succeed with nothing on stderr; its stdout.
    #[track_caller]
    fn ctl_ok(&self, node: Node, args: &[&str]) -> String {
        let c = self.ctl(node, args);
        if c.code != Some(0) || !c.stderr.is_empty() {
            self.fail(format!("dmvpnctl failed: {c}"));
        }
        c.stdout
    }

    /// `show WHAT` in text.
    #[track_caller]
    fn show(&self, node: Node, what: &str) -> String {
        self.ctl_ok(node, &["show", what])
    }

    /// `show WHAT --json`: parsed, with `schema_version` 1 and every documented field.
    #[track_caller]
    fn show_json(&self, node: Node, what: &str) -> Value {
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
    fn sa_peer(&self, node: Node, nbma: &str) -> Option<Value> {
        let v = self.show_json(node, "sa");
        array(&v, "peers")
            .iter()
            .find(|p| p["nbma"] == nbma || p["post_nat_nbma"] == nbma)
            .cloned()
    }

    /// The `show nhrp --json` cache entry for the /32 of `tunnel` (not the local one).
    fn nhrp_entry(&self, node: Node, tunnel: &str) -> Option<Value> {
        let v = self.show_json(node, "nhrp");
        array(&v, "entries")
            .iter()
            .find(|e| e["protocol_addr"] == tunnel && e["prefix_len"] == 32 && e["kind"] != "local")
            .cloned()
    }

    /// The `show ike --json` SA with the peer at `nbma` (any port).
    fn ike_sa(&self, node: Node, nbma: &str) -> Option<Value> {
        let v = self.show_json(node, "ike");
        array(&v, "sas")
            .iter()
            .find(|s| {
                s["remote"]
                    .as_str()
                    .and_then(|r| r.strip_prefix(nbma))
                    .is_some_and(|r| r.starts_with(':'))
            })
            .cloned()
    }

    /// Waits for spoke `node` to register (both sides say so).
    #[track_caller]
    fn wait_registered(&mut self, node: Node, from_spoke: usize, from_hub: usize) {
        self.wait_line(
            node,
            "NHRP registered with NHS",
            from_spoke,
            REGISTRATION_TIMEOUT,
            &expect::registered_with_nhs,
        );
        let tunnel = node.tunnel_address();
        self.wait_line(
            Node::Hub,
            &format!("NHRP registration accepted peer={tunnel}"),
            from_hub,
            REGISTRATION_TIMEOUT,
            &|l| expect::registration_accepted(l, tunnel),
        );
    }

    /// Sends `signal` (e.g. "HUP") to `node`'s dmvpnd, by its PID.
    fn signal(&self, node: Node, signal: &str) {
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
}

fn keys() -> dmvpn_tests::e2e::Keys {
    dmvpn_tests::e2e::Keys::random().expect("random keys")
}

/// Reads, edits and rewrites a generated configuration file (mode kept).
fn edit_config(path: &Path, f: impl FnOnce(&mut toml::Table)) {
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

fn table<'a>(t: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    t.entry(key)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap_or_else(|| panic!("`{key}` is not a table"))
}

/// The configuration of `node` as in the e2e tests (conf/ with addresses changed), the spokes
/// with a short NHRP holding time.
fn config(dir: &TestDir, node: Node, keys: &dmvpn_tests::e2e::Keys) -> NodeConfig {
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

/// Starts the hub, then `spokes`, and waits until every spoke has registered.
fn start<'t>(t: &'t Topology, dir: &TestDir, spokes: &[Node]) -> (Ops<'t>, Vec<NodeConfig>) {
    let keys = keys();
    let mut cfgs = vec![config(dir, Node::Hub, &keys)];
    cfgs.extend(spokes.iter().map(|&n| config(dir, n, &keys)));
    let mut r = Ops::new(t);
    r.step("start the hub, then the spokes; every spoke registers");
    r.start(&cfgs[0]);
    r.wait_line(
        Node::Hub,
        "underlay sockets open",
        0,
        Duration::from_secs(10),
        &expect::underlay_open,
    );
    for c in &cfgs[1..] {
        r.start(c);
    }
    for &s in spokes {
        r.wait_registered(s, 0, 0);
    }
    (r, cfgs)
}

/// The `show dmvpn` table row (whitespace-split columns) whose tunnel address is `tunnel`.
fn dmvpn_row(text: &str, tunnel: &str) -> Option<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|c| c.len() == 6 && c[2] == tunnel)
}

/// The `show sa` text block of the peer whose `current_peer` is `ip`.
fn sa_block(text: &str, ip: &str) -> Option<String> {
    let start = text.find(&format!("current_peer {ip} port "))?;
    let rest = &text[start..];
    let end = rest[1..]
        .find("current_peer ")
        .map_or(rest.len(), |e| e + 1);
    Some(rest[..end].to_owned())
}

/// `spi: 0x1A2B3C4D(439041101)` lines of a `show sa` block, as `0x1a2b3c4d`, (inbound, outbound).
fn text_spis(block: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut inbound, mut outbound) = (BTreeSet::new(), BTreeSet::new());
    let mut dir = None;
    for l in block.lines().map(str::trim) {
        match l {
            "inbound esp sas:" => dir = Some(true),
            "outbound esp sas:" => dir = Some(false),
            _ => {
                if let Some(s) = l.strip_prefix("spi: ") {
                    let hex = s.split('(').next().unwrap_or_default().to_ascii_lowercase();
                    match dir {
                        Some(true) => inbound.insert(hex),
                        Some(false) => outbound.insert(hex),
                        None => false,
                    };
                }
            }
        }
    }
    (inbound, outbound)
}

/// The number after `label` in `text` (e.g. `#pkts encaps: 12,` → 12).
fn number_after(text: &str, label: &str) -> Option<u64> {
    let at = text.find(label)? + label.len();
    text[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// (inbound, outbound) SPIs of the Child SAs of a `show sa --json` peer.
fn json_spis(peer: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let get = |k: &str| -> BTreeSet<String> {
        array(peer, "children")
            .iter()
            .filter_map(|c| c[k].as_str().map(str::to_owned))
            .collect()
    };
    (get("spi_in"), get("spi_out"))
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `in/out packets` of `show interface` text.
fn text_interface_packets(r: &Ops<'_>, text: &str) -> (u64, u64) {
    let get = |suffix: &str| {
        text.lines()
            .find(|l| l.contains(suffix))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| r.fail(format!("no `N {suffix}` in show interface:\n{text}")))
    };
    (get("packets input"), get("packets output"))
}

#[test]
fn show_commands_in_text_and_json_and_clear_sa_and_nhrp() {
    require_root_and_tools();
    let dir = TestDir::new("ops-show").unwrap();
    let t = Topology::new().expect("building the topology");
    let (mut r, _cfgs) = start(&t, &dir, &[Node::SpokeA, Node::SpokeB]);

    r.step("traffic over both spokes' SAs");
    r.reach(&t.spoke_a, HUB_TUNNEL);
    r.reach(&t.hub, SPOKE_A_TUNNEL);
    r.reach(&t.spoke_b, HUB_TUNNEL);

    r.step("show dmvpn on the hub: both spokes UP, D, spoke B N at its post-NAT NBMA");
    let text = r.show(Node::Hub, "dmvpn");
    let json = r.show_json(Node::Hub, "dmvpn");
    if !text.contains("Interface: dmvpn0, IPv4 NHRP Details (address 10.250.0.1/24)")
        || !text.contains("Type:Hub, NHRP Peers:2,")
    {
        r.fail(format!("show dmvpn header on the hub:\n{text}"));
    }
    if json["interface"] != TUNNEL_IF
        || json["tunnel_addr"] != "10.250.0.1/24"
        || json["nhrp_role"] != "hub"
    {
        r.fail(format!("show dmvpn --json on the hub: {json:#}"));
    }
    for (tunnel, nbma, attrs) in [
        (SPOKE_A_TUNNEL, SPOKE_A_NBMA, &["D"][..]),
        (SPOKE_B_TUNNEL, NAT_OUTSIDE, &["D", "N"][..]),
    ] {
        let row = dmvpn_row(&text, tunnel);
        let ok = row.as_ref().is_some_and(|c| {
            c[1] == nbma && c[3] == "UP" && attrs.iter().all(|a| c[5].contains(a))
        });
        if !ok {
            r.fail(format!(
                "show dmvpn on the hub: want a row `{nbma} {tunnel} UP … {}`, got {row:?}:\n{text}",
                attrs.concat()
            ));
        }
        let peer = array(&json, "peers")
            .iter()
            .find(|p| p["peer_tunnel"] == tunnel)
            .unwrap_or_else(|| r.fail(format!("no peer {tunnel} in {json:#}")));
        let got = strs(&peer["attrs"]);
        if peer["peer_nbma"] != nbma
            || peer["state"] != "UP"
            || !attrs.iter().all(|a| got.contains(a))
            || peer["entries"].as_u64().unwrap_or(0) < 1
            || !peer["updn_secs"].is_u64()
        {
            r.fail(format!(
                "show dmvpn --json on the hub: want {tunnel} at {nbma}, UP, attrs ⊇ {attrs:?}: {peer:#}"
            ));
        }
    }

    r.step("show dmvpn on spoke A: the NHS 10.250.0.1, UP, S");
    let text = r.show(Node::SpokeA, "dmvpn");
    let json = r.show_json(Node::SpokeA, "dmvpn");
    let row = dmvpn_row(&text, HUB_TUNNEL);
    if !text.contains("Type:Spoke")
        || !row
            .as_ref()
            .is_some_and(|c| c[1] == HUB_NBMA && c[3] == "UP" && c[5].contains('S'))
    {
        r.fail(format!(
            "show dmvpn on spoke A: want `{HUB_NBMA} {HUB_TUNNEL} UP … S`, got {row:?}:\n{text}"
        ));
    }
    let hub = array(&json, "peers")
        .iter()
        .find(|p| p["peer_tunnel"] == HUB_TUNNEL)
        .cloned()
        .unwrap_or_default();
    if json["nhrp_role"] != "spoke"
        || json["tunnel_addr"] != "10.250.0.9/24"
        || hub["peer_nbma"] != HUB_NBMA
        || hub["state"] != "UP"
        || !strs(&hub["attrs"]).contains(&"S")
    {
        r.fail(format!("show dmvpn --json on spoke A: {json:#}"));
    }

    r.step("show sa on the hub: endpoints, transport, esp-gcm 256, counters, SPIs = JSON = log");
    let text = r.show(Node::Hub, "sa");
    let a_peer = r.sa_peer(Node::Hub, SPOKE_A_NBMA).unwrap_or_else(|| {
        r.fail(format!(
            "no peer {SPOKE_A_NBMA} in the hub's show sa --json"
        ))
    });
    let block = sa_block(&text, SPOKE_A_NBMA)
        .unwrap_or_else(|| r.fail(format!("no block for {SPOKE_A_NBMA} in show sa:\n{text}")));
    let want = [
        format!("local crypto endpt.: {HUB_NBMA}, remote crypto endpt.: {SPOKE_A_NBMA}"),
        format!("peer NBMA {SPOKE_A_NBMA}, tunnel address {SPOKE_A_TUNNEL}, NHRP: "),
        "in use settings ={Transport, }".to_owned(),
        "transform: esp-gcm 256 ,".to_owned(),
        "Encr: aes-gcm-256, PRF: sha512, DH Grp:19".to_owned(),
    ];
    for w in &want {
        if !block.contains(w.as_str()) {
            r.fail(format!(
                "show sa on the hub lacks `{w}` for spoke A:\n{block}"
            ));
        }
    }
    let (enc, dec) = (
        number_after(&block, "#pkts encaps:").unwrap_or(0),
        number_after(&block, "#pkts decaps:").unwrap_or(0),
    );
    if enc == 0 || dec == 0 {
        r.fail(format!(
            "show sa on the hub: #pkts encaps {enc}, decaps {dec} after pings:\n{block}"
        ));
    }
    let (text_in, text_out) = text_spis(&block);
    let (json_in, json_out) = json_spis(&a_peer);
    let installed = r.lines(Node::Hub, 0, &|l| {
        expect::child_sa_installed(l, SPOKE_A_NBMA)
    });
    let log_spis: BTreeSet<(String, String)> = installed
        .iter()
        .filter_map(|l| {
            Some((
                expect::field(l, "spi_in")?.to_owned(),
                expect::field(l, "spi_out")?.to_owned(),
            ))
        })
        .collect();
    let json_pairs: BTreeSet<(String, String)> = array(&a_peer, "children")
        .iter()
        .filter_map(|c| {
            Some((
                c["spi_in"].as_str()?.to_owned(),
                c["spi_out"].as_str()?.to_owned(),
            ))
        })
        .collect();
    if json_pairs.is_empty()
        || text_in != json_in
        || text_out != json_out
        || !json_pairs.is_subset(&log_spis)
    {
        r.fail(format!(
            "SPIs of spoke A's Child SAs on the hub disagree: text in {text_in:?} out {text_out:?}; JSON {json_pairs:?}; log `child SA installed` {log_spis:?}\n{block}\n{a_peer:#}"
        ));
    }
    let children = array(&a_peer, "children");
    let child_ok = |c: &Value| {
        c["mode"] == "transport"
            && c["transform"] == "esp-gcm-256"
            && c["udp_encap"] == false
            && c["packets_in"].as_u64().unwrap_or(0) > 0
            && c["packets_out"].as_u64().unwrap_or(0) > 0
    };
    if a_peer["tunnel_addr"] != SPOKE_A_TUNNEL
        || a_peer["nhrp_state"] != "registered"
        || a_peer["ike"]["state"] != "established"
        || !children.iter().any(child_ok)
    {
        r.fail(format!("show sa --json on the hub, spoke A: {a_peer:#}"));
    }
    // Spoke B, behind the NAT: ESP in UDP.
    let b_block = sa_block(&text, NAT_OUTSIDE)
        .unwrap_or_else(|| r.fail(format!("no block for {NAT_OUTSIDE} in show sa:\n{text}")));
    if !b_block.contains(&format!("current_peer {NAT_OUTSIDE} port 4500"))
        || !b_block.contains("in use settings ={Transport UDP-Encaps, }")
    {
        r.fail(format!("show sa on the hub, spoke B (NATed):\n{b_block}"));
    }
    let b_peer = r
        .sa_peer(Node::Hub, NAT_OUTSIDE)
        .unwrap_or_else(|| r.fail(format!("no peer {NAT_OUTSIDE} in the hub's show sa --json")));
    if b_peer["post_nat_nbma"] != NAT_OUTSIDE
        || b_peer["nbma"] != SPOKE_B_PRIVATE
        || b_peer["ike"]["nat_remote"] != true
        || !array(&b_peer, "children")
            .iter()
            .any(|c| c["udp_encap"] == true)
    {
        r.fail(format!("show sa --json on the hub, spoke B: {b_peer:#}"));
    }

    r.step("show sa on spoke A: the mirror image of the hub's SPIs");
    let spoke_text = r.show(Node::SpokeA, "sa");
    let spoke_block = sa_block(&spoke_text, HUB_NBMA)
        .unwrap_or_else(|| r.fail(format!("no block for {HUB_NBMA}:\n{spoke_text}")));
    let (s_in, s_out) = text_spis(&spoke_block);
    if !spoke_block.contains(&format!(
        "local crypto endpt.: {SPOKE_A_NBMA}, remote crypto endpt.: {HUB_NBMA}"
    )) || s_in != json_out
        || s_out != json_in
    {
        r.fail(format!(
            "spoke A's SPIs (in {s_in:?}, out {s_out:?}) must mirror the hub's (in {json_in:?}, out {json_out:?}):\n{spoke_block}"
        ));
    }

    r.step("show nhrp on the hub: 10.250.0.9/32 dynamic registered with expiry");
    let text = r.show(Node::Hub, "nhrp");
    let head = format!("{SPOKE_A_TUNNEL}/32 via {SPOKE_A_TUNNEL}");
    let entry_text: Vec<&str> = text.lines().skip_while(|l| *l != head).take(4).collect();
    let ok = entry_text.len() == 4
        && entry_text[1].contains("dmvpn0 created ")
        && entry_text[1].contains(", expire ")
        && entry_text[2].starts_with("   Type: dynamic (dynamic), Flags: ")
        && entry_text[2].contains("registered")
        && entry_text[3].trim() == format!("NBMA address: {SPOKE_A_NBMA}");
    if !ok {
        r.fail(format!(
            "show nhrp on the hub: want `{head}`, dynamic, registered, an expiry, NBMA {SPOKE_A_NBMA}; got {entry_text:?}:\n{text}"
        ));
    }
    let json = r.show_json(Node::Hub, "nhrp");
    let a = r
        .nhrp_entry(Node::Hub, SPOKE_A_TUNNEL)
        .unwrap_or_else(|| r.fail(format!("no NHRP entry for {SPOKE_A_TUNNEL}: {json:#}")));
    let exp = a["expires_in_secs"].as_u64().unwrap_or(0);
    if a["kind"] != "dynamic"
        || !strs(&a["flags"]).contains(&"registered")
        || a["nbma"] != SPOKE_A_NBMA
        || a["next_hop"] != SPOKE_A_TUNNEL
        || a["holding_time_secs"] != HOLDING_TIME
        || !(1..=HOLDING_TIME).contains(&exp)
    {
        r.fail(format!(
            "show nhrp --json on the hub, {SPOKE_A_TUNNEL}: want dynamic, registered, NBMA {SPOKE_A_NBMA}, holding time {HOLDING_TIME}, expiry in 1..={HOLDING_TIME} s: {a:#}"
        ));
    }
    let b = r
        .nhrp_entry(Node::Hub, SPOKE_B_TUNNEL)
        .unwrap_or_else(|| r.fail(format!("no NHRP entry for {SPOKE_B_TUNNEL}: {json:#}")));
    if b["nbma"] != SPOKE_B_PRIVATE
        || b["post_nat_nbma"] != NAT_OUTSIDE
        || !strs(&b["flags"]).contains(&"nat")
        || !text.contains(&format!("(Claimed NBMA address: {SPOKE_B_PRIVATE})"))
    {
        r.fail(format!(
            "show nhrp on the hub, spoke B: want claimed {SPOKE_B_PRIVATE}, post-NAT {NAT_OUTSIDE}, flag nat: {b:#}\n{text}"
        ));
    }
    let c = &json["counters"];
    if c["rx"]["registration_request"].as_u64().unwrap_or(0) < 2
        || c["tx"]["registration_reply"].as_u64().unwrap_or(0) < 2
        || c["auth_failures"] != 0
        || !array(&json, "nhs").is_empty()
    {
        r.fail(format!(
            "show nhrp --json counters/nhs on the hub: {json:#}"
        ));
    }

    r.step("show nhrp on spoke A: the NHS up");
    let text = r.show(Node::SpokeA, "nhrp");
    let json = r.show_json(Node::SpokeA, "nhrp");
    let nhs = array(&json, "nhs").first().cloned().unwrap_or_default();
    if nhs["protocol_addr"] != HUB_TUNNEL
        || nhs["nbma"] != HUB_NBMA
        || nhs["state"] != "up"
        || nhs["multicast"] != true
        || !nhs["expires_in_secs"].is_u64()
        || !text.lines().any(|l| {
            l.starts_with(HUB_TUNNEL)
                && l.contains(&format!("RE NBMA Address: {HUB_NBMA} up, expire "))
        })
    {
        r.fail(format!(
            "show nhrp on spoke A: NHS {HUB_TUNNEL} not up:\n{text}\n{json:#}"
        ));
    }

    r.step("show ike on the hub: aes-gcm-256/sha512/19, established, SPIs as in JSON");
    let text = r.show(Node::Hub, "ike");
    let sa = r
        .ike_sa(Node::Hub, SPOKE_A_NBMA)
        .unwrap_or_else(|| r.fail(format!("no IKE SA with {SPOKE_A_NBMA} in show ike --json")));
    let spi_ok = |k: &str| {
        sa[k]
            .as_str()
            .is_some_and(|s| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    if sa["state"] != "established"
        || sa["encryption"] != "aes-gcm-256"
        || sa["prf"] != "sha512"
        || sa["dh_group"] != 19
        || sa["local"] != format!("{HUB_NBMA}:500")
        || sa["remote"] != format!("{SPOKE_A_NBMA}:500")
        || sa["initiator"] != false
        || !spi_ok("spi_i")
        || !spi_ok("spi_r")
        || sa["child_count"].as_u64().unwrap_or(0) < 1
    {
        r.fail(format!("show ike --json on the hub, spoke A: {sa:#}"));
    }
    let want = [
        "Encr: aes-gcm-256, PRF: sha512, Hash: None, DH Grp:19, Auth: PSK".to_owned(),
        format!("Initiator SPI : {}", sa["spi_i"].as_str().unwrap_or("?")),
        format!("Responder SPI : {}", sa["spi_r"].as_str().unwrap_or("?")),
        "NAT-T: outside (peer is behind NAT)".to_owned(),
    ];
    let row = text.lines().any(|l| {
        let c: Vec<&str> = l.split_whitespace().collect();
        c.len() == 5
            && c[1] == format!("{HUB_NBMA}:500")
            && c[2] == format!("{SPOKE_A_NBMA}:500")
            && c[4] == "READY"
    });
    if !row || want.iter().any(|w| !text.contains(w.as_str())) {
        r.fail(format!(
            "show ike on the hub: want a READY row {HUB_NBMA}:500 → {SPOKE_A_NBMA}:500 and {want:?}:\n{text}"
        ));
    }
    let spoke_sa = r
        .ike_sa(Node::SpokeA, HUB_NBMA)
        .unwrap_or_else(|| r.fail(format!("no IKE SA with {HUB_NBMA} on spoke A")));
    if spoke_sa["initiator"] != true
        || spoke_sa["spi_i"] != sa["spi_i"]
        || spoke_sa["spi_r"] != sa["spi_r"]
    {
        r.fail(format!(
            "spoke A's IKE SA must be the hub's, initiated by the spoke: spoke {spoke_sa:#}, hub {sa:#}"
        ));
    }

    r.step("show interface on the hub: counters grow with traffic");
    let text0 = r.show(Node::Hub, "interface");
    let json0 = r.show_json(Node::Hub, "interface");
    if !text0.contains("dmvpn0 is up, line protocol is up")
        || !text0.contains("Internet address is 10.250.0.1/24")
        || !text0.contains("MTU 1400 bytes")
        || json0["interface"] != TUNNEL_IF
        || json0["tunnel_addr"] != "10.250.0.1/24"
        || json0["mtu"] != 1400
    {
        r.fail(format!("show interface on the hub:\n{text0}\n{json0:#}"));
    }
    let (in0, out0) = text_interface_packets(&r, &text0);
    let (got, out) = ping(&t.hub, SPOKE_A_TUNNEL, 10, "0.05").unwrap();
    if got != 10 {
        r.fail(format!("10 pings hub → spoke A: {got} answered\n{out}"));
    }
    let text1 = r.show(Node::Hub, "interface");
    let json1 = r.show_json(Node::Hub, "interface");
    let (in1, out1) = text_interface_packets(&r, &text1);
    let d = |k: &str| {
        json1[k]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(json0[k].as_u64().unwrap_or(0))
    };
    if in1 < in0 + 10
        || out1 < out0 + 10
        || d("rx_packets") < 10
        || d("tx_packets") < 10
        || d("rx_bytes") < 10 * 84
        || d("tx_bytes") < 10 * 84
    {
        r.fail(format!(
            "show interface counters after 10 echoes: text in {in0}→{in1}, out {out0}→{out1}; JSON before {json0:#} after {json1:#}"
        ));
    }

    r.step("clear sa 203.0.113.99 (no such peer) fails with a message");
    let c = r.ctl(Node::Hub, &["clear", "sa", NO_PEER]);
    if c.code != Some(1)
        || !c.stdout.is_empty()
        || !c
            .stderr
            .contains(&format!("dmvpnctl: no IKE SA with {NO_PEER}"))
    {
        r.fail(format!(
            "want exit 1 and `dmvpnctl: no IKE SA with {NO_PEER}`: {c}"
        ));
    }

    r.step("clear sa 198.51.100.3 on the hub: the spoke comes back with new SPIs");
    let old_in = json_in.clone();
    let (hub_from, spoke_from) = (r.log_len(Node::Hub), r.log_len(Node::SpokeA));
    let out = r.ctl_ok(Node::Hub, &["clear", "sa", SPOKE_A_NBMA]);
    if out.trim() != format!("IKE SA with {SPOKE_A_NBMA} deleted") {
        r.fail(format!("clear sa printed {out:?}"));
    }
    r.wait_line(
        Node::SpokeA,
        "IKE SA down … DeletedByPeer",
        spoke_from,
        Duration::from_secs(5),
        &|l| {
            expect::ike_sa_down(l, HUB_NBMA) && expect::field(l, "reason") == Some("DeletedByPeer")
        },
    );
    let new_in = r.poll(
        "spoke A's new Child SA on the hub (show sa --json)",
        REGISTRATION_TIMEOUT,
        |r| {
            let p = r.sa_peer(Node::Hub, SPOKE_A_NBMA)?;
            let (i, _) = json_spis(&p);
            (p["ike"]["state"] == "established" && !i.is_empty() && i.is_disjoint(&old_in))
                .then_some(i)
        },
    );
    r.wait_registered(Node::SpokeA, spoke_from, hub_from);
    eprintln!("ops: spoke A's inbound SPIs on the hub {old_in:?} → {new_in:?}");
    r.reach(&t.spoke_a, HUB_TUNNEL);
    r.reach(&t.hub, SPOKE_A_TUNNEL);

    r.step("clear nhrp on the hub: the entries go, then come back as the spokes re-register");
    let hub_from = r.log_len(Node::Hub);
    let out = r.ctl_ok(Node::Hub, &["clear", "nhrp"]);
    let cleared = out
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<u64>().ok());
    if cleared.is_none_or(|n| n < 2) || !out.contains("dynamic NHRP entries cleared") {
        r.fail(format!(
            "clear nhrp printed {out:?} (want ≥ 2 entries cleared)"
        ));
    }
    for tunnel in [SPOKE_A_TUNNEL, SPOKE_B_TUNNEL] {
        let removed = r.find_line(Node::Hub, hub_from, &|l| {
            expect::registration_removed(l, tunnel)
        });
        let back = r.find_line(Node::Hub, hub_from, &|l| {
            expect::registration_accepted(l, tunnel)
        });
        if removed.is_none() {
            r.fail(format!(
                "no `NHRP registration removed peer={tunnel}` after clear nhrp"
            ));
        }
        // Unless the spoke re-registered in between, the entry is gone.
        if back.is_none()
            && let Some(e) = r.nhrp_entry(Node::Hub, tunnel)
        {
            r.fail(format!(
                "{tunnel} still in the hub's cache after clear nhrp: {e:#}"
            ));
        }
    }
    let cleared_at = Instant::now();
    for tunnel in [SPOKE_A_TUNNEL, SPOKE_B_TUNNEL] {
        let e = r.poll(
            &format!("{tunnel} back in the hub's NHRP cache, registered"),
            Duration::from_secs(HOLDING_TIME / 3 + 5),
            |r| {
                r.nhrp_entry(Node::Hub, tunnel)
                    .filter(|e| strs(&e["flags"]).contains(&"registered"))
            },
        );
        eprintln!(
            "ops: {tunnel} re-registered {:?} after clear nhrp: {e}",
            cleared_at.elapsed()
        );
    }
    r.reach(&t.hub, SPOKE_A_TUNNEL);
    r.reach(&t.hub, SPOKE_B_TUNNEL);
    r.check_alive();
}

/// The hub's IKE SA with spoke A and its Child SA SPIs, for comparing across reloads.
fn sa_identity(r: &Ops<'_>) -> (String, String, BTreeSet<String>, BTreeSet<String>) {
    let sa = r
        .ike_sa(Node::Hub, SPOKE_A_NBMA)
        .unwrap_or_else(|| r.fail(format!("no IKE SA with {SPOKE_A_NBMA} on the hub")));
    let peer = r
        .sa_peer(Node::Hub, SPOKE_A_NBMA)
        .unwrap_or_else(|| r.fail(format!("no peer {SPOKE_A_NBMA} in the hub's show sa")));
    let (i, o) = json_spis(&peer);
    (
        sa["spi_i"].as_str().unwrap_or_default().to_owned(),
        sa["spi_r"].as_str().unwrap_or_default().to_owned(),
        i,
        o,
    )
}

fn extra_route(ns: &Netns) -> Option<Value> {
    routes_with_proto(ns, PROTO_DMVPND)
        .unwrap_or_default()
        .into_iter()
        .find(|r| r["dst"] == EXTRA_PREFIX)
}

#[test]
fn reload_keeps_sas_applies_routes_refuses_restart_changes_and_drops_unkeyed_peers() {
    require_root_and_tools();
    let dir = TestDir::new("ops-reload").unwrap();
    let t = Topology::new().expect("building the topology");
    let (mut r, cfgs) = start(&t, &dir, &[Node::SpokeA]);
    let hub_cfg = cfgs[0].config.clone();
    r.reach(&t.spoke_a, HUB_TUNNEL);
    let before = sa_identity(&r);
    eprintln!("ops: hub's SA with spoke A before reloads: {before:?}");
    if before.2.is_empty() {
        r.fail(format!("no Child SA with spoke A on the hub: {before:?}"));
    }

    r.step("a. add a static route, `dmvpnctl reload`: route installed, SAs kept");
    if extra_route(&t.hub).is_some() {
        r.fail(format!(
            "{EXTRA_PREFIX} routed before the reload:\n{}",
            route_dump(&t.hub)
        ));
    }
    edit_config(&hub_cfg, |c| {
        let routes = c
            .get_mut("route")
            .and_then(toml::Value::as_array_mut)
            .expect("the hub configuration has [[route]]");
        let mut route = toml::Table::new();
        route.insert("prefix".into(), EXTRA_PREFIX.into());
        route.insert("via".into(), SPOKE_A_TUNNEL.into());
        routes.push(toml::Value::Table(route));
    });
    let from = r.log_len(Node::Hub);
    let out = r.ctl_ok(Node::Hub, &["reload"]);
    if out.trim() != "configuration reloaded" {
        r.fail(format!("dmvpnctl reload printed {out:?}"));
    }
    r.wait_line(
        Node::Hub,
        "configuration reloaded",
        from,
        Duration::from_secs(5),
        &expect::reloaded,
    );
    let route = r.poll(
        &format!("{EXTRA_PREFIX} via {SPOKE_A_TUNNEL} proto {PROTO_DMVPND} on the hub"),
        Duration::from_secs(5),
        |_| extra_route(&t.hub),
    );
    if route["gateway"] != SPOKE_A_TUNNEL || route["dev"] != TUNNEL_IF {
        r.fail(format!(
            "route after reload: {route}\n{}",
            route_dump(&t.hub)
        ));
    }
    let after = sa_identity(&r);
    if after != before {
        r.fail(format!(
            "reload changed the SAs with spoke A: {before:?} → {after:?}"
        ));
    }
    r.reach(&t.spoke_a, HUB_TUNNEL);
    r.reach(&t.hub, SPOKE_A_TUNNEL);

    r.step("a'. change ike.dpd.delay and remove the route, SIGHUP: route withdrawn, SAs kept");
    edit_config(&hub_cfg, |c| {
        let ike = table(c, "ike");
        table(ike, "dpd").insert("delay".into(), toml::Value::Integer(30));
        c.get_mut("route")
            .and_then(toml::Value::as_array_mut)
            .expect("[[route]]")
            .retain(|r| r.get("prefix").and_then(toml::Value::as_str) != Some(EXTRA_PREFIX));
    });
    let from = r.log_len(Node::Hub);
    r.signal(Node::Hub, "HUP");
    r.wait_line(
        Node::Hub,
        "SIGHUP: reloading configuration",
        from,
        Duration::from_secs(5),
        &|l| l.contains("SIGHUP: reloading configuration"),
    );
    r.wait_line(
        Node::Hub,
        "configuration reloaded",
        from,
        Duration::from_secs(5),
        &expect::reloaded,
    );
    r.poll(
        &format!("{EXTRA_PREFIX} withdrawn from the hub"),
        Duration::from_secs(5),
        |_| extra_route(&t.hub).is_none().then_some(()),
    );
    let after = sa_identity(&r);
    if after != before {
        r.fail(format!(
            "SIGHUP reload changed the SAs with spoke A: {before:?} → {after:?}"
        ));
    }
    r.reach(&t.spoke_a, HUB_TUNNEL);

    r.step("c. a tunnel address change is refused: restart needed, nothing changes");
    let pristine = std::fs::read_to_string(&hub_cfg).unwrap();
    edit_config(&hub_cfg, |c| {
        table(c, "tunnel").insert("address".into(), "10.250.0.2/24".into());
    });
    let from = r.log_len(Node::Hub);
    let c = r.ctl(Node::Hub, &["reload"]);
    if c.code != Some(1)
        || !c.stdout.is_empty()
        || !c.stderr.starts_with("dmvpnctl: ")
        || !c.stderr.contains("tunnel.address")
        || !c.stderr.contains("restart dmvpnd to apply")
    {
        r.fail(format!(
            "want exit 1 and `… tunnel.address changed; restart dmvpnd to apply`: {c}"
        ));
    }
    if let Some(l) = r.find_line(Node::Hub, from, &expect::reloaded) {
        r.fail(format!("the hub logged a reload it refused: {l}"));
    }
    let addrs = t
        .hub
        .ip_json(&["addr", "show", "dev", TUNNEL_IF])
        .unwrap_or_else(|e| r.fail(format!("{e:#}")));
    let local: Vec<&str> = array(&addrs[0], "addr_info")
        .iter()
        .filter_map(|a| a["local"].as_str())
        .collect();
    if local != [HUB_TUNNEL] {
        r.fail(format!(
            "the hub's {TUNNEL_IF} addresses after a refused reload: {local:?}"
        ));
    }
    let dm = r.show_json(Node::Hub, "dmvpn");
    if dm["tunnel_addr"] != "10.250.0.1/24" {
        r.fail(format!("show dmvpn after a refused reload: {dm:#}"));
    }
    let after = sa_identity(&r);
    if after != before {
        r.fail(format!(
            "a refused reload changed the SAs: {before:?} → {after:?}"
        ));
    }
    r.reach(&t.spoke_a, HUB_TUNNEL);
    std::fs::write(&hub_cfg, pristine).unwrap();

    r.step("b. narrow the keyring to 203.0.113.0/24: spoke A's SA goes, and cannot come back");
    edit_config(&hub_cfg, |c| {
        let ring = table(c, "ike")
            .get_mut("keyring")
            .and_then(toml::Value::as_array_mut)
            .and_then(|a| a.first_mut())
            .and_then(toml::Value::as_table_mut)
            .expect("[[ike.keyring]]");
        ring.insert("peer".into(), "203.0.113.0/24".into());
    });
    let (hub_from, spoke_from) = (r.log_len(Node::Hub), r.log_len(Node::SpokeA));
    let out = r.ctl_ok(Node::Hub, &["reload"]);
    if out.trim() != "configuration reloaded" {
        r.fail(format!("dmvpnctl reload printed {out:?}"));
    }
    r.wait_line(
        Node::Hub,
        "reload: the new keyring has no key for this peer: deleting its SA",
        hub_from,
        Duration::from_secs(5),
        &expect::keyring_delete,
    );
    r.wait_line(
        Node::Hub,
        "IKE SA down peer=198.51.100.3",
        hub_from,
        Duration::from_secs(5),
        &|l| expect::ike_sa_down(l, SPOKE_A_NBMA),
    );
    let auth = r.poll(
        "`IKE authentication failed` on the hub or spoke A",
        Duration::from_secs(20),
        |r| {
            r.find_line(Node::Hub, hub_from, &expect::ike_auth_failed)
                .or_else(|| r.find_line(Node::SpokeA, spoke_from, &expect::ike_auth_failed))
        },
    );
    eprintln!(
        "ops: after narrowing the keyring: {auth}\nops: the hub's show sa entry for spoke A: {:?}",
        r.sa_peer(Node::Hub, SPOKE_A_NBMA)
    );
    // No established SA with spoke A, now or after its retries.
    let established = |r: &Ops<'_>| {
        r.sa_peer(Node::Hub, SPOKE_A_NBMA)
            .filter(|p| p["ike"]["state"] == "established" || !array(p, "children").is_empty())
    };
    if let Some(p) = established(&r) {
        r.fail(format!(
            "show sa on the hub still lists spoke A with an SA: {p:#}"
        ));
    }
    let text = r.show(Node::Hub, "sa");
    if text.contains(&format!("remote crypto endpt.: {SPOKE_A_NBMA}")) {
        r.fail(format!(
            "show sa (text) on the hub still lists spoke A:\n{text}"
        ));
    }
    let (got, out) = ping(&t.spoke_a, HUB_TUNNEL, 3, "0.5").unwrap();
    if got != 0 {
        r.fail(format!(
            "spoke A still reaches the hub without a key:\n{out}"
        ));
    }
    if let Some(p) = established(&r) {
        r.fail(format!("spoke A re-established an SA without a key: {p:#}"));
    }
    for (node, from) in [(Node::Hub, hub_from), (Node::SpokeA, spoke_from)] {
        let peer = if node == Node::Hub {
            SPOKE_A_NBMA
        } else {
            HUB_NBMA
        };
        if let Some(l) = r.find_line(node, from, &|l| expect::child_sa_installed(l, peer)) {
            r.fail(format!(
                "{} installed a Child SA after the keyring was narrowed: {l}",
                node.name()
            ));
        }
    }
    r.check_alive();
}

/// Whether `ip -j link show` in `ns` lists `dev`.
fn has_link(ns: &Netns, dev: &str) -> Result<bool, String> {
    let v = ns
        .ip_json(&["link", "show"])
        .map_err(|e| format!("{e:#}"))?;
    Ok(v.as_array()
        .is_some_and(|a| a.iter().any(|l| l["ifname"] == dev)))
}

#[test]
fn sigterm_purges_the_registration_deletes_the_sa_and_leaves_nothing_behind() {
    require_root_and_tools();
    let dir = TestDir::new("ops-term").unwrap();
    let t = Topology::new().expect("building the topology");
    let (mut r, cfgs) = start(&t, &dir, &[Node::SpokeA]);
    let socket = cfgs[1].socket.clone();
    r.reach(&t.spoke_a, HUB_TUNNEL);
    r.reach(&t.hub, SPOKE_A_TUNNEL);

    r.step("before: spoke A has its device, proto-77 routes and control socket");
    let routes = routes_with_proto(&t.spoke_a, PROTO_DMVPND).unwrap_or_default();
    if !has_link(&t.spoke_a, TUNNEL_IF).unwrap_or(false) || routes.is_empty() || !socket.exists() {
        r.fail(format!(
            "spoke A before SIGTERM: {TUNNEL_IF} {:?}, proto {PROTO_DMVPND} routes {routes:?}, socket {} exists {}",
            has_link(&t.spoke_a, TUNNEL_IF),
            socket.display(),
            socket.exists()
        ));
    }

    r.step("SIGTERM spoke A: it exits 0 and the hub sees the purge and the delete at once");
    let from = r.log_len(Node::Hub);
    let sent = Instant::now();
    let status = {
        let d = r
            .daemons
            .iter_mut()
            .find(|d| d.node == Node::SpokeA)
            .expect("spoke A");
        d.process.terminate(Duration::from_secs(10))
    };
    let exited = sent.elapsed();
    match &status {
        Ok(st) if st.code() == Some(0) => {}
        other => r.fail(format!(
            "dmvpnd (spoke A) after SIGTERM: {other:?} (want exit status 0)"
        )),
    }
    let within = Duration::from_secs(2);
    let removed = r.poll(
        "hub: `NHRP registration removed peer=10.250.0.9`",
        within.saturating_sub(sent.elapsed()),
        |r| {
            r.find_line(Node::Hub, from, &|l| {
                expect::registration_removed(l, SPOKE_A_TUNNEL)
            })
        },
    );
    let down = r.poll(
        "hub: `IKE SA down peer=198.51.100.3 … reason=DeletedByPeer`",
        within.saturating_sub(sent.elapsed()),
        |r| r.find_line(Node::Hub, from, &|l| expect::ike_sa_down(l, SPOKE_A_NBMA)),
    );
    let seen = sent.elapsed();
    if expect::field(&down, "reason") != Some("DeletedByPeer") {
        r.fail(format!(
            "the hub's IKE SA with spoke A went down for another reason: {down}"
        ));
    }
    let child = r.find_line(Node::Hub, from, &|l| {
        expect::child_sa_deleted(l, SPOKE_A_NBMA)
    });
    if child.is_none() {
        r.fail("the hub logged no `child SA deleted` for spoke A");
    }
    if let Some(l) = r.find_line(Node::Hub, from, &expect::peer_dead) {
        r.fail(format!("the hub used DPD instead of the delete: {l}"));
    }
    eprintln!(
        "ops: spoke A exited {exited:?} after SIGTERM; hub saw it by {seen:?}:\n  {removed}\n  {down}\n  {}",
        child.unwrap_or_default()
    );

    r.step("after: no device, no proto-77 route, no socket on spoke A; the hub forgot it");
    let links = t
        .spoke_a
        .ip_json(&["link", "show"])
        .unwrap_or_else(|e| r.fail(format!("{e:#}")));
    if links
        .as_array()
        .is_some_and(|a| a.iter().any(|l| l["ifname"] == TUNNEL_IF))
    {
        r.fail(format!(
            "{TUNNEL_IF} left behind in spoke A's namespace: {links}"
        ));
    }
    let routes =
        routes_with_proto(&t.spoke_a, PROTO_DMVPND).unwrap_or_else(|e| r.fail(format!("{e:#}")));
    if !routes.is_empty() {
        r.fail(format!(
            "proto {PROTO_DMVPND} routes left behind on spoke A: {routes:?}\n{}",
            route_dump(&t.spoke_a)
        ));
    }
    if socket.exists() {
        r.fail(format!(
            "spoke A's control socket {} left behind",
            socket.display()
        ));
    }
    if let Some(e) = r.nhrp_entry(Node::Hub, SPOKE_A_TUNNEL) {
        r.fail(format!("the hub's NHRP cache still holds spoke A: {e:#}"));
    }
    if let Some(p) = r.sa_peer(Node::Hub, SPOKE_A_NBMA) {
        r.fail(format!("the hub's show sa still lists spoke A: {p:#}"));
    }
    r.check_alive();
}
