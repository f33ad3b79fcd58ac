//! The documented JSON reports of `dmvpnctl show … --json` (docs/dmvpnctl.md, schema version 1):
//! every field a report and its nested objects must carry.

use serde_json::Value;

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
    "inner_bytes_in",
    "esp_bytes_in",
    "packets_out",
    "inner_bytes_out",
    "esp_bytes_out",
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
    "ike_retry_in_secs",
    "ike_last_failure",
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
const IKE_REPORT: &[&str] = &["schema_version", "sas", "backoff"];
const IKE_BACKOFF: &[&str] = &["peer", "failures", "next_attempt_in_secs", "last_failure"];
const INTERFACE_REPORT: &[&str] = &[
    "schema_version",
    "interface",
    "tunnel_addr",
    "mtu",
    "tx_packets",
    "tx_inner_bytes",
    "tx_esp_bytes",
    "rx_packets",
    "rx_inner_bytes",
    "rx_esp_bytes",
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
    "ike_failed",
    "slow_path_full",
];

const EXPLAIN_REPORT: &[&str] = &[
    "schema_version",
    "interface",
    "destination",
    "forwarding",
    "kernel",
    "route",
    "next_hop",
    "via_nhs_default",
    "nbma",
    "nhrp_entry",
    "nhrp_shortcut",
    "outbound",
    "peer",
    "multicast_to",
    "last_nhrp_event",
    "last_error",
    "history_evicted",
];
const EXPLAIN_ROUTE: &[&str] = &[
    "prefix",
    "prefix_len",
    "gateway",
    "metric",
    "protocol",
    "source",
];
const EXPLAIN_KERNEL: &[&str] = &[
    "lookup",
    "route_type",
    "interface_index",
    "gateway",
    "error",
];
const EXPLAIN_PATH: &[&str] = &["spi_out", "udp_encap", "port"];
const EXPLAIN_NHRP_EVENT: &[&str] = &[
    "kind",
    "prefix",
    "prefix_len",
    "next_hop",
    "nbma",
    "code",
    "age_secs",
];
const EXPLAIN_ERROR: &[&str] = &["source", "peer", "reason", "age_secs", "retry_in_secs"];

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

pub fn array<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Every documented field of a report (and of its nested objects) that is missing.
pub fn schema_violations(what: &str, v: &Value) -> Vec<String> {
    let mut m = Vec::new();
    // docs/dmvpnctl.md's "Schema version 2", written out here rather than taken from the api
    // crate, so that a change of the number is a change of this check too.
    if v["schema_version"] != 2 {
        m.push(format!("schema_version is {}, not 2", v["schema_version"]));
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
            for b in array(v, "backoff") {
                m.extend(missing("IkeBackoff", b, IKE_BACKOFF));
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
        "explain" => {
            m.extend(missing("ExplainReport", v, EXPLAIN_REPORT));
            let nested: [(&str, &str, &[&str]); 8] = [
                ("kernel", "ExplainKernel", EXPLAIN_KERNEL),
                ("route", "ExplainRoute", EXPLAIN_ROUTE),
                ("nhrp_entry", "NhrpEntry", NHRP_ENTRY),
                ("nhrp_shortcut", "NhrpEntry", NHRP_ENTRY),
                ("outbound", "ExplainPath", EXPLAIN_PATH),
                ("peer", "SaPeer", SA_PEER),
                ("last_nhrp_event", "ExplainNhrpEvent", EXPLAIN_NHRP_EVENT),
                ("last_error", "ExplainError", EXPLAIN_ERROR),
            ];
            for (key, name, keys) in nested {
                if !v[key].is_null() {
                    m.extend(missing(name, &v[key], keys));
                }
            }
            let p = &v["peer"];
            if !p["ike"].is_null() {
                m.extend(missing("IkeSa", &p["ike"], IKE_SA));
            }
            for c in array(p, "children") {
                m.extend(missing("ChildSa", c, CHILD_SA));
            }
        }
        other => m.push(format!("unknown report {other}")),
    }
    m
}
