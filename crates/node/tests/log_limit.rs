//! The log lines a peer can cause at will are rate-limited per peer (issue 13, "Local"): NHRP
//! packets failing authentication at ten a second for minutes get the hub a few lines per
//! peer and minute and a "similar messages suppressed" count, not one line per packet.

mod sim;

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dmvpn_nhrp::codes::PacketType;
use dmvpn_nhrp::packet::{Body, Packet};
use dmvpn_node::SlowPath;
use sim::{Net, hub_config, spoke_config};

const HUB_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const HUB_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
const A_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const A_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 11);
const B_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);

/// Everything logged while `f` runs, one string per line.
fn captured(f: impl FnOnce()) -> Vec<String> {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let out = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || out.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_owned).collect()
}

/// An NHRP Purge Request from `from` without the authentication extension.
fn unauthenticated_purge(from: Ipv4Addr, id: u32) -> Vec<u8> {
    let mut p = Packet::new_ipv4(
        PacketType::PURGE_REQUEST,
        255,
        Body::Common {
            flags: 0,
            request_id: id,
            cies: Vec::new(),
        },
    );
    p.src_nbma = from.octets().to_vec();
    p.src_protocol = A_TUNNEL.octets().to_vec();
    p.dst_protocol = HUB_TUNNEL.octets().to_vec();
    p.to_bytes().unwrap()
}

#[test]
fn nhrp_authentication_failures_get_a_few_lines_a_minute_and_a_count() {
    let mut net = Net::hub_and_spoke(
        HUB_NBMA,
        &hub_config(HUB_NBMA),
        A_NBMA,
        &spoke_config("10.250.0.11", HUB_NBMA, ""),
    );
    net.idle(Duration::from_secs(5));
    // Ten a second for five minutes over the spoke's SA (as the dataplane hands them over),
    // and then the same from a second address.
    let mut id = 0;
    let lines = captured(|| {
        for peer in [A_NBMA, B_NBMA] {
            for _ in 0..300 {
                for _ in 0..10 {
                    id += 1;
                    let now = net.now;
                    let bytes = unauthenticated_purge(peer, id);
                    net.hosts[0]
                        .node
                        .handle_slow_path(now, SlowPath::Nhrp { peer, bytes });
                }
                net.idle(Duration::from_secs(1));
            }
        }
        net.idle(Duration::from_secs(70));
    });
    let failures = net.hosts[0].node.nhrp().counters().auth_failures;
    assert_eq!(failures, 6000);
    for peer in [A_NBMA, B_NBMA] {
        let of = |needle: &str| {
            lines
                .iter()
                .filter(|l| l.contains(needle) && l.contains(&format!("peer={peer}")))
                .collect::<Vec<_>>()
        };
        let logged = of("NHRP authentication failure: packet dropped");
        let summaries = of("similar messages suppressed (NHRP authentication failure");
        println!(
            "{peer}: 3,000 failures in 300 s, {} lines, {} summaries",
            logged.len(),
            summaries.len()
        );
        // Five per started minute, and each minute's remainder counted: 5 x 5 lines, 5
        // summaries of 595 each.
        assert_eq!(logged.len(), 25, "{logged:#?}");
        assert_eq!(summaries.len(), 5, "{summaries:#?}");
        assert!(
            summaries
                .iter()
                .all(|l| l.contains("595 similar messages suppressed")),
            "{summaries:#?}"
        );
    }
}
