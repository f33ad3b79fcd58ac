//! Engine configuration: the Cisco `ip nhrp …` interface settings
//! (RFC 2332 §5.2.3 holding time, Cisco authentication, network-id, NHS list).

use std::net::IpAddr;
use std::time::Duration;

use thiserror::Error;

/// Default registration holding time in Cisco, FRR and OpenNHRP (docs/interop-notes.md §16).
pub const DEFAULT_HOLDING_TIME: Duration = Duration::from_secs(7200);
/// Default cap on learned cache entries: beyond the 50,000 spokes a hub is measured with
/// (issue 12), at about 5 kB of node state per spoke.
pub const DEFAULT_MAX_CACHE_ENTRIES: usize = 262_144;
/// Default cap on the addresses one NBMA address may hold registered at a hub. A Cisco, FRR or
/// dmvpnd spoke registers its one tunnel address per NHS; the slack is for spokes that
/// register a few more (a CIE per address), and the cap stops one authenticated spoke from
/// registering the whole tunnel prefix in its name.
pub const DEFAULT_MAX_REGISTRATIONS_PER_NBMA: usize = 8;
/// Default widest shortcut a spoke accepts: a resolution reply for a prefix shorter than /24
/// is refused, so one responder cannot pull a whole /8 (routed elsewhere) through itself.
pub const DEFAULT_MIN_SHORTCUT_PREFIX_LEN: u8 = 24;
/// The longest holding time a CIE can carry (16 bits of seconds, RFC 2332 §5.2.0.1), the
/// default `Config::max_holding_time`: no clamp. Peers refresh at a third of their own holding
/// time, so a maximum below a third of a peer's lets its entries lapse between refreshes;
/// against the usual 7200 s anything from 2400 s up is safe.
pub const MAX_HOLDING_TIME: Duration = Duration::from_secs(65_535);
/// Default burst of new resolutions a spoke may start at once.
pub const DEFAULT_RESOLUTION_BURST: u32 = 100;
/// Default interval after which one more new resolution may start (10 per second sustained).
pub const DEFAULT_RESOLUTION_REFILL: Duration = Duration::from_millis(100);
/// Longest Cisco cleartext key (docs/interop-notes.md §11).
pub const MAX_AUTH_KEY_LEN: usize = 8;

/// Which side of RFC 2332 this engine plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Next Hop Client: registers with NHSs, resolves shortcuts.
    Spoke,
    /// Next Hop Server: registration server, resolution forwarder, redirects.
    Hub,
}

/// One `ip nhrp nhs <protocol> nbma <nbma> [multicast]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NhsConfig {
    /// The NHS tunnel address; `None` to learn it from the Responder
    /// Address extension (FRR `nhs dynamic`).
    pub protocol_addr: Option<IpAddr>,
    /// The NHS NBMA (public) address.
    pub nbma_addr: IpAddr,
    /// Replicate multicast (OSPF hellos) to this NHS.
    pub multicast: bool,
}

/// A route the engine consults to decide which prefix a resolution answers
/// for (the responder carries the covering prefix in its CIE, docs/interop-notes.md
/// §9) and, on a hub, which spoke a request is forwarded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Network address.
    pub prefix: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Tunnel next hop; `None` when the prefix is attached to this router.
    pub next_hop: Option<IpAddr>,
}

/// The interface's NHRP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Spoke or hub.
    pub role: Role,
    /// Own tunnel (protocol) address.
    pub protocol_addr: IpAddr,
    /// Tunnel prefix length.
    pub prefix_len: u8,
    /// Own NBMA address as configured on the interface (pre-NAT).
    pub nbma_addr: IpAddr,
    /// NHSs (spoke).
    pub nhs: Vec<NhsConfig>,
    /// `ip nhrp network-id`: scopes this engine's cache, never sent (docs/interop-notes.md §16).
    pub network_id: u32,
    /// `ip nhrp authentication`: at most 8 bytes.
    pub auth_key: Option<Vec<u8>>,
    /// Holding time advertised in registrations and replies.
    pub holding_time: Duration,
    /// Register with the unique flag (`no-unique` clears it).
    pub unique: bool,
    /// MTU advertised in CIEs, 0 for none.
    pub mtu: u16,
    /// Hub: send traffic indications (`ip nhrp redirect`).
    pub redirect: bool,
    /// Spoke: act on traffic indications (`ip nhrp shortcut`).
    pub shortcut: bool,
    /// Most learned cache entries (registrations, shortcuts, requesters): peers grow the
    /// cache, so it is capped; past the cap a new registration is refused with Insufficient
    /// Resources and nothing new is learned, each counted in `Counters::cache_full`.
    pub max_cache_entries: usize,
    /// Hub: most live registrations one (post-NAT) NBMA address may hold; past it a further
    /// address is refused with Administratively Prohibited (RFC 2332 §5.2.4) and counted as
    /// [`crate::DropReason::NbmaLimit`].
    pub max_registrations_per_nbma: usize,
    /// Spoke: the shortest prefix length a resolution reply may install as a shortcut
    /// (shorter ones are refused and counted as [`crate::DropReason::ShortcutRefused`]).
    pub min_shortcut_prefix_len: u8,
    /// Longest holding time a peer's registration, request or reply may give an entry here;
    /// longer ones are clamped (and a registration reply says so).
    pub max_holding_time: Duration,
    /// Spoke: new resolutions that may start in a burst (a token bucket; retransmissions and
    /// refreshes of used shortcuts take no token). Past it a resolution is not started,
    /// counted as [`crate::DropReason::RateLimited`].
    pub resolution_burst: u32,
    /// Spoke: one token comes back per this interval.
    pub resolution_refill: Duration,
    /// A lab knob (`[debug] ignore-purge`): drop every Purge Request received, counted as
    /// [`crate::DropReason::UnhandledType`], as a router that does not implement RFC 2332
    /// §5.2.5 purges would (FRR's nhrpd). Off by default.
    pub ignore_purge: bool,
}

impl Config {
    /// A spoke with Cisco defaults.
    pub fn spoke(
        protocol_addr: IpAddr,
        prefix_len: u8,
        nbma_addr: IpAddr,
        nhs: Vec<NhsConfig>,
    ) -> Self {
        Self {
            role: Role::Spoke,
            protocol_addr,
            prefix_len,
            nbma_addr,
            nhs,
            network_id: 1,
            auth_key: None,
            holding_time: DEFAULT_HOLDING_TIME,
            unique: true,
            mtu: 0,
            redirect: false,
            shortcut: true,
            max_cache_entries: DEFAULT_MAX_CACHE_ENTRIES,
            max_registrations_per_nbma: DEFAULT_MAX_REGISTRATIONS_PER_NBMA,
            min_shortcut_prefix_len: DEFAULT_MIN_SHORTCUT_PREFIX_LEN,
            max_holding_time: MAX_HOLDING_TIME,
            resolution_burst: DEFAULT_RESOLUTION_BURST,
            resolution_refill: DEFAULT_RESOLUTION_REFILL,
            ignore_purge: false,
        }
    }

    /// A hub with Cisco defaults and redirect on.
    pub fn hub(protocol_addr: IpAddr, prefix_len: u8, nbma_addr: IpAddr) -> Self {
        Self {
            role: Role::Hub,
            redirect: true,
            shortcut: false,
            ..Self::spoke(protocol_addr, prefix_len, nbma_addr, Vec::new())
        }
    }

    /// Checks what the wire formats cannot carry.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self
            .auth_key
            .as_ref()
            .is_some_and(|k| k.len() > MAX_AUTH_KEY_LEN)
        {
            return Err(ConfigError::AuthKeyTooLong);
        }
        if self.holding_time.as_secs() > u64::from(u16::MAX) || self.holding_time.as_secs() < 3 {
            return Err(ConfigError::HoldingTime);
        }
        if self.max_holding_time < Duration::from_secs(3) {
            return Err(ConfigError::HoldingTime);
        }
        let v4 = |a: &IpAddr| a.is_ipv4();
        if !v4(&self.protocol_addr)
            || !v4(&self.nbma_addr)
            || self
                .nhs
                .iter()
                .any(|n| !v4(&n.nbma_addr) || n.protocol_addr.is_some_and(|p| !v4(&p)))
        {
            return Err(ConfigError::AddressFamily);
        }
        if self.prefix_len > 32 {
            return Err(ConfigError::PrefixLen);
        }
        // FRR refuses shortcuts wider than /8 (docs/interop-notes.md §9): no lower setting.
        if !(crate::engine::MIN_SHORTCUT_PREFIX_LEN..=32).contains(&self.min_shortcut_prefix_len) {
            return Err(ConfigError::ShortcutPrefixLen);
        }
        if self.max_registrations_per_nbma == 0
            || self.resolution_burst == 0
            || self.resolution_refill.is_zero()
        {
            return Err(ConfigError::ZeroLimit);
        }
        Ok(())
    }
}

/// A configuration the engine cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The Cisco cleartext key is at most 8 bytes.
    #[error("authentication key longer than 8 bytes")]
    AuthKeyTooLong,
    /// The holding time is a 16-bit number of seconds; below 3 s the
    /// re-registration interval (a third) would be zero.
    #[error("holding time must be 3..=65535 seconds")]
    HoldingTime,
    /// Only IPv4 NBMA and protocol addresses are implemented.
    #[error("only IPv4 addresses are supported")]
    AddressFamily,
    /// Tunnel prefix length over 32.
    #[error("tunnel prefix length over 32")]
    PrefixLen,
    /// The minimum shortcut prefix length is outside 8..=32.
    #[error("minimum shortcut prefix length must be 8..=32")]
    ShortcutPrefixLen,
    /// A per-NBMA registration cap, resolution burst or refill interval of zero.
    #[error("registration cap, resolution burst and refill interval must be above zero")]
    ZeroLimit,
    /// A reload changed the role, addresses, network-id or NHS list: only a restart (with
    /// purges and re-registration) applies that.
    #[error("role, addresses, network-id or NHS list changed: restart to apply")]
    NeedsRestart,
}

/// Where request ids come from (RFC 2332 §5.2.0.1 `Request ID`), injected
/// so tests are deterministic.
pub trait RequestIdSource: Send {
    /// The next request id.
    fn next_request_id(&mut self) -> u32;
}

/// A boxed source is a source (the node hands the engine the daemon's system-RNG source or a
/// test's seeded one behind one type).
impl<T: RequestIdSource + ?Sized> RequestIdSource for Box<T> {
    fn next_request_id(&mut self) -> u32 {
        (**self).next_request_id()
    }
}

/// Pseudo-random request ids from a seed (SplitMix64), for tests and tools: SplitMix64 is
/// not a cryptographic generator, so a peer that sees a few ids can recover the state and
/// predict the rest. A running router takes its ids from the system RNG (the node's
/// `RngRequestIds`): the request id is what binds a reply to its request and a purge to its
/// registration (RFC 2332 §5.2.0.1 Request ID, §5.2.5), so it must not be guessable.: unpredictable enough
/// that a restarted spoke does not reuse its previous ids.
#[derive(Debug, Clone)]
pub struct SeededRequestIds {
    state: u64,
}

impl SeededRequestIds {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }
}

impl RequestIdSource for SeededRequestIds {
    fn next_request_id(&mut self) -> u32 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        // The high half of a 64-bit mix is as good as any.
        (z >> 32) as u32
    }
}

/// Counting request ids, as FRR allocates them (its first registration has id 1).
#[derive(Debug, Clone)]
pub struct SequentialRequestIds {
    next: u32,
}

impl SequentialRequestIds {
    /// Starts at `first`.
    pub fn starting_at(first: u32) -> Self {
        Self { next: first }
    }
}

impl RequestIdSource for SequentialRequestIds {
    fn next_request_id(&mut self) -> u32 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        id
    }
}
