//! Engine configuration: proposals (RFC 7296 §3.3), the PSK keyring (§2.15),
//! local identity (§3.5), lifetimes (§2.8), retransmission (§2.1), DPD
//! (§2.4), cookies (§2.6) and NAT-T (§2.23).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use dmvpn_crypto::{DhAlg, PrfAlg, Secret};

use crate::message::Identification;

/// One IKE proposal: ENCR_AES_GCM_16 with the key size, a PRF and a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeProposal {
    /// AES key size in bits (256).
    pub encr_key_bits: u16,
    /// PRF.
    pub prf: PrfAlg,
    /// D-H group.
    pub dh: DhAlg,
}

impl Default for IkeProposal {
    /// aes256gcm16-prfsha512-ecp256, as the reference deployment.
    fn default() -> Self {
        Self {
            encr_key_bits: 256,
            prf: PrfAlg::HmacSha512,
            dh: DhAlg::Ecp256,
        }
    }
}

/// The ESP proposal: AES-GCM-16 with 256-bit keys, always transport mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspProposal {
    /// Offer/accept extended sequence numbers. When set we offer both ESN
    /// and no-ESN and choose ESN when the peer offers it too.
    pub esn: bool,
    /// PFS group for CREATE_CHILD_SA (never in IKE_AUTH, §1.2).
    pub pfs: Option<DhAlg>,
}

impl Default for EspProposal {
    /// aes256gcm16, no ESN, no PFS (the reference `esp-gcm 256`).
    fn default() -> Self {
        Self {
            esn: false,
            pfs: None,
        }
    }
}

/// Pre-shared keys, like Cisco's `crypto ikev2 keyring`.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    by_addr: HashMap<IpAddr, Secret>,
    by_id: HashMap<Identification, Secret>,
    wildcard: Option<Secret>,
    /// (network, prefix length, key), for keyring entries that name a subnet.
    by_prefix: Vec<(IpAddr, u8, Secret)>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// A key for one peer address.
    pub fn add_address(&mut self, addr: IpAddr, psk: &[u8]) -> &mut Self {
        self.by_addr.insert(addr, Secret::from_slice(psk));
        self
    }

    /// A key for one peer identity.
    pub fn add_identity(&mut self, id: Identification, psk: &[u8]) -> &mut Self {
        self.by_id.insert(id, Secret::from_slice(psk));
        self
    }

    /// The key for any peer (`peer ANY address 0.0.0.0 0.0.0.0`).
    pub fn set_wildcard(&mut self, psk: &[u8]) -> &mut Self {
        self.wildcard = Some(Secret::from_slice(psk));
        self
    }

    /// The most specific key: identity, then address, then the wildcard.
    pub fn lookup(&self, addr: IpAddr, id: Option<&Identification>) -> Option<&Secret> {
        id.and_then(|i| self.by_id.get(i))
            .or_else(|| self.by_addr.get(&addr))
            .or_else(|| {
                self.by_prefix
                    .iter()
                    .filter(|(net, len, _)| prefix_covers(*net, *len, addr))
                    .max_by_key(|(_, len, _)| *len)
                    .map(|(_, _, k)| k)
            })
            .or(self.wildcard.as_ref())
    }

    /// Whether the key [`Keyring::lookup`] picks for this peer is one many peers share (a
    /// prefix or the wildcard): authenticating with it proves membership of the network,
    /// not which member a peer is.
    pub fn is_shared(&self, addr: IpAddr, id: Option<&Identification>) -> bool {
        id.and_then(|i| self.by_id.get(i)).is_none() && !self.by_addr.contains_key(&addr)
    }

    /// Adds a key for every peer inside `net/len` (Cisco `address A.B.C.D MASK`). A /32 (or
    /// /128) is an exact address and a /0 the wildcard; otherwise the longest prefix wins.
    pub fn add_prefix(&mut self, net: IpAddr, len: u8, psk: &[u8]) -> &mut Self {
        let host = if net.is_ipv4() { 32 } else { 128 };
        match len {
            0 => self.set_wildcard(psk),
            l if l >= host => self.add_address(net, psk),
            l => {
                self.by_prefix.push((net, l, Secret::from_slice(psk)));
                self
            }
        }
    }
}

/// SA lifetimes. Rekeying starts at `lifetime - margin - random(0..=jitter)`,
/// the SA is deleted at `lifetime` (hard limit).
fn prefix_covers(net: IpAddr, len: u8, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(n) & m == u32::from(a) & m
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(n) & m == u128::from(a) & m
        }
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// IKE SA hard lifetime.
    pub ike: Duration,
    /// IKE SA rekey margin.
    pub ike_margin: Duration,
    /// Child SA hard lifetime.
    pub child: Duration,
    /// Child SA rekey margin.
    pub child_margin: Duration,
    /// Extra random lead on top of the margin, as a percentage of the margin
    /// (strongSwan's rekeyfuzz, default 100 %), so both peers do not rekey
    /// at the same instant.
    pub jitter_percent: u32,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            ike: Duration::from_secs(24 * 3600),
            ike_margin: Duration::from_secs(9 * 60),
            child: Duration::from_secs(3600),
            child_margin: Duration::from_secs(9 * 60),
            jitter_percent: 100,
        }
    }
}

/// Request retransmission (§2.1): intervals double from `initial` up to
/// `max_interval`; after `max_tries` transmissions the peer is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// First timeout.
    pub initial: Duration,
    /// Ceiling for the doubling.
    pub max_interval: Duration,
    /// Transmissions in total (first send included).
    pub max_tries: u32,
}

impl Default for Retransmit {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(2),
            max_interval: Duration::from_secs(32),
            max_tries: 6,
        }
    }
}

/// DPD probing mode (Cisco `dpd ... on-demand|periodic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpdMode {
    /// Probe only when we send traffic and received nothing for `delay`.
    OnDemand,
    /// Probe every `delay`, whether or not traffic flows.
    Periodic,
}

/// Dead peer detection (§2.4), Cisco `dpd 40 5 on-demand` by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dpd {
    /// Idle time before a probe.
    pub delay: Duration,
    /// Interval between probe retransmissions (fixed, not doubling).
    pub retry: Duration,
    /// Probe transmissions before the peer is declared dead.
    pub max_tries: u32,
    /// Mode.
    pub mode: DpdMode,
}

impl Default for Dpd {
    fn default() -> Self {
        Self {
            delay: Duration::from_secs(40),
            retry: Duration::from_secs(5),
            max_tries: 5,
            mode: DpdMode::OnDemand,
        }
    }
}

/// Endpoint configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// IKE proposals in preference order; the first one's group is used for
    /// the initial KE payload.
    pub ike_proposals: Vec<IkeProposal>,
    /// ESP proposal.
    pub esp: EspProposal,
    /// PSKs.
    pub keyring: Keyring,
    /// Our identity; `None` = our IP address (ID_IPV4_ADDR), as Cisco does.
    pub local_id: Option<Identification>,
    /// Lifetimes.
    pub lifetimes: Lifetimes,
    /// Retransmission of requests.
    pub retransmit: Retransmit,
    /// DPD; `None` disables it.
    pub dpd: Option<Dpd>,
    /// Half-open IKE SAs above which IKE_SA_INIT requests must carry a
    /// cookie (§2.6).
    pub cookie_threshold: usize,
    /// How long a responder keeps a half-open SA.
    pub half_open_timeout: Duration,
    /// Most half-open responder SAs at once (each holds a D-H key, ≈ 9 KiB, for up to
    /// `half_open_timeout`); past it the oldest one gives way to each new IKE_SA_INIT
    /// (counted as evicted), so memory stays bounded and a flood cannot lock new peers out.
    pub max_half_open: usize,
    /// Most half-open responder SAs from one IP address (a NAT with many peers behind it
    /// still fits; one flooding host cannot take the whole budget).
    pub max_half_open_per_peer: usize,
    /// Most established IKE SAs from one IP address, all ports together (many spokes
    /// behind one NAT address each hold one); past it IKE_AUTH is refused, counted.
    pub max_sas_per_address: usize,
    /// UDP port IKE floats to when a NAT is detected (§2.23).
    pub natt_port: u16,
    /// Pretend to be behind a NAT (a bogus NAT_DETECTION_SOURCE_IP) so ESP is
    /// always UDP-encapsulated, like strongSwan's `encap = yes`.
    pub force_encap: bool,
    /// Send INITIAL_CONTACT in our first IKE_AUTH to a peer (§2.4).
    pub initial_contact: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ike_proposals: vec![IkeProposal::default()],
            esp: EspProposal::default(),
            keyring: Keyring::new(),
            local_id: None,
            lifetimes: Lifetimes::default(),
            retransmit: Retransmit::default(),
            dpd: Some(Dpd::default()),
            cookie_threshold: 64,
            half_open_timeout: Duration::from_secs(30),
            max_half_open: 4096,
            max_half_open_per_peer: 64,
            max_sas_per_address: 256,
            natt_port: 4500,
            force_encap: false,
            initial_contact: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_prefers_identity_then_address_then_wildcard() {
        let mut k = Keyring::new();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let id = Identification::fqdn("hub");
        assert!(k.lookup(a, None).is_none());
        k.set_wildcard(b"any")
            .add_address(a, b"addr")
            .add_identity(id.clone(), b"id");
        assert_eq!(k.lookup(a, Some(&id)).unwrap().expose(), b"id");
        assert_eq!(
            k.lookup(a, Some(&Identification::fqdn("x")))
                .unwrap()
                .expose(),
            b"addr"
        );
        assert_eq!(k.lookup(b, None).unwrap().expose(), b"any");
    }

    #[test]
    fn keyring_prefixes_longest_match_between_address_and_wildcard() {
        let mut k = Keyring::new();
        k.add_prefix("0.0.0.0".parse().unwrap(), 0, b"any")
            .add_prefix("198.51.100.0".parse().unwrap(), 24, b"net24")
            .add_prefix("198.51.100.0".parse().unwrap(), 28, b"net28")
            .add_prefix("198.51.100.1".parse().unwrap(), 32, b"host");
        let get = |a: &str| {
            k.lookup(a.parse().unwrap(), None)
                .unwrap()
                .expose()
                .to_vec()
        };
        assert_eq!(get("198.51.100.1"), b"host");
        assert_eq!(get("198.51.100.5"), b"net28");
        assert_eq!(get("198.51.100.200"), b"net24");
        assert_eq!(get("203.0.113.9"), b"any");
    }
}
