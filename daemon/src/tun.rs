//! The tunnel interface: a Linux TUN device (Documentation/networking/tuntap.rst) without packet
//! information header, one queue per packet worker (IFF_MULTI_QUEUE), with virtio-net
//! segmentation and checksum offload (IFF_VNET_HDR with TSO4/TSO6/CSUM, and USO where the
//! kernel has it) unless it is refused or switched off; configured over rtnetlink with the
//! tunnel address, mask and MTU, up and multicast-capable. The TUNSETIFF and TUNSETOFFLOAD
//! ioctls are done by `tun-rs`, so dmvpnd has no `unsafe`.

use std::sync::Arc;

use anyhow::{Context, Result};
use dmvpn_config::Tunnel;
use tun_rs::{DeviceBuilder, SyncDevice};

use crate::netlink::Netlink;

/// An open, configured tunnel device and its queues.
pub struct TunDevice {
    /// One per packet worker; a reader thread blocks in each, and the writers share them.
    pub queues: Vec<Arc<SyncDevice>>,
    /// Reads may be GSO super-packets and writes carry a virtio-net header (TSO on).
    pub offload: bool,
    pub name: String,
    pub index: u32,
    pub mtu: u16,
}

impl std::fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunDevice")
            .field("name", &self.name)
            .field("index", &self.index)
            .field("mtu", &self.mtu)
            .field("queues", &self.queues.len())
            .field("offload", &self.offload)
            .finish()
    }
}

fn build(name: &str, queues: usize, offload: bool) -> std::io::Result<SyncDevice> {
    DeviceBuilder::new()
        .name(name.to_owned())
        .multi_queue(queues > 1)
        .packet_information(false)
        .offload(offload)
        .build_sync()
}

impl TunDevice {
    /// Creates the device named in the configuration (or attaches to a persistent one of that
    /// name) with `queues` queues and configures it. With `offload`, asks for TSO; a kernel or
    /// device that refuses it gets a plain device (logged once). Needs CAP_NET_ADMIN.
    pub async fn create(
        cfg: &Tunnel,
        netlink: &Netlink,
        queues: usize,
        offload: bool,
    ) -> Result<Self> {
        let queues = queues.max(1);
        let context = || {
            format!(
                "creating TUN device {} (needs CAP_NET_ADMIN and /dev/net/tun)",
                cfg.interface
            )
        };
        let (first, offload) = match build(&cfg.interface, queues, offload) {
            Ok(d) => {
                let on = d.tcp_gso();
                (d, on)
            }
            Err(e) if offload => {
                tracing::warn!(device = %cfg.interface, "TUN offload refused ({e}): packets are read and written one by one");
                (
                    build(&cfg.interface, queues, false).with_context(context)?,
                    false,
                )
            }
            Err(e) => return Err(e).with_context(context),
        };
        let name = first.name().context("reading TUN device name")?;
        let index = first.if_index().context("reading TUN device index")?;
        let mut all = vec![Arc::new(first)];
        for _ in 1..queues {
            let q = all[0]
                .try_clone()
                .with_context(|| format!("opening another queue of {name}"))?;
            all.push(Arc::new(q));
        }
        netlink
            .configure_tunnel(
                index,
                cfg.address.addr,
                cfg.address.prefix_len,
                cfg.mtu,
                cfg.txqueuelen,
            )
            .await
            .with_context(|| format!("configuring {name}"))?;
        if let Some(net) = cfg.network_route() {
            netlink
                .install_network_route(index, net.addr, net.prefix_len, cfg.address.addr)
                .await
                .with_context(|| format!("configuring {name}"))?;
        }
        Ok(TunDevice {
            queues: all,
            offload,
            name,
            index,
            mtu: cfg.mtu,
        })
    }
}
