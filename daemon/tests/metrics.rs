//! The Prometheus / OpenMetrics endpoint (issue 15, item 3) of running daemons: a hub and two
//! spokes (spoke B behind the NAT router; topology in `dmvpn_tests::e2e`) with `[metrics]
//! listen` on each namespace's loopback, scraped with curl from inside the namespace. The
//! values must follow what happens (registration up, ESP counters growing with pings, a
//! shortcut timed), the HTTP side must answer as documented (Content-Type, 404), and every
//! scrape must pass `promtool check metrics`.
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft`, `ping`, `curl` and `promtool`
//! (Debian package `prometheus`), all installed by tests/install-deps.sh.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use dmvpn_tests::Netns;
use dmvpn_tests::e2e::{
    HUB_NBMA, HUB_TUNNEL, Keys, NAT_OUTSIDE, Node, NodeConfig, SPOKE_A_LAN_HOST, SPOKE_A_NBMA,
    SPOKE_A_TUNNEL, SPOKE_B_LAN_HOST, SPOKE_B_TUNNEL, TestDir, Topology,
};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::{
    REGISTRATION_TIMEOUT, SETTLE_TIMEOUT, Scenario, e2e_config, edit_config, start_registered,
    table,
};

const LISTEN: &str = "127.0.0.1:9477";
const URL: &str = "http://127.0.0.1:9477/metrics";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The e2e configuration with the endpoint on.
fn metrics_config(dir: &TestDir, node: Node, keys: &Keys) -> NodeConfig {
    let cfg = e2e_config(dir, node, keys);
    edit_config(&cfg.config, |t| {
        table(t, "metrics").insert("listen".into(), toml::Value::String(LISTEN.into()));
    });
    cfg
}

/// One HTTP exchange with curl inside `ns`: (status, headers, body).
fn curl(ns: &Netns, url: &str, extra: &[&str]) -> Result<(u16, String, String), String> {
    let mut args = vec!["-sS", "-i", "--max-time", "5"];
    args.extend_from_slice(extra);
    args.push(url);
    let out = ns.exec("curl", &args).map_err(|e| format!("{e:#}"))?;
    if !out.status.success() {
        return Err(format!(
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header/body boundary in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, head.to_owned(), body.to_owned()))
}

/// A successful OpenMetrics scrape of `ns`'s daemon: the body.
fn scrape(ns: &Netns) -> Result<String, String> {
    let (status, head, body) = curl(ns, URL, &[])?;
    let ct = format!("content-type: {OPENMETRICS}");
    if status != 200 || !head.to_ascii_lowercase().contains(&ct.to_ascii_lowercase()) {
        return Err(format!("want 200 and `{ct}`, got:\n{head}"));
    }
    if !body.ends_with("# EOF\n") {
        return Err(format!("the exposition does not end in `# EOF`:\n{body}"));
    }
    Ok(body)
}

/// The sample lines of `name` whose labels include every `labels` pair.
fn samples<'b>(body: &'b str, name: &str, labels: &[(&str, &str)]) -> Vec<(&'b str, f64)> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            ok.then(|| value.parse().ok().map(|v| (series, v)))?
        })
        .collect()
}

/// The sum of the samples of `name` with `labels`; `Err` when there are none.
fn sum(body: &str, name: &str, labels: &[(&str, &str)]) -> Result<f64, String> {
    let s = samples(body, name, labels);
    if s.is_empty() {
        return Err(format!("no sample {name} with {labels:?}"));
    }
    Ok(s.iter().map(|(_, v)| v).sum())
}

/// `promtool check metrics` on `text` (the Prometheus text format: promtool does not read
/// OpenMetrics' `info` type).
fn promtool(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool (tests/install-deps.sh installs it): {e}"))?;
    child
        .stdin
        .take()
        .ok_or("promtool stdin")?
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// The daemon in `ns` answers a text/plain scrape in the Prometheus format, which promtool
/// accepts.
fn promtool_check(s: &mut Scenario<'_>, ns: &Netns, who: &str) {
    s.eventually(
        &format!("promtool check metrics on {who}"),
        SETTLE_TIMEOUT,
        |_| {
            let (status, head, body) = curl(ns, URL, &["-H", "Accept: text/plain"])?;
            if status != 200 || !head.contains("text/plain; version=0.0.4") {
                return Err(format!("want 200 text/plain 0.0.4, got:\n{head}"));
            }
            if body.contains("# EOF") {
                return Err("the Prometheus text format has no `# EOF`".into());
            }
            promtool(&body)
        },
    );
}

/// Sum of the ESP packets `direction` over `peer`'s Child SAs.
fn sa_packets(body: &str, peer: &str, direction: &str) -> Result<f64, String> {
    sum(
        body,
        "dmvpn_sa_packets_total",
        &[("peer", peer), ("direction", direction)],
    )
}

#[test]
fn scrapes_follow_registration_traffic_and_shortcuts() {
    require_root_and_tools();
    let dir = TestDir::new("metrics").unwrap();
    let t = Topology::new().expect("building the topology");
    let spokes = [Node::SpokeA, Node::SpokeB];
    let (mut s, cfgs) = start_registered("metrics", &t, &dir, &spokes, metrics_config);

    s.step("spoke A: registration with the NHS up, timed, and the router described");
    s.eventually("spoke A's scrape", REGISTRATION_TIMEOUT, |_| {
        let body = scrape(&t.spoke_a)?;
        let up = sum(
            &body,
            "dmvpn_nhrp_nhs_state",
            &[("nhs", HUB_NBMA), ("nhs_tunnel", HUB_TUNNEL), ("state", "up")],
        )?;
        let registering = sum(
            &body,
            "dmvpn_nhrp_nhs_state",
            &[("nhs", HUB_NBMA), ("state", "registering")],
        )?;
        let rtt = sum(
            &body,
            "dmvpn_nhrp_registration_rtt_seconds_count",
            &[("nhs", HUB_NBMA)],
        )?;
        let role = sum(&body, "dmvpn_router_info", &[("role", "spoke")])?;
        let workers = sum(&body, "dmvpn_dataplane_workers", &[])?;
        let provider = samples(&body, "dmvpn_dataplane_info", &[]);
        let established = sum(&body, "dmvpn_ike_sas", &[("state", "established")])?;
        if up != 1.0 || registering != 0.0 || rtt < 1.0 || role != 1.0 || workers < 1.0 {
            return Err(format!(
                "want NHS up (1/0), ≥ 1 timed registration, role spoke, ≥ 1 worker; got up {up}, registering {registering}, rtt count {rtt}, role {role}, workers {workers}"
            ));
        }
        if !provider
            .iter()
            .any(|(l, _)| l.contains("aead_provider=\"ring\"") || l.contains("aead_provider=\"aws-lc-rs\""))
        {
            return Err(format!("no crypto provider in dmvpn_dataplane_info: {provider:?}"));
        }
        if established < 1.0 {
            return Err(format!("no established IKE SA counted: {established}"));
        }
        // Every dataplane drop reason is present, zero or not.
        for reason in ["replay", "auth_failed", "unknown_spi", "underlay_queue_full"] {
            sum(&body, "dmvpn_dataplane_drops_total", &[("reason", reason)])?;
        }
        Ok(())
    });

    s.step("the hub: both spokes registered, by NBMA address (spoke B at the NAT's)");
    s.eventually("the hub's scrape", SETTLE_TIMEOUT, |_| {
        let body = scrape(&t.hub)?;
        for (peer, tunnel) in [
            (SPOKE_A_NBMA, SPOKE_A_TUNNEL),
            (NAT_OUTSIDE, SPOKE_B_TUNNEL),
        ] {
            let v = sum(
                &body,
                "dmvpn_peer_nhrp_state",
                &[("peer", peer), ("tunnel", tunnel), ("state", "registered")],
            )?;
            let established = sum(
                &body,
                "dmvpn_peer_ike_sa_state",
                &[("peer", peer), ("state", "established")],
            )?;
            // Present for a peer with an IKE SA (its value is whole seconds, maybe 0).
            sum(&body, "dmvpn_peer_ike_sa_age_seconds", &[("peer", peer)])?;
            if v != 1.0 || established != 1.0 {
                return Err(format!(
                    "{peer}: registered {v}, IKE SA established {established}"
                ));
            }
        }
        let role = sum(&body, "dmvpn_router_info", &[("role", "hub")])?;
        let omitted = sum(&body, "dmvpn_metrics_peers_omitted", &[])?;
        let regs = sum(
            &body,
            "dmvpn_nhrp_packets_total",
            &[("direction", "in"), ("type", "registration_request")],
        )?;
        if role != 1.0 || omitted != 0.0 || regs < 2.0 {
            return Err(format!(
                "want role hub, 0 omitted, ≥ 2 registrations in; got {role}, {omitted}, {regs}"
            ));
        }
        Ok(())
    });

    s.step("pings over spoke A's SA to the hub: its ESP counters grow");
    let before = s.eventually("spoke A's ESP counters", SETTLE_TIMEOUT, |_| {
        let body = scrape(&t.spoke_a)?;
        Ok((
            sa_packets(&body, HUB_NBMA, "out")?,
            sa_packets(&body, HUB_NBMA, "in")?,
            sum(&body, "dmvpn_tunnel_packets_total", &[("direction", "out")])?,
        ))
    });
    s.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);
    s.eventually(
        "spoke A's ESP counters after 4 pings",
        SETTLE_TIMEOUT,
        |_| {
            let body = scrape(&t.spoke_a)?;
            let now = (
                sa_packets(&body, HUB_NBMA, "out")?,
                sa_packets(&body, HUB_NBMA, "in")?,
                sum(&body, "dmvpn_tunnel_packets_total", &[("direction", "out")])?,
            );
            // Echoes 2..4 are answered (Scenario::reach): at least 3 each way.
            if now.0 < before.0 + 3.0 || now.1 < before.1 + 3.0 || now.2 < before.2 + 3.0 {
                return Err(format!(
                    "before {before:?}, now {now:?} (SA out, SA in, tunnel out)"
                ));
            }
            let bytes = sum(
                &body,
                "dmvpn_sa_inner_bytes_total",
                &[("peer", HUB_NBMA), ("direction", "out")],
            )?;
            if bytes < 3.0 * 84.0 {
                return Err(format!("SA bytes out {bytes}: less than 3 pings"));
            }
            // Each ESP packet is its inner packet plus GRE (8), ESP's header and IV (16), 0-3
            // bytes of padding, the trailer (2) and the ICV (16): RFC 4303 §2, RFC 4106 §3.
            let esp = sum(
                &body,
                "dmvpn_sa_esp_bytes_total",
                &[("peer", HUB_NBMA), ("direction", "out")],
            )?;
            let overhead = esp - bytes;
            if overhead < 42.0 * now.0 || overhead > 45.0 * now.0 {
                return Err(format!(
                    "SA ESP bytes out {esp} for {bytes} inner bytes in {} packets",
                    now.0
                ));
            }
            Ok(())
        },
    );

    s.step("spoke-to-spoke traffic: the shortcut on spoke A is timed stage by stage");
    s.wait_shortcuts(
        &[SPOKE_B_LAN_HOST, SPOKE_B_TUNNEL],
        &[SPOKE_A_LAN_HOST, SPOKE_A_TUNNEL],
        Duration::from_secs(20),
    );
    s.eventually("spoke A's shortcut histograms", SETTLE_TIMEOUT, |_| {
        let body = scrape(&t.spoke_a)?;
        let count = |n: &str| sum(&body, n, &[]);
        let setup = count("dmvpn_shortcut_setup_seconds_count")?;
        let resolution = count("dmvpn_shortcut_resolution_seconds_count")?;
        let sa_wait = count("dmvpn_shortcut_sa_wait_seconds_count")?;
        let route = count("dmvpn_shortcut_route_seconds_count")?;
        let setup_sum = count("dmvpn_shortcut_setup_seconds_sum")?;
        let resolution_sum = count("dmvpn_shortcut_resolution_seconds_sum")?;
        let installed = count("dmvpn_shortcuts_installed_total")?;
        let rtt = count("dmvpn_nhrp_resolution_rtt_seconds_count")?;
        let shortcuts = sum(&body, "dmvpn_nhrp_cache_entries", &[("kind", "shortcut")])?;
        if setup < 1.0 || resolution != setup || sa_wait != setup || route != setup {
            return Err(format!(
                "want ≥ 1 timed shortcut, each stage once: setup {setup}, resolution {resolution}, sa_wait {sa_wait}, route {route}"
            ));
        }
        // The whole setup includes the resolution and an IKE exchange with spoke B.
        if !(setup_sum >= resolution_sum && setup_sum > 0.0 && setup_sum < 30.0) {
            return Err(format!("setup {setup_sum} s, resolution {resolution_sum} s"));
        }
        if installed < 1.0 || rtt < 1.0 || shortcuts < 1.0 {
            return Err(format!(
                "installed {installed}, resolution RTTs {rtt}, shortcut cache entries {shortcuts}"
            ));
        }
        // The direct SA to spoke B (behind the NAT) has series of its own.
        sa_packets(&body, NAT_OUTSIDE, "out").map(|_| ())
    });

    s.step("promtool accepts every daemon's scrape");
    for (ns, who) in [
        (&t.hub, "the hub"),
        (&t.spoke_a, "spoke A"),
        (&t.spoke_b, "spoke B"),
    ] {
        promtool_check(&mut s, ns, who);
    }

    s.step("other paths and methods are refused; HEAD has no body");
    s.eventually("HTTP refusals", SETTLE_TIMEOUT, |_| {
        let (status, _, body) = curl(&t.spoke_a, "http://127.0.0.1:9477/", &[])?;
        if status != 404 || body.contains("dmvpn_") {
            return Err(format!(
                "GET /: want 404 without metrics, got {status}: {body}"
            ));
        }
        let (status, head, _) = curl(&t.spoke_a, URL, &["-X", "POST"])?;
        if status != 405 || !head.contains("Allow: GET, HEAD") {
            return Err(format!("POST /metrics: want 405 with Allow, got:\n{head}"));
        }
        let (status, _, body) = curl(&t.spoke_a, URL, &["-I"])?;
        if status != 200 || !body.is_empty() {
            return Err(format!(
                "HEAD /metrics: want 200 and no body, got {status}: {body:?}"
            ));
        }
        Ok(())
    });

    s.step("the hub with max-peers = 1 (reloaded): one peer with series, one omitted");
    let hub_peers = |body: &str| {
        let mut p: Vec<String> = samples(body, "dmvpn_peer_nhrp_state", &[("state", "registered")])
            .iter()
            .filter_map(|(l, _)| {
                l.split("peer=\"")
                    .nth(1)?
                    .split('"')
                    .next()
                    .map(str::to_owned)
            })
            .collect();
        p.dedup();
        p
    };
    edit_config(&cfgs[0].config, |t| {
        table(t, "metrics").insert("max-peers".into(), toml::Value::Integer(1));
    });
    s.ctl_ok(Node::Hub, &["reload"]);
    s.eventually("the hub's capped scrape", SETTLE_TIMEOUT, |_| {
        let body = scrape(&t.hub)?;
        let omitted = sum(&body, "dmvpn_metrics_peers_omitted", &[])?;
        let total = sum(&body, "dmvpn_peers", &[])?;
        let shown = hub_peers(&body);
        let sa_peers = samples(&body, "dmvpn_sa_packets_total", &[])
            .iter()
            .any(|(l, _)| !l.contains(&format!("peer=\"{}\"", shown.first().map_or("", |p| p.as_str()))));
        // The router-wide series still count every peer's traffic.
        let regs = sum(
            &body,
            "dmvpn_nhrp_packets_total",
            &[("direction", "in"), ("type", "registration_request")],
        )?;
        if shown.len() != 1 || omitted < 1.0 || total < 2.0 || sa_peers || regs < 2.0 {
            return Err(format!(
                "want 1 peer shown and the others omitted; got peers {shown:?}, omitted {omitted}, total {total}, SA series of other peers {sa_peers}, registrations {regs}"
            ));
        }
        Ok(())
    });
    promtool_check(&mut s, &t.hub, "the capped hub");

    s.check_no_errors();
    s.finish();
}
