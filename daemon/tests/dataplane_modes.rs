//! The packet workers in both modes, through the real kernel path: with offload (TUN TSO
//! super-packets split and sealed, UDP GSO runs, GRO receive, TCP segments coalesced on the
//! TUN write; two workers) and with offload forced off (`[dataplane] offload = false`, one
//! worker: one packet per system call). In each, both spokes register (B behind the NAT, so its
//! ESP rides UDP 4500), a large ping crosses, and a 24 MiB TCP transfer from spoke B's LAN to
//! the hub's LAN arrives byte for byte (its SHA-256 compared) — the stream that exercises
//! segmentation, GSO and coalescing.
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft`, `ping` and `python3`.

use dmvpn_tests::e2e::{
    HUB_LAN_HOST, HUB_TUNNEL, Keys, Node, NodeConfig, SPOKE_A_LAN_HOST, SPOKE_A_TUNNEL, TestDir,
    Topology,
};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::{Scenario, e2e_config, edit_config, start_registered, table};

const TRANSFER_BYTES: usize = 24 << 20;

fn with_dataplane(
    dir: &TestDir,
    node: Node,
    keys: &Keys,
    offload: bool,
    workers: i64,
) -> NodeConfig {
    let cfg = e2e_config(dir, node, keys);
    edit_config(&cfg.config, |t| {
        let d = table(t, "dataplane");
        d.insert("offload".into(), toml::Value::Boolean(offload));
        d.insert("workers".into(), toml::Value::Integer(workers));
    });
    cfg
}

fn offloaded(dir: &TestDir, node: Node, keys: &Keys) -> NodeConfig {
    with_dataplane(dir, node, keys, true, 2)
}

fn plain(dir: &TestDir, node: Node, keys: &Keys) -> NodeConfig {
    with_dataplane(dir, node, keys, false, 1)
}

/// A TCP sink on the hub's LAN host that prints the SHA-256 of what it received, and a source
/// on spoke B's LAN host that sends deterministic bytes; returns both digests.
fn transfer(s: &mut Scenario<'_>, t: &Topology) -> (String, String) {
    let server = format!(
        "import socket,hashlib\n\
         s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('{HUB_LAN_HOST}',5201));s.listen(1);s.settimeout(60)\n\
         c,_=s.accept();c.settimeout(60);h=hashlib.sha256();n=0\n\
         while True:\n d=c.recv(1<<16)\n if not d: break\n h.update(d);n+=len(d)\n\
         print(n,h.hexdigest())\n"
    );
    let client = format!(
        "import socket,hashlib,time\n\
         data=bytes((i*7+i//251)&255 for i in range({TRANSFER_BYTES}))\n\
         for _ in range(50):\n try:\n  c=socket.create_connection(('{HUB_LAN_HOST}',5201),timeout=5);break\n except OSError: time.sleep(0.1)\n\
         c.settimeout(60);c.sendall(data);c.close()\n\
         print(len(data),hashlib.sha256(data).hexdigest())\n"
    );
    let srv = t
        .lan_hub
        .command("python3")
        .args(["-c", &server])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| s.fail(format!("starting the TCP sink: {e}")));
    let out = t
        .lan_b
        .exec("python3", &["-c", &client])
        .unwrap_or_else(|e| s.fail(format!("the TCP source: {e:#}")));
    let sent = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let got = srv.wait_with_output().map_or_else(
        |e| s.fail(format!("the TCP sink: {e}")),
        |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
    );
    (sent, got)
}

fn run(label: &'static str, config: fn(&TestDir, Node, &Keys) -> NodeConfig, offload: bool) {
    require_root_and_tools();
    let dir = TestDir::new(label).unwrap();
    let t = Topology::new().expect("building the topology");
    let (mut s, _) = start_registered(label, &t, &dir, &[Node::SpokeA, Node::SpokeB], config);

    s.step("the hub logged the dataplane it runs");
    let want = format!("offload={offload}");
    s.wait_line(
        Node::Hub,
        "tunnel interface up",
        0,
        std::time::Duration::from_secs(5),
        &|l| l.contains("tunnel interface up") && l.contains(&want),
    );

    s.step("pings, and 1300-byte pings LAN to LAN (near the tunnel MTU)");
    s.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);
    s.reach(&t.hub, "hub", SPOKE_A_TUNNEL);
    let big = t
        .lan_hub
        .exec(
            "ping",
            &[
                "-n",
                "-c",
                "4",
                "-i",
                "0.2",
                "-W",
                "1",
                "-s",
                "1300",
                SPOKE_A_LAN_HOST,
            ],
        )
        .unwrap_or_else(|e| s.fail(format!("ping: {e:#}")));
    let text = String::from_utf8_lossy(&big.stdout).into_owned();
    let answered = dmvpn_tests::e2e::answered_echoes(&text);
    if !(2..=4).all(|n| answered.contains(&n)) {
        s.fail(format!(
            "1300-byte ping hub LAN → spoke A LAN: {answered:?}\n{text}"
        ));
    }

    s.step("a 24 MiB TCP transfer spoke B LAN → hub LAN arrives byte for byte");
    let (sent, got) = transfer(&mut s, &t);
    if sent.is_empty() || sent != got {
        s.fail(format!("sent `{sent}`, received `{got}`"));
    }

    s.step("no daemon logged an error");
    s.check_no_errors();
    s.check_alive();
    s.finish();
}

#[test]
fn offloaded_workers_carry_tcp_intact() {
    run("dp-offload", offloaded, true);
}

#[test]
fn without_offload_one_packet_per_call_still_carries_tcp_intact() {
    run("dp-plain", plain, false);
}
