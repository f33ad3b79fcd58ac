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
