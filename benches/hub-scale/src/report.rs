//! The result of one run: the table printed at the end and the JSON written with `--json`.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::spoke::Counters;
use crate::stats::{ProcSample, ms, percentile};

/// One timed `dmvpnctl show … --json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShowResult {
    /// `dmvpn` or `nhrp`.
    pub what: String,
    /// Wall time of the dmvpnctl process.
    pub elapsed: Duration,
    /// Rows listed: peers (dmvpn) or cache entries (nhrp).
    pub rows: Option<u64>,
    /// Rows in state UP (dmvpn only).
    pub up: Option<u64>,
    /// Bytes of JSON printed.
    pub bytes: usize,
    /// Why it failed.
    pub error: Option<String>,
}

impl ShowResult {
    /// A failed call.
    pub fn failed(what: &str, elapsed: Duration, error: String) -> Self {
        Self {
            what: what.to_owned(),
            elapsed,
            rows: None,
            up: None,
            bytes: 0,
            error: Some(error),
        }
    }
}

/// Reads what `dmvpnctl show WHAT --json` printed: the report itself, or the socket's
/// `{"ok":…,"data":…}` envelope around it.
pub fn parse_show(what: &str, elapsed: Duration, out: &[u8]) -> ShowResult {
    let v: Value = match serde_json::from_slice(out) {
        Ok(v) => v,
        Err(e) => return ShowResult::failed(what, elapsed, format!("not JSON: {e}")),
    };
    let d = v.get("data").unwrap_or(&v);
    let key = if what == "dmvpn" { "peers" } else { "entries" };
    let Some(rows) = d.get(key).and_then(Value::as_array) else {
        return ShowResult::failed(what, elapsed, format!("no \"{key}\" array in the answer"));
    };
    let up = (what == "dmvpn").then(|| {
        rows.iter()
            .filter(|p| p.get("state").and_then(Value::as_str) == Some("UP"))
            .count() as u64
    });
    ShowResult {
        what: what.to_owned(),
        elapsed,
        rows: Some(rows.len() as u64),
        up,
        bytes: out.len(),
        error: None,
    }
}

/// One sample of the soak.
#[derive(Debug, Clone, Copy)]
pub struct SoakSample {
    /// Since the soak began.
    pub t: Duration,
    /// Hub RSS, bytes.
    pub hub_rss: Option<u64>,
    /// Hub utime + stime, ticks.
    pub hub_cpu_ticks: Option<u64>,
    /// Spokes registered at that moment.
    pub spokes_up: u32,
}

/// Everything one run measured.
#[derive(Debug)]
pub struct Report {
    pub label: String,
    pub spokes: u32,
    pub in_flight: u32,
    pub natt: bool,
    pub registered: u32,
    /// First IKE_SA_INIT to the last first registration (or the timeout).
    pub setup: Duration,
    pub per_second: Vec<u64>,
    pub hub_cpu_pct_per_second: Vec<f64>,
    pub hub_before: Option<ProcSample>,
    pub hub_after: Option<ProcSample>,
    pub clock_ticks: f64,
    pub gen_cpu: Duration,
    pub handshakes: Vec<Duration>,
    pub registration_latency: Vec<Duration>,
    pub shows: Vec<ShowResult>,
    pub soak_secs: u64,
    pub soak_samples: Vec<SoakSample>,
    pub hub_soak: (Option<ProcSample>, Option<ProcSample>),
    pub gen_cpu_soak: Duration,
    pub spokes_up_at_end: u32,
    pub counters: Counters,
    pub counters_soak: Counters,
    pub send_errors: u64,
}

/// `b - a` field by field.
pub fn counter_delta(a: &Counters, b: &Counters) -> Counters {
    let mut d = b.clone();
    for (x, y) in d.fields_mut().into_iter().zip(a.fields()) {
        *x = x.saturating_sub(y);
    }
    d
}

fn opt_ms(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(ms(d)))
}

impl Report {
    fn hub_cpu(&self) -> Option<Duration> {
        let (a, b) = (self.hub_before?, self.hub_after?);
        Some(Duration::from_secs_f64(
            b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / self.clock_ticks,
        ))
    }

    fn rate(&self) -> f64 {
        f64::from(self.registered) / self.setup.as_secs_f64().max(1e-9)
    }

    fn per_spoke(&self, d: Duration) -> Duration {
        d / self.registered.max(1)
    }

    fn rss_per_spoke(&self) -> Option<f64> {
        let (a, b) = (self.hub_before?, self.hub_after?);
        Some((b.rss as f64 - a.rss as f64) / f64::from(self.registered.max(1)))
    }

    /// The human-readable summary.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let p = |v: &[Duration], q: f64| {
            percentile(v, q).map_or("-".into(), |d| format!("{:.1}", ms(d)))
        };
        let _ = writeln!(
            s,
            "\nhub-scale {}: {} spokes, {} in flight{}",
            self.label,
            self.spokes,
            self.in_flight,
            if self.natt { ", NAT-T" } else { "" }
        );
        let _ = writeln!(s, "| metric | value |\n|---|---|");
        let _ = writeln!(s, "| registered | {} of {} |", self.registered, self.spokes);
        let _ = writeln!(
            s,
            "| time to register all | {:.2} s |",
            self.setup.as_secs_f64()
        );
        let _ = writeln!(s, "| registrations/s (mean) | {:.0} |", self.rate());
        if let Some(c) = self.hub_cpu() {
            let _ = writeln!(
                s,
                "| hub CPU | {:.2} s ({:.0} % of the setup time), {:.2} ms per spoke |",
                c.as_secs_f64(),
                c.as_secs_f64() / self.setup.as_secs_f64().max(1e-9) * 100.0,
                ms(self.per_spoke(c))
            );
        }
        if let (Some(a), Some(b)) = (self.hub_before, self.hub_after) {
            let _ = writeln!(
                s,
                "| hub RSS | {:.1} MB before, {:.1} MB after; {:.2} kB per spoke |",
                a.rss as f64 / 1e6,
                b.rss as f64 / 1e6,
                self.rss_per_spoke().unwrap_or(0.0) / 1e3
            );
        }
        let _ = writeln!(
            s,
            "| IKE handshake (SA_INIT+AUTH) p50 / p99 / max | {} / {} / {} ms |",
            p(&self.handshakes, 50.0),
            p(&self.handshakes, 99.0),
            p(&self.handshakes, 100.0)
        );
        let _ = writeln!(
            s,
            "| first IKE_SA_INIT to registration reply p50 / p99 | {} / {} ms |",
            p(&self.registration_latency, 50.0),
            p(&self.registration_latency, 99.0)
        );
        for sh in &self.shows {
            match &sh.error {
                None => {
                    let _ = writeln!(
                        s,
                        "| dmvpnctl show {} --json | {:.0} ms, {} rows{}, {:.1} MB |",
                        sh.what,
                        ms(sh.elapsed),
                        sh.rows.unwrap_or(0),
                        sh.up.map_or(String::new(), |u| format!(" ({u} UP)")),
                        sh.bytes as f64 / 1e6
                    );
                }
                Some(e) => {
                    let _ = writeln!(
                        s,
                        "| dmvpnctl show {} --json | failed after {:.0} ms: {e} |",
                        sh.what,
                        ms(sh.elapsed)
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            "| generator CPU | {:.2} s, {:.2} ms per spoke |",
            self.gen_cpu.as_secs_f64(),
            ms(self.per_spoke(self.gen_cpu))
        );
        let _ = writeln!(
            s,
            "| registrations per 1 s bucket | {} |",
            self.per_second
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        if !self.hub_cpu_pct_per_second.is_empty() {
            let _ = writeln!(
                s,
                "| hub CPU % per 1 s | {} |",
                self.hub_cpu_pct_per_second
                    .iter()
                    .map(|c| format!("{c:.0}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        if self.soak_secs > 0 {
            let rss: Vec<String> = self
                .soak_samples
                .iter()
                .map(|x| {
                    x.hub_rss
                        .map_or("?".into(), |r| format!("{:.1}", r as f64 / 1e6))
                })
                .collect();
            let _ = writeln!(
                s,
                "| soak {} s: hub RSS MB per sample | {} |",
                self.soak_secs,
                rss.join(" ")
            );
            if let (Some(a), Some(b)) = self.hub_soak {
                let _ = writeln!(
                    s,
                    "| soak: hub CPU, RSS change | {:.2} s, {:+.1} MB |",
                    b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / self.clock_ticks,
                    (b.rss as f64 - a.rss as f64) / 1e6
                );
            }
            let c = &self.counters_soak;
            let _ = writeln!(
                s,
                "| soak: spokes up at the end; IKE rx/tx (DPD); NHRP rx/tx (refreshes); NAT keepalives; SAs lost | {} of {}; {}/{}; {}/{}; {}; {} |",
                self.spokes_up_at_end,
                self.spokes,
                c.ike_rx,
                c.ike_tx,
                c.nhrp_rx,
                c.nhrp_tx,
                c.keepalives_tx,
                c.ike_down + c.peer_dead
            );
        }
        let c = &self.counters;
        let _ = writeln!(
            s,
            "| failures: establish / auth / child / refused / peer dead / send errors / bad ESP | {} / {} / {} / {} / {} / {} / {} |",
            c.establish_failed,
            c.auth_failed,
            c.child_failed,
            c.refused,
            c.peer_dead,
            self.send_errors,
            c.esp_rx_bad
        );
        s
    }

    /// The JSON result.
    pub fn json(&self) -> Value {
        let pct = |v: &[Duration]| {
            json!({
                "p50": opt_ms(percentile(v, 50.0)),
                "p90": opt_ms(percentile(v, 90.0)),
                "p99": opt_ms(percentile(v, 99.0)),
                "max": opt_ms(percentile(v, 100.0)),
                "count": v.len(),
            })
        };
        let shows: Vec<Value> = self
            .shows
            .iter()
            .map(|s| {
                json!({
                    "what": s.what, "ms": ms(s.elapsed), "rows": s.rows, "up": s.up,
                    "bytes": s.bytes, "error": s.error,
                })
            })
            .collect();
        let soak: Vec<Value> = self
            .soak_samples
            .iter()
            .map(|x| {
                json!({"t_s": x.t.as_secs_f64(), "hub_rss_bytes": x.hub_rss,
                            "hub_cpu_ticks": x.hub_cpu_ticks, "spokes_up": x.spokes_up})
            })
            .collect();
        json!({
            "label": self.label,
            "spokes": self.spokes,
            "in_flight": self.in_flight,
            "natt": self.natt,
            "registered": self.registered,
            "time_to_register_all_s": self.setup.as_secs_f64(),
            "registrations_per_s": self.rate(),
            "registrations_per_1s_bucket": self.per_second,
            "hub_cpu_pct_per_1s": self.hub_cpu_pct_per_second,
            "hub_cpu_s": self.hub_cpu().map(|d| d.as_secs_f64()),
            "hub_cpu_per_spoke_ms": self.hub_cpu().map(|d| ms(self.per_spoke(d))),
            "hub_rss_before_bytes": self.hub_before.map(|s| s.rss),
            "hub_rss_after_bytes": self.hub_after.map(|s| s.rss),
            "hub_rss_per_spoke_bytes": self.rss_per_spoke(),
            "ike_handshake_ms": pct(&self.handshakes),
            "registration_latency_ms": pct(&self.registration_latency),
            "show": shows,
            "generator_cpu_s": self.gen_cpu.as_secs_f64(),
            "generator_cpu_per_spoke_ms": ms(self.per_spoke(self.gen_cpu)),
            "soak": {
                "secs": self.soak_secs,
                "samples": soak,
                "hub_cpu_s": match self.hub_soak {
                    (Some(a), Some(b)) => json!(b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / self.clock_ticks),
                    _ => Value::Null,
                },
                "generator_cpu_s": self.gen_cpu_soak.as_secs_f64(),
                "spokes_up_at_end": self.spokes_up_at_end,
                "counters": self.counters_soak.to_json(),
            },
            "counters": self.counters.to_json(),
            "send_errors": self.send_errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_answers_are_counted_with_or_without_the_envelope() {
        let d = Duration::from_millis(12);
        let plain =
            br#"{"schema_version":2,"peers":[{"state":"UP"},{"state":"NHRP"},{"state":"UP"}]}"#;
        let r = parse_show("dmvpn", d, plain);
        assert_eq!((r.rows, r.up, r.error.as_deref()), (Some(3), Some(2), None));
        let env = br#"{"schema_version":2,"ok":true,"data":{"entries":[{},{}]}}"#;
        let r = parse_show("nhrp", d, env);
        assert_eq!((r.rows, r.up), (Some(2), None));
        assert!(parse_show("nhrp", d, b"dmvpnctl: timeout").error.is_some());
        assert!(parse_show("dmvpn", d, br#"{"peers":7}"#).error.is_some());
    }

    #[test]
    fn counter_delta_subtracts_every_field() {
        let a = Counters {
            ike_rx: 5,
            nhrp_tx: 2,
            ..Counters::default()
        };
        let b = Counters {
            ike_rx: 9,
            nhrp_tx: 2,
            esp_rx: 4,
            ..Counters::default()
        };
        let d = counter_delta(&a, &b);
        assert_eq!((d.ike_rx, d.nhrp_tx, d.esp_rx), (4, 0, 4));
        assert_eq!(d.to_json()["ike_rx"], 4);
    }
}
