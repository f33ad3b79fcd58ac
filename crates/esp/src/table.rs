//! The inbound SA table by SPI (RFC 4301 §4.4.2: the SAD is searched by SPI for
//! unicast ESP). The control plane edits its copy and publishes clones; readers never
//! lock, and a clone shares every shard the next edit does not touch (dmvpn-snapmap), so
//! a hub with 10,000 SAs does not copy them all per change.

use std::sync::Arc;

use dmvpn_snapmap::SnapMap;

use dmvpn_wire::{EspPacket, IpProtocol, PacketBuf, Spi};

use crate::{Error, InboundSa};

/// A snapshot of the inbound SAs.
#[derive(Debug, Clone, Default)]
pub struct SaTable {
    inbound: SnapMap<Spi, Arc<InboundSa>>,
}

impl SaTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The SA receiving on `spi`.
    pub fn get(&self, spi: Spi) -> Option<&Arc<InboundSa>> {
        self.inbound.get(&spi)
    }

    /// Adds `sa` (replacing any SA with the same SPI).
    pub fn insert(&mut self, sa: Arc<InboundSa>) {
        self.inbound.insert(sa.spi(), sa);
    }

    /// Removes the SA receiving on `spi`.
    pub fn remove(&mut self, spi: Spi) {
        self.inbound.remove(&spi);
    }

    /// A new table with `sa` added (replacing any SA with the same SPI).
    #[must_use]
    pub fn with_inserted(&self, sa: Arc<InboundSa>) -> Self {
        let mut t = self.clone();
        t.insert(sa);
        t
    }

    /// A new table without `spi`.
    #[must_use]
    pub fn with_removed(&self, spi: Spi) -> Self {
        let mut t = self.clone();
        t.remove(spi);
        t
    }

    /// Number of SAs.
    pub fn len(&self) -> usize {
        self.inbound.len()
    }

    /// True when there are no SAs.
    pub fn is_empty(&self) -> bool {
        self.inbound.is_empty()
    }

    /// All SAs (for counters and `show` commands).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<InboundSa>> {
        self.inbound.values()
    }

    /// The SAs of shard `i` of the table (`0..dmvpn_snapmap::SHARDS`), for a walk over all
    /// of them in steps ([`SnapMap::shard`]).
    pub fn shard(&self, i: usize) -> impl Iterator<Item = &Arc<InboundSa>> {
        self.inbound.shard(i).map(|(_, sa)| sa)
    }

    /// Looks up the SA by the packet's SPI and opens the packet with it.
    pub fn open(&self, buf: &mut PacketBuf) -> Result<(Spi, IpProtocol), Error> {
        let spi = EspPacket::new_checked(buf.as_slice())
            .map_err(|_| Error::Truncated)?
            .spi();
        let sa = self.get(spi).ok_or(Error::UnknownSpi)?;
        Ok((spi, sa.open(buf)?))
    }
}
