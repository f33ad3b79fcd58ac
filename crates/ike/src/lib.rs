//! dmvpn-ike: a sans-IO IKEv2 endpoint (RFC 7296) for dmvpnd, with AES-GCM
//! (RFC 5282), ECP/Curve25519 groups (RFC 5903, RFC 8031), PSK
//! authentication, NAT traversal (RFC 7296 §2.23, RFC 3948) and receipt of
//! fragmented messages (RFC 7383).
//!
//! The daemon owns one [`Endpoint`]. It feeds datagrams with
//! [`Endpoint::handle_datagram`] and deadlines with
//! [`Endpoint::handle_timeout`], and drains [`Endpoint::poll_transmit`],
//! [`Endpoint::poll_event`] and [`Endpoint::poll_timeout`].
//!
//! **Non-ESP marker**: on UDP 4500 every IKE message is preceded by four
//! zero bytes (RFC 3948 §2.2). The *daemon* adds them when sending a
//! [`Transmit`] whose `local` or `remote` port is the NAT-T port
//! ([`Transmit::needs_non_esp_marker`]) and strips them before calling
//! `handle_datagram`, which always takes the bare IKE message.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod codes;
pub mod config;
mod endpoint;
pub mod keys;
pub mod message;
pub mod proposal;
pub mod sk;
#[cfg(feature = "testing")]
pub mod testing;

pub use codes::*;
pub use config::{Config, Dpd, DpdMode, EspProposal, IkeProposal, Keyring, Lifetimes, Retransmit};
pub use endpoint::*;
pub use message::{EmitError, Identification, Message, ParseError, Payload};
