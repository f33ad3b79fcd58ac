//! The end-to-end DMVPN topology: a hub and two spokes on a WAN bridge, one spoke behind a NAT
//! router, a LAN with one host behind each router; dmvpnd configurations generated from the
//! `conf/` examples with only addresses (and, for tests, DPD timers) changed; packet capture on
//! the underlay and its dissection with `tshark` and the daemons' exported keys. A second hub
//! and a third spoke (C, with its LAN) are always built but only the redundant-hub and BGP
//! tests start dmvpnd on them.
//!
//! ```text
//!  lan-hub 10.1.1.106 ── 10.1.1.1 [hub] 198.51.100.1 ─┐
//!                                  [hub2] 198.51.100.4 ─┤
//!  lan-a 172.16.3.224 ── 172.16.3.10 [spoke-a] 198.51.100.3 ─┤ br0 [wan]
//!  lan-c 172.16.23.224 ── 172.16.23.10 [spoke-c] 198.51.100.5 ─┤
//!                                        198.51.100.2 [nat] ─┘   (masquerade out eth0)
//!                                        192.168.50.1 │
//!  lan-b 172.16.13.224 ── 172.16.13.10 [spoke-b] 192.168.50.10 (default via the NAT)
//! ```
//!
//! Inside every router namespace the WAN side is `eth0` and the LAN side `eth1`, so the examples'
//! `underlay.interface = "eth0"` holds. Namespace names are `dmvpne2e-<pid>-<n>-<tag>`: unique
//! per run, and namespaces left by a dead run (crash, SIGKILL) are recognised by their PID and
//! removed by [`cleanup_stale`] without touching those of a run still alive.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{Netns, NsProcess, run, veth_named, wait_for};

/// The TOML crate the configurations are edited with (for tests that compare them).
pub use toml;

/// Prefix of every namespace this module creates.
pub const PREFIX: &str = "dmvpne2e-";

pub const HUB_NBMA: &str = "198.51.100.1";
pub const NAT_OUTSIDE: &str = "198.51.100.2";
pub const SPOKE_A_NBMA: &str = "198.51.100.3";
/// A second hub, for the redundant-hub tests (started only by them).
pub const HUB2_NBMA: &str = "198.51.100.4";
/// A third spoke on the WAN bridge, for the BGP test (started only by it).
pub const SPOKE_C_NBMA: &str = "198.51.100.5";
pub const NAT_INSIDE: &str = "192.168.50.1";
pub const SPOKE_B_PRIVATE: &str = "192.168.50.10";

pub const HUB_TUNNEL: &str = "10.250.0.1";
pub const HUB2_TUNNEL: &str = "10.250.0.2";
pub const SPOKE_A_TUNNEL: &str = "10.250.0.9";
pub const SPOKE_B_TUNNEL: &str = "10.250.0.10";
pub const SPOKE_C_TUNNEL: &str = "10.250.0.11";

pub const HUB_LAN: &str = "10.1.1.0/24";
pub const HUB_LAN_ROUTER: &str = "10.1.1.1";
pub const HUB_LAN_HOST: &str = "10.1.1.106";
pub const SPOKE_A_LAN: &str = "172.16.3.0/24";
pub const SPOKE_A_LAN_ROUTER: &str = "172.16.3.10";
pub const SPOKE_A_LAN_HOST: &str = "172.16.3.224";
pub const SPOKE_B_LAN: &str = "172.16.13.0/24";
pub const SPOKE_B_LAN_ROUTER: &str = "172.16.13.10";
pub const SPOKE_B_LAN_HOST: &str = "172.16.13.224";
pub const SPOKE_C_LAN: &str = "172.16.23.0/24";
pub const SPOKE_C_LAN_ROUTER: &str = "172.16.23.10";
pub const SPOKE_C_LAN_HOST: &str = "172.16.23.224";

/// The WAN-side interface in every router namespace (as in the `conf/` examples).
pub const WAN_IF: &str = "eth0";
/// The tunnel device of the `conf/` examples.
pub const TUNNEL_IF: &str = "dmvpn0";

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Deletes namespaces named `dmvpne2e-<pid>-…` whose process no longer exists.
pub fn cleanup_stale() -> Result<()> {
    let list = run(Command::new("ip").args(["netns", "list"]))?;
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("e2e: removing stale namespace {name} (pid {pid} is gone)");
            if let Err(e) = run(Command::new("ip").args(["netns", "del", name])) {
                eprintln!("e2e: {e}");
            }
        }
    }
    Ok(())
}

/// A namespace `dmvpne2e-<pid>-<n>-<tag>` with IPv6 off (the underlay must carry nothing but
/// what dmvpnd sends, so no router solicitations or MLD reports) and loopback up.
fn namespace(tag: &str) -> Result<Netns> {
    let n = NS_COUNTER.fetch_add(1, Ordering::Relaxed);
    let ns = Netns::named(format!("{PREFIX}{}-{n}-{tag}", std::process::id()))?;
    ns.sysctl("net.ipv6.conf.all.disable_ipv6=1")?;
    ns.sysctl("net.ipv6.conf.default.disable_ipv6=1")?;
    Ok(ns)
}

/// Links `a`:`a_if` with `b`:`b_if`, addresses each end (`None`: no address), brings both up.
fn link(
    a: &Netns,
    a_if: &str,
    a_cidr: Option<&str>,
    b: &Netns,
    b_if: &str,
    b_cidr: Option<&str>,
) -> Result<()> {
    veth_named(a, a_if, b, b_if)?;
    for (ns, dev, cidr) in [(a, a_if, a_cidr), (b, b_if, b_cidr)] {
        if let Some(c) = cidr {
            ns.ip(&["addr", "add", c, "dev", dev])?;
        }
        ns.ip(&["link", "set", dev, "up"])?;
    }
    Ok(())
}

/// The whole underlay and the LANs. Dropping it deletes every namespace; stop the processes
/// running in them first (declare them after the topology, or drop them explicitly).
#[derive(Debug)]
pub struct Topology {
    pub hub: Netns,
    pub hub2: Netns,
    pub spoke_a: Netns,
    pub spoke_b: Netns,
    /// The third spoke (BGP test only; idle elsewhere).
    pub spoke_c: Netns,
    pub nat: Netns,
    pub wan: Netns,
    pub lan_hub: Netns,
    pub lan_a: Netns,
    pub lan_b: Netns,
    pub lan_c: Netns,
}

impl Topology {
    pub fn new() -> Result<Self> {
        cleanup_stale()?;
        let t = Topology {
            hub: namespace("hub")?,
            hub2: namespace("hub2")?,
            spoke_a: namespace("spoke-a")?,
            spoke_b: namespace("spoke-b")?,
            spoke_c: namespace("spoke-c")?,
            nat: namespace("nat")?,
            wan: namespace("wan")?,
            lan_hub: namespace("lan-hub")?,
            lan_a: namespace("lan-a")?,
            lan_b: namespace("lan-b")?,
            lan_c: namespace("lan-c")?,
        };
        // WAN: a bridge with the hubs, spokes A and C and the NAT router's outside on one /24.
        // No multicast snooping: the bridge would send IGMP reports of its own onto the WAN.
        t.wan.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        t.wan.ip(&["link", "set", "br0", "up"])?;
        for (ns, port, addr) in [
            (&t.hub, "hub", HUB_NBMA),
            (&t.hub2, "hub2", HUB2_NBMA),
            (&t.spoke_a, "spoke-a", SPOKE_A_NBMA),
            (&t.spoke_c, "spoke-c", SPOKE_C_NBMA),
            (&t.nat, "nat", NAT_OUTSIDE),
        ] {
            link(&t.wan, port, None, ns, WAN_IF, Some(&format!("{addr}/24")))?;
            t.wan.ip(&["link", "set", port, "master", "br0"])?;
        }
        // NAT router: spoke B inside, masquerade out of eth0.
        link(
            &t.nat,
            "eth1",
            Some(&format!("{NAT_INSIDE}/24")),
            &t.spoke_b,
            WAN_IF,
            Some(&format!("{SPOKE_B_PRIVATE}/24")),
        )?;
        t.spoke_b
            .ip(&["route", "add", "default", "via", NAT_INSIDE])?;
        t.nat.enable_forwarding()?;
        // Hub 2 forwards between spokes like hub 1 (which routes for its LAN below).
        t.hub2.enable_forwarding()?;
        let hook = "{ type nat hook postrouting priority srcnat; }";
        t.nat.nft(&[
            vec!["add", "table", "ip", "nat"],
            vec!["add", "chain", "ip", "nat", "postrouting", hook],
            vec![
                "add",
                "rule",
                "ip",
                "nat",
                "postrouting",
                "oifname",
                WAN_IF,
                "masquerade",
            ],
        ])?;
        // LANs: one host behind each router, default route via its router.
        for (router, lan, router_addr, host_addr) in [
            (&t.hub, &t.lan_hub, HUB_LAN_ROUTER, HUB_LAN_HOST),
            (&t.spoke_a, &t.lan_a, SPOKE_A_LAN_ROUTER, SPOKE_A_LAN_HOST),
            (&t.spoke_b, &t.lan_b, SPOKE_B_LAN_ROUTER, SPOKE_B_LAN_HOST),
            (&t.spoke_c, &t.lan_c, SPOKE_C_LAN_ROUTER, SPOKE_C_LAN_HOST),
        ] {
            link(
                router,
                "eth1",
                Some(&format!("{router_addr}/24")),
                lan,
                "eth0",
                Some(&format!("{host_addr}/24")),
            )?;
            lan.ip(&["route", "add", "default", "via", router_addr])?;
            router.enable_forwarding()?;
        }
        Ok(t)
    }
}

/// `ping -c COUNT -i INTERVAL -W 1 DST` inside `ns`: (replies received, ping's output).
pub fn ping(ns: &Netns, dst: &str, count: u32, interval: &str) -> Result<(u32, String)> {
    let count_s = count.to_string();
    let out = ns.exec(
        "ping",
        &["-n", "-q", "-c", &count_s, "-i", interval, "-W", "1", dst],
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // No statistics line: ping gave up before sending ("Network is unreachable").
    let received = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| {
            l.split(',')
                .find(|f| f.trim_end().ends_with("received"))
                .and_then(|f| f.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0);
    if received == 0 && out.status.success() {
        bail!("unexpected ping output in {}: {text}", ns.name());
    }
    Ok((received, text.trim().to_owned()))
}

/// Packet counters of one interface, from `ip -s -j link show` in its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkCounters {
    pub rx_packets: u64,
    pub tx_packets: u64,
}

impl LinkCounters {
    pub fn read(ns: &Netns, dev: &str) -> Result<Self> {
        let v = ns.ip_json(&["-s", "link", "show", "dev", dev])?;
        let s = &v[0]["stats64"];
        let get = |dir: &str| {
            s[dir]["packets"]
                .as_u64()
                .with_context(|| format!("no {dir} packet counter for {dev} in {}: {v}", ns.name()))
        };
        Ok(LinkCounters {
            rx_packets: get("rx")?,
            tx_packets: get("tx")?,
        })
    }

    /// Packets counted since `earlier`, (rx, tx).
    pub fn since(&self, earlier: &LinkCounters) -> (u64, u64) {
        (
            self.rx_packets.saturating_sub(earlier.rx_packets),
            self.tx_packets.saturating_sub(earlier.tx_packets),
        )
    }
}

/// Kernel routes in `ns` with protocol `proto` (e.g. "77", dmvpnd's NHRP shortcuts).
pub fn routes_with_proto(ns: &Netns, proto: &str) -> Result<Vec<serde_json::Value>> {
    let v = ns.ip_json(&["route", "show", "proto", proto])?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// `ip route` in `ns`, as text, for failure messages.
pub fn route_dump(ns: &Netns) -> String {
    ns.ip(&["route", "show"])
        .unwrap_or_else(|e| format!("(ip route failed: {e})"))
}

// ---- configuration ---------------------------------------------------------------------------

/// Which router a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Hub,
    /// The second hub of the redundant-hub tests.
    Hub2,
    SpokeA,
    SpokeB,
    /// The third spoke of the BGP test.
    SpokeC,
}

impl Node {
    pub fn name(self) -> &'static str {
        match self {
            Node::Hub => "hub",
            Node::Hub2 => "hub2",
            Node::SpokeA => "spoke-a",
            Node::SpokeB => "spoke-b",
            Node::SpokeC => "spoke-c",
        }
    }

    pub fn tunnel_address(self) -> &'static str {
        match self {
            Node::Hub => HUB_TUNNEL,
            Node::Hub2 => HUB2_TUNNEL,
            Node::SpokeA => SPOKE_A_TUNNEL,
            Node::SpokeB => SPOKE_B_TUNNEL,
            Node::SpokeC => SPOKE_C_TUNNEL,
        }
    }

    /// Its namespace in `t`.
    pub fn netns(self, t: &Topology) -> &Netns {
        match self {
            Node::Hub => &t.hub,
            Node::Hub2 => &t.hub2,
            Node::SpokeA => &t.spoke_a,
            Node::SpokeB => &t.spoke_b,
            Node::SpokeC => &t.spoke_c,
        }
    }
}

/// The secrets of one router.
#[derive(Debug, Clone)]
pub struct Keys {
    pub psk: String,
    pub nhrp: String,
}

impl Keys {
    /// Fresh random keys (a PSK of 32 hex digits, an NHRP key of 8 characters).
    pub fn random() -> Result<Self> {
        let mut b = [0u8; 20];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
            .context("reading /dev/urandom")?;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Ok(Keys {
            psk: hex[..32].to_owned(),
            nhrp: hex[32..40].to_owned(),
        })
    }
}

/// Generated files of one router.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node: Node,
    pub config: PathBuf,
    pub secrets: PathBuf,
    pub key_export: PathBuf,
    /// `control.socket`, for dmvpnctl.
    pub socket: PathBuf,
}

/// `conf/` of this workspace.
pub fn conf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf")
}

fn set(v: &mut toml::Value, path: &[&str], value: toml::Value) -> Result<()> {
    let (last, parents) = path.split_last().context("empty key path")?;
    let mut cur = v;
    for k in parents {
        let table = cur
            .as_table_mut()
            .with_context(|| format!("{k}: parent is not a table"))?;
        cur = table
            .entry(k.to_string())
            .or_insert_with(|| toml::Value::Table(toml::map::Map::new()));
    }
    cur.as_table_mut()
        .with_context(|| format!("{last}: parent is not a table"))?
        .insert(last.to_string(), value);
    Ok(())
}

fn str_value(s: &str) -> toml::Value {
    toml::Value::String(s.to_owned())
}

fn routes(pairs: &[(&str, &str)]) -> toml::Value {
    toml::Value::Array(
        pairs
            .iter()
            .map(|(prefix, via)| {
                let mut t = toml::map::Map::new();
                t.insert("prefix".into(), str_value(prefix));
                t.insert("via".into(), str_value(via));
                toml::Value::Table(t)
            })
            .collect(),
    )
}

fn write_mode(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Timers a test may shorten (`None`: the example's value).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timers {
    /// `ike.dpd.delay` and `ike.dpd.retry`, seconds.
    pub dpd: Option<(u32, u32)>,
    /// `ike.nat-keepalive`, seconds.
    pub nat_keepalive: Option<u32>,
}

/// Writes `dir/<node>/dmvpnd.toml` (mode 0644) from conf/hub.toml or conf/spoke.toml with only
/// the addresses, interface, static routes and key export changed (and the DPD delay/retry
/// when `dpd` is given), and `dir/<node>/secrets.toml` (mode 0600) from conf/secrets.example.toml.
pub fn write_config(
    dir: &Path,
    node: Node,
    keys: &Keys,
    dpd: Option<(u32, u32)>,
) -> Result<NodeConfig> {
    let timers = Timers {
        dpd,
        ..Timers::default()
    };
    write_config_with(dir, node, keys, timers)
}

/// [`write_config`] with any of the [`Timers`] shortened.
pub fn write_config_with(
    dir: &Path,
    node: Node,
    keys: &Keys,
    timers: Timers,
) -> Result<NodeConfig> {
    let conf = conf_dir();
    let example = if matches!(node, Node::Hub | Node::Hub2) {
        "hub.toml"
    } else {
        "spoke.toml"
    };
    let text = fs::read_to_string(conf.join(example))
        .with_context(|| format!("reading conf/{example}"))?;
    let mut v: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing conf/{example}"))?;
    let out = dir.join(node.name());
    fs::create_dir_all(&out)?;
    // dmvpnd makes it a Wireshark configuration directory (esp_sa, ikev2_decryption_table).
    let key_export = out.join("keys").join("wireshark");

    set(&mut v, &["underlay", "interface"], str_value(WAN_IF))?;
    set(
        &mut v,
        &["tunnel", "address"],
        str_value(&format!("{}/24", node.tunnel_address())),
    )?;
    // One control socket per daemon (the default path is shared by every namespace).
    let socket = out.join("dmvpnd.sock");
    set(
        &mut v,
        &["control", "socket"],
        str_value(&socket.to_string_lossy()),
    )?;
    set(
        &mut v,
        &["debug", "key-export"],
        str_value(&key_export.to_string_lossy()),
    )?;
    if let Some(k) = timers.nat_keepalive {
        set(
            &mut v,
            &["ike", "nat-keepalive"],
            toml::Value::Integer(k.into()),
        )?;
    }
    if let Some((delay, retry)) = timers.dpd {
        set(
            &mut v,
            &["ike", "dpd", "delay"],
            toml::Value::Integer(delay.into()),
        )?;
        set(
            &mut v,
            &["ike", "dpd", "retry"],
            toml::Value::Integer(retry.into()),
        )?;
    }
    match node {
        Node::Hub | Node::Hub2 => {
            let nbma = if node == Node::Hub {
                HUB_NBMA
            } else {
                HUB2_NBMA
            };
            set(&mut v, &["underlay", "local-address"], str_value(nbma))?;
            set(
                &mut v,
                &["route"],
                routes(&[(SPOKE_A_LAN, SPOKE_A_TUNNEL), (SPOKE_B_LAN, SPOKE_B_TUNNEL)]),
            )?;
        }
        Node::SpokeA | Node::SpokeB | Node::SpokeC => {
            let nhs = v
                .get_mut("nhrp")
                .and_then(|n| n.get_mut("nhs"))
                .and_then(|n| n.as_array_mut())
                .and_then(|a| a.first_mut())
                .context("conf/spoke.toml has no [[nhrp.nhs]]")?;
            set(nhs, &["address"], str_value(HUB_TUNNEL))?;
            set(nhs, &["nbma"], str_value(HUB_NBMA))?;
            let lans: &[(&str, &str)] = match node {
                Node::SpokeA => &[(HUB_LAN, HUB_TUNNEL), (SPOKE_B_LAN, HUB_TUNNEL)],
                Node::SpokeB => &[(HUB_LAN, HUB_TUNNEL), (SPOKE_A_LAN, HUB_TUNNEL)],
                _ => &[
                    (HUB_LAN, HUB_TUNNEL),
                    (SPOKE_A_LAN, HUB_TUNNEL),
                    (SPOKE_B_LAN, HUB_TUNNEL),
                ],
            };
            set(&mut v, &["route"], routes(lans))?;
        }
    }
    let config = out.join("dmvpnd.toml");
    let body = toml::to_string(&v).context("serializing the configuration")?;
    write_mode(
        &config,
        &format!("# generated by dmvpn-tests from conf/{example} (addresses changed)\n{body}"),
        0o644,
    )?;

    let stext = fs::read_to_string(conf.join("secrets.example.toml"))
        .context("reading conf/secrets.example.toml")?;
    let mut s: toml::Value = toml::from_str(&stext).context("parsing conf/secrets.example.toml")?;
    set(&mut s, &["psk", "ANY"], str_value(&keys.psk))?;
    set(&mut s, &["nhrp", "authentication"], str_value(&keys.nhrp))?;
    let secrets_name = v
        .get("secrets")
        .and_then(|x| x.as_str())
        .unwrap_or("secrets.toml");
    let secrets = out.join(secrets_name);
    write_mode(&secrets, &toml::to_string(&s)?, 0o600)?;
    Ok(NodeConfig {
        node,
        config,
        secrets,
        key_export,
        socket,
    })
}

// ---- processes -------------------------------------------------------------------------------

/// A running dmvpnd (stopped on drop by its PID).
#[derive(Debug)]
pub struct Dmvpnd {
    pub node: Node,
    pub process: NsProcess,
    pub config: NodeConfig,
}

impl Dmvpnd {
    /// Starts `bin --foreground --config …` in the node's namespace, logging at debug level to
    /// `<config dir>/dmvpnd.log`.
    pub fn start(bin: &Path, ns: &Netns, config: &NodeConfig) -> Result<Self> {
        let mut cmd = ns.command(bin);
        cmd.arg("--foreground")
            .arg("--config")
            .arg(&config.config)
            .env("DMVPND_LOG", "debug")
            .env_remove("JOURNAL_STREAM");
        let log = config.config.with_file_name("dmvpnd.log");
        Ok(Dmvpnd {
            node: config.node,
            process: ns.spawn(cmd, &log)?,
            config: config.clone(),
        })
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The last `n` lines of the log.
    pub fn tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// `tcpdump -i IFACE -w FILE` in a namespace, stopped (and flushed) by SIGTERM.
#[derive(Debug)]
pub struct Capture {
    process: NsProcess,
    pub file: PathBuf,
}

impl Capture {
    /// Starts the capture and waits until tcpdump reports it is listening. Only packets
    /// received by the interface(s) are kept (`-Q in`): on the WAN bridge's ports (`any`) each
    /// frame then appears once, as it enters the bridge, not once more on its way out.
    pub fn start(ns: &Netns, iface: &str, file: &Path) -> Result<Self> {
        let mut cmd = ns.command("tcpdump");
        cmd.args([
            "-i", iface, "-Q", "in", "-n", "-U", "-s", "0", "-Z", "root", "-w",
        ])
        .arg(file);
        let process = ns.spawn(cmd, &file.with_extension("tcpdump.log"))?;
        let mut c = Capture {
            process,
            file: file.to_path_buf(),
        };
        let ready = wait_for(Duration::from_secs(10), || {
            c.process.log().contains("listening on").then_some(())
        });
        if ready.is_none() {
            let running = c.process.running();
            bail!(
                "tcpdump on {iface} in {} not ready after 10 s (running: {running}): {}",
                ns.name(),
                c.process.log()
            );
        }
        Ok(c)
    }

    /// Stops tcpdump; the file is then complete.
    pub fn stop(&mut self) -> Result<()> {
        let st = self.process.terminate(Duration::from_secs(5))?;
        if !st.success() {
            bail!("tcpdump exited with {st}: {}", self.process.log());
        }
        Ok(())
    }
}

// ---- tshark --------------------------------------------------------------------------------

/// `tshark` with a private configuration directory (XDG_CONFIG_HOME), optionally holding ESP and
/// IKEv2 keys, so neither the user's profile nor another test's keys leak in.
#[derive(Debug)]
pub struct Tshark {
    xdg: PathBuf,
}

/// Keys from dmvpnd's `debug.key-export` files, split by format.
#[derive(Debug, Default, Clone)]
pub struct ExportedKeys {
    /// Wireshark `esp_sa` UAT lines (`"IPv4","src","dst","0xSPI",…`).
    pub esp_sa: Vec<String>,
    /// Wireshark `ikev2_decryption_table` UAT lines (`SPIi,SPIr,SK_ei,SK_er,…`).
    pub ikev2: Vec<String>,
}

impl ExportedKeys {
    /// Reads and merges key exports (duplicates removed): each path is either a directory
    /// (dmvpnd's `debug.key-export`: a Wireshark configuration directory holding `esp_sa` and
    /// `ikev2_decryption_table`) or a single file mixing both formats. Lines of neither format
    /// are an error (a format change must not silently disable decryption).
    pub fn read(paths: &[&Path]) -> Result<Self> {
        let mut k = ExportedKeys::default();
        for p in paths {
            if p.is_dir() {
                for name in ["esp_sa", "ikev2_decryption_table"] {
                    k.add_file(&p.join(name))?;
                }
            } else {
                k.add_file(p)?;
            }
        }
        Ok(k)
    }

    fn add_file(&mut self, f: &Path) -> Result<()> {
        let text =
            fs::read_to_string(f).with_context(|| format!("reading key export {}", f.display()))?;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split(',').next().unwrap_or_default().trim_matches('"');
            let fields = line.split(',').count();
            let target = if matches!(first, "IPv4" | "IPv6" | "Any IPv4" | "Any IPv6" | "Any") {
                &mut self.esp_sa
            } else if fields >= 8
                && first.len() == 16
                && first.bytes().all(|b| b.is_ascii_hexdigit())
            {
                &mut self.ikev2
            } else {
                bail!("{}: unrecognised key export line: {line}", f.display());
            };
            if !target.iter().any(|l| l == line) {
                target.push(line.to_owned());
            }
        }
        Ok(())
    }
}

impl Tshark {
    /// A profile in `dir` (created) with the given keys and ESP decryption enabled. Preference
    /// `nhrp.auth_ext_has_addr: FALSE`: Cisco/FRR authentication extensions carry SPI + key
    /// only, without the source address Wireshark assumes by default.
    pub fn with_keys(dir: &Path, keys: &ExportedKeys) -> Result<Self> {
        let ws = dir.join("wireshark");
        fs::create_dir_all(&ws)?;
        let lines = |v: &[String]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
        fs::write(ws.join("esp_sa"), lines(&keys.esp_sa))?;
        fs::write(ws.join("ikev2_decryption_table"), lines(&keys.ikev2))?;
        fs::write(
            ws.join("preferences"),
            "esp.enable_encryption_decode: TRUE\nnhrp.auth_ext_has_addr: FALSE\n",
        )?;
        Ok(Tshark {
            xdg: dir.to_path_buf(),
        })
    }

    /// A profile without keys.
    pub fn plain(dir: &Path) -> Result<Self> {
        Self::with_keys(dir, &ExportedKeys::default())
    }

    /// `tshark -r CAP ARGS…` (stdout; fails on a non-zero exit).
    pub fn run(&self, cap: &Path, args: &[&str]) -> Result<String> {
        let out = Command::new("tshark")
            .env("XDG_CONFIG_HOME", &self.xdg)
            .arg("-r")
            .arg(cap)
            .args(args)
            .output()
            .context("running tshark (install it: tests/install-deps.sh)")?;
        if !out.status.success() {
            bail!(
                "tshark -r {} {args:?}: {}: {}",
                cap.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One summary line per frame matching the display filter.
    pub fn frames(&self, cap: &Path, filter: &str) -> Result<Vec<String>> {
        Ok(self
            .run(cap, &["-n", "-Y", filter])?
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// `-T fields` rows (tab-separated fields) of the frames matching the filter.
    pub fn fields(&self, cap: &Path, filter: &str, fields: &[&str]) -> Result<Vec<Vec<String>>> {
        let mut args = vec!["-n", "-Y", filter, "-T", "fields"];
        for f in fields {
            args.extend(["-e", f]);
        }
        Ok(self
            .run(cap, &args)?
            .lines()
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect())
    }
}

/// Frames of an underlay capture that are not ARP, IKE (UDP 500/4500), ESP (IP protocol 50 or
/// in UDP 4500) or NAT keepalives, one summary line each, at most `limit`; any GRE, NHRP or
/// ICMP in clear is among them.
pub fn underlay_violations(tshark: &Tshark, cap: &Path, limit: usize) -> Result<Vec<String>> {
    let mut v = tshark.frames(
        cap,
        "not (arp or udp.port == 500 or udp.port == 4500 or ip.proto == 50) \
         or (udp.port == 4500 and not (isakmp or esp or udpencap.nat_keepalive)) \
         or (udp.port == 500 and not isakmp) \
         or gre or nhrp or ip.proto == 47 or icmp",
    )?;
    let n = v.len();
    v.truncate(limit);
    if n > limit {
        v.push(format!("… {} more", n - limit));
    }
    Ok(v)
}

/// A scratch directory for one test: configurations, logs, captures. Removed on success unless
/// `DMVPN_E2E_KEEP` is set; kept (and its path printed) when the test panics.
#[derive(Debug)]
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn new(tag: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("dmvpn-e2e-{tag}-"))
            .tempdir()?;
        Ok(TestDir { dir: Some(dir) })
    }

    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let why = if std::thread::panicking() {
            "test failed"
        } else if std::env::var_os("DMVPN_E2E_KEEP").is_some() {
            "DMVPN_E2E_KEEP is set"
        } else {
            return;
        };
        if let Some(d) = self.dir.take() {
            eprintln!(
                "e2e: {why}; logs, configs and captures kept in {}",
                d.keep().display()
            );
        }
    }
}

/// The `icmp_seq` numbers that `ping`'s output shows answered.
pub fn answered_echoes(ping_stdout: &str) -> Vec<u32> {
    ping_stdout
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

#[cfg(test)]
mod ping_tests {
    #[test]
    fn answered_echoes_reads_icmp_seq() {
        let out = "PING 10.250.0.1 (10.250.0.1) 56(84) bytes of data.\n\
                   64 bytes from 10.250.0.1: icmp_seq=2 ttl=64 time=0.1 ms\n\
                   64 bytes from 10.250.0.1: icmp_seq=4 ttl=64 time=0.1 ms\n";
        assert_eq!(super::answered_echoes(out), vec![2, 4]);
    }
}
