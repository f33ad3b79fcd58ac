//! dmvpnd's operator surface, shared by the daemon and `dmvpnctl`:
//!
//! - [`ctl`]: the control socket's requests and responses (line-delimited JSON);
//! - [`schema`]: the versioned JSON reports behind `dmvpnctl show … --json`, documented field
//!   by field in docs/dmvpnctl.md (re-exported here);
//! - [`explain`]: the report of `dmvpnctl explain DEST`;
//! - [`render`]: their text form, laid out like the IOS commands operators know.
//!
//! Only serde: no engines, no async runtime, no netlink. The daemon fills the reports from its
//! engines (dmvpnd's `status` module); dmvpnctl decodes and prints them.

pub mod ctl;
pub mod explain;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod render;
mod render_explain;
pub mod schema;

pub use ctl::{Prefix, Request, Response, Show, ShowFilter};
pub use explain::{
    ExplainError, ExplainForwarding, ExplainKernel, ExplainNhrpEvent, ExplainPath, ExplainReport,
    ExplainRoute,
};
pub use render::ios_time;
pub use schema::*;

#[cfg(test)]
mod explain_tests;
#[cfg(test)]
mod tests;
