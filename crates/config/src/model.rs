//! The validated, typed configuration handed to the daemon and the protocol engines. Names follow
//! the RFCs (RFC 7296 IKEv2, RFC 4303 ESP, RFC 2332 NHRP, RFC 2890 GRE key) and the Cisco commands
//! they replace.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::net::Ipv4Net;

/// A complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub ike: Ike,
    pub ipsec: Ipsec,
    pub tunnel: Tunnel,
    pub nhrp: Nhrp,
    pub underlay: Underlay,
    /// Routes into the tunnel that dmvpnd installs on the tunnel device at start.
    pub routes: Vec<StaticRoute>,
    /// Where to append IKE and ESP keys in Wireshark's formats, for debugging only.
    pub key_export: Option<PathBuf>,
    /// `[debug] ignore-purge`: a lab knob that makes this router drop every NHRP Purge Request
    /// it receives, as FRR's nhrpd does, to test peers against such a hub. Never in production:
    /// a spoke's purge (RFC 2332 §5.2.5) is how a hub forgets it at once.
    pub ignore_purge: bool,
    /// The `dmvpnctl` control socket.
    pub control: Control,
    /// Packet I/O: workers, offloads, socket buffers.
    pub dataplane: Dataplane,
    /// The Prometheus/OpenMetrics endpoint (off unless `listen` is set).
    pub metrics: Metrics,
}

/// `[metrics]`: where the OpenMetrics exposition is served over HTTP (`GET /metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// Address and port to listen on; `None` (the default) serves nothing. The endpoint has no
    /// authentication, so it belongs on loopback or a management address.
    pub listen: Option<std::net::SocketAddr>,
    /// Peers that get series of their own (labelled by NBMA address); the rest count only in
    /// the router-wide totals. Bounds a hub's scrape: 10,000 peers with a dozen series each
    /// would be a 120,000-series scrape. 0 = no per-peer series.
    pub max_peers: u32,
}

/// Per-peer series unless configured: every peer of a spoke or a small hub.
pub const DEFAULT_METRICS_MAX_PEERS: u32 = 256;

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: None,
            max_peers: DEFAULT_METRICS_MAX_PEERS,
        }
    }
}

/// `[dataplane]`: how packets move between the TUN device and the underlay sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataplane {
    /// Packet workers (each a TUN queue, a UDP 4500 socket and two threads); 0 = one per core.
    pub workers: u32,
    /// TUN segmentation/checksum offload (IFF_VNET_HDR, TSO) and UDP GSO/GRO on the underlay.
    pub offload: bool,
    /// Requested SO_RCVBUF/SO_SNDBUF of the underlay sockets, in bytes.
    pub socket_buffer: u32,
    /// The AES-GCM implementation of the ESP path.
    pub aead: AeadChoice,
}

/// `[dataplane] aead`: which AES-GCM implementation seals and opens ESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AeadChoice {
    /// Whichever measured faster at the tunnel MTU when the daemon started.
    Auto,
    Ring,
    AwsLc,
}

impl Default for Dataplane {
    fn default() -> Self {
        Dataplane {
            workers: 0,
            offload: true,
            socket_buffer: DEFAULT_SOCKET_BUFFER,
            aead: AeadChoice::Auto,
        }
    }
}

/// Underlay socket buffers unless configured: enough for a burst of several hundred
/// full-size ESP packets (the kernel's 208 KiB default overflowed at about 0.6 Gbit/s).
pub const DEFAULT_SOCKET_BUFFER: u32 = 4 << 20;

/// `[control]`: where `dmvpnctl` reaches the daemon and who may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// Unix socket path (default `/run/dmvpnd/dmvpnd.sock`).
    pub socket: PathBuf,
    /// A group whose members may run read-only commands (`show`, `explain`) besides root and
    /// the daemon's own user.
    pub group: Option<String>,
    /// A group whose members may also run commands that change state (`clear`, `reload`);
    /// unset, only root and the daemon's own user may.
    pub admin_group: Option<String>,
}

/// Where the control socket lives unless configured.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/dmvpnd/dmvpnd.sock";

/// `crypto ikev2 proposal/keyring/profile`.
#[derive(Debug, Clone)]
pub struct Ike {
    /// In order of preference; the IKE_SA_INIT SA payload carries one proposal per entry.
    pub proposals: Vec<IkeProposal>,
    pub keyring: Vec<KeyringEntry>,
    pub dpd: Dpd,
    /// Interval of RFC 3948 §4 NAT keepalives while behind NAT; `None` disables them.
    pub nat_keepalive: Option<Duration>,
    /// IKE SA lifetime before rekey (Cisco `lifetime`, default 86400 s).
    pub lifetime: Duration,
    /// Threads computing responder IKE_SA_INIT D-H and key derivation off the control task:
    /// `None` (unset) one fewer than the CPUs the daemon may run on, `Some(0)` none (all
    /// inline on the control task).
    pub workers: Option<u32>,
}

impl Ike {
    /// The pre-shared key for a peer: the keyring entry with the longest prefix covering it, so a
    /// specific peer entry wins over the `0.0.0.0/0` wildcard (Cisco keyring lookup order).
    pub fn psk_for(&self, peer: Ipv4Addr) -> Option<&Secret> {
        self.keyring
            .iter()
            .filter(|e| e.peer.contains(peer))
            .max_by_key(|e| e.peer.prefix_len)
            .map(|e| &e.psk)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeProposal {
    pub encryption: Encryption,
    pub prf: Prf,
    pub group: DhGroup,
}

/// AEAD transforms (RFC 5282 for IKE, RFC 4106 for ESP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encryption {
    #[serde(rename = "aes-gcm-128")]
    AesGcm128,
    #[serde(rename = "aes-gcm-256")]
    AesGcm256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prf {
    Sha256,
    Sha384,
    Sha512,
}

/// An IKEv2 Diffie-Hellman group number (IANA "Transform Type 4"); only the groups the crypto
/// facade implements are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "i64")]
pub struct DhGroup(pub u16);

impl DhGroup {
    pub const SUPPORTED: [u16; 3] = [19, 20, 31];
}

impl TryFrom<i64> for DhGroup {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match u16::try_from(v) {
            Ok(g) if Self::SUPPORTED.contains(&g) => Ok(DhGroup(g)),
            _ => Err(format!(
                "unsupported Diffie-Hellman group {v}; supported: 19 (ecp256), 20 (ecp384), 31 (curve25519)"
            )),
        }
    }
}

/// One `crypto ikev2 keyring` peer.
#[derive(Debug, Clone)]
pub struct KeyringEntry {
    pub name: String,
    /// Peers this key applies to; `0.0.0.0/0` is the wildcard (`address 0.0.0.0 0.0.0.0`).
    pub peer: Ipv4Net,
    pub psk: Secret,
}

/// `dpd DELAY RETRY on-demand|periodic` (liveness check, RFC 7296 §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dpd {
    pub delay: Duration,
    pub retry: Duration,
    pub mode: DpdMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DpdMode {
    /// Probe only when sending traffic and nothing was received for `delay` (Cisco default).
    OnDemand,
    /// Probe every `delay`.
    Periodic,
}

/// `crypto ipsec transform-set` and SA options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipsec {
    pub transform: Encryption,
    /// Only transport mode exists here: GRE already carries the inner packet (RFC 4303 §3.1.1).
    pub mode: IpsecMode,
    /// Anti-replay window in packets (RFC 4303 §3.4.3); the receiver alone chooses it.
    pub replay_window: u32,
    /// Child SA lifetime before rekey (Cisco default 3600 s).
    pub lifetime: Duration,
    /// Volume lifetime: a Child SA is rekeyed once it sent this many kilobytes
    /// (`set security-association lifetime kilobytes`); `None`: time only. Without ESN a
    /// Child SA is rekeyed before its 32-bit sequence number runs out (RFC 4303 §3.3.3)
    /// either way.
    pub lifetime_kilobytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpsecMode {
    Transport,
}

/// `interface Tunnel0`: the TUN device and the mGRE encapsulation on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// Linux interface name (at most 15 bytes, IFNAMSIZ - 1).
    pub interface: String,
    /// Own tunnel (protocol) address with the prefix length the interface gets: the tunnel
    /// subnet's (`10.250.0.9/24`, as IOS `ip address`), or a host prefix (`10.250.0.9/32`, as
    /// FRR nhrpd routers address their GRE interface).
    pub address: Ipv4Net,
    /// The tunnel subnet every DMVPN router's tunnel address lies in (a network, no host bits):
    /// the subnet of `address`, or `tunnel.network` when `address` is a /32. NHRP's checks
    /// ("a registered or next-hop address lies in the tunnel subnet") and the directed
    /// broadcast use it.
    pub network: Ipv4Net,
    pub mtu: u16,
    /// Clamp the MSS option of TCP SYNs crossing the tunnel (`ip tcp adjust-mss`).
    pub adjust_mss: Option<u16>,
    /// GRE key (RFC 2890 §2.1), `tunnel key`.
    pub gre_key: Option<u32>,
    /// Packets the kernel queues on the TUN device for dmvpnd's readers (`ip link set …
    /// txqueuelen`); past it the kernel drops them (counted as the device's TX drops).
    pub txqueuelen: u32,
}

/// [`Tunnel::txqueuelen`] unless configured: a reader preempted for a few milliseconds on a
/// shared vCPU must not cost packets. The kernel's 500 for a TUN device held 3.3 ms of
/// 150 kpps and dropped 400-6,500 packets a benchmark round on the 2-vCPU machine
/// (benches/tunnel, spoke side); 4096 dropped none. It bounds memory too: at most that many
/// packets (GSO super-packets with offload, which TCP's small-queue limit keeps few).
pub const DEFAULT_TXQUEUELEN: u32 = 4096;

impl Tunnel {
    /// The route into the tunnel that the kernel does not add by itself: the tunnel subnet,
    /// when the interface has only a /32 (the kernel adds the subnet's route for a /24
    /// address, none for a host address). Without it, unicast to a peer's tunnel address (OSPF
    /// database exchange, ping) would follow the default route onto the underlay.
    pub fn network_route(&self) -> Option<Ipv4Net> {
        (self.address.prefix_len == 32).then_some(self.network)
    }
}

/// `ip nhrp …`.
#[derive(Debug, Clone)]
pub struct Nhrp {
    pub network_id: u32,
    /// Cleartext authentication extension (RFC 2332 §5.3.4), at most 8 bytes as on Cisco.
    pub authentication: Option<Secret>,
    /// Holding time advertised in registrations and replies (RFC 2332 §5.2.3).
    pub holding_time: Duration,
    pub role: Role,
    pub nhs: Vec<Nhs>,
    /// Spoke: the widest prefix a shortcut may cover, as a prefix length (default 24): a
    /// resolution reply for a shorter prefix is refused (no IOS command; IOS installs what
    /// the responder sends).
    pub max_shortcut_prefix: u8,
    /// Hub: most addresses one NBMA address may hold registered at once (default 8).
    pub max_registrations_per_nbma: u32,
    /// Longest holding time a peer may give an entry here; longer ones are clamped
    /// (default 65535 s: no clamp).
    pub max_holding_time: Duration,
    /// `ip nhrp nhs fallback SECS`: a better NHS that comes back up is used once it has been up
    /// this long (default 0: at once).
    pub nhs_fallback: Duration,
    /// `ip nhrp nhs cluster N max-connections M`: per cluster id, the most NHSs of that
    /// cluster registered at once. A cluster without an entry (cluster 0, the default, unless
    /// configured) has no limit: the spoke registers with all of its NHSs.
    pub cluster_limits: BTreeMap<u8, u8>,
}

/// Highest NHS cluster id (`ip nhrp nhs cluster 0..=10` on IOS).
pub const MAX_NHS_CLUSTER: u8 = 10;

/// Default `max-shortcut-prefix`.
pub const DEFAULT_MAX_SHORTCUT_PREFIX: u8 = 24;
/// Default `max-registrations-per-nbma`.
pub const DEFAULT_MAX_REGISTRATIONS_PER_NBMA: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Registers with the NHS list; `shortcut` installs routes learned from resolution replies.
    Spoke { shortcut: bool },
    /// Next hop server; `redirect` sends traffic indications (DMVPN phase 3).
    Hub { redirect: bool },
}

/// `ip nhrp nhs TUNNEL-ADDR nbma NBMA-ADDR [multicast]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nhs {
    pub address: Ipv4Addr,
    pub nbma: Ipv4Addr,
    /// Replicate multicast (e.g. OSPF hellos) to this NHS.
    pub multicast: bool,
    /// `ip nhrp nhs ADDR priority N`: of the NHSs that are up, traffic without a mapping of
    /// its own goes to the lowest value (0, the default, is the highest priority), then the
    /// first configured.
    pub priority: u8,
    /// `ip nhrp nhs ADDR … cluster N`: the group whose `max-connections` limits how many of
    /// its NHSs are registered at once (0, the default: the clusterless group).
    pub cluster: u8,
}

/// The NBMA side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Underlay {
    /// Interface to bind the underlay sockets to (`tunnel source`); `None` = any.
    pub interface: Option<String>,
    /// Own NBMA address; `None` = the source address of the route to each peer.
    pub local_address: Option<Ipv4Addr>,
}

/// A route into the tunnel: `prefix via next-hop-in-the-tunnel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticRoute {
    pub prefix: Ipv4Net,
    pub via: Ipv4Addr,
}

/// Key material from the configuration. Zeroed on drop and never printed by `Debug`.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}
impl Eq for Secret {}
