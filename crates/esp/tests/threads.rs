//! One SA driven from several threads at once, as the packet workers do: concurrent seals
//! never reuse a sequence number (the nonce of AES-GCM, RFC 4106 §3), and concurrent opens of
//! the same packets accept each sequence number exactly once — the replay check before
//! decryption and the window update after it (RFC 4303 §3.4.3) hold under contention.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use dmvpn_esp::{Error, InboundSa, IpProtocol, OutboundSa, PacketBuf, Spi};

const THREADS: usize = 4;
const PER_THREAD: usize = 900;

#[test]
fn concurrent_seals_and_opens_keep_sequence_and_replay_exact() {
    let key = [0x42u8; 36];
    let out = Arc::new(OutboundSa::new(Spi(0x0bad_cafe), &key, false).unwrap());
    let sealed = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (out, sealed) = (out.clone(), sealed.clone());
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let payload = [t as u8, (i >> 8) as u8, i as u8, 0xee];
                    let mut b =
                        PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, &payload).unwrap();
                    let seq = out.seal(&mut b, IpProtocol::GRE).unwrap();
                    sealed.lock().unwrap().push((seq, b.as_slice().to_vec()));
                }
            });
        }
    });
    let sealed = Arc::try_unwrap(sealed).unwrap().into_inner().unwrap();
    let seqs: HashSet<u64> = sealed.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs.len(),
        THREADS * PER_THREAD,
        "a sequence number was used twice"
    );
    assert_eq!(seqs.iter().max(), Some(&((THREADS * PER_THREAD) as u64)));

    // Every packet delivered twice, the copies spread over the threads in different orders;
    // the window (4096) covers them all, so only duplicates may be refused.
    let inbound = Arc::new(InboundSa::new(Spi(0x0bad_cafe), &key, false, 4096).unwrap());
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let replays = Arc::new(Mutex::new(0usize));
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (inbound, accepted, replays) = (inbound.clone(), accepted.clone(), replays.clone());
            let mine: Vec<(u64, Vec<u8>)> = sealed
                .iter()
                .chain(sealed.iter().rev())
                .enumerate()
                .filter(|(i, _)| i % THREADS == t)
                .map(|(_, p)| p.clone())
                .collect();
            s.spawn(move || {
                for (seq, bytes) in mine {
                    let mut b = PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, &bytes).unwrap();
                    match inbound.open(&mut b) {
                        Ok(IpProtocol::GRE) => accepted.lock().unwrap().push(seq),
                        Ok(p) => panic!("next header {p:?}"),
                        Err(Error::Replay) => *replays.lock().unwrap() += 1,
                        Err(e) => panic!("seq {seq}: {e:?}"),
                    }
                }
            });
        }
    });
    let accepted = accepted.lock().unwrap();
    let unique: HashSet<u64> = accepted.iter().copied().collect();
    assert_eq!(
        unique.len(),
        accepted.len(),
        "a sequence number was accepted twice"
    );
    assert_eq!(unique, seqs, "every packet accepted once");
    assert_eq!(*replays.lock().unwrap(), THREADS * PER_THREAD);
}

/// The workers' way: each batch claims its numbers with one `reserve` and seals from the block.
/// Blocks from several threads never overlap, each is one contiguous range, and the numbers
/// a short batch leaves unused are never handed out later.
#[test]
fn concurrent_batch_reservations_never_overlap() {
    let key = [0x42u8; 36];
    let out = Arc::new(OutboundSa::new(Spi(0x0bad_f00d), &key, false).unwrap());
    let used = Arc::new(Mutex::new(Vec::new()));
    let blocks = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (out, used, blocks) = (out.clone(), used.clone(), blocks.clone());
            s.spawn(move || {
                for i in 0..PER_THREAD / 10 {
                    // Batches of 1..=19 packets; every third one seals one packet fewer than
                    // it reserved.
                    let want = 1 + (t * 7 + i) % 19;
                    let mut block = out.reserve(want).unwrap();
                    assert_eq!(block.remaining(), want as u64);
                    let seal = if i % 3 == 0 { want - 1 } else { want };
                    let mut mine = Vec::new();
                    for _ in 0..seal {
                        let mut b =
                            PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, b"gre").unwrap();
                        mine.push(block.seal(&mut b, IpProtocol::GRE).unwrap());
                    }
                    let first = mine.first().copied();
                    blocks.lock().unwrap().push((first, want));
                    used.lock().unwrap().extend(mine);
                }
            });
        }
    });
    let used = used.lock().unwrap();
    let unique: HashSet<u64> = used.iter().copied().collect();
    assert_eq!(unique.len(), used.len(), "a sequence number was used twice");
    // The blocks tile 1..=total exactly: sorted by start, each begins where the last ended.
    let mut starts: Vec<(u64, usize)> = blocks
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(f, w)| f.map(|f| (f, *w)))
        .collect();
    starts.sort_unstable();
    for pair in starts.windows(2) {
        let ((a, wa), (b, _)) = (pair[0], pair[1]);
        assert!(a + wa as u64 <= b, "blocks at {a} (+{wa}) and {b} overlap");
    }
    let total: usize = blocks.lock().unwrap().iter().map(|(_, w)| w).sum();
    assert_eq!(out.last_seq(), total as u64, "one reservation per batch");
}
