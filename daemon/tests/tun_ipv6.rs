//! The tunnel carries IPv4 only: dmvpnd creates its TUN device with IPv6 address generation
//! off, so the kernel's router solicitations and MLD reports never reach the dataplane (where
//! they were counted as `not_ipv4` drops on an idle tunnel). Checked in a namespace whose
//! defaults would give the device a link-local address (`addr_gen_mode` random, as some
//! distributions configure), against a device the test turns back to that default.

use std::path::Path;
use std::time::{Duration, Instant};

use dmvpn_tests::{Netns, require_root_and_tools};
use dmvpnd::netlink::Netlink;
use dmvpnd::tun::TunDevice;

const CONFIG: &str = r#"
[[ike.proposal]]
encryption = "aes-gcm-256"
prf = "sha512"
group = 19
[[ike.keyring]]
name = "ANY"
peer = "0.0.0.0/0"
psk = "a tun test pre-shared key of 32b"
[tunnel]
interface = "dmv6test0"
address = "10.250.0.9/24"
mtu = 1400
gre-key = 100
[nhrp]
role = "spoke"
network-id = 100
authentication = "k8bytes!"
[[nhrp.nhs]]
address = "10.250.0.1"
nbma = "198.51.100.1"
"#;

/// The device's IPv6 addresses, polled until `want` holds or 5 s pass.
fn wait_for_v6(ns: &Netns, dev: &str, want: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let out = ns
            .exec("ip", &["-6", "addr", "show", "dev", dev])
            .expect("ip -6 addr");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if want(&text) || Instant::now() >= until {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_tun_device_gets_no_ipv6_link_local_address() {
    require_root_and_tools();
    let ns = Netns::named(format!("dmvpnv6-{}", std::process::id())).unwrap();
    ns.sysctl("net.ipv6.conf.all.disable_ipv6=0").unwrap();
    ns.sysctl("net.ipv6.conf.default.disable_ipv6=0").unwrap();
    ns.sysctl("net.ipv6.conf.default.addr_gen_mode=3").unwrap();
    let config = dmvpn_config::parse_str(CONFIG, Path::new("/nonexistent/dmvpnd.toml")).unwrap();
    let dev = config.tunnel.interface.clone();
    ns.run_in(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let netlink = Netlink::open().unwrap();
            let tun = TunDevice::create(&config.tunnel, &netlink, 1, false)
                .await
                .expect("creating the TUN device");
            // Up, with its file descriptor open (carrier), for a while: no link-local.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let v6 = wait_for_v6(&ns, &dev, |t| t.contains("fe80"));
            assert!(!v6.contains("fe80"), "link-local on the tunnel: {v6}");
            // The control: the same device with the namespace's default mode gets one, so the
            // check above can fail.
            for args in [
                &["link", "set", "dev", dev.as_str(), "down"][..],
                &["link", "set", "dev", dev.as_str(), "addrgenmode", "random"],
                &["link", "set", "dev", dev.as_str(), "up"],
            ] {
                let out = ns.exec("ip", args).unwrap();
                assert!(out.status.success(), "ip {args:?}: {out:?}");
            }
            let v6 = wait_for_v6(&ns, &dev, |t| t.contains("fe80"));
            assert!(
                v6.contains("fe80"),
                "control: no link-local even in random mode: {v6}"
            );
            drop(tun);
        });
    });
}
