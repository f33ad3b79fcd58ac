//! Transport-mode ESP SAs with AES-256-GCM-16: sealing (RFC 4303 §3.3) and opening
//! (RFC 4303 §3.4) in place in a [`PacketBuf`], with the packet layout of RFC 4106 §3–5:
//!
//! ```text
//! SPI(4) | Seq low(4) | IV(8) | payload | pad 1,2,3.. | pad len | next hdr | ICV(16)
//!                              '------------ encrypted ------------------'
//! AAD = SPI ‖ Seq (8 bytes), or SPI ‖ ESN high ‖ Seq low (12 bytes) with ESN (RFC 4106 §5)
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use dmvpn_crypto::AesGcm256;
use dmvpn_wire::esp::{EspPacket, HEADER_LEN};
use dmvpn_wire::{IpProtocol, PacketBuf, Spi};

use crate::Error;
use crate::replay::ReplayWindow;

/// Explicit IV length (RFC 4106 §3.1).
pub const IV_LEN: usize = AesGcm256::IV_LEN;
/// ICV length (ENCR_AES_GCM_16).
pub const ICV_LEN: usize = AesGcm256::ICV_LEN;
/// Bytes in front of the payload: ESP header and IV.
pub const PREFIX_LEN: usize = HEADER_LEN + IV_LEN;
/// Most bytes behind the payload: padding 3, pad length, next header, ICV.
pub const MAX_SUFFIX_LEN: usize = 3 + 2 + ICV_LEN;

/// Per-SA counters, updated by the dataplane and readable by the control plane at any time.
#[derive(Debug, Default)]
pub struct SaStats {
    packets: AtomicU64,
    bytes: AtomicU64,
    esp_bytes: AtomicU64,
    replay_drops: AtomicU64,
    auth_failures: AtomicU64,
}

/// A copy of an SA's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaCounters {
    /// Packets sealed, or opened and authenticated.
    pub packets: u64,
    /// Payload bytes (the protected packet, before padding) of those packets.
    pub bytes: u64,
    /// The same packets' ESP bytes as the wire carries them: header, IV, ciphertext, padding,
    /// trailer and ICV, without the IP header or a NAT-T UDP header.
    pub esp_bytes: u64,
    /// Inbound packets refused by the anti-replay window.
    pub replay_drops: u64,
    /// Inbound packets whose ICV did not verify.
    pub auth_failures: u64,
}

impl SaStats {
    /// The counters now. Relaxed loads: each value is exact, the set is not a transaction.
    pub fn snapshot(&self) -> SaCounters {
        SaCounters {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            esp_bytes: self.esp_bytes.load(Ordering::Relaxed),
            replay_drops: self.replay_drops.load(Ordering::Relaxed),
            auth_failures: self.auth_failures.load(Ordering::Relaxed),
        }
    }

    /// One packet of `payload` bytes that is `esp` bytes as ESP.
    fn count(&self, payload: usize, esp: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(payload as u64, Ordering::Relaxed);
        self.esp_bytes.fetch_add(esp as u64, Ordering::Relaxed);
    }
}

/// AAD for AES-GCM ESP (RFC 4106 §5): 8 bytes, or 12 with extended sequence numbers.
fn aad(spi: Spi, seq: u64, esn: bool) -> ([u8; 12], usize) {
    let mut a = [0u8; 12];
    let (s, rest) = a.split_at_mut(4);
    s.copy_from_slice(&spi.0.to_be_bytes());
    if esn {
        rest.copy_from_slice(&seq.to_be_bytes());
        (a, 12)
    } else {
        if let Some(low) = rest.get_mut(..4) {
            low.copy_from_slice(&(seq as u32).to_be_bytes());
        }
        (a, 8)
    }
}

/// Padding so that pad length and next header end on a 4-byte boundary (RFC 4303 §2.4).
fn pad_len(payload_len: usize) -> usize {
    (4 - (payload_len + 2) % 4) % 4
}

/// The sending half of a Child SA.
#[derive(Debug)]
pub struct OutboundSa {
    spi: Spi,
    aead: AesGcm256,
    esn: bool,
    /// The last sequence number used; the first packet carries 1 (RFC 4303 §3.3.3).
    seq: AtomicU64,
    /// Held by whoever is between claiming numbers and handing the packets to the socket
    /// ([`Self::turn`]).
    turn: Mutex<()>,
    soft_limit: u64,
    stats: SaStats,
}

impl OutboundSa {
    /// An SA sending with `spi` (the peer's inbound SPI), keyed with 36 bytes of KEYMAT
    /// (key ‖ salt, RFC 4106 §8.1), with or without extended sequence numbers (RFC 4304).
    pub fn new(spi: Spi, keymat: &[u8], esn: bool) -> Result<Self, Error> {
        let max = Self::max_seq_for(esn);
        Ok(Self {
            spi,
            aead: AesGcm256::new(keymat).map_err(Error::Key)?,
            esn,
            seq: AtomicU64::new(0),
            turn: Mutex::new(()),
            // Ask for a rekey with 1/64 of the space left: at 1 Mpps that is a minute of
            // warning before a 32-bit counter runs out.
            soft_limit: max - max / 64,
            stats: SaStats::default(),
        })
    }

    /// Sets the sequence number after which [`Self::rekey_soon`] turns true.
    pub fn with_soft_limit(mut self, soft_limit: u64) -> Self {
        self.soft_limit = soft_limit;
        self
    }

    fn max_seq_for(esn: bool) -> u64 {
        if esn { u64::MAX } else { u64::from(u32::MAX) }
    }

    /// The SPI this SA sends.
    pub fn spi(&self) -> Spi {
        self.spi
    }

    /// The counters.
    pub fn stats(&self) -> &SaStats {
        &self.stats
    }

    /// The last sequence number sent.
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// True once the sequence number passed the soft limit: the control plane should
    /// start a rekey so the SA is replaced before it is exhausted.
    pub fn rekey_soon(&self) -> bool {
        self.last_seq() >= self.soft_limit
    }

    /// Claims up to `n` consecutive sequence numbers with one atomic operation, for a batch
    /// of packets to this SA: fewer when the space is nearly used up, at least one, or
    /// `SequenceExhausted`. RFC 4303 §3.3.3: the counter MUST NOT cycle; without ESN the SA
    /// is unusable after 2^32 - 1 and a new one must be negotiated. Numbers a batch leaves
    /// unused are skipped: the receiver needs them unique and rising, not contiguous
    /// (RFC 4303 §3.4.3).
    pub fn reserve(&self, n: usize) -> Result<SeqBlock<'_>, Error> {
        let max = Self::max_seq_for(self.esn);
        let want = u64::try_from(n.max(1)).unwrap_or(u64::MAX);
        let prev = self
            .seq
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                (s < max).then(|| s.saturating_add(want).min(max))
            })
            .map_err(|_| Error::SequenceExhausted)?;
        Ok(SeqBlock {
            sa: self,
            next: prev + 1,
            remaining: want.min(max - prev),
        })
    }

    /// Waits for this SA's turn to send. The receiver accepts a number only inside its
    /// replay window (RFC 4303 §3.4.3), whose size is the peer's choice: 32 packets in
    /// strongSwan by default, 64 in IOS, 1024 in the reference deployment (interop notes
    /// §27). Two
    /// packet workers that each claim a block and send it could put the later block on the
    /// wire first whenever the earlier worker is preempted in between, by as many packets as
    /// the other sends meanwhile, and the peer drops the earlier block as replayed. A worker
    /// that claims its numbers from the turn and sends before dropping it keeps the wire in
    /// the order of the numbers. Taken once per run of packets to the SA, so it is contended
    /// only when two workers send to the same peer at the same moment; it guards no data, so
    /// a holder that panicked leaves it usable. It orders only those who take it (the plain
    /// [`Self::reserve`] and [`Self::seal`] do not), and it is not reentrant: a holder that
    /// asks for the same SA's turn again waits forever. The price: one SA's packets are
    /// sealed by one worker at a time.
    pub fn turn(&self) -> SendTurn<'_> {
        SendTurn {
            sa: self,
            _held: self.turn.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    fn has_room(buf: &PacketBuf) -> bool {
        buf.headroom() >= PREFIX_LEN && buf.tailroom() >= pad_len(buf.len()) + 2 + ICV_LEN
    }

    /// Encrypts the packet in `buf` (the payload, e.g. GRE) in place into an ESP packet
    /// carrying `next_header`, using the sequence number as the explicit IV: unique per key
    /// as RFC 4106 §3.1 requires, without a second counter. Returns the sequence number.
    /// On `NoRoom` or `SequenceExhausted` the buffer is unchanged.
    pub fn seal(&self, buf: &mut PacketBuf, next_header: IpProtocol) -> Result<u64, Error> {
        if !Self::has_room(buf) {
            return Err(Error::NoRoom);
        }
        self.reserve(1)?.seal(buf, next_header)
    }

    /// `seal` with a caller-chosen IV: only for the published test vectors, whose IVs are
    /// not sequence numbers.
    pub(crate) fn seal_with_iv(
        &self,
        buf: &mut PacketBuf,
        next_header: IpProtocol,
        seq: u64,
        iv: [u8; IV_LEN],
    ) -> Result<(), Error> {
        let payload_len = buf.len();
        let pad = pad_len(payload_len);
        let trailer = buf.push_back(pad + 2).map_err(|_| Error::NoRoom)?;
        for (i, b) in trailer.iter_mut().enumerate() {
            // RFC 4303 §2.4 default padding: 1, 2, 3, ...
            *b = (i + 1) as u8;
        }
        if let [.., pl, nh] = trailer {
            *pl = pad as u8;
            *nh = next_header.0;
        }
        let prefix = buf.push_front(PREFIX_LEN).map_err(|_| Error::NoRoom)?;
        let (hdr, iv_field) = prefix.split_at_mut(HEADER_LEN);
        let mut esp = EspPacket::new_unchecked(hdr);
        esp.set_spi(self.spi);
        esp.set_seq(seq as u32);
        iv_field.copy_from_slice(&iv);

        let (aad, aad_len) = aad(self.spi, seq, self.esn);
        let plaintext = buf.as_mut_slice().get_mut(PREFIX_LEN..).unwrap_or_default();
        let icv = self
            .aead
            .seal_in_place(&iv, aad.get(..aad_len).unwrap_or_default(), plaintext)
            .map_err(|_| Error::Provider)?;
        buf.push_back(ICV_LEN)
            .map_err(|_| Error::NoRoom)?
            .copy_from_slice(&icv);
        self.stats.count(payload_len, buf.len());
        Ok(())
    }
}

/// The right to send on an SA in the order of its sequence numbers ([`OutboundSa::turn`]):
/// numbers claimed through it go on the wire before those of the next holder, if the holder
/// sends them before dropping it.
#[derive(Debug)]
pub struct SendTurn<'a> {
    sa: &'a OutboundSa,
    _held: std::sync::MutexGuard<'a, ()>,
}

impl SendTurn<'_> {
    /// [`OutboundSa::reserve`] while holding the turn.
    pub fn reserve(&self, n: usize) -> Result<SeqBlock<'_>, Error> {
        self.sa.reserve(n)
    }
}

/// Sequence numbers claimed by [`OutboundSa::reserve`], each usable once: the number is
/// also the AES-GCM IV, and an IV used twice under one key gives away the plaintexts' XOR
/// and the authentication key (RFC 4106 §3.1), so a block borrows the SA it was taken from
/// and is neither `Clone` nor `Copy`.
#[derive(Debug)]
pub struct SeqBlock<'a> {
    sa: &'a OutboundSa,
    next: u64,
    remaining: u64,
}

impl SeqBlock<'_> {
    /// Numbers left in the block.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// [`OutboundSa::seal`] with the block's next number. On `NoRoom` the number stays in
    /// the block; `SequenceExhausted` once the block is used up.
    pub fn seal(&mut self, buf: &mut PacketBuf, next_header: IpProtocol) -> Result<u64, Error> {
        if !OutboundSa::has_room(buf) {
            return Err(Error::NoRoom);
        }
        if self.remaining == 0 {
            return Err(Error::SequenceExhausted);
        }
        let seq = self.next;
        self.remaining -= 1;
        // Wraps only once nothing remains (the last number of the ESN space).
        self.next = seq.wrapping_add(1);
        self.sa
            .seal_with_iv(buf, next_header, seq, seq.to_be_bytes())?;
        Ok(seq)
    }
}

/// The receiving half of a Child SA.
#[derive(Debug)]
pub struct InboundSa {
    spi: Spi,
    aead: AesGcm256,
    esn: bool,
    /// Its own lock: the dataplane never waits on another SA or on the control plane.
    replay: Mutex<ReplayWindow>,
    stats: SaStats,
}

impl InboundSa {
    /// An SA receiving on `spi` (our inbound SPI), keyed with 36 bytes of KEYMAT, with an
    /// anti-replay window of `window` packets (see [`crate::DEFAULT_WINDOW`]).
    pub fn new(spi: Spi, keymat: &[u8], esn: bool, window: u32) -> Result<Self, Error> {
        Ok(Self {
            spi,
            aead: AesGcm256::new(keymat).map_err(Error::Key)?,
            esn,
            replay: Mutex::new(ReplayWindow::new(window)?),
            stats: SaStats::default(),
        })
    }

    /// The SPI this SA receives.
    pub fn spi(&self) -> Spi {
        self.spi
    }

    /// The counters.
    pub fn stats(&self) -> &SaStats {
        &self.stats
    }

    pub(crate) fn window(&self) -> std::sync::MutexGuard<'_, ReplayWindow> {
        // A panic while holding the lock cannot leave the window half-updated in a way that
        // accepts a replay (each update is one bit or one slide), so keep using it.
        self.replay.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Verifies and decrypts the ESP packet in `buf` in place; on success `buf` holds the
    /// payload and the next header is returned. The replay window is checked before the
    /// ICV and updated only after it verifies (RFC 4303 §3.4.3).
    pub fn open(&self, buf: &mut PacketBuf) -> Result<IpProtocol, Error> {
        let (spi, seq_low) = {
            let esp = EspPacket::new_checked(buf.as_slice()).map_err(|_| Error::Truncated)?;
            (esp.spi(), esp.seq())
        };
        if buf.len() < PREFIX_LEN + 2 + ICV_LEN {
            return Err(Error::Truncated);
        }
        if spi != self.spi {
            return Err(Error::SpiMismatch);
        }

        // RFC 4303 §3.4.3: the replay check is applied before the integrity check, so a
        // flood of replays costs no decryption.
        let seq = {
            let w = self.window();
            let seq = if self.esn {
                w.infer_esn(seq_low)
            } else {
                Some(u64::from(seq_low))
            };
            match seq.map(|s| (s, w.check(s))) {
                Some((s, Ok(()))) => s,
                _ => {
                    self.stats.replay_drops.fetch_add(1, Ordering::Relaxed);
                    return Err(Error::Replay);
                }
            }
        };

        let (aad, aad_len) = aad(self.spi, seq, self.esn);
        let data = buf.as_mut_slice();
        let (prefix, ct) = data.split_at_mut(PREFIX_LEN);
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(prefix.get(HEADER_LEN..).unwrap_or_default());
        let pt_len = match self
            .aead
            .open_in_place(&iv, aad.get(..aad_len).unwrap_or_default(), ct)
        {
            Ok(n) => n,
            Err(_) => {
                // RFC 4303 §3.4.4.1: an ICV failure is auditable and the packet discarded.
                self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Auth);
            }
        };

        // Authentic: now the window may move (RFC 4303 §3.4.3). Re-checked under the lock
        // because another core may have accepted the same number meanwhile.
        if self.window().check_and_update(seq).is_err() {
            self.stats.replay_drops.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Replay);
        }

        let pt = ct.get(..pt_len).unwrap_or_default();
        let (pad, next_header) = match pt {
            [.., pl, nh] => (usize::from(*pl), IpProtocol(*nh)),
            _ => return Err(Error::Malformed),
        };
        let payload_len = pt_len.checked_sub(pad + 2).ok_or(Error::Malformed)?;
        // RFC 4303 §2.4: with the default padding the receiver SHOULD inspect it.
        let padding = pt.get(payload_len..payload_len + pad).unwrap_or_default();
        if padding
            .iter()
            .enumerate()
            .any(|(i, b)| usize::from(*b) != i + 1)
        {
            return Err(Error::BadPadding);
        }
        self.stats.count(payload_len, buf.len());
        buf.pull_front(PREFIX_LEN).map_err(|_| Error::Malformed)?;
        buf.trim_back(pad + 2 + ICV_LEN)
            .map_err(|_| Error::Malformed)?;
        // RFC 4303 §2.6: a dummy packet (next header 59) MUST be discarded by the receiver.
        if next_header == IpProtocol::IPV6_NONXT {
            return Err(Error::Dummy);
        }
        Ok(next_header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    const KEY: [u8; 36] = [0x42; 36];

    #[test]
    fn sequence_exhaustion_is_an_error_never_a_wrap() {
        let sa = OutboundSa::new(Spi(0x1000), &KEY, false).unwrap();
        sa.seq.store(u64::from(u32::MAX) - 1, Ordering::Relaxed);
        let mut buf = PacketBuf::from_slice(64, b"x").unwrap();
        assert_eq!(sa.seal(&mut buf, IpProtocol::GRE), Ok(u64::from(u32::MAX)));
        let mut buf = PacketBuf::from_slice(64, b"x").unwrap();
        assert_eq!(
            sa.seal(&mut buf, IpProtocol::GRE),
            Err(Error::SequenceExhausted)
        );
        assert_eq!(buf.as_slice(), b"x", "buffer untouched");
        assert_eq!(sa.last_seq(), u64::from(u32::MAX));

        // With ESN the same number is just the end of the first subspace.
        let esn = OutboundSa::new(Spi(0x1000), &KEY, true).unwrap();
        esn.seq.store(u64::from(u32::MAX), Ordering::Relaxed);
        assert_eq!(esn.seal(&mut buf, IpProtocol::GRE), Ok(1 << 32));
        esn.seq.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(
            esn.seal(&mut buf, IpProtocol::GRE),
            Err(Error::SequenceExhausted)
        );
    }

    #[test]
    fn reserve_hands_out_blocks_and_stops_at_the_end_of_the_space() {
        let sa = OutboundSa::new(Spi(0x1000), &KEY, false).unwrap();
        let mut a = sa.reserve(3).unwrap();
        let b = sa.reserve(2).unwrap();
        assert_eq!((a.remaining(), b.remaining()), (3, 2));
        assert_eq!(sa.last_seq(), 5, "one reservation claims the whole block");
        let mut buf = PacketBuf::from_slice(64, b"x").unwrap();
        assert_eq!(a.seal(&mut buf, IpProtocol::GRE), Ok(1));
        // No room: the number stays in the block for the next packet.
        let mut full = PacketBuf::from_slice(0, b"x").unwrap();
        assert_eq!(a.seal(&mut full, IpProtocol::GRE), Err(Error::NoRoom));
        for expect in [2, 3] {
            let mut buf = PacketBuf::from_slice(64, b"x").unwrap();
            assert_eq!(a.seal(&mut buf, IpProtocol::GRE), Ok(expect));
        }
        let mut buf = PacketBuf::from_slice(64, b"x").unwrap();
        assert_eq!(
            a.seal(&mut buf, IpProtocol::GRE),
            Err(Error::SequenceExhausted)
        );
        assert_eq!(buf.as_slice(), b"x", "buffer untouched");
        assert_eq!(b.remaining(), 2, "a block is not used up by others");
        // Near the end of a 32-bit space a block is cut short, then nothing is left.
        sa.seq.store(u64::from(u32::MAX) - 2, Ordering::Relaxed);
        let mut c = sa.reserve(10).unwrap();
        assert_eq!(c.remaining(), 2);
        for expect in [u64::from(u32::MAX) - 1, u64::from(u32::MAX)] {
            let mut buf = PacketBuf::from_slice(64, b"x").unwrap();
            assert_eq!(c.seal(&mut buf, IpProtocol::GRE), Ok(expect));
        }
        assert_eq!(sa.reserve(1).err(), Some(Error::SequenceExhausted));
        // The last number of the ESN space is handed out once.
        let esn = OutboundSa::new(Spi(0x1000), &KEY, true).unwrap();
        esn.seq.store(u64::MAX - 1, Ordering::Relaxed);
        let mut d = esn.reserve(4).unwrap();
        assert_eq!(d.remaining(), 1);
        let mut buf = PacketBuf::from_slice(64, b"x").unwrap();
        assert_eq!(d.seal(&mut buf, IpProtocol::GRE), Ok(u64::MAX));
        let mut buf = PacketBuf::from_slice(64, b"x").unwrap();
        assert_eq!(
            d.seal(&mut buf, IpProtocol::GRE),
            Err(Error::SequenceExhausted)
        );
        assert_eq!(esn.reserve(1).err(), Some(Error::SequenceExhausted));
    }

    #[test]
    fn soft_limit_raises_rekey_flag() {
        let sa = OutboundSa::new(Spi(0x1000), &KEY, false)
            .unwrap()
            .with_soft_limit(3);
        for expect in [false, false, true, true] {
            let mut buf = PacketBuf::from_slice(64, b"x").unwrap();
            sa.seal(&mut buf, IpProtocol::GRE).unwrap();
            assert_eq!(sa.rekey_soon(), expect);
        }
        let default = OutboundSa::new(Spi(0x1000), &KEY, false).unwrap();
        default
            .seq
            .store(u64::from(u32::MAX) - (1 << 20), Ordering::Relaxed);
        assert!(default.rekey_soon());
        default.seq.store(1 << 20, Ordering::Relaxed);
        assert!(!default.rekey_soon());
    }

    #[test]
    fn esn_round_trip_across_the_32_bit_boundary() {
        let out = OutboundSa::new(Spi(0x5000), &KEY, true).unwrap();
        let inb = InboundSa::new(Spi(0x5000), &KEY, true, 32).unwrap();
        let start = (1u64 << 32) - 3;
        out.seq.store(start, Ordering::Relaxed);
        inb.window().check_and_update(start).unwrap();
        let pkts: Vec<Vec<u8>> = (0..6)
            .map(|_| {
                let mut b = PacketBuf::from_slice(64, b"abc").unwrap();
                out.seal(&mut b, IpProtocol::GRE).unwrap();
                b.as_slice().to_vec()
            })
            .collect();
        // Only the low 32 bits travel in the header; the IV carries the full number.
        assert_eq!(&pkts[5][4..8], &3u32.to_be_bytes());
        assert_eq!(&pkts[5][8..16], &(start + 6).to_be_bytes());
        // Delivered out of order across the boundary: inference (RFC 4303 A2.2) must pick
        // the right subspace for each, or the 12-byte AAD would fail the ICV.
        for i in [3usize, 0, 5, 1, 4, 2] {
            let mut b = PacketBuf::from_slice(64, &pkts[i]).unwrap();
            assert_eq!(inb.open(&mut b), Ok(IpProtocol::GRE), "packet {i}");
        }
        assert_eq!(inb.window().top(), start + 6);
        assert_eq!(inb.stats().snapshot().auth_failures, 0);
    }

    #[test]
    fn bad_padding_and_dummy_packets_are_refused_after_authentication() {
        let out = OutboundSa::new(Spi(0x6000), &KEY, false).unwrap();
        let inb = InboundSa::new(Spi(0x6000), &KEY, false, 64).unwrap();
        let mut b = PacketBuf::from_slice(64, b"").unwrap();
        out.seal(&mut b, IpProtocol::IPV6_NONXT).unwrap();
        assert_eq!(inb.open(&mut b), Err(Error::Dummy));
        // Authentic but non-default padding: plaintext 0 | 7 7 7 | pad length 3 | next
        // header 4, encrypted exactly as seal would (seal itself always pads 1, 2, 3).
        let mut pt = PacketBuf::from_slice(64, &[0, 7, 7, 7, 3, 4]).unwrap();
        let seq = 3u64;
        let iv = seq.to_be_bytes();
        let mut hdr = [0u8; 16];
        hdr[..4].copy_from_slice(&0x6000u32.to_be_bytes());
        hdr[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        hdr[8..].copy_from_slice(&iv);
        let (aad_bytes, n) = aad(Spi(0x6000), seq, false);
        let icv = out
            .aead
            .seal_in_place(&iv, &aad_bytes[..n], pt.as_mut_slice())
            .unwrap();
        pt.push_front(16).unwrap().copy_from_slice(&hdr);
        pt.push_back(16).unwrap().copy_from_slice(&icv);
        assert_eq!(inb.open(&mut pt), Err(Error::BadPadding));
        // Both were authentic, so both consumed their sequence numbers.
        assert_eq!(inb.window().check(1), Err(crate::Replay::Duplicate));
        assert_eq!(inb.window().check(3), Err(crate::Replay::Duplicate));
    }

    #[test]
    fn padding_aligns_trailer_to_four_bytes() {
        for len in 0..8 {
            assert_eq!((len + pad_len(len) + 2) % 4, 0);
            assert!(pad_len(len) <= 3);
        }
    }
}
