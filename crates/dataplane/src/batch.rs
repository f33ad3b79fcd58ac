//! The outbound path for a batch of packets read from the TUN device at once (a GSO
//! super-packet split into segments, or several reads in a row): every packet is routed first,
//! then each run of consecutive packets to one peer is sealed from one block of sequence
//! numbers, claimed with one atomic operation on the SA ([`dmvpn_esp::OutboundSa::reserve`]),
//! instead of one per packet. The verdicts are the ones [`Tables::outbound`] gives one packet
//! at a time; only the atomics differ. A run is sealed and handed to the caller's send while
//! its SA's turn is held ([`dmvpn_esp::OutboundSa::turn`]), so that workers sharing an SA put
//! its packets on the wire in the order of their numbers.

use dmvpn_wire::PacketBuf;
use dmvpn_wire::gre::EtherType;

use crate::{DropReason, Outbound, RouteTable, Tables};

impl Tables {
    /// [`Self::outbound`] for each buffer of `bufs`, the verdicts in `verdicts` (as many as
    /// both slices hold). Packets to one peer keep their order, and their sequence numbers
    /// rise in that order; sent after this returns, though, another thread's packets to the
    /// same SA may go out between them ([`Self::outbound_batch_then`] sends in the turn).
    pub fn outbound_batch<B: AsMut<PacketBuf>>(
        &self,
        routes: &RouteTable,
        bufs: &mut [B],
        verdicts: &mut [Outbound],
    ) {
        self.outbound_batch_then(routes, bufs, verdicts, |_, _| {});
    }

    /// [`Self::outbound_batch`], calling `send` with each run of packets to one peer as soon
    /// as it is sealed and before the SA's turn is given up: the run's buffers and their
    /// verdicts (`Send`, or a drop for a packet that could not be sealed). A packet that
    /// `send` does not put on the wire before it returns may arrive behind a later run's;
    /// `send` must not seal to the same SA (the turn is not reentrant).
    pub fn outbound_batch_then<B: AsMut<PacketBuf>>(
        &self,
        routes: &RouteTable,
        bufs: &mut [B],
        verdicts: &mut [Outbound],
        mut send: impl FnMut(&mut [B], &[Outbound]),
    ) {
        let n = bufs.len().min(verdicts.len());
        let (Some(bufs), Some(verdicts)) = (bufs.get_mut(..n), verdicts.get_mut(..n)) else {
            return;
        };
        // Route everything; a routed packet is marked `NeedSa` until its run is sealed (and
        // stays so when its peer has no SA, which is then the verdict).
        for (buf, verdict) in bufs.iter_mut().zip(verdicts.iter_mut()) {
            *verdict = match self.route(routes, buf.as_mut()) {
                Ok(nbma) => Outbound::NeedSa { nbma },
                Err(v) => v,
            };
        }
        let (mut rest_b, mut rest_v) = (bufs, verdicts);
        while let Some(&first) = rest_v.first() {
            let len = rest_v.iter().take_while(|v| **v == first).count();
            let (Some((run_b, tail_b)), Some((run_v, tail_v))) = (
                std::mem::take(&mut rest_b).split_at_mut_checked(len),
                std::mem::take(&mut rest_v).split_at_mut_checked(len),
            ) else {
                break;
            };
            match first {
                Outbound::NeedSa { nbma } => self.seal_run(nbma, run_b, run_v, &mut send),
                // Drops, counted here; multicast is replicated (and counted) by the caller.
                _ => {
                    for verdict in run_v.iter() {
                        self.count_out(0, 0, *verdict);
                    }
                }
            }
            (rest_b, rest_v) = (tail_b, tail_v);
        }
    }

    /// Seals a run of packets to `nbma` from one reservation and sends it, in the SA's turn.
    fn seal_run<B: AsMut<PacketBuf>>(
        &self,
        nbma: std::net::Ipv4Addr,
        bufs: &mut [B],
        verdicts: &mut [Outbound],
        send: &mut impl FnMut(&mut [B], &[Outbound]),
    ) {
        let Some(path) = self.paths.get(&nbma) else {
            return;
        };
        let turn = path.out_sa.turn();
        let mut seqs = turn.reserve(bufs.len()).ok();
        for (buf, verdict) in bufs.iter_mut().zip(verdicts.iter_mut()) {
            let inner = buf.as_mut().len();
            *verdict = match seqs.as_mut() {
                Some(seqs) => Self::seal_from(
                    nbma,
                    path,
                    seqs,
                    EtherType::IPV4,
                    buf.as_mut(),
                    self.tunnel.gre_key,
                ),
                None => Outbound::Drop(DropReason::SequenceExhausted),
            };
            self.count_out(inner, buf.as_mut().len(), *verdict);
        }
        // Still in the turn: the run reaches the wire before any later block of this SA.
        send(bufs, verdicts);
    }
}
