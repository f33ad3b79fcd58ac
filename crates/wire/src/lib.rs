//! Zero-copy wire views and buffers for the dmvpnd data and control planes.
//!
//! - [`PacketBuf`]: one buffer per packet, with headroom for GRE + ESP + UDP so
//!   encapsulation and encryption happen in place; each packet thread owns and reuses its own.
//! - Header views in the smoltcp `wire` style (`new_checked` does the one length check,
//!   named getters/setters, `…Repr` with `parse`/`emit`): [`ipv4`], [`ipv6`], [`udp`]
//!   (incl. RFC 3948 port-4500 classification), [`esp`], [`gre`] (with key).
//! - [`Ipv4Cidr`]: an IPv4 prefix (mask, contains, `a.b.c.d/len`).
//! - [`checksum`]: RFC 1071 / RFC 1624; [`mss`]: TCP MSS clamping.
//! - [`rw`]: a bounds-checked [`Reader`] and a length-patching [`Writer`] for
//!   TLV chains (IKEv2 payloads, NHRP extensions).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod buf;
pub mod checksum;
pub mod cidr;
pub mod code;
mod error;
pub mod esp;
mod field;
pub mod gre;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod mss;
pub mod rw;
pub mod udp;

pub use buf::PacketBuf;
pub use cidr::{CidrError, Ipv4Cidr};
pub use error::Error;
pub use esp::{EspPacket, Spi};
pub use gre::{EtherType, GrePacket, GreRepr};
pub use ip::IpProtocol;
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::Ipv6Packet;
pub use mss::clamp_mss;
pub use rw::{LenMark, Reader, Truncated, Writer};
pub use udp::{UdpEncap, UdpPacket};
