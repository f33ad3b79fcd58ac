//! Rekey under load (issue 14, item 6): Child SA and IKE SA rekeys while TCP (iperf3) and a
//! 100 pings/s stream cross the tunnel, for spoke A (raw ESP) and spoke B (behind the NAT,
//! ESP in UDP). Lifetimes are cut toward the 60 s the configuration allows for labs so that
//! each end starts the rekeys of one spoke: the hub (75 s) rekeys spoke A's SAs (A's own are
//! 90 s), and spoke B (60 s) rekeys its SAs with the hub before the hub would. Rekeys start
//! a tenth of the lifetime early plus up to as much again of jitter: 48-54 s for 60 s, 60-67.5 s
//! for 75 s, so the order is never in doubt. Simultaneous rekeys (RFC 7296 §2.8.1) are the
//! in-memory harness's (crates/ike/tests/harness.rs `simultaneous_*`): here they could only be
//! left to chance. Make-before-break must lose nothing: the new inbound SA is installed before
//! traffic moves to it and the old one is deleted only after (RFC 7296 §2.8).
//!
//! Checked: zero lost pings on both spokes; each spoke's IKE SA and Child SA replaced at least
//! once during the run, spoke A's IKE SA by the hub and spoke B's by spoke B; no replay or
//! integrity drops anywhere; after the run every peer is back to one IKE SA and one Child SA
//! (nothing leaked). Printed: when each rekey was seen,
//! who initiated, packets on the old and new SA, TCP throughput and retransmissions per
//! second around the rekeys, and every non-zero drop counter.
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft`, `ping` and `iperf3`
//! (tests/install-deps.sh). About 115 s.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use dmvpn_tests::e2e::{HUB_TUNNEL, NAT_OUTSIDE, Node, SPOKE_A_NBMA, TestDir, Topology, ping};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::{
    Scenario, e2e_config, edit_config, keys, start_hub_then_spokes, table,
};
use serde_json::Value;

/// How long traffic runs: one rekey of each SA falls in it (the hub's of spoke A's SAs start
/// 60-67.5 s after they came up, spoke B's own 48-54 s).
const RUN_SECS: u64 = 80;
const PING_INTERVAL: &str = "0.01";
const TCP_RATE: &str = "100M";

fn lifetimes(path: &Path, ike: i64, child: i64) {
    edit_config(path, |t| {
        table(t, "ike").insert("lifetime".into(), toml::Value::Integer(ike));
        table(t, "ipsec").insert("lifetime".into(), toml::Value::Integer(child));
    });
}

/// What the hub's `show sa` says of one peer: its IKE SA SPIs and its Child SAs' inbound SPIs.
#[derive(Debug, Default)]
struct Seen {
    ike: BTreeSet<String>,
    child: BTreeSet<String>,
    /// When a new SPI first showed up, seconds into the run, with who initiated the IKE SA.
    events: Vec<String>,
    /// Who initiated each IKE SA that came up during the run ("hub" or "spoke").
    ike_initiators: Vec<&'static str>,
    /// The last packet counts (in, out) seen on each Child SA, by inbound SPI.
    packets: BTreeMap<String, (u64, u64)>,
}

impl Seen {
    fn record(&mut self, peer: &Value, at: f64) {
        if let Some(spi) = peer["ike"]["spi_i"].as_str()
            && self.ike.insert(spi.to_owned())
            && at > 0.0
        {
            let by = if peer["ike"]["initiator"] == true {
                "hub"
            } else {
                "spoke"
            };
            self.events.push(format!(
                "{at:.1} s: new IKE SA {spi} (initiated by the {by})"
            ));
            self.ike_initiators.push(by);
        }
        for c in peer["children"].as_array().into_iter().flatten() {
            if let Some(spi) = c["spi_in"].as_str() {
                let counts = (
                    c["packets_in"].as_u64().unwrap_or(0),
                    c["packets_out"].as_u64().unwrap_or(0),
                );
                self.packets.insert(spi.to_owned(), counts);
            }
            if let Some(spi) = c["spi_in"].as_str()
                && self.child.insert(spi.to_owned())
                && at > 0.0
            {
                self.events
                    .push(format!("{at:.1} s: new Child SA in {spi}"));
            }
        }
    }
}

fn children_summary(peer: &Value) -> String {
    peer["children"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{} in {} pkts / out {} pkts",
                c["spi_in"].as_str().unwrap_or("?"),
                c["packets_in"],
                c["packets_out"]
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// iperf3's JSON: (Mbit/s received, retransmissions, the seconds with the most retransmissions).
fn tcp_summary(json: &str) -> Result<(f64, u64, String), String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("iperf3 output: {e}: {json}"))?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("iperf3: {e}"));
    }
    let end = &v["end"];
    let mbps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| format!("no sum_received in {end}"))?
        / 1e6;
    let retr = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    let mut per_sec: Vec<(u64, f64)> = v["intervals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                i["sum"]["retransmits"].as_u64().unwrap_or(0),
                i["sum"]["start"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    per_sec.sort_by_key(|x| std::cmp::Reverse(x.0));
    let worst = per_sec
        .iter()
        .take(3)
        .map(|(r, t)| format!("{r} at {t:.0} s"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok((mbps, retr, worst))
}

fn drops(s: &Scenario<'_>, node: Node) -> (u64, u64, String) {
    let v = s.show_json(node, "interface");
    let d = &v["drops"];
    let nonzero = d
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(", ");
    (
        d["replay"].as_u64().unwrap_or(0),
        d["auth_failed"].as_u64().unwrap_or(0),
        if nonzero.is_empty() {
            "none".into()
        } else {
            nonzero
        },
    )
}

#[test]
fn rekeys_under_tcp_and_100_pings_per_second_lose_nothing() {
    require_root_and_tools();
    let dir = TestDir::new("rekey-load").unwrap();
    let t = Topology::new().expect("building the topology");
    let k = keys();
    let cfgs = [
        e2e_config(&dir, Node::Hub, &k),
        e2e_config(&dir, Node::SpokeA, &k),
        e2e_config(&dir, Node::SpokeB, &k),
    ];
    lifetimes(&cfgs[0].config, 75, 75);
    lifetimes(&cfgs[1].config, 90, 90);
    lifetimes(&cfgs[2].config, 60, 60);
    let mut s = start_hub_then_spokes("rekey-load", &t, &cfgs);
    s.step("both spokes register");
    s.wait_registered(Node::SpokeA, 0, 0);
    s.wait_registered(Node::SpokeB, 0, 0);
    let peers = [("spoke A", SPOKE_A_NBMA), ("spoke B", NAT_OUTSIDE)];
    // Who must start each spoke's IKE SA rekey, from the lifetimes above.
    let rekeyed_by = ["hub", "spoke"];
    let mut seen: Vec<Seen> = peers.iter().map(|_| Seen::default()).collect();
    for ((_, nbma), seen) in peers.iter().zip(&mut seen) {
        let p = s
            .sa_peer(Node::Hub, nbma)
            .unwrap_or_else(|| s.fail(format!("the hub has no SA with {nbma}")));
        seen.record(&p, 0.0);
    }

    s.step("iperf3 servers on the hub's tunnel address");
    let mut servers = Vec::new();
    for port in ["5201", "5202"] {
        let mut cmd = t.hub.command("iperf3");
        cmd.args(["-s", "-1", "-B", HUB_TUNNEL, "-p", port]);
        let log = dir.path().join(format!("iperf3-server-{port}.log"));
        servers.push(t.hub.spawn(cmd, &log).expect("starting iperf3 -s"));
    }
    s.eventually(
        "iperf3 listening on 5201 and 5202",
        Duration::from_secs(10),
        |_| {
            let out = t.hub.exec("ss", &["-Hltn"]).map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.contains(":5201") && text.contains(":5202") {
                Ok(())
            } else {
                Err(text)
            }
        },
    );

    s.step(&format!(
        "{RUN_SECS} s of TCP at {TCP_RATE} and 100 pings/s from each spoke while the SAs rekey"
    ));
    let pings = (RUN_SECS * 100) as u32;
    let secs = RUN_SECS.to_string();
    let start = Instant::now();
    let results = std::thread::scope(|sc| {
        let mut handles = Vec::new();
        for (ns, port) in [(&t.spoke_a, "5201"), (&t.spoke_b, "5202")] {
            let secs = secs.clone();
            handles.push(sc.spawn(move || {
                let tcp = ns
                    .exec(
                        "iperf3",
                        &[
                            "-c",
                            HUB_TUNNEL,
                            "-p",
                            port,
                            "-t",
                            &secs,
                            "-b",
                            TCP_RATE,
                            "-J",
                            "--connect-timeout",
                            "5000",
                        ],
                    )
                    .map(|o| String::from_utf8_lossy(&o.stdout).to_string());
                (Some(tcp), None)
            }));
            handles
                .push(sc.spawn(move || (None, Some(ping(ns, HUB_TUNNEL, pings, PING_INTERVAL)))));
        }
        // Meanwhile, note every new SPI the hub shows.
        while start.elapsed() < Duration::from_secs(RUN_SECS + 2) {
            let at = start.elapsed().as_secs_f64();
            for ((_, nbma), seen) in peers.iter().zip(&mut seen) {
                if let Some(p) = s.sa_peer(Node::Hub, nbma) {
                    seen.record(&p, at);
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    drop(servers);

    s.step("every ping answered, TCP ran throughout");
    let mut tcp_iter = results.iter().filter_map(|r| r.0.as_ref());
    let mut ping_iter = results.iter().filter_map(|r| r.1.as_ref());
    for (name, _) in peers {
        let tcp = tcp_iter.next().expect("a TCP result per spoke");
        let png = ping_iter.next().expect("a ping result per spoke");
        match tcp {
            Ok(json) => match tcp_summary(json) {
                Ok((mbps, retr, worst)) => s.note(format!(
                    "{name}: TCP {mbps:.0} Mbit/s, {retr} retransmissions (most per second: {worst})"
                )),
                Err(e) => s.fail(format!("{name}: {e}")),
            },
            Err(e) => s.fail(format!("{name}: iperf3: {e:#}")),
        }
        match png {
            Ok((got, out)) => {
                s.note(format!("{name}: {got}/{pings} pings answered"));
                if *got != pings {
                    s.fail_later(format!(
                        "{name}: {} pings lost during the rekeys:\n{out}",
                        pings - got
                    ));
                }
            }
            Err(e) => s.fail(format!("{name}: ping: {e:#}")),
        }
    }

    s.step("each spoke's IKE SA and Child SA were replaced during the run");
    for (((name, nbma), seen), by) in peers.iter().zip(&seen).zip(rekeyed_by) {
        s.note(format!("{name} ({nbma}): {}", seen.events.join("; ")));
        if seen.ike_initiators.iter().any(|i| *i != by) {
            s.fail_later(format!(
                "{name}: IKE SA rekeys initiated by {:?}; the {by} should have started them (shorter lifetime)",
                seen.ike_initiators
            ));
        }
        let per_sa = seen
            .packets
            .iter()
            .map(|(spi, (i, o))| format!("{spi}: in {i} / out {o}"))
            .collect::<Vec<_>>()
            .join("; ");
        s.note(format!(
            "{name}: packets per Child SA, as last seen by the hub: {per_sa}"
        ));
        if seen.ike.len() < 2 || seen.child.len() < 2 {
            s.fail_later(format!(
                "{name}: the hub saw {} IKE SA(s) and {} Child SA(s) in {RUN_SECS} s; a rekey of each was due",
                seen.ike.len(),
                seen.child.len()
            ));
        }
    }

    s.step("no replay or integrity drops; no SA left over");
    for node in [Node::Hub, Node::SpokeA, Node::SpokeB] {
        let (replay, auth, all) = drops(&s, node);
        s.note(format!("{} drops: {all}", node.name()));
        if replay > 0 || auth > 0 {
            s.fail_later(format!(
                "{}: {replay} replay and {auth} integrity drops across the rekeys",
                node.name()
            ));
        }
    }
    for (name, nbma) in peers {
        s.eventually(
            &format!("the hub back to one IKE SA and one Child SA with {name}"),
            Duration::from_secs(20),
            |s| {
                let p = s
                    .sa_peer(Node::Hub, nbma)
                    .ok_or_else(|| "no SA at all".to_string())?;
                let ike = s.show_json(Node::Hub, "ike");
                let ike_sas = ike["sas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|x| {
                        x["remote"]
                            .as_str()
                            .and_then(|r| r.strip_prefix(nbma))
                            .is_some_and(|r| r.starts_with(':'))
                    })
                    .count();
                let children = p["children"].as_array().map_or(0, Vec::len);
                if ike_sas == 1 && children == 1 {
                    s.note(format!("{name}: {}", children_summary(&p)));
                    Ok(())
                } else {
                    Err(format!(
                        "{ike_sas} IKE SAs, children: {}",
                        children_summary(&p)
                    ))
                }
            },
        );
    }
    s.check_no_errors();
    s.check_alive();
    s.finish();
}
