//! Zero-copy wire views and buffers for the dmvpnd data and control planes.
//!
//! - [`PacketBuf`]: one buffer per packet, with headroom for GRE + ESP + UDP so
//!   encapsulation and encryption happen in place.
//! - [`rw`]: a bounds-checked [`Reader`] and a length-patching [`Writer`] for
//!   TLV chains (IKEv2 payloads, NHRP extensions).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod rw;

pub use rw::{LenMark, Reader, Truncated, Writer};
