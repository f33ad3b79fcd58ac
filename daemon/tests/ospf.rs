//! OSPF over dmvpnd (issue 6, item 3): FRR's zebra + ospfd on a dmvpnd hub and two dmvpnd
//! spokes, the tunnel as OSPF point-to-multipoint (hello 10 s, dead 40 s) as in the reference
//! deployment. Proves that multicast written to the tunnel (OSPF hellos to 224.0.0.5) is
//! replicated (spoke → NHS flagged `multicast`, hub → every registered spoke): the adjacencies
//! form over the tunnel, the spokes learn each other's LAN (and the hub's) from OSPF alone (the
//! dmvpnd configurations have no `[[route]]`), LAN-to-LAN traffic flows, and after the hub's
//! redirect it takes the NHRP shortcut (proto 77) while the OSPF route stays via the hub.
//!
//! Topology and configurations: `dmvpn_tests::e2e` (spoke B is behind the NAT router), FRR
//! helpers: `dmvpn_tests::ospf`. Needs root, `ip`, `nft`, `ping` and FRR (tests/install-deps.sh).
//! On failure the scratch directory (dmvpnd and FRR configs and logs) is kept and its path
//! printed.

use std::path::Path;
use std::time::{Duration, Instant};

use dmvpn_tests::e2e::{
    Dmvpnd, HUB_LAN, HUB_LAN_HOST, HUB_TUNNEL, Keys, LinkCounters, Node, NodeConfig, SPOKE_A_LAN,
    SPOKE_A_LAN_HOST, SPOKE_A_TUNNEL, SPOKE_B_LAN, SPOKE_B_LAN_HOST, SPOKE_B_TUNNEL, TUNNEL_IF,
    TestDir, Topology, WAN_IF, ping, route_dump, routes_with_proto, write_config,
};
use dmvpn_tests::ospf::{Frr, OspfSettings, adapt_config, cleanup_stale, require_frr};
use dmvpn_tests::{Netns, require_root_and_tools};

const DMVPND: &str = env!("CARGO_BIN_EXE_dmvpnd");
/// Route protocol of dmvpnd's NHRP shortcuts.
const PROTO_DMVPND: &str = "77";
/// LAN side of every router namespace in the e2e topology.
const LAN_IF: &str = "eth1";
/// The reference deployment's `ip ospf hello-interval 10` (dead interval 4 × hello).
const HELLO: u32 = 10;
const DEAD: u32 = 40;

const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(30);
/// First hello at interface up, 2-Way on the neighbor's next hello (≤ 10 s), then DB exchange:
/// normally ~10–20 s; the dead interval plus margin bounds it.
const ADJACENCY_TIMEOUT: Duration = Duration::from_secs(60);
const ROUTE_TIMEOUT: Duration = Duration::from_secs(20);
const LOG_TAIL: usize = 40;

/// The daemons of the run and the current step, for failure messages.
struct Run<'t> {
    t: &'t Topology,
    daemons: Vec<Dmvpnd>,
    /// Stopped before the dmvpnd daemons, in [`Drop`].
    frr: Vec<(Node, Frr)>,
    step: String,
    started: Instant,
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        // FRR first (it has routes in the tunnel), then dmvpnd; the topology goes last.
        for (_, f) in &mut self.frr {
            if let Err(e) = f.stop() {
                eprintln!("cleanup: {e:#}");
            }
        }
    }
}

impl<'t> Run<'t> {
    fn step(&mut self, s: &str) {
        eprintln!(
            "ospf: [{:>5.1}s] step {s}",
            self.started.elapsed().as_secs_f32()
        );
        self.step = s.to_owned();
    }

    fn logs(&self) -> String {
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
            for cmd in [
                "show ip ospf neighbor",
                "show ip ospf interface",
                "show ip route",
            ] {
                s += &format!(
                    "# {cmd}\n{}\n",
                    f.vtysh(cmd).unwrap_or_else(|e| format!("({e:#})"))
                );
            }
            s += &f.tail(LOG_TAIL);
        }
        for (ns, name) in [
            (&self.t.hub, "hub"),
            (&self.t.spoke_a, "spoke A"),
            (&self.t.spoke_b, "spoke B"),
        ] {
            s += &format!("\n---- routes of {name} ----\n{}", route_dump(ns));
        }
        s
    }

    #[track_caller]
    fn fail(&self, msg: impl std::fmt::Display) -> ! {
        panic!("step `{}` failed: {msg}\n{}", self.step, self.logs())
    }

    fn start(&mut self, cfg: &NodeConfig) {
        let ns = cfg.node.netns(self.t);
        match Dmvpnd::start(Path::new(DMVPND), ns, cfg) {
            Ok(d) => self.daemons.push(d),
            Err(e) => self.fail(format!("starting dmvpnd for {}: {e:#}", cfg.node.name())),
        }
    }

    /// Fails if a dmvpnd or FRR daemon has exited.
    fn check_alive(&mut self) {
        let mut dead = Vec::new();
        for d in &mut self.daemons {
            if !d.process.running() {
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

    /// Waits for a dmvpnd log line containing every word of `words` (case-insensitive).
    #[track_caller]
    fn wait_log(&mut self, node: Node, words: &[&str], timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            let d = self.daemons.iter().find(|d| d.node == node);
            let found = d.is_some_and(|d| {
                d.log().lines().any(|l| {
                    let l = l.to_ascii_lowercase();
                    words.iter().all(|w| l.contains(&w.to_ascii_lowercase()))
                })
            });
            if found {
                return;
            }
            if Instant::now() >= end {
                self.fail(format!(
                    "no log line with {words:?} from dmvpnd {} within {timeout:?}",
                    node.name()
                ));
            }
            self.check_alive();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn frr(&self, node: Node) -> &Frr {
        &self
            .frr
            .iter()
            .find(|(n, _)| *n == node)
            .unwrap_or_else(|| self.fail(format!("FRR on {} never started", node.name())))
            .1
    }

    /// Pings `dst` from `ns` 4 times, 200 ms apart; echoes 2..4 must be answered.
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
                "ping {from} → {dst}: echoes 2..4 must be answered, got replies to {answered:?}\n{text}{}",
                String::from_utf8_lossy(&out.stderr),
            ));
        }
    }

    fn counters(&self, ns: &Netns, dev: &str) -> LinkCounters {
        LinkCounters::read(ns, dev).unwrap_or_else(|e| self.fail(format!("{e:#}")))
    }
}

/// Whether the `ip -j route` destination `dst` ("a.b.c.d" or "a.b.c.d/len") covers `addr`.
fn covers(dst: &str, addr: &str) -> bool {
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

/// The route the kernel of `ns` would use to `dst` (`ip -j route get`).
fn route_get(ns: &Netns, dst: &str) -> serde_json::Value {
    ns.ip_json(&["route", "get", dst])
        .ok()
        .and_then(|v| v.get(0).cloned())
        .unwrap_or_default()
}

/// The OSPF route (proto ospf) for exactly `prefix` in `ns`, if out of the tunnel via `via`.
fn ospf_route(ns: &Netns, prefix: &str, via: &str) -> Option<serde_json::Value> {
    routes_with_proto(ns, "ospf").ok()?.into_iter().find(|r| {
        r["dst"].as_str() == Some(prefix)
            && r["dev"].as_str() == Some(TUNNEL_IF)
            && r["gateway"].as_str() == Some(via)
    })
}

/// A dmvpnd shortcut (proto 77) on `ns` toward `lan_host`, if any.
fn shortcut_route(ns: &Netns, lan_host: &str) -> Option<serde_json::Value> {
    routes_with_proto(ns, PROTO_DMVPND)
        .unwrap_or_default()
        .into_iter()
        .find(|r| {
            let dst = r["dst"].as_str().unwrap_or_default();
            dst != "default" && covers(dst, lan_host)
        })
}

fn settings(node: Node) -> OspfSettings {
    let lan = match node {
        Node::Hub => HUB_LAN,
        Node::SpokeA => SPOKE_A_LAN,
        Node::SpokeB => SPOKE_B_LAN,
    };
    OspfSettings {
        hostname: node.name().to_owned(),
        router_id: node.tunnel_address().to_owned(),
        tunnel_if: TUNNEL_IF.to_owned(),
        hello: HELLO,
        dead: DEAD,
        // Every dmvpn0 has mtu 1400, so the DBD MTU check passes without mtu-ignore (see
        // docs/ospf.md): a full adjacency here proves it.
        mtu_ignore: false,
        passive: vec![LAN_IF.to_owned()],
        networks: vec!["10.250.0.0/24".to_owned(), lan.to_owned()],
    }
}

#[test]
fn ospf_point_to_multipoint_over_dmvpnd_learns_spoke_lans_and_follows_shortcuts() {
    require_root_and_tools();
    require_frr();
    cleanup_stale().expect("removing stale FRR run directories");
    let dir = TestDir::new("ospf").unwrap();
    let t = Topology::new().expect("building the topology");
    let keys = Keys::random().expect("random keys");
    let cfg = |node| {
        let c =
            write_config(dir.path(), node, &keys, None).and_then(|c| adapt_config(&c).map(|()| c));
        c.unwrap_or_else(|e| panic!("generating the {} configuration: {e:#}", node.name()))
    };
    let (cfg_hub, cfg_a, cfg_b) = (cfg(Node::Hub), cfg(Node::SpokeA), cfg(Node::SpokeB));
    for c in [&cfg_hub, &cfg_a, &cfg_b] {
        let text = std::fs::read_to_string(&c.config).unwrap();
        assert!(
            !text.lines().any(|l| l.trim() == "[[route]]"),
            "{} still has static routes:\n{text}",
            c.config.display()
        );
    }

    let mut r = Run {
        t: &t,
        daemons: Vec::new(),
        frr: Vec::new(),
        step: "setup".into(),
        started: Instant::now(),
    };
    r.step("0. start dmvpnd: the hub, then the spokes; both spokes register");
    r.start(&cfg_hub);
    r.wait_log(
        Node::Hub,
        &["underlay sockets open"],
        Duration::from_secs(10),
    );
    r.start(&cfg_a);
    r.start(&cfg_b);
    for (spoke, tunnel) in [
        (Node::SpokeA, SPOKE_A_TUNNEL),
        (Node::SpokeB, SPOKE_B_TUNNEL),
    ] {
        r.wait_log(spoke, &["NHRP registered with NHS"], REGISTRATION_TIMEOUT);
        r.wait_log(Node::Hub, &["regist", tunnel], REGISTRATION_TIMEOUT);
    }

    r.step("1. without OSPF no LAN is routed over the tunnel");
    for (ns, name, dst) in [
        (&t.spoke_a, "spoke A", SPOKE_B_LAN_HOST),
        (&t.spoke_b, "spoke B", SPOKE_A_LAN_HOST),
        (&t.spoke_a, "spoke A", HUB_LAN_HOST),
        (&t.hub, "hub", SPOKE_A_LAN_HOST),
    ] {
        let rt = route_get(ns, dst);
        if rt["dev"].as_str() == Some(TUNNEL_IF) {
            r.fail(format!(
                "{name} routes {dst} into the tunnel before OSPF runs: {rt}"
            ));
        }
    }

    r.step("2. start zebra + ospfd in the hub and both spokes");
    for node in [Node::Hub, Node::SpokeA, Node::SpokeB] {
        match Frr::start(node.netns(&t), node.name(), dir.path(), &settings(node)) {
            Ok(f) => r.frr.push((node, f)),
            Err(e) => r.fail(format!("starting FRR on {}: {e:#}", node.name())),
        }
    }
    let frr_started = Instant::now();

    r.step("3. FULL adjacencies hub ↔ each spoke (spokes do not neighbor each other)");
    let expected = [
        (Node::Hub, vec![SPOKE_A_TUNNEL, SPOKE_B_TUNNEL]),
        (Node::SpokeA, vec![HUB_TUNNEL]),
        (Node::SpokeB, vec![HUB_TUNNEL]),
    ];
    let end = Instant::now() + ADJACENCY_TIMEOUT;
    loop {
        let mut missing = Vec::new();
        for (node, want) in &expected {
            let got = r.frr(*node).neighbors().unwrap_or_default();
            for w in want {
                if !got.iter().any(|n| n.router_id == *w && n.is_full()) {
                    missing.push(format!("{} → {w} (has {got:?})", node.name()));
                }
            }
            if let Some(x) = got.iter().find(|n| !want.contains(&n.router_id.as_str())) {
                r.fail(format!("{} has an unexpected neighbor {x:?}", node.name()));
            }
        }
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= end {
            r.fail(format!(
                "no FULL adjacency within {ADJACENCY_TIMEOUT:?}: {missing:?}"
            ));
        }
        r.check_alive();
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "ospf: all adjacencies FULL {:.1} s after FRR started",
        frr_started.elapsed().as_secs_f32()
    );

    r.step("4. OSPF routes in the kernels: spokes via the hub, the hub via each spoke");
    let wanted = [
        (&t.spoke_a, "spoke A", SPOKE_B_LAN, HUB_TUNNEL),
        (&t.spoke_a, "spoke A", HUB_LAN, HUB_TUNNEL),
        (&t.spoke_b, "spoke B", SPOKE_A_LAN, HUB_TUNNEL),
        (&t.spoke_b, "spoke B", HUB_LAN, HUB_TUNNEL),
        (&t.hub, "hub", SPOKE_A_LAN, SPOKE_A_TUNNEL),
        (&t.hub, "hub", SPOKE_B_LAN, SPOKE_B_TUNNEL),
    ];
    let end = Instant::now() + ROUTE_TIMEOUT;
    loop {
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(ns, _, p, via)| ospf_route(ns, p, via).is_none())
            .map(|(_, n, p, via)| format!("{n}: {p} via {via} dev {TUNNEL_IF} proto ospf"))
            .collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= end {
            r.fail(format!(
                "OSPF routes missing {ROUTE_TIMEOUT:?} after FULL: {missing:?}"
            ));
        }
        r.check_alive();
        std::thread::sleep(Duration::from_millis(200));
    }
    for (ns, name, p, via) in &wanted {
        eprintln!(
            "ospf: {name}: {}",
            ospf_route(ns, p, via).unwrap_or_default()
        );
    }

    r.step("5. LAN ↔ LAN over the OSPF routes (hub LAN and the other spoke's LAN)");
    r.reach(&t.lan_a, "spoke A LAN host", HUB_LAN_HOST);
    r.reach(&t.lan_b, "spoke B LAN host", HUB_LAN_HOST);
    r.reach(&t.lan_hub, "hub LAN host", SPOKE_A_LAN_HOST);
    r.reach(&t.lan_hub, "hub LAN host", SPOKE_B_LAN_HOST);
    r.reach(&t.lan_a, "spoke A LAN host", SPOKE_B_LAN_HOST);

    r.step("6. the hub's redirect leads to shortcut routes (proto 77) on both spokes");
    let end = Instant::now() + Duration::from_secs(20);
    let (sc_a, sc_b) = loop {
        let a = shortcut_route(&t.spoke_a, SPOKE_B_LAN_HOST);
        let b = shortcut_route(&t.spoke_b, SPOKE_A_LAN_HOST);
        if let (Some(a), Some(b)) = (&a, &b) {
            break (a.clone(), b.clone());
        }
        if Instant::now() >= end {
            r.fail(format!(
                "no shortcut within 20 s of spoke-to-spoke traffic (A: {a:?}, B: {b:?})"
            ));
        }
        r.check_alive();
        let _ = ping(&t.lan_a, SPOKE_B_LAN_HOST, 1, "1");
        let _ = ping(&t.lan_b, SPOKE_A_LAN_HOST, 1, "1");
    };
    eprintln!("ospf: shortcut on spoke A {sc_a}, on spoke B {sc_b}");
    // The kernel now prefers the shortcut to the OSPF route via the hub.
    let rt = route_get(&t.spoke_a, SPOKE_B_LAN_HOST);
    if rt["gateway"].as_str() == Some(HUB_TUNNEL) {
        r.fail(format!(
            "spoke A still routes {SPOKE_B_LAN_HOST} via the hub despite the shortcut: {rt}"
        ));
    }

    r.step("7. LAN A → LAN B flows directly: the hub's underlay rx stops growing");
    r.reach(&t.lan_a, "spoke A LAN host", SPOKE_B_LAN_HOST);
    let hub_wan0 = r.counters(&t.hub, WAN_IF);
    let a_wan0 = r.counters(&t.spoke_a, WAN_IF);
    let (got, out) = ping(&t.lan_a, SPOKE_B_LAN_HOST, 100, "0.01").unwrap();
    let (wan_rx, _) = r.counters(&t.hub, WAN_IF).since(&hub_wan0);
    let (a_rx, a_tx) = r.counters(&t.spoke_a, WAN_IF).since(&a_wan0);
    eprintln!(
        "ospf: 100 echoes A LAN → B LAN: hub {WAN_IF} rx +{wan_rx}, spoke A {WAN_IF} rx +{a_rx} tx +{a_tx}"
    );
    if got != 100 {
        r.fail(format!("direct path lost echoes ({got}/100):\n{out}"));
    }
    // Via the hub it would receive ≥ 200; allow OSPF hellos, DPD, NAT keepalives, ARP.
    if wan_rx > 10 {
        r.fail(format!(
            "traffic still crosses the hub: hub {WAN_IF} rx +{wan_rx} (≤ 10 allowed)"
        ));
    }
    if a_tx < 100 || a_rx < 100 {
        r.fail(format!(
            "spoke A's underlay did not carry the echoes: rx +{a_rx} tx +{a_tx}"
        ));
    }
    r.reach(&t.lan_b, "spoke B LAN host", SPOKE_A_LAN_HOST);

    r.step("8. adjacencies stay FULL; zebra keeps the OSPF route to LAN B as a fallback");
    for (node, want) in &expected {
        let got = r.frr(*node).neighbors().unwrap_or_default();
        for w in want {
            if !got.iter().any(|n| n.router_id == *w && n.is_full()) {
                r.fail(format!(
                    "{} lost its adjacency to {w}: {got:?}",
                    node.name()
                ));
            }
        }
    }
    // zebra sees dmvpnd's shortcut as a kernel route (distance 0) for the same prefix, selects
    // it and withdraws its own OSPF route from the kernel; the OSPF route stays in its RIB.
    let rib = r
        .frr(Node::SpokeA)
        .vtysh_json(&format!("show ip route {SPOKE_B_LAN} json"))
        .unwrap_or_else(|e| r.fail(format!("{e:#}")));
    let entries = rib[SPOKE_B_LAN].as_array().cloned().unwrap_or_default();
    let has = |proto: &str| {
        entries
            .iter()
            .any(|e| e["protocol"].as_str() == Some(proto))
    };
    if !has("ospf") || !has("kernel") {
        r.fail(format!(
            "spoke A's zebra should hold both the shortcut (kernel) and the OSPF route for {SPOKE_B_LAN}: {rib}"
        ));
    }

    r.step("9. when the shortcut goes, zebra puts the OSPF route via the hub back");
    // As on expiry: the shortcut route leaves the kernel (deleted here by the test).
    let dst = sc_a["dst"].as_str().unwrap_or(SPOKE_B_LAN).to_owned();
    let via = sc_a["gateway"]
        .as_str()
        .unwrap_or(SPOKE_B_TUNNEL)
        .to_owned();
    t.spoke_a
        .ip(&[
            "route",
            "del",
            &dst,
            "via",
            &via,
            "dev",
            TUNNEL_IF,
            "proto",
            PROTO_DMVPND,
            "metric",
            "10",
        ])
        .unwrap_or_else(|e| r.fail(format!("deleting the shortcut: {e:#}")));
    let back = dmvpn_tests::wait_for(Duration::from_secs(10), || {
        ospf_route(&t.spoke_a, SPOKE_B_LAN, HUB_TUNNEL)
    });
    if back.is_none() {
        r.fail(format!(
            "no OSPF route {SPOKE_B_LAN} via {HUB_TUNNEL} on spoke A within 10 s of the shortcut's removal"
        ));
    }
    r.reach(&t.lan_a, "spoke A LAN host", SPOKE_B_LAN_HOST);
    r.check_alive();
    eprintln!("ospf: passed in {:.1} s", r.started.elapsed().as_secs_f32());
}
