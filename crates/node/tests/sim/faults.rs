//! Faults the simulated network can inflict on a host beyond `alive = false`: a kill and
//! restart that loses all state.

use std::sync::Arc;

use dmvpn_crypto::TestRng;
use dmvpn_dataplane::{Route, RouteProto, RouteTable};
use dmvpn_node::Node;

use super::Net;

impl Net {
    /// Host `h` is killed (SIGKILL: no purge, no delete, all state lost) and started again at
    /// once with the same configuration and a fresh RNG seed.
    pub fn restart(&mut self, h: usize, seed: u64) {
        let now = self.now;
        let host = &mut self.hosts[h];
        let config = host.node.config().clone();
        let private = host.private;
        host.node = Node::new(
            config,
            private,
            Box::new(move |_| private),
            Box::new(TestRng::new(seed)),
            Box::new(dmvpn_nhrp::SeededRequestIds::new(seed)),
            now,
        )
        .expect("node");
        host.tables = Arc::new(host.node.tables().clone());
        // The kernel keeps the connected and routing-daemon routes; dmvpnd's own come back
        // from the new node.
        let routes: Vec<Route> = host
            .routes
            .iter()
            .filter(|r| r.proto != RouteProto::DMVPND)
            .copied()
            .collect();
        host.routes = RouteTable::new();
        for r in routes {
            host.routes.insert(r);
        }
        self.outputs(h);
        let host = &mut self.hosts[h];
        host.node.set_local_prefixes(vec![host.lan]);
        host.node.set_routes(Arc::new(host.routes.clone()));
        host.node.start(now);
        self.outputs(h);
    }
}
