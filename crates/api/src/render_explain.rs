//! The text of `dmvpnctl explain DEST`: a condensed `show ip route DEST` + `show ip nhrp` of
//! the next hop (and the shortcut) + `show crypto ipsec sa peer NBMA`, then the last NHRP
//! event and the last error. For people; scripts use `--json`.

use std::fmt;

use crate::explain::{ExplainForwarding, ExplainReport};
use crate::render::{ios_time, nhrp_entry_lines, opt_addr, peer_line, spi_ios};

impl ExplainReport {
    fn kernel_line(&self) -> String {
        let k = &self.kernel;
        let via = k.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        let why = k
            .error
            .as_deref()
            .or(k.route_type.as_deref())
            .unwrap_or("-");
        match k.lookup.as_str() {
            "tunnel" => format!("Kernel: into {}{via}", self.interface),
            "other_interface" => format!(
                "Kernel: out of interface index {}{via}, not {}",
                k.interface_index
                    .map_or_else(|| "-".to_owned(), |i| i.to_string()),
                self.interface
            ),
            "local" => "Kernel: a local address, delivered here".to_owned(),
            "unreachable" => format!("Kernel: unreachable ({why})"),
            _ => format!("Kernel: no answer ({why}); the tunnel routes alone decided"),
        }
    }

    fn headline(&self) -> String {
        let nbma = opt_addr(self.nbma);
        match self.forwarding {
            ExplainForwarding::Send => format!("sent to NBMA {nbma}"),
            ExplainForwarding::NeedSa => {
                format!("queued for NBMA {nbma}: no IPsec SA yet, IKE is brought up")
            }
            ExplainForwarding::NoMapping => "dropped: no NHRP mapping for the next hop".to_owned(),
            ExplainForwarding::Multicast => format!(
                "multicast/broadcast, replicated to {} NBMA address(es)",
                self.multicast_to.len()
            ),
            ExplainForwarding::NoRoute => format!(
                "not routed into {}: the kernel does not hand it to dmvpnd",
                self.interface
            ),
        }
    }
}

impl fmt::Display for ExplainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Destination {}: {} ({})",
            self.destination,
            self.headline(),
            self.forwarding.name()
        )?;
        match &self.route {
            Some(r) => {
                writeln!(f, "Routing entry for {}/{}", r.prefix, r.prefix_len)?;
                writeln!(
                    f,
                    "  Known via \"{}\" (proto {}), metric {}",
                    r.source, r.protocol, r.metric
                )?;
                match r.gateway {
                    Some(g) => writeln!(f, "  * {g}, via {}", self.interface)?,
                    None => writeln!(f, "  * directly connected, via {}", self.interface)?,
                }
            }
            // IOS's `show ip route X` answer; the table is the tunnel's, as dmvpnd mirrors it.
            None => writeln!(
                f,
                "% Network not in table (tunnel routes of {})",
                self.interface
            )?,
        }
        writeln!(f, "{}", self.kernel_line())?;
        if !self.multicast_to.is_empty() {
            let to: Vec<String> = self.multicast_to.iter().map(|a| a.to_string()).collect();
            writeln!(f, "Multicast to: {}", to.join(", "))?;
        }
        if let Some(nh) = self.next_hop {
            if self.via_nhs_default {
                writeln!(
                    f,
                    "Next hop {nh}: no NHRP mapping, sent to the NHS at NBMA {}",
                    opt_addr(self.nbma)
                )?;
            } else {
                writeln!(
                    f,
                    "Next hop {nh}: NHRP mapping to NBMA {}",
                    opt_addr(self.nbma)
                )?;
            }
        }
        for (label, e) in [
            ("NHRP entry", &self.nhrp_entry),
            ("NHRP shortcut", &self.nhrp_shortcut),
        ] {
            if let Some(e) = e {
                writeln!(f, "{label}:")?;
                nhrp_entry_lines(f, &self.interface, e)?;
            }
        }
        if let Some(o) = &self.outbound {
            let encap = if o.udp_encap {
                format!("UDP-Encaps port {}", o.port)
            } else {
                "raw ESP".to_owned()
            };
            writeln!(f, "Crypto: outbound spi {}, {encap}", spi_ios(&o.spi_out))?;
        }
        if let Some(p) = &self.peer {
            peer_line(f, p)?;
            match &p.ike {
                Some(s) => writeln!(
                    f,
                    "   IKEv2 SA: {} ({}), {}, age {}, rekey in {}",
                    s.state.ios(),
                    s.state_detail,
                    s.remote,
                    ios_time(s.age_secs),
                    s.rekey_in_secs.map_or_else(|| "-".to_owned(), ios_time)
                )?,
                None => writeln!(f, "   IKEv2 SA: none")?,
            }
            for c in &p.children {
                writeln!(
                    f,
                    "   Child SA spi in {} out {}: #pkts encaps {}, decaps {}, \
                     verify failed {}, replay {}; age {} (since last rekey), rekey in {}",
                    spi_ios(&c.spi_in),
                    spi_ios(&c.spi_out),
                    c.packets_out,
                    c.packets_in,
                    c.auth_failures,
                    c.replay_drops,
                    ios_time(c.age_secs),
                    c.rekey_in_secs.map_or_else(|| "-".to_owned(), ios_time)
                )?;
            }
        }
        match &self.last_nhrp_event {
            Some(e) => {
                let what = match (e.prefix, e.prefix_len) {
                    (Some(p), Some(l)) => format!(" {p}/{l}"),
                    _ => String::new(),
                };
                let via = e.next_hop.map(|n| format!(" via {n}")).unwrap_or_default();
                let nbma = e.nbma.map(|n| format!(" (NBMA {n})")).unwrap_or_default();
                let code = e
                    .code
                    .as_ref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                writeln!(
                    f,
                    "Last NHRP event: {}{what}{via}{nbma}{code}, {} ago",
                    e.kind,
                    ios_time(e.age_secs)
                )?;
            }
            None => writeln!(f, "Last NHRP event: none recorded")?,
        }
        match &self.last_error {
            Some(e) => {
                let peer = e.peer.map(|p| format!(" {p}")).unwrap_or_default();
                let when = e
                    .age_secs
                    .map(|a| format!(", {} ago", ios_time(a)))
                    .unwrap_or_default();
                let retry = e
                    .retry_in_secs
                    .map(|r| format!(", next attempt in {r} sec"))
                    .unwrap_or_default();
                writeln!(
                    f,
                    "Last error: {}{peer}: {}{when}{retry}",
                    e.source, e.reason
                )?;
            }
            None => writeln!(f, "Last error: none")?,
        }
        if self.history_evicted > 0 {
            writeln!(
                f,
                "(the event history is full: {} older records were evicted)",
                self.history_evicted
            )?;
        }
        Ok(())
    }
}
