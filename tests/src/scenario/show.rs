//! Reading `dmvpnctl show` text output (docs/dmvpnctl.md) and JSON reports.

use std::collections::BTreeSet;

use serde_json::Value;

use super::schema::array;

/// The `show dmvpn` table row (whitespace-split columns) whose tunnel address is `tunnel`.
pub fn dmvpn_row(text: &str, tunnel: &str) -> Option<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|c| c.len() == 6 && c[2] == tunnel)
}

/// The `show sa` text block of the peer whose `current_peer` is `ip`.
pub fn sa_block(text: &str, ip: &str) -> Option<String> {
    let start = text.find(&format!("current_peer {ip} port "))?;
    let rest = &text[start..];
    let end = rest[1..]
        .find("current_peer ")
        .map_or(rest.len(), |e| e + 1);
    Some(rest[..end].to_owned())
}

/// `spi: 0x1A2B3C4D(439041101)` lines of a `show sa` block, as `0x1a2b3c4d`, (inbound, outbound).
pub fn text_spis(block: &str) -> (BTreeSet<String>, BTreeSet<String>) {
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
pub fn number_after(text: &str, label: &str) -> Option<u64> {
    let at = text.find(label)? + label.len();
    text[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// (inbound, outbound) SPIs of the Child SAs of a `show sa --json` peer.
pub fn json_spis(peer: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let get = |k: &str| -> BTreeSet<String> {
        array(peer, "children")
            .iter()
            .filter_map(|c| c[k].as_str().map(str::to_owned))
            .collect()
    };
    (get("spi_in"), get("spi_out"))
}

pub fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `N packets input` and `N packets output` of `show interface` text.
pub fn interface_packets(text: &str) -> Option<(u64, u64)> {
    let get = |suffix: &str| {
        text.lines()
            .find(|l| l.contains(suffix))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((get("packets input")?, get("packets output")?))
}
