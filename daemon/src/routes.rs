//! The tunnel route table shared between the route mirror (writer) and the dataplane
//! (readers): the table itself lives in `dmvpn_dataplane::routes`; this is its RCU cell.

use std::sync::Arc;

use arc_swap::ArcSwap;

pub use dmvpn_dataplane::routes::{Route, RouteProto, RouteTable};

/// The published route table: the mirror stores, the dataplane loads (no lock).
pub type SharedRoutes = Arc<ArcSwap<RouteTable>>;

pub fn shared(table: RouteTable) -> SharedRoutes {
    Arc::new(ArcSwap::from_pointee(table))
}
