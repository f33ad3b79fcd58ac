//! The tunnel interface: a Linux TUN device (Documentation/networking/tuntap.rst) without packet
//! information header, configured over rtnetlink with the tunnel address, mask and MTU, up and
//! multicast-capable. The TUNSETIFF ioctl itself is done by `tun-rs`, so dmvpnd has no `unsafe`.

use anyhow::{Context, Result};
use dmvpn_config::Tunnel;
use tun_rs::{AsyncDevice, DeviceBuilder};

use crate::netlink::Netlink;

/// Bytes reserved in front of each packet read from the TUN so GRE (8), ESP header and IV (16),
/// the UDP encapsulation header (8) and slack can be pushed without moving the packet.
pub const HEADROOM: usize = 64;

/// An open, configured tunnel device.
pub struct TunDevice {
    pub dev: AsyncDevice,
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
            .finish()
    }
}

impl TunDevice {
    /// Creates the device named in the configuration (or attaches to a persistent one of that
    /// name) and configures it. Needs CAP_NET_ADMIN.
    pub async fn create(cfg: &Tunnel, netlink: &Netlink) -> Result<Self> {
        let dev = DeviceBuilder::new()
            .name(cfg.interface.clone())
            // No IFF_MULTI_QUEUE yet: one reader task. The design's per-core queues come later.
            .multi_queue(false)
            .packet_information(false)
            .build_async()
            .with_context(|| {
                format!(
                    "creating TUN device {} (needs CAP_NET_ADMIN and /dev/net/tun)",
                    cfg.interface
                )
            })?;
        let name = dev.name().context("reading TUN device name")?;
        let index = dev.if_index().context("reading TUN device index")?;
        netlink
            .configure_tunnel(index, cfg.address.addr, cfg.address.prefix_len, cfg.mtu)
            .await
            .with_context(|| format!("configuring {name}"))?;
        Ok(TunDevice {
            dev,
            name,
            index,
            mtu: cfg.mtu,
        })
    }

    /// Size of a receive buffer: headroom plus the largest packet the kernel hands us.
    pub fn buffer_len(&self) -> usize {
        HEADROOM + usize::from(self.mtu)
    }
}
