//! Packets waiting for an SA: the one queue between "the dataplane has a packet for a peer
//! without an SA" (or NHRP has a packet for it) and "IKE installed a Child SA to that peer".
//! GRE never leaves unencrypted, so a packet without an SA either waits here or is dropped
//! and counted.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use dmvpn_wire::PacketBuf;
use dmvpn_wire::gre::EtherType;

/// Packets held per peer while its SA is negotiated (then dropped and counted).
pub const SA_QUEUE_DEPTH: usize = 32;
/// Peers with packets waiting at once: a hub that hears of many unreachable peers keeps a
/// bounded amount of memory (SA_QUEUE_DEPTH × this × a buffer at most).
pub const SA_QUEUE_PEERS: usize = 1024;

/// Per-peer FIFO queues with caps.
#[derive(Debug, Default)]
pub struct SaQueue {
    queues: HashMap<Ipv4Addr, VecDeque<(EtherType, PacketBuf)>>,
}

impl SaQueue {
    /// Queues a packet for `nbma`; gives it back when the peer's queue (or the table) is full.
    pub fn push(
        &mut self,
        nbma: Ipv4Addr,
        protocol: EtherType,
        buf: PacketBuf,
    ) -> Result<(), PacketBuf> {
        if !self.queues.contains_key(&nbma) && self.queues.len() >= SA_QUEUE_PEERS {
            return Err(buf);
        }
        let q = self.queues.entry(nbma).or_default();
        if q.len() >= SA_QUEUE_DEPTH {
            return Err(buf);
        }
        q.push_back((protocol, buf));
        Ok(())
    }

    /// Everything waiting for `nbma`, oldest first.
    pub fn take(&mut self, nbma: Ipv4Addr) -> VecDeque<(EtherType, PacketBuf)> {
        self.queues.remove(&nbma).unwrap_or_default()
    }

    /// Whether packets wait for `nbma`.
    pub fn has(&self, nbma: Ipv4Addr) -> bool {
        self.queues.get(&nbma).is_some_and(|q| !q.is_empty())
    }

    /// Packets waiting in all queues.
    pub fn len(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_peer_cap_and_fifo() {
        let mut q = SaQueue::default();
        let p = Ipv4Addr::new(198, 51, 100, 1);
        for i in 0..SA_QUEUE_DEPTH {
            let buf = PacketBuf::from_slice(64, &[i as u8]).unwrap();
            assert!(q.push(p, EtherType::IPV4, buf).is_ok());
        }
        let extra = PacketBuf::from_slice(64, &[0xee]).unwrap();
        assert!(q.push(p, EtherType::IPV4, extra).is_err());
        let out: Vec<u8> = q
            .take(p)
            .into_iter()
            .map(|(_, b)| b.as_slice()[0])
            .collect();
        assert_eq!(out, (0..SA_QUEUE_DEPTH as u8).collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    #[test]
    fn peer_count_is_capped() {
        let mut q = SaQueue::default();
        for i in 0..SA_QUEUE_PEERS as u32 {
            let buf = PacketBuf::from_slice(64, &[1]).unwrap();
            assert!(q.push(Ipv4Addr::from(i), EtherType::IPV4, buf).is_ok());
        }
        let buf = PacketBuf::from_slice(64, &[1]).unwrap();
        assert!(
            q.push(Ipv4Addr::new(203, 0, 113, 1), EtherType::IPV4, buf)
                .is_err()
        );
        assert_eq!(q.len(), SA_QUEUE_PEERS);
    }
}
