//! dmvpnd: the daemon around the sans-IO protocol crates. It owns every piece of I/O: the TUN
//! device, the underlay sockets (UDP 500/4500, raw ESP), rtnetlink, signals and the event loop.

pub mod aead;
pub mod batch;
pub mod control_plane;
pub mod ctl;
pub mod datapath;
pub mod ike_pool;
pub mod keylog;
pub mod metrics;
pub mod metrics_events;
pub mod metrics_http;
pub mod netlink;
pub mod routes;
pub mod sdnotify;
pub mod status;
pub mod sys;
pub mod tun;
pub mod underlay;
