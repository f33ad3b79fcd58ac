//! The per-packet path allocates nothing: seal and open (with ESN inference, the replay
//! window and the SPI table lookup) under a counting global allocator. This file is its own
//! test binary without the libtest harness (`harness = false`), so no other thread's
//! allocations are counted.

use std::alloc::System;
use std::sync::Arc;

use dmvpn_esp::{InboundSa, IpProtocol, OutboundSa, SaTable, Spi};
use dmvpn_wire::{EtherType, PacketBuf, gre};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    let k = [0x5a; 36];
    for esn in [false, true] {
        let out = OutboundSa::new(Spi(0x1234_5678), &k, esn).unwrap();
        let table = SaTable::new().with_inserted(Arc::new(
            InboundSa::new(Spi(0x1234_5678), &k, esn, 4096).unwrap(),
        ));
        // One buffer for the whole run, as each packet worker keeps its own.
        let mut b = PacketBuf::new();
        let inner = [0x45u8; 1400];

        // Warm up outside the measured region (first use of lazily initialised state).
        b.reset(PacketBuf::DEFAULT_HEADROOM).unwrap();
        b.push_back(inner.len()).unwrap().copy_from_slice(&inner);
        out.seal(&mut b, IpProtocol::GRE).unwrap();
        table.open(&mut b).unwrap();

        let region = Region::new(GLOBAL);
        for _ in 0..1000 {
            b.reset(PacketBuf::DEFAULT_HEADROOM).unwrap();
            b.push_back(inner.len()).unwrap().copy_from_slice(&inner);
            gre::encap(&mut b, EtherType::IPV4, 100).unwrap();
            out.seal(&mut b, IpProtocol::GRE).unwrap();
            assert_eq!(table.open(&mut b).unwrap().1, IpProtocol::GRE);
            assert_eq!(gre::decap(&mut b, 100).unwrap(), EtherType::IPV4);
            assert_eq!(b.len(), inner.len());
        }
        let s = region.change();
        assert_eq!(
            (s.allocations, s.reallocations),
            (0, 0),
            "per-packet path allocated (esn {esn}): {s:?}"
        );
        // The counter does work: an allocation in the region is seen.
        let region = Region::new(GLOBAL);
        let v = std::hint::black_box(vec![0u8; 16]);
        drop(v);
        assert_eq!(region.change().allocations, 1);
    }
    println!("no_alloc: seal and open allocated nothing in 2 × 1000 packets");
}
