//! Text renderers: [`fmt::Display`] for each report, laid out like the IOS commands operators
//! already know (`show dmvpn`, `show crypto ipsec sa`, `show ip nhrp`,
//! `show crypto ikev2 sa detailed`, `show interfaces`). Scripts should use the JSON instead:
//! this text may change between releases.

use std::fmt;
use std::net::IpAddr;

use serde::de::DeserializeOwned;

use crate::ctl::{Request, Show};
use crate::schema::{
    Ack, ChildSa, DmvpnReport, IkeReport, InterfaceReport, NHRP_PACKET_TYPES, NhrpEntry, NhrpKind,
    NhrpPeerState, NhrpReport, NhrpRole, SCHEMA_VERSION, SaReport,
};

/// The `data` of a successful [`Response`](crate::Response) to `request`, decoded as the
/// report (or [`Ack`]) that request is answered with, as text.
pub fn text(request: &Request, data: serde_json::Value) -> Result<String, DecodeError> {
    match request {
        Request::Show { what, .. } => match what {
            Show::Sa => decode::<SaReport>(data),
            Show::Dmvpn => decode::<DmvpnReport>(data),
            Show::Nhrp => decode::<NhrpReport>(data),
            Show::Ike => decode::<IkeReport>(data),
            Show::Interface => decode::<InterfaceReport>(data),
        },
        Request::Explain { .. } => decode::<crate::explain::ExplainReport>(data),
        Request::ClearSa { .. }
        | Request::ClearChildSa { .. }
        | Request::ClearNhrp
        | Request::Reload => decode::<Ack>(data),
    }
}

fn decode<T: DeserializeOwned + fmt::Display>(
    data: serde_json::Value,
) -> Result<String, DecodeError> {
    let schema_version = data.get("schema_version").and_then(|v| v.as_u64());
    serde_json::from_value::<T>(data)
        .map(|r| r.to_string())
        .map_err(|error| DecodeError {
            schema_version,
            error,
        })
}

/// Answer data that is not the expected report.
#[derive(Debug)]
pub struct DecodeError {
    /// The `schema_version` the data claims, if any.
    pub schema_version: Option<u64>,
    /// Why it did not decode.
    pub error: serde_json::Error,
}

impl DecodeError {
    /// The data's schema version when it is not [`SCHEMA_VERSION`]: the likely reason it did
    /// not decode.
    pub fn other_version(&self) -> Option<u64> {
        self.schema_version
            .filter(|v| *v != u64::from(SCHEMA_VERSION))
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.other_version() {
            Some(v) => write!(
                f,
                "schema version {v}, expected {SCHEMA_VERSION}: {}",
                self.error
            ),
            None => self.error.fmt(f),
        }
    }
}

impl std::error::Error for DecodeError {}

/// IOS-style duration: `00:04:12` under a day, `2d03h` under a week, `1w2d` beyond.
pub fn ios_time(secs: u64) -> String {
    const DAY: u64 = 86_400;
    if secs < DAY {
        format!(
            "{:02}:{:02}:{:02}",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    } else if secs < 7 * DAY {
        format!("{}d{:02}h", secs / DAY, secs % DAY / 3600)
    } else {
        format!("{}w{}d", secs / (7 * DAY), secs % (7 * DAY) / DAY)
    }
}

/// `   peer NBMA …, tunnel address …, NHRP: …` of `show sa` and `explain`.
pub(crate) fn peer_line(f: &mut fmt::Formatter<'_>, p: &crate::schema::SaPeer) -> fmt::Result {
    writeln!(
        f,
        "   peer NBMA {}{}, tunnel address {}, NHRP: {}",
        p.nbma,
        p.post_nat_nbma
            .map(|a| format!(" (post-NAT {a})"))
            .unwrap_or_default(),
        opt_addr(p.tunnel_addr),
        p.nhrp_state.text()
    )
}

pub(crate) fn opt_addr(a: Option<IpAddr>) -> String {
    a.map_or_else(|| "-".to_owned(), |a| a.to_string())
}

pub(crate) fn spi_ios(hex: &str) -> String {
    // `0x1a2b3c4d` → `0x1A2B3C4D(439041101)`, the IOS form; anything else is shown as given.
    let decimal = hex
        .strip_prefix("0x")
        .and_then(|h| u32::from_str_radix(h, 16).ok());
    match decimal {
        Some(d) => format!("0x{:08X}({d})", d),
        None => hex.to_owned(),
    }
}

/// Column layout of the `show dmvpn` table, shared by header and rows so they cannot drift.
fn dmvpn_row(
    f: &mut fmt::Formatter<'_>,
    ent: &str,
    nbma: &str,
    tunnel: &str,
    state: &str,
    updn: &str,
    attrb: &str,
) -> fmt::Result {
    writeln!(
        f,
        " {ent:>5} {nbma:<15} {tunnel:>15} {state:>5} {updn:>8} {attrb:>5}"
    )
}

impl fmt::Display for DmvpnReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Legend: Attrb --> S - Static, D - Dynamic, I - Incomplete\n        \
             N - NATed, L - Local, X - No Socket\n        \
             T1 - Route Installed, T2 - Nexthop-override\n        \
             # Ent --> Number of NHRP entries with same NBMA peer\n        \
             UpDn Time --> Up or Down Time for a Tunnel\n\
             =========================================================================="
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "Interface: {}, IPv4 NHRP Details (address {})",
            self.interface, self.tunnel_addr
        )?;
        let role = match self.nhrp_role {
            NhrpRole::Hub => "Hub",
            NhrpRole::Spoke => "Spoke",
        };
        writeln!(f, "Type:{role}, NHRP Peers:{},", self.peers.len())?;
        writeln!(f)?;
        // IOS prints "Peer Tunnel Add" (sic): kept so eyes and scripts used to it find it.
        dmvpn_row(
            f,
            "# Ent",
            "Peer NBMA Addr",
            "Peer Tunnel Add",
            "State",
            "UpDn Tm",
            "Attrb",
        )?;
        dmvpn_row(
            f,
            "-----",
            "---------------",
            "---------------",
            "-----",
            "--------",
            "-----",
        )?;
        for p in &self.peers {
            dmvpn_row(
                f,
                &p.entries.to_string(),
                &p.peer_nbma.to_string(),
                &opt_addr(p.peer_tunnel),
                p.state.ios(),
                &p.updn_secs.map_or_else(|| "never".to_owned(), ios_time),
                &p.attrs.concat(),
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for SaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "interface: {}", self.interface)?;
        if self.peers.is_empty() {
            writeln!(f, "   (no peers)")?;
        }
        for p in &self.peers {
            writeln!(f)?;
            // IOS prints bare addresses here; the ports are on the current_peer line.
            let (local, remote) = match &p.ike {
                Some(s) => (s.local.ip().to_string(), s.remote.ip().to_string()),
                None => ("-".to_owned(), "-".to_owned()),
            };
            let peer_ip = p
                .ike
                .as_ref()
                .map_or(p.post_nat_nbma.unwrap_or(p.nbma), |s| s.remote.ip());
            let port = p.ike.as_ref().map_or(0, |s| s.remote.port());
            writeln!(f, "   current_peer {peer_ip} port {port}")?;
            peer_line(f, p)?;
            match &p.ike {
                Some(s) => {
                    writeln!(
                        f,
                        "   IKEv2 SA: {} ({}), spi_i {}, spi_r {}, {}",
                        s.state.ios(),
                        s.state_detail,
                        s.spi_i,
                        s.spi_r,
                        if s.initiator {
                            "initiator"
                        } else {
                            "responder"
                        }
                    )?;
                    writeln!(
                        f,
                        "     Encr: {}, PRF: {}, DH Grp:{}, age {}, rekey in {}",
                        s.encryption.as_deref().unwrap_or("-"),
                        s.prf.as_deref().unwrap_or("-"),
                        s.dh_group.map_or_else(|| "-".to_owned(), |g| g.to_string()),
                        ios_time(s.age_secs),
                        s.rekey_in_secs.map_or_else(|| "-".to_owned(), ios_time)
                    )?;
                }
                None => writeln!(f, "   IKEv2 SA: none")?,
            }
            let sum = |g: fn(&ChildSa) -> u64| p.children.iter().map(g).sum::<u64>();
            let (enc, dec) = (sum(|c| c.packets_out), sum(|c| c.packets_in));
            writeln!(
                f,
                "    #pkts encaps: {enc}, #pkts encrypt: {enc}, #pkts digest: {enc}"
            )?;
            writeln!(
                f,
                "    #pkts decaps: {dec}, #pkts decrypt: {dec}, #pkts verify: {dec}"
            )?;
            writeln!(
                f,
                "    #bytes encaps: {}, #bytes decaps: {}",
                sum(|c| c.inner_bytes_out),
                sum(|c| c.inner_bytes_in)
            )?;
            writeln!(f, "    #pkts verify failed: {}", sum(|c| c.auth_failures))?;
            writeln!(
                f,
                "    #pkts replay failed (rcv): {}",
                sum(|c| c.replay_drops)
            )?;
            writeln!(f)?;
            writeln!(
                f,
                "     local crypto endpt.: {local}, remote crypto endpt.: {remote}"
            )?;
            // The newest Child SA carries new traffic after a rekey (RFC 7296 §2.8).
            let current = p.children.iter().min_by_key(|c| c.age_secs);
            writeln!(
                f,
                "     current outbound spi: {}",
                current.map_or_else(|| "0x0(0)".to_owned(), |c| spi_ios(&c.spi_out))
            )?;
            for (dir, inbound) in [("inbound", true), ("outbound", false)] {
                writeln!(f)?;
                writeln!(f, "     {dir} esp sas:")?;
                for c in &p.children {
                    let spi = if inbound { &c.spi_in } else { &c.spi_out };
                    writeln!(f, "      spi: {}", spi_ios(spi))?;
                    writeln!(f, "        transform: esp-gcm 256 ,")?;
                    let mode = if c.mode == "transport" {
                        "Transport"
                    } else {
                        c.mode.as_str()
                    };
                    let encap = if c.udp_encap { " UDP-Encaps" } else { "" };
                    writeln!(f, "        in use settings ={{{mode}{encap}, }}")?;
                    let (pk, by, esp) = if inbound {
                        (c.packets_in, c.inner_bytes_in, c.esp_bytes_in)
                    } else {
                        (c.packets_out, c.inner_bytes_out, c.esp_bytes_out)
                    };
                    writeln!(
                        f,
                        "        packets: {pk}, inner bytes: {by}, esp bytes: {esp}"
                    )?;
                    writeln!(
                        f,
                        "        sa timing: remaining key lifetime (sec): {}",
                        c.rekey_in_secs
                            .map_or_else(|| "-".to_owned(), |s| s.to_string())
                    )?;
                    if inbound {
                        writeln!(f, "        replay detection support: Y")?;
                        writeln!(
                            f,
                            "        replay drops: {}, auth failures: {}",
                            c.replay_drops, c.auth_failures
                        )?;
                    }
                    writeln!(f, "        Status: ACTIVE(ACTIVE)")?;
                }
            }
        }
        Ok(())
    }
}

/// The kind's JSON name (as serialized).
fn nhrp_kind_name(k: NhrpKind) -> &'static str {
    match k {
        NhrpKind::Static => "static",
        NhrpKind::Dynamic => "dynamic",
        NhrpKind::Nhs => "nhs",
        NhrpKind::Shortcut => "shortcut",
        NhrpKind::Local => "local",
        NhrpKind::Incomplete => "incomplete",
    }
}

/// The coarser kind IOS shows.
fn nhrp_kind_text(k: NhrpKind) -> &'static str {
    match k {
        NhrpKind::Static => "static",
        NhrpKind::Dynamic => "dynamic",
        NhrpKind::Nhs => "static",
        NhrpKind::Shortcut => "dynamic",
        NhrpKind::Local => "local",
        NhrpKind::Incomplete => "incomplete",
    }
}

/// One cache entry as `show ip nhrp` prints it (also used by `explain`).
pub(crate) fn nhrp_entry_lines(
    f: &mut fmt::Formatter<'_>,
    interface: &str,
    e: &NhrpEntry,
) -> fmt::Result {
    writeln!(f, "{}/{} via {}", e.protocol_addr, e.prefix_len, e.next_hop)?;
    writeln!(
        f,
        "   {} created {}, {}",
        interface,
        ios_time(e.age_secs),
        e.expires_in_secs.map_or_else(
            || "never expire".to_owned(),
            |s| format!("expire {}", ios_time(s))
        )
    )?;
    // IOS shows NHS and shortcut entries as static/dynamic; our finer kind follows in
    // parentheses so nothing is lost.
    let mut flags = e.flags.clone();
    if e.kind == NhrpKind::Nhs {
        flags.push("nhs".to_owned());
    }
    writeln!(
        f,
        "   Type: {} ({}), Flags: {}",
        nhrp_kind_text(e.kind),
        nhrp_kind_name(e.kind),
        if flags.is_empty() {
            "none".to_owned()
        } else {
            flags.join(" ")
        }
    )?;
    match e.post_nat_nbma {
        Some(p) => {
            writeln!(f, "   NBMA address: {p}")?;
            writeln!(f, "    (Claimed NBMA address: {})", e.nbma)?;
        }
        None => writeln!(f, "   NBMA address: {}", e.nbma)?,
    }
    Ok(())
}

impl fmt::Display for NhrpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            nhrp_entry_lines(f, &self.interface, e)?;
        }
        if !self.nhs.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "Legend: E=Expecting replies, R=Responding, W=Waiting for SA"
            )?;
            writeln!(f, "{}:", self.interface)?;
            for n in &self.nhs {
                let letters = match n.state {
                    NhrpPeerState::Up => "RE",
                    NhrpPeerState::Registering => "E",
                    NhrpPeerState::Standby => "",
                    _ => "W",
                };
                writeln!(
                    f,
                    "{:<15} {:<2} NBMA Address: {} {} {}, priority {}{}{}, expire {}{}",
                    opt_addr(n.protocol_addr),
                    letters,
                    n.nbma,
                    n.status.text(),
                    n.state.text(),
                    n.priority,
                    // Cluster 0 (the default) is left out, as IOS does.
                    if n.cluster == 0 {
                        String::new()
                    } else {
                        format!(", cluster {}", n.cluster)
                    },
                    if n.preferred { " (preferred)" } else { "" },
                    n.expires_in_secs.map_or_else(|| "-".to_owned(), ios_time),
                    if n.multicast { ", multicast" } else { "" }
                )?;
                if let Some(s) = n.ike_retry_in_secs {
                    writeln!(
                        f,
                        "                   IKE held down: next attempt in {s} sec (last failure: {})",
                        n.ike_last_failure.as_deref().unwrap_or("-")
                    )?;
                }
            }
        }
        writeln!(f)?;
        let c = &self.counters;
        for (label, m) in [("Sent", &c.tx), ("Rcvd", &c.rx)] {
            writeln!(
                f,
                "{}: {label}: Total {}",
                self.interface,
                m.values().sum::<u64>()
            )?;
            for name in NHRP_PACKET_TYPES {
                let v = m.get(name).copied().unwrap_or(0);
                if v > 0 {
                    writeln!(f, "   {v:>10} {name}")?;
                }
            }
        }
        writeln!(f, "   Authentication failures: {}", c.auth_failures)?;
        for (name, v) in &c.drops {
            writeln!(f, "   Dropped ({name}): {v}")?;
        }
        Ok(())
    }
}

impl fmt::Display for IkeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, " IPv4 Crypto IKEv2  SA")?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<10}{:<22}{:<22}{:<12}Status",
            "Tunnel-id", "Local", "Remote", "fvrf/ivrf"
        )?;
        for (i, s) in self.sas.iter().enumerate() {
            writeln!(
                f,
                "{:<10}{:<22}{:<22}{:<12}{}",
                i + 1,
                s.local.to_string(),
                s.remote.to_string(),
                "none/none",
                s.state.ios()
            )?;
            writeln!(
                f,
                "      Encr: {}, PRF: {}, Hash: None, DH Grp:{}, Auth: PSK",
                s.encryption.as_deref().unwrap_or("-"),
                s.prf.as_deref().unwrap_or("-"),
                s.dh_group.map_or_else(|| "-".to_owned(), |g| g.to_string())
            )?;
            writeln!(
                f,
                "      Active Time: {} sec, rekey in: {}",
                s.age_secs,
                s.rekey_in_secs
                    .map_or_else(|| "-".to_owned(), |r| format!("{r} sec"))
            )?;
            writeln!(f, "      Initiator SPI : {}", s.spi_i)?;
            writeln!(f, "      Responder SPI : {}", s.spi_r)?;
            writeln!(
                f,
                "      Initiator of SA : {}",
                if s.initiator { "Yes" } else { "No" }
            )?;
            writeln!(
                f,
                "      Remote id: {}",
                s.remote_id.as_deref().unwrap_or("-")
            )?;
            let nat = match (s.nat_local, s.nat_remote) {
                (false, false) => "none",
                (true, false) => "inside (we are behind NAT)",
                (false, true) => "outside (peer is behind NAT)",
                (true, true) => "inside and outside",
            };
            writeln!(f, "      NAT-T: {nat}")?;
            writeln!(f, "      Child sa: {}", s.child_count)?;
            writeln!(f)?;
        }
        if !self.backoff.is_empty() {
            writeln!(
                f,
                " Held down (no new IKE attempt before the back-off ends):"
            )?;
            writeln!(
                f,
                "{:<22}{:<10}{:<18}Last failure",
                "Peer", "Failures", "Next attempt"
            )?;
            for b in &self.backoff {
                writeln!(
                    f,
                    "{:<22}{:<10}{:<18}{}",
                    b.peer.to_string(),
                    b.failures,
                    format!("in {} sec", b.next_attempt_in_secs),
                    b.last_failure.as_deref().unwrap_or("-")
                )?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for InterfaceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} is up, line protocol is up", self.interface)?;
        writeln!(f, "  Hardware is Tunnel (dmvpnd, mGRE over IPsec)")?;
        writeln!(f, "  Internet address is {}", self.tunnel_addr)?;
        writeln!(f, "  MTU {} bytes", self.mtu)?;
        writeln!(
            f,
            "     {} packets input, {} bytes (ESP {} bytes)",
            self.rx_packets, self.rx_inner_bytes, self.rx_esp_bytes
        )?;
        writeln!(
            f,
            "     {} packets output, {} bytes (ESP {} bytes)",
            self.tx_packets, self.tx_inner_bytes, self.tx_esp_bytes
        )?;
        let total: u64 = self.drops.values().sum();
        writeln!(f, "     {total} drops")?;
        for (name, v) in self.drops.iter().filter(|(_, v)| **v > 0) {
            writeln!(f, "       {v:>10} {name}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.message)
    }
}
