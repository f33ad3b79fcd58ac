//! dmvpn-nhrp: a sans-IO NHRP engine (RFC 2332) with the Cisco DMVPN
//! extensions (cleartext authentication, NAT address extension, traffic
//! indication / redirect and phase 3 shortcuts), for spokes (next hop
//! clients) and hubs (next hop servers).
//!
//! - [`packet`]: the wire codec.
//! - [`Engine`]: the protocol engine. Inputs are [`Engine::handle_packet`],
//!   [`Engine::handle_timeout`] and commands; outputs are
//!   [`Engine::poll_transmit`], [`Engine::poll_event`] and
//!   [`Engine::poll_timeout`]. Time is always an argument and request ids
//!   come from an injected [`RequestIdSource`].
//! - `testing` (cargo feature `testing`): an in-memory network of engines for tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod codes;
pub mod error;
pub mod packet;

pub use codes::{CieCode, ErrorCode, ExtensionType, Flags, PacketType};
pub use error::{EmitError, ParseError};
pub use packet::{Authentication, Body, Cie, Extension, ExtensionBody, Packet};
pub mod cache;
pub mod config;
pub mod counters;
pub mod engine;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;

pub use cache::{CacheEntry, EntryFlags, EntryKind};
pub use config::{
    Config, ConfigError, NhsConfig, RequestIdSource, Role, Route, SeededRequestIds,
    SequentialRequestIds,
};
pub use counters::{Counters, DropReason};
pub use engine::{Engine, Event, MappingInfo, RequestKind, Transmit};
pub use status::{NhsState, NhsStatus};
