//! The fault suite's operator case (issue 14, item 5): `dmvpnctl reload` and `clear sa` on a
//! spoke while iperf3 TCP runs through the tunnel. A reload that only adds a route keeps the
//! SAs and does not disturb the transfer; `clear sa` costs a moment (IKE, Child SA and the
//! registration come back) and TCP carries on. The per-second throughput is printed.
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft`, `ping` and `iperf3`
//! (tests/install-deps.sh).

use std::time::{Duration, Instant};

use dmvpn_tests::e2e::{HUB_NBMA, HUB_TUNNEL, Node, TestDir, Topology, routes_with_proto};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::{
    PROTO_DMVPND, Scenario, e2e_config, edit_config, expect, start_registered,
};
use serde_json::Value;

/// A prefix no test node uses (TEST-NET-1), for the static route the reload adds.
const EXTRA_PREFIX: &str = "192.0.2.0/24";
const RUN_SECS: u64 = 30;
const RELOAD_AT: Duration = Duration::from_secs(8);
const CLEAR_AT: Duration = Duration::from_secs(16);
/// Longest TCP may stall after `clear sa`: IKE_SA_INIT + IKE_AUTH and a registration on an
/// idle machine take milliseconds; TCP's retransmission back-off adds up to a second or two.
const CLEAR_STALL_LIMIT: usize = 4;

/// Spoke A's IKE SA with the hub: (initiator SPI, state).
fn spoke_sa(s: &Scenario<'_>) -> Option<(String, String)> {
    let sa = s.ike_sa(Node::SpokeA, HUB_NBMA)?;
    Some((
        sa["spi_i"].as_str()?.to_owned(),
        sa["state"].as_str()?.to_owned(),
    ))
}

/// Bits per second of each one-second interval of iperf3's JSON report.
fn per_second(json: &str) -> Result<Vec<f64>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("iperf3 output: {e}: {json}"))?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("iperf3: {e}"));
    }
    Ok(v["intervals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["sum"]["bits_per_second"].as_f64().unwrap_or(0.0))
        .collect())
}

/// Intervals in `range` carrying less than a tenth of the run's median: stalled seconds.
fn stalled(bps: &[f64], range: std::ops::Range<usize>) -> usize {
    let mut sorted = bps.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    bps.get(range)
        .unwrap_or_default()
        .iter()
        .filter(|b| **b < median / 10.0)
        .count()
}

#[test]
fn reload_and_clear_sa_on_a_spoke_under_tcp_load() {
    require_root_and_tools();
    let dir = TestDir::new("faults-ops-load").unwrap();
    let t = Topology::new().expect("building the topology");
    let (mut s, cfgs) = start_registered("faults-ops-load", &t, &dir, &[Node::SpokeA], e2e_config);
    s.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);
    let (spi, _) = s.eventually("spoke A's IKE SA", Duration::from_secs(5), |s| {
        spoke_sa(s).ok_or_else(|| "no IKE SA with the hub on spoke A".to_owned())
    });

    s.step("an iperf3 server on the hub's tunnel address");
    let mut cmd = t.hub.command("iperf3");
    cmd.args(["-s", "-1", "-B", HUB_TUNNEL]);
    let server = t
        .hub
        .spawn(cmd, &dir.path().join("iperf3-server.log"))
        .expect("iperf3 -s");
    s.eventually("iperf3 listening", Duration::from_secs(10), |_| {
        let out = t.hub.exec("ss", &["-Hltn"]).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains(":5201").then_some(()).ok_or(text)
    });

    s.step(&format!(
        "{RUN_SECS} s of TCP spoke A → hub; reload at {RELOAD_AT:?}, clear sa at {CLEAR_AT:?}"
    ));
    let secs = RUN_SECS.to_string();
    let start = Instant::now();
    let mut clear_back = None;
    let json = std::thread::scope(|sc| {
        let client = sc.spawn(|| {
            t.spoke_a
                .exec(
                    "iperf3",
                    &[
                        "-c",
                        HUB_TUNNEL,
                        "-t",
                        &secs,
                        "-b",
                        "100M",
                        "-J",
                        "--connect-timeout",
                        "5000",
                    ],
                )
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        });

        std::thread::sleep(RELOAD_AT.saturating_sub(start.elapsed()));
        edit_config(&cfgs[1].config, |c| {
            let routes = c
                .get_mut("route")
                .and_then(toml::Value::as_array_mut)
                .expect("spoke A's configuration has [[route]]");
            let mut route = toml::Table::new();
            route.insert("prefix".into(), EXTRA_PREFIX.into());
            route.insert("via".into(), HUB_TUNNEL.into());
            routes.push(toml::Value::Table(route));
        });
        let from = s.log_len(Node::SpokeA);
        let out = s.ctl_ok(Node::SpokeA, &["reload"]);
        if out.trim() != "configuration reloaded" {
            s.fail(format!("dmvpnctl reload printed {out:?}"));
        }
        s.wait_line(
            Node::SpokeA,
            "configuration reloaded",
            from,
            Duration::from_secs(5),
            &expect::reloaded,
        );
        s.eventually(
            "the reload's route installed",
            Duration::from_secs(5),
            |_| {
                routes_with_proto(&t.spoke_a, PROTO_DMVPND)
                    .unwrap_or_default()
                    .iter()
                    .any(|r| r["dst"] == EXTRA_PREFIX)
                    .then_some(())
                    .ok_or_else(|| format!("{EXTRA_PREFIX} not routed"))
            },
        );
        match spoke_sa(&s) {
            Some((after, _)) if after == spi => {}
            other => s.fail(format!("the reload replaced the IKE SA: {spi} → {other:?}")),
        }

        std::thread::sleep(CLEAR_AT.saturating_sub(start.elapsed()));
        let cleared = Instant::now();
        let out = s.ctl_ok(Node::SpokeA, &["clear", "sa", HUB_NBMA]);
        if out.trim().is_empty() {
            s.fail("clear sa printed nothing");
        }
        let back = s.poll(
            "a new IKE SA with the hub on spoke A",
            Duration::from_secs(20),
            |s| {
                spoke_sa(s)
                    .filter(|(id, state)| *id != spi && state == "established")
                    .map(|_| cleared.elapsed())
            },
        );
        clear_back = Some(back);
        client.join().expect("iperf3 client thread")
    });
    drop(server);

    s.step("TCP carried on: no stall at the reload, a short one at the clear");
    let json = json.unwrap_or_else(|e| s.fail(format!("iperf3: {e:#}")));
    let bps = per_second(&json).unwrap_or_else(|e| s.fail(e));
    let series = bps
        .iter()
        .map(|b| format!("{:.0}", b / 1e6))
        .collect::<Vec<_>>()
        .join(" ");
    let reload_s = RELOAD_AT.as_secs() as usize;
    let clear_s = CLEAR_AT.as_secs() as usize;
    let at_reload = stalled(&bps, reload_s.saturating_sub(1)..clear_s - 1);
    let at_clear = stalled(&bps, clear_s - 1..bps.len());
    s.note(format!(
        "Mbit/s per second: {series}; stalled seconds: {at_reload} around the reload, \
         {at_clear} after the clear; new IKE SA {:.1?} after the clear",
        clear_back.unwrap_or_default()
    ));
    if bps.len() + 1 < RUN_SECS as usize {
        s.fail(format!(
            "iperf3 reported {} of {RUN_SECS} seconds",
            bps.len()
        ));
    }
    if at_reload > 0 {
        s.fail(format!("TCP stalled {at_reload} s around the reload"));
    }
    if at_clear > CLEAR_STALL_LIMIT {
        s.fail(format!(
            "TCP stalled {at_clear} s after the clear (limit {CLEAR_STALL_LIMIT})"
        ));
    }
    if stalled(&bps, bps.len().saturating_sub(5)..bps.len()) > 0 {
        s.fail("TCP did not recover after the clear");
    }
    s.check_alive();
    s.finish();
}
