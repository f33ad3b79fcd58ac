//! The exposition of a scrape built from the API's example reports and a few recorded events:
//! names, labels and values as docs/metrics.md lists them, in both text formats.

use std::time::{Duration, Instant};

use dmvpn_api::fixtures;
use dmvpn_node::Event;

use super::*;

/// A scrape of the example reports with `recorder`'s events (also for the HTTP tests).
pub(crate) fn scrape(recorder: Recorder) -> Scrape {
    let nhrp = fixtures::nhrp();
    Scrape {
        role: "spoke",
        interface: "dmvpn0".into(),
        tunnel_addr: "10.250.0.9/24".into(),
        dataplane: DataplaneInfo {
            workers: 2,
            offload: true,
            udp_gro: false,
            aead_provider: "ring",
            aead_choice: "auto",
        },
        peers: fixtures::sa().peers,
        peers_omitted: 3,
        ike_states: vec![IkeState::Established, IkeState::Negotiating],
        backoff_peers: 1,
        dpd_probes: (7, 6),
        nhs: nhrp.nhs,
        nhrp: nhrp.counters,
        nhrp_cache: vec![("dynamic", 2), ("shortcut", 1)],
        interface_counters: fixtures::interface(),
        recorder,
    }
}

fn line<'a>(text: &'a str, start: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting `{start}` in\n{text}"))
}

#[test]
fn openmetrics_exposition_from_reports_and_events() {
    let r = Recorder::new();
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    r.observe(
        t0 + ms(300),
        &Event::ShortcutTimed {
            prefix: "10.0.2.0".parse().unwrap(),
            prefix_len: 24,
            via: "10.250.0.12".parse().unwrap(),
            requested: t0,
            replied: t0 + ms(20),
            sa_up: t0 + ms(200),
        },
    );
    r.observe(
        t0,
        &Event::NhrpAnswered {
            kind: dmvpn_nhrp::RequestKind::Registration,
            target: "198.51.100.1".parse().unwrap(),
            rtt: ms(3),
            accepted: true,
        },
    );
    r.observe(
        t0,
        &Event::RegistrationTimedOut {
            nbma: "198.51.100.1".parse().unwrap(),
        },
    );
    r.observe(
        t0,
        &Event::DpdDead {
            peer: "198.51.100.7".parse().unwrap(),
            stale: false,
        },
    );
    for _ in 0..3 {
        r.observe(
            t0,
            &Event::IkeSaRekeyed {
                peer: "198.51.100.7".parse().unwrap(),
            },
        );
    }
    r.observe(
        t0,
        &Event::CrossedSetup {
            peer: "198.51.100.7".parse().unwrap(),
        },
    );
    let peer = fixtures::sa().peers[0].clone();
    let ike_peer = match peer.post_nat_nbma.unwrap_or(peer.nbma) {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(_) => unreachable!("the fixture's peer is IPv4"),
    };
    for _ in 0..2 {
        r.observe(
            t0,
            &Event::ChildSaInstalled {
                peer: ike_peer,
                spi_in: 1,
                spi_out: 2,
                udp_encap: true,
                rekey: true,
            },
        );
    }
    r.observe(t0, &Event::IkeSaRekeyed { peer: ike_peer });
    let text = scrape(r.clone()).render(Format::OpenMetrics).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let labels = format!(
        "peer=\"{}\",tunnel=\"{}\"",
        ike_peer,
        peer.tunnel_addr.unwrap()
    );
    let c = &peer.children[0];
    assert_eq!(
        line(
            &text,
            &format!(
                "dmvpn_sa_packets_total{{{labels},spi_in=\"{}\",spi_out=\"{}\",direction=\"in\"}}",
                c.spi_in, c.spi_out
            )
        )
        .rsplit(' ')
        .next(),
        Some(c.packets_in.to_string().as_str())
    );
    assert!(text.contains("# TYPE dmvpn_sa_packets counter\n"));
    assert!(text.contains(&format!("dmvpn_peer_child_sa_rekeys_total{{{labels}}} 2\n")));
    assert!(text.contains(&format!("dmvpn_peer_ike_sa_rekeys_total{{{labels}}} 1\n")));
    assert!(text.contains("dmvpn_child_sa_rekeys_total 2\n"));
    assert!(text.contains(&format!(
        "dmvpn_peer_nhrp_state{{{labels},state=\"up\"}} 1\n"
    )));
    assert!(text.contains(&format!(
        "dmvpn_peer_nhrp_state{{{labels},state=\"registered\"}} 0\n"
    )));
    assert!(text.contains("# UNIT dmvpn_peer_ike_sa_age_seconds seconds\n"));
    assert!(text.contains("dmvpn_router_info{version=\""));
    assert!(text.contains(
        "dmvpn_dataplane_info{aead_provider=\"ring\",aead_choice=\"auto\",offload=\"true\",udp_gro=\"false\"} 1\n"
    ));
    assert!(text.contains("dmvpn_dataplane_workers 2\n"));
    assert!(text.contains("dmvpn_metrics_peers_omitted 3\n"));
    assert!(text.contains("dmvpn_peers 4\n"));
    assert!(text.contains("dmvpn_ike_sas{state=\"negotiating\"} 1\n"));
    assert!(text.contains("dmvpn_ike_sas{state=\"deleting\"} 0\n"));
    for reason in fixtures::DATAPLANE_DROPS {
        assert!(
            text.contains(&format!(
                "dmvpn_dataplane_drops_total{{reason=\"{reason}\"}} "
            )),
            "{reason}"
        );
    }
    assert!(
        text.contains("dmvpn_nhrp_packets_total{direction=\"in\",type=\"traffic_indication\"} ")
    );
    // The histograms: the stages of the one shortcut (20 ms, 180 ms, 100 ms; 300 ms in all).
    assert!(text.contains("dmvpn_shortcut_resolution_seconds_sum 0.02\n"));
    assert!(text.contains("dmvpn_shortcut_resolution_seconds_bucket{le=\"0.025\"} 1\n"));
    assert!(text.contains("dmvpn_shortcut_resolution_seconds_bucket{le=\"0.01\"} 0\n"));
    assert!(text.contains("dmvpn_shortcut_sa_wait_seconds_bucket{le=\"0.25\"} 1\n"));
    assert!(text.contains("dmvpn_shortcut_route_seconds_sum 0.1"));
    assert!(text.contains("dmvpn_shortcut_setup_seconds_count 1\n"));
    assert!(text.contains("dmvpn_nhrp_registration_rtt_seconds_count{nhs=\"198.51.100.1\"} 1\n"));
    assert!(text.contains(
        "dmvpn_nhrp_registration_failures_total{nhs=\"198.51.100.1\",reason=\"timeout\"} 1\n"
    ));
    assert!(text.contains("dmvpn_dpd_events_total{event=\"peer_dead\"} 1\n"));
    assert!(
        text.contains("dmvpn_dpd_probes_total{outcome=\"sent\"} 7\n"),
        "{text}"
    );
    assert!(text.contains("dmvpn_dpd_probes_total{outcome=\"answered\"} 6\n"));
    assert!(text.contains("dmvpn_ike_sa_rekeys_total 4\n"), "{text}");
    assert!(text.contains("dmvpn_ike_crossed_setups_total 1\n"));

    // The peer goes down: its rekey count goes with it.
    r.observe(t0, &Event::PeerDown { peer: ike_peer });
    let text = scrape(r).render(Format::Prometheus).unwrap();
    assert!(!text.contains("# EOF"));
    assert!(text.contains("# TYPE dmvpn_router_info gauge\n"), "{text}");
    assert!(text.contains(&format!("dmvpn_peer_child_sa_rekeys_total{{{labels}}} 0\n")));
    assert!(text.contains(&format!("dmvpn_peer_ike_sa_rekeys_total{{{labels}}} 0\n")));
    assert!(text.contains("dmvpn_child_sa_rekeys_total 2\n"));
}

#[test]
fn format_negotiation() {
    assert_eq!(Format::negotiate(None), Format::OpenMetrics);
    assert_eq!(Format::negotiate(Some("*/*")), Format::OpenMetrics);
    assert_eq!(
        Format::negotiate(Some("text/plain;version=0.0.4")),
        Format::Prometheus
    );
    assert_eq!(
        Format::negotiate(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )),
        Format::OpenMetrics
    );
    assert_eq!(Format::OpenMetrics.content_type(), CONTENT_TYPE);
}

/// docs/grafana-dmvpnd.json queries only series the exposition has (a renamed metric would
/// leave a dashboard panel silently empty).
#[test]
fn grafana_dashboard_uses_exposed_names() {
    let r = Recorder::new();
    let t0 = Instant::now();
    for ev in [
        Event::ShortcutTimed {
            prefix: "10.0.2.0".parse().unwrap(),
            prefix_len: 24,
            via: "10.250.0.12".parse().unwrap(),
            requested: t0,
            replied: t0,
            sa_up: t0,
        },
        Event::NhrpAnswered {
            kind: dmvpn_nhrp::RequestKind::Registration,
            target: "198.51.100.1".parse().unwrap(),
            rtt: Duration::from_millis(1),
            accepted: true,
        },
        Event::RegistrationTimedOut {
            nbma: "198.51.100.1".parse().unwrap(),
        },
        Event::DpdDead {
            peer: "198.51.100.7".parse().unwrap(),
            stale: true,
        },
    ] {
        r.observe(t0, &ev);
    }
    let text = scrape(r).render(Format::OpenMetrics).unwrap();
    let exposed: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana-dmvpnd.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() > 10, "{exprs:?}");
    for e in &exprs {
        for (i, _) in e.match_indices("dmvpn_") {
            let name: String = e[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exposed.contains(name.as_str()),
                "{name} (in `{e}`) is not exposed"
            );
        }
    }
}
