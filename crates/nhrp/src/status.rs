//! Operator-visible state of each next hop server (RFC 2332 §5.2.3
//! registration as a next hop client sees it; `show ip nhrp nhs`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Registration state of one NHS as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NhsState {
    /// Waiting for the daemon to bring up the IPsec SA.
    WaitingForSa,
    /// Registration sent, no reply yet, not registered.
    Registering,
    /// Registered (possibly with a refresh outstanding).
    Up,
    /// Kept in reserve: neither registering nor asking for an SA (an NHS cluster's
    /// `max-connections` has enough better NHSs up; `Engine::set_nhs_active`).
    Standby,
}

/// One NHS as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NhsStatus {
    /// NHS tunnel address, configured or learned.
    pub protocol_addr: Option<IpAddr>,
    /// NHS NBMA address.
    pub nbma_addr: IpAddr,
    /// Multicast replication on.
    pub multicast: bool,
    /// State.
    pub state: NhsState,
    /// Registration expiry when up.
    pub expires: Option<Instant>,
    /// Current retransmission wait.
    pub retry_wait: Duration,
}
