//! The per-packet crypto hot path at 64, 512, 1400 and 9000 bytes:
//!
//! - `raw_seal/<provider>`: AES-256-GCM seal in place of one buffer, for each candidate
//!   provider (aws-lc-rs, ring, RustCrypto `aes-gcm`), with the key set up once;
//! - `outbound`: GRE encap + ESP trailer + header + seal in a `PacketBuf` (dmvpn-esp over
//!   the crypto facade, whose AES-GCM is ring's), i.e. everything between reading from the
//!   TUN and sending;
//! - `inbound`: SPI lookup + replay check + open + window update + trailer removal + GRE
//!   decap, i.e. everything between receiving and writing to the TUN.
//!
//! Criterion reports Gbit/s (Throughput::Bytes); the summary printed at the end adds
//! packets/s and each path's ratio to the raw seal of the provider the facade uses (ring).
//!
//! Clock: the bench thread's CPU time (CLOCK_THREAD_CPUTIME_ID), because development and CI
//! machines are shared and wall time there mostly measures the scheduler. A packet's CPU
//! cost on one core is what bounds per-core throughput; set `DMVPN_BENCH_CLOCK=wall` for
//! wall-clock time on an idle machine.
//!
//! Run: `cargo bench -p dmvpn-benches -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use dmvpn_esp::{InboundSa, IpProtocol, OutboundSa, PacketBuf, SaTable, Spi};
use dmvpn_wire::{EtherType, gre};
use nix::time::{ClockId, clock_gettime};

/// Thread CPU time, or wall time (see the module docs), as a criterion measurement.
struct Clock {
    wall: Option<Instant>,
}

impl Clock {
    fn from_env() -> Self {
        let wall = std::env::var("DMVPN_BENCH_CLOCK").is_ok_and(|v| v == "wall");
        Self {
            wall: wall.then(Instant::now),
        }
    }

    fn now(&self) -> Duration {
        match self.wall {
            Some(origin) => origin.elapsed(),
            None => {
                let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
                Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
            }
        }
    }
}

impl Measurement for Clock {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        self.now()
    }
    fn end(&self, start: Duration) -> Duration {
        self.now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

type C = Criterion<Clock>;

const SIZES: [usize; 4] = [64, 512, 1400, 9000];
const KEYMAT: [u8; 36] = [0x3c; 36];
const GRE_KEY: u32 = 100;

fn raw_seal(c: &mut C) {
    let mut g = c.benchmark_group("raw_seal");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0xa5u8; size];
        let aad = [0u8; 8];

        let key = aws_lc_rs::aead::LessSafeKey::new(
            aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, &KEYMAT[..32]).unwrap(),
        );
        let mut n = 0u64;
        g.bench_function(BenchmarkId::new("aws-lc-rs", size), |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_be_bytes());
                let tag = key
                    .seal_in_place_separate_tag(
                        aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                        aws_lc_rs::aead::Aad::from(aad),
                        &mut buf,
                    )
                    .unwrap();
                black_box(&tag);
            })
        });

        let key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &KEYMAT[..32]).unwrap(),
        );
        g.bench_function(BenchmarkId::new("ring", size), |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_be_bytes());
                let tag = key
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(nonce),
                        ring::aead::Aad::from(aad),
                        &mut buf,
                    )
                    .unwrap();
                black_box(&tag);
            })
        });

        use aes_gcm::aead::{AeadInPlace, KeyInit};
        let key = aes_gcm::Aes256Gcm::new_from_slice(&KEYMAT[..32]).unwrap();
        g.bench_function(BenchmarkId::new("aes-gcm", size), |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_be_bytes());
                let tag = key
                    .encrypt_in_place_detached(aes_gcm::Nonce::from_slice(&nonce), &aad, &mut buf)
                    .unwrap();
                black_box(&tag);
            })
        });
    }
    g.finish();
}

fn outbound(c: &mut C) {
    let mut g = c.benchmark_group("outbound");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let sa = OutboundSa::new(Spi(0x1000_0001), &KEYMAT, false).unwrap();
        let mut buf = PacketBuf::new();
        g.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| {
                // The inner packet as the TUN read left it: `size` bytes at the headroom.
                buf.reset(PacketBuf::DEFAULT_HEADROOM).unwrap();
                buf.push_back(size).unwrap();
                gre::encap(&mut buf, EtherType::IPV4, GRE_KEY).unwrap();
                black_box(sa.seal(&mut buf, IpProtocol::GRE).unwrap());
            })
        });
    }
    g.finish();
}

fn inbound(c: &mut C) {
    // Every packet needs a fresh sequence number, or the replay window drops it. Packets are
    // sealed in untimed chunks and opened in timed chunks (iter_custom), in the same
    // buffers, so nothing is copied or allocated in either phase.
    const CHUNK: usize = 32;
    let mut g = c.benchmark_group("inbound");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let out = OutboundSa::new(Spi(0x2000_0002), &KEYMAT, false).unwrap();
        let table = SaTable::new().with_inserted(Arc::new(
            InboundSa::new(Spi(0x2000_0002), &KEYMAT, false, dmvpn_esp::DEFAULT_WINDOW).unwrap(),
        ));
        let mut bufs: Vec<PacketBuf> = (0..CHUNK).map(|_| PacketBuf::new()).collect();
        let clock = Clock::from_env();
        g.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(CHUNK);
                    for buf in &mut bufs[..n] {
                        buf.reset(PacketBuf::DEFAULT_HEADROOM).unwrap();
                        buf.push_back(size).unwrap();
                        gre::encap(buf, EtherType::IPV4, GRE_KEY).unwrap();
                        out.seal(buf, IpProtocol::GRE).unwrap();
                    }
                    let t = clock.start();
                    for buf in &mut bufs[..n] {
                        let (_, nh) = table.open(buf).unwrap();
                        debug_assert_eq!(nh, IpProtocol::GRE);
                        black_box(gre::decap(buf, GRE_KEY).unwrap());
                    }
                    timed += clock.end(t);
                    left -= n;
                }
                timed
            })
        });
    }
    g.finish();
}

fn criterion_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("CRITERION_HOME") {
        return h.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join("criterion")
}

/// Mean ns per packet for one bench, if it ran in this process.
fn mean_ns(dir: &Path, id: &str, since: SystemTime) -> Option<f64> {
    let path = dir.join(id).join("new").join("estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn summary(dir: PathBuf, since: SystemTime) {
    println!(
        "\n{:<28} {:>10} {:>10} {:>14}",
        "bench", "Gbit/s", "Mpps", "vs raw ring"
    );
    for size in SIZES {
        // The paths are measured against the provider the facade uses for AES-GCM.
        let raw = mean_ns(&dir, &format!("raw_seal/ring/{size}"), since);
        for id in [
            format!("raw_seal/aws-lc-rs/{size}"),
            format!("raw_seal/ring/{size}"),
            format!("raw_seal/aes-gcm/{size}"),
            format!("outbound/{size}"),
            format!("inbound/{size}"),
        ] {
            let Some(ns) = mean_ns(&dir, &id, since) else {
                continue;
            };
            let gbps = size as f64 * 8.0 / ns;
            let mpps = 1e3 / ns;
            let ratio = raw
                .map(|r| format!("{:.1} %", 100.0 * r / ns))
                .unwrap_or_default();
            println!("{id:<28} {gbps:>10.2} {mpps:>10.3} {ratio:>14}");
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(Clock::from_env());
    targets = raw_seal, outbound, inbound
}

fn main() {
    let since = SystemTime::now();
    benches();
    Criterion::default()
        .with_measurement(Clock::from_env())
        .configure_from_args()
        .final_summary();
    summary(criterion_dir(), since);
}
