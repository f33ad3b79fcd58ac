//! Loading real files: the shipped examples, error positions and keys, secrets and permissions.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dmvpn_config::{ConfigError, DpdMode, Encryption, Role, load};

const BASE: &str = r#"
[ike]
[[ike.proposal]]
encryption = "aes-gcm-256"
prf = "sha512"
group = 19

[[ike.keyring]]
name = "ANY"
peer = "0.0.0.0/0"
psk = "inline-psk"

[tunnel]
address = "10.250.0.9/24"
mtu = 1400
adjust-mss = 1360
gre-key = 100

[nhrp]
role = "spoke"
network-id = 100
authentication = "k8bytes!"

[[nhrp.nhs]]
address = "10.250.0.1"
nbma = "198.51.100.1"
multicast = true
"#;

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// 1-based line of the first line containing `needle`, so expectations follow the text.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1
}

fn load_err(text: &str) -> (ConfigError, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "dmvpnd.toml", text, 0o600);
    let e = load(&p).expect_err("config must be rejected");
    (e, p, dir)
}

/// Asserts the error is at `file:line:` of the line holding `needle`, for `key`, mentioning `what`.
fn assert_err(text: &str, needle: &str, key: &str, what: &str) {
    let (e, p, _dir) = load_err(text);
    let msg = e.to_string();
    let line = line_of(text, needle);
    let prefix = format!("{}:{line}:", p.display());
    assert!(
        msg.starts_with(&prefix),
        "`{msg}` should start with `{prefix}`"
    );
    assert!(
        msg.contains(&format!(": {key}: ")),
        "`{msg}` should name key {key}"
    );
    assert!(msg.contains(what), "`{msg}` should say `{what}`");
    assert_eq!(e.key(), Some(key));
    assert_eq!(e.location().map(|l| l.line), Some(line));
}

fn repo_conf(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../conf")
        .join(name)
}

/// Copies an example with the example secrets file beside it, as it would be installed.
fn install_example(name: &str) -> (PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = fs::read_to_string(repo_conf(name)).unwrap();
    let secrets = fs::read_to_string(repo_conf("secrets.example.toml")).unwrap();
    write(dir.path(), "secrets.toml", &secrets, 0o600);
    (write(dir.path(), name, &text, 0o644), dir)
}

#[test]
fn spoke_example_is_the_reference_spoke() {
    let (p, _dir) = install_example("spoke.toml");
    let c = load(&p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.tunnel.address.to_string(), "10.250.0.9/24");
    assert_eq!(c.tunnel.address.netmask(), Ipv4Addr::new(255, 255, 255, 0));
    assert_eq!(
        (c.tunnel.mtu, c.tunnel.adjust_mss, c.tunnel.gre_key),
        (1400, Some(1360), Some(100))
    );
    assert_eq!(c.nhrp.network_id, 100);
    assert_eq!(c.nhrp.holding_time, Duration::from_secs(7200));
    assert_eq!(c.nhrp.role, Role::Spoke { shortcut: true });
    assert_eq!(c.nhrp.nhs.len(), 1);
    assert_eq!(c.nhrp.nhs[0].address, Ipv4Addr::new(10, 250, 0, 1));
    assert_eq!(c.nhrp.nhs[0].nbma, Ipv4Addr::new(198, 51, 100, 1));
    assert!(c.nhrp.nhs[0].multicast);
    assert_eq!(
        c.nhrp.authentication.as_ref().map(|s| s.expose()),
        Some(&b"NHRPKEY1"[..])
    );
    assert_eq!(c.ike.proposals[0].encryption, Encryption::AesGcm256);
    assert_eq!(c.ike.proposals[0].group.0, 19);
    assert_eq!(c.ike.dpd.delay, Duration::from_secs(40));
    assert_eq!(c.ike.dpd.retry, Duration::from_secs(5));
    assert_eq!(c.ike.dpd.mode, DpdMode::OnDemand);
    assert_eq!(c.ipsec.replay_window, 1024);
    let psk = c
        .ike
        .psk_for(Ipv4Addr::new(203, 0, 113, 7))
        .expect("wildcard psk");
    assert_eq!(psk.expose(), b"PRE_SHARED_KEY_HERE");
    // No active example route: it could shadow a prefix the user's host already reaches
    // (OSPF learns the enterprise prefix in the reference deployment).
    assert!(c.routes.is_empty());
    // Debug output must not leak keys.
    assert!(!format!("{c:?}").contains("PRE_SHARED_KEY_HERE"));
}

#[test]
fn hub_example_is_the_reference_hub() {
    let (p, _dir) = install_example("hub.toml");
    let c = load(&p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.tunnel.address.to_string(), "10.250.0.1/24");
    assert_eq!(c.nhrp.role, Role::Hub { redirect: true });
    assert!(c.nhrp.nhs.is_empty());
    assert_eq!(c.ipsec.replay_window, 128);
    assert_eq!(
        c.underlay.local_address,
        Some(Ipv4Addr::new(198, 51, 100, 1))
    );
}

#[test]
fn defaults_apply() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "d.toml", BASE, 0o600);
    let c = load(&p).unwrap();
    assert_eq!(c.ipsec.replay_window, 1024);
    assert_eq!(c.nhrp.holding_time, Duration::from_secs(7200));
    assert_eq!(c.ike.dpd.delay, Duration::from_secs(40));
    assert_eq!(c.ike.dpd.retry, Duration::from_secs(5));
    assert_eq!(c.ike.nat_keepalive, Some(Duration::from_secs(20)));
    assert_eq!(c.tunnel.interface, "dmvpn0");
    assert_eq!(c.tunnel.txqueuelen, dmvpn_config::DEFAULT_TXQUEUELEN);
    assert_eq!(c.underlay.local_address, None);
    assert_eq!(c.control.socket, Path::new("/run/dmvpnd/dmvpnd.sock"));
    assert_eq!(c.control.group, None);
}

#[test]
fn control_socket_is_configurable_and_must_be_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{BASE}\n[control]\nsocket = \"/run/x/ctl.sock\"\ngroup = \"netops\"\n");
    let c = load(&write(dir.path(), "c.toml", &text, 0o600)).unwrap();
    assert_eq!(c.control.socket, Path::new("/run/x/ctl.sock"));
    assert_eq!(c.control.group.as_deref(), Some("netops"));
    assert_eq!(c.control.admin_group, None);
    let text = format!("{BASE}\n[control]\ngroup = \"netops\"\nadmin-group = \"netadmin\"\n");
    let c = load(&write(dir.path(), "c.toml", &text, 0o600)).unwrap();
    assert_eq!(c.control.admin_group.as_deref(), Some("netadmin"));
    assert!(!c.warnings().iter().any(|w| w.contains("admin-group")));
    let text = format!("{BASE}\n[control]\ngroup = \"netops\"\nadmin-group = \"netops\"\n");
    let c = load(&write(dir.path(), "c.toml", &text, 0o600)).unwrap();
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.starts_with("control.admin-group = \"netops\" is also control.group")),
        "{:?}",
        c.warnings()
    );
    let text = format!("{BASE}\n[control]\nsocket = \"ctl.sock\"\n");
    assert_err(
        &text,
        "socket = \"ctl.sock\"",
        "control.socket",
        "must be an absolute path",
    );
}

#[test]
fn metrics_are_off_by_default_and_validated() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(&write(dir.path(), "m0.toml", BASE, 0o600)).unwrap();
    assert_eq!(c.metrics.listen, None, "off unless configured");
    assert_eq!(c.metrics.max_peers, dmvpn_config::DEFAULT_METRICS_MAX_PEERS);
    let text = format!("{BASE}\n[metrics]\nlisten = \"127.0.0.1:9477\"\nmax-peers = 0\n");
    let c = load(&write(dir.path(), "m1.toml", &text, 0o600)).unwrap();
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9477".parse().unwrap()));
    assert_eq!(c.metrics.max_peers, 0);
    let text = format!("{BASE}\n[metrics]\nlisten = \"[::1]:9477\"\n");
    let c = load(&write(dir.path(), "m2.toml", &text, 0o600)).unwrap();
    assert_eq!(c.metrics.listen, Some("[::1]:9477".parse().unwrap()));
    for (bad, what) in [
        ("localhost:9477", "is not an address:port"),
        ("127.0.0.1", "is not an address:port"),
        ("127.0.0.1:0", "needs a port"),
    ] {
        let text = format!("{BASE}\n[metrics]\nlisten = \"{bad}\"\n");
        assert_err(
            &text,
            &format!("listen = \"{bad}\""),
            "metrics.listen",
            what,
        );
    }
    let text = format!("{BASE}\n[metrics]\nmax-peers = 100001\n");
    assert_err(&text, "max-peers", "metrics.max-peers", "out of range");
    let text = format!("{BASE}\n[metrics]\nport = 9477\n");
    let (e, _, _dir) = load_err(&text);
    assert!(e.to_string().contains("port"), "{e}");
}

#[test]
fn unknown_key_is_located() {
    let text = BASE.replace("mtu = 1400", "mtux = 1400");
    assert_err(&text, "mtux", "tunnel.mtux", "unknown field");
}

#[test]
fn wrong_type_is_located() {
    let text = BASE.replace("mtu = 1400", "mtu = \"big\"");
    assert_err(&text, "mtu = \"big\"", "tunnel.mtu", "invalid type");
}

#[test]
fn bad_address_is_located() {
    let text = BASE.replace("nbma = \"198.51.100.1\"", "nbma = \"198.51.100\"");
    assert_err(&text, "nbma =", "nhrp.nhs[0].nbma", "invalid IPv4 address");
}

#[test]
fn unsupported_group_is_located() {
    let text = BASE.replace("group = 19", "group = 14");
    assert_err(
        &text,
        "group = 14",
        "ike.proposal[0].group",
        "unsupported Diffie-Hellman group 14",
    );
}

#[test]
fn mss_larger_than_mtu_allows() {
    let text = BASE.replace("adjust-mss = 1360", "adjust-mss = 1380");
    assert_err(
        &text,
        "adjust-mss",
        "tunnel.adjust-mss",
        "at most tunnel.mtu - 40",
    );
}

#[test]
fn txqueuelen_is_configurable_within_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let text = BASE.replace("mtu = 1400", "mtu = 1400\ntxqueuelen = 1000");
    let c = load(&write(dir.path(), "q.toml", &text, 0o600)).unwrap();
    assert_eq!(c.tunnel.txqueuelen, 1000);
    let text = BASE.replace("mtu = 1400", "mtu = 1400\ntxqueuelen = 10");
    assert_err(
        &text,
        "txqueuelen = 10",
        "tunnel.txqueuelen",
        "out of range",
    );
}

#[test]
fn mtu_out_of_range() {
    let text = BASE.replace("mtu = 1400", "mtu = 100");
    assert_err(&text, "mtu = 100", "tunnel.mtu", "out of range");
}

#[test]
fn nhrp_key_longer_than_8_bytes() {
    let text = BASE.replace("k8bytes!", "ninebytes");
    assert_err(&text, "ninebytes", "nhrp.authentication", "1 to 8 bytes");
}

#[test]
fn nhs_outside_tunnel_subnet() {
    let text = BASE.replace("address = \"10.250.0.1\"", "address = \"10.251.0.1\"");
    assert_err(
        &text,
        "10.251.0.1",
        "nhrp.nhs[0].address",
        "not another address in the tunnel subnet",
    );
}

/// FRR-style tunnel addressing: a /32 on the interface and the subnet in `tunnel.network`.
#[test]
fn host_tunnel_address_takes_its_subnet_from_tunnel_network() {
    let host = BASE.replace(
        "address = \"10.250.0.9/24\"",
        "address = \"10.250.0.9/32\"\nnetwork = \"10.250.0.0/24\"",
    );
    let dir = tempfile::tempdir().unwrap();
    let c = load(&write(dir.path(), "d.toml", &host, 0o600)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.tunnel.address.to_string(), "10.250.0.9/32");
    assert_eq!(c.tunnel.network.to_string(), "10.250.0.0/24");
    // The kernel adds no route for a /32: dmvpnd must route the subnet into the tunnel.
    assert_eq!(
        c.tunnel.network_route().map(|n| n.to_string()),
        Some("10.250.0.0/24".into())
    );
    // The NHS and route checks use the subnet, not the /32.
    let route = format!("{host}\n[[route]]\nprefix = \"10.1.1.0/24\"\nvia = \"10.250.0.1\"\n");
    let c = load(&write(dir.path(), "r.toml", &route, 0o600)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.routes.len(), 1);
    let off = route.replace("via = \"10.250.0.1\"", "via = \"10.251.0.1\"");
    assert_err(
        &off,
        "via = \"10.251.0.1\"",
        "route[0].via",
        "not a peer address in the tunnel subnet 10.250.0.0/24",
    );

    // A /24 address is its own subnet; the kernel routes it (no extra route), and repeating
    // the subnet in tunnel.network is allowed.
    let c = load(&write(dir.path(), "b.toml", BASE, 0o600)).unwrap();
    assert_eq!(c.tunnel.network.to_string(), "10.250.0.0/24");
    assert_eq!(c.tunnel.network_route(), None);
    let same = BASE.replace(
        "address = \"10.250.0.9/24\"",
        "address = \"10.250.0.9/24\"\nnetwork = \"10.250.0.0/24\"",
    );
    load(&write(dir.path(), "s.toml", &same, 0o600)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn bad_tunnel_network_combinations_are_refused() {
    let with = |address: &str, network: Option<&str>| {
        let n = network.map_or(String::new(), |n| format!("\nnetwork = \"{n}\""));
        BASE.replace(
            "address = \"10.250.0.9/24\"",
            &format!("address = \"{address}\"{n}"),
        )
    };
    // A /32 without its subnet: nothing would route the peers into the tunnel.
    assert_err(
        &with("10.250.0.9/32", None),
        "10.250.0.9/32",
        "tunnel.address",
        "name the tunnel subnet in tunnel.network (e.g. network = \"10.250.0.0/24\")",
    );
    // The subnet must be a network...
    assert_err(
        &with("10.250.0.9/32", Some("10.250.0.1/24")),
        "network = ",
        "tunnel.network",
        "has host bits set; did you mean 10.250.0.0/24?",
    );
    // ...a multipoint one...
    for bad in ["10.250.0.8/31", "10.250.0.9/32", "10.0.0.0/7"] {
        assert_err(
            &with("10.250.0.9/32", Some(bad)),
            "network = ",
            "tunnel.network",
            "is not a multipoint subnet (8..=30)",
        );
    }
    // ...holding the address as a host, not as its network or broadcast address.
    for (addr, net) in [
        ("10.251.0.9/32", "10.250.0.0/24"),
        ("10.250.0.0/32", "10.250.0.0/24"),
        ("10.250.0.255/32", "10.250.0.0/24"),
    ] {
        assert_err(
            &with(addr, Some(net)),
            "network = ",
            "tunnel.network",
            "does not hold tunnel.address",
        );
    }
    // With a subnet address, tunnel.network may only repeat its subnet.
    assert_err(
        &with("10.250.0.9/24", Some("10.250.0.0/16")),
        "network = ",
        "tunnel.network",
        "is not the subnet of tunnel.address 10.250.0.9/24 (10.250.0.0/24)",
    );
    // /31 is neither layout.
    assert_err(
        &with("10.250.0.9/31", None),
        "10.250.0.9/31",
        "tunnel.address",
        "or a /32 with tunnel.network",
    );
}

#[test]
fn spoke_without_nhs() {
    let cut = BASE.find("[[nhrp.nhs]]").unwrap();
    assert_err(&BASE[..cut], "role = \"spoke\"", "nhrp.nhs", "at least one");
}

#[test]
fn redirect_on_spoke() {
    let text = BASE.replace("network-id = 100", "network-id = 100\nredirect = true");
    assert_err(
        &text,
        "redirect = true",
        "nhrp.redirect",
        "applies to role = \"hub\" only",
    );
}

#[test]
fn nhrp_trust_limits_default_apply_to_their_role_and_are_range_checked() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(&write(dir.path(), "d.toml", BASE, 0o600)).unwrap();
    assert_eq!(c.nhrp.max_shortcut_prefix, 24);
    assert_eq!(c.nhrp.max_registrations_per_nbma, 8);
    assert_eq!(c.nhrp.max_holding_time, Duration::from_secs(65535));
    let set = "network-id = 100\nmax-shortcut-prefix = 16\nmax-holding-time = 3600";
    let text = BASE.replace("network-id = 100", set);
    let c = load(&write(dir.path(), "s.toml", &text, 0o600)).unwrap();
    assert_eq!(c.nhrp.max_shortcut_prefix, 16);
    assert_eq!(c.nhrp.max_holding_time, Duration::from_secs(3600));
    let text = BASE.replace(
        "network-id = 100",
        "network-id = 100\nmax-shortcut-prefix = 4",
    );
    assert_err(
        &text,
        "max-shortcut-prefix = 4",
        "nhrp.max-shortcut-prefix",
        "out of range",
    );
    let text = BASE.replace("network-id = 100", "network-id = 100\nmax-holding-time = 2");
    assert_err(
        &text,
        "max-holding-time = 2",
        "nhrp.max-holding-time",
        "out of range",
    );
    let text = BASE.replace(
        "network-id = 100",
        "network-id = 100\nmax-registrations-per-nbma = 4",
    );
    assert_err(
        &text,
        "max-registrations-per-nbma = 4",
        "nhrp.max-registrations-per-nbma",
        "applies to role = \"hub\" only",
    );
}

#[test]
fn tunnel_mode_refused() {
    let text = format!("{BASE}\n[ipsec]\nmode = \"tunnel\"\n");
    assert_err(
        &text,
        "mode = \"tunnel\"",
        "ipsec.mode",
        "only \"transport\"",
    );
}

#[test]
fn route_with_host_bits() {
    let text = format!("{BASE}\n[[route]]\nprefix = \"10.1.1.5/24\"\nvia = \"10.250.0.1\"\n");
    assert_err(
        &text,
        "10.1.1.5/24",
        "route[0].prefix",
        "did you mean 10.1.1.0/24",
    );
}

#[test]
fn syntax_error_has_line() {
    let text = BASE.replace("mtu = 1400", "mtu = 1400 1400");
    let (e, p, _dir) = load_err(&text);
    let line = line_of(&text, "mtu = 1400 1400");
    assert!(
        e.to_string()
            .starts_with(&format!("{}:{line}:", p.display())),
        "{e}"
    );
}

#[test]
fn missing_psk_names_the_entry() {
    let text = BASE.replace("psk = \"inline-psk\"\n", "");
    assert_err(
        &text,
        "name = \"ANY\"",
        "ike.keyring[0].psk",
        "no pre-shared key for keyring entry `ANY`",
    );
}

#[test]
fn secrets_file_supplies_keys_and_errors_point_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let main = BASE
        .replace("psk = \"inline-psk\"\n", "")
        .replace("authentication = \"k8bytes!\"\n", "");
    let main = format!("secrets = \"s.toml\"\n{main}");
    let p = write(dir.path(), "m.toml", &main, 0o644);
    write(
        dir.path(),
        "s.toml",
        "[psk]\nANY = \"from-file\"\n[nhrp]\nauthentication = \"abc\"\n",
        0o600,
    );
    let c = load(&p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.ike.keyring[0].psk.expose(), b"from-file");
    assert_eq!(c.nhrp.authentication.unwrap().expose(), b"abc");

    // A psk for a keyring entry that does not exist is a typo worth reporting, in the secrets file.
    let stext = "[psk]\nANY = \"x\"\nANYY = \"y\"\n";
    let s = write(dir.path(), "s.toml", stext, 0o600);
    let msg = load(&p).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}:3:", s.display())), "{msg}");
    assert!(
        msg.contains("psk.ANYY: no keyring entry named `ANYY`"),
        "{msg}"
    );
}

#[test]
fn secrets_file_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let main = format!(
        "secrets = \"s.toml\"\n{}",
        BASE.replace("psk = \"inline-psk\"\n", "")
            .replace("authentication = \"k8bytes!\"\n", "")
    );
    let p = write(dir.path(), "m.toml", &main, 0o644);
    for mode in [0o640, 0o604, 0o660, 0o601] {
        let s = write(dir.path(), "s.toml", "[psk]\nANY = \"x\"\n", mode);
        match load(&p) {
            Err(ConfigError::Permissions { path, mode: m, .. }) => {
                assert_eq!(path, s);
                assert_eq!(m, mode);
            }
            other => panic!("mode {mode:o}: expected a permission error, got {other:?}"),
        }
    }
    write(dir.path(), "s.toml", "[psk]\nANY = \"x\"\n", 0o400);
    load(&p).unwrap();
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) == 0
}

fn split_config(dir: &Path) -> (PathBuf, PathBuf) {
    let main = format!(
        "secrets = \"s.toml\"\n{}",
        BASE.replace("psk = \"inline-psk\"\n", "")
            .replace("authentication = \"k8bytes!\"\n", "")
    );
    (
        write(dir, "m.toml", &main, 0o644),
        write(dir, "s.toml", "[psk]\nANY = \"x\"\n", 0o600),
    )
}

/// Owned by another user, a file could be rewritten or opened up by them at will.
#[test]
fn files_must_belong_to_root_or_the_reader() {
    if !is_root() {
        eprintln!("skipped: needs root to give files away");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (main, secrets) = split_config(dir.path());
    load(&main).unwrap();
    std::os::unix::fs::chown(&secrets, Some(65_534), None).unwrap();
    match load(&main) {
        Err(ConfigError::Owner { path, owner, euid }) => {
            assert_eq!((path, owner, euid), (secrets.clone(), 65_534, 0));
        }
        other => panic!("expected an owner error, got {other:?}"),
    }
    let msg = load(&main).unwrap_err().to_string();
    assert!(
        msg.contains(
            "s.toml: refusing to use: owned by uid 65534, which is neither root, nor uid 0"
        ),
        "{msg}"
    );
    std::os::unix::fs::chown(&secrets, Some(0), None).unwrap();
    load(&main).unwrap();
    // The main file too: its owner could point `secrets` anywhere.
    std::os::unix::fs::chown(&main, Some(65_534), None).unwrap();
    let msg = load(&main).unwrap_err().to_string();
    assert!(
        msg.contains("m.toml: refusing to use: owned by uid 65534"),
        "{msg}"
    );
}

/// Whoever may write the directory may replace the file in it, whatever the file's mode.
#[test]
fn directories_others_may_write_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (main, _) = split_config(dir.path());
    for mode in [0o775, 0o757, 0o1777] {
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
        match load(&main) {
            Err(ConfigError::Permissions { path, mode: m, .. }) => {
                assert_eq!((path.as_path(), m), (dir.path(), mode));
            }
            other => panic!("mode {mode:o}: expected a directory error, got {other:?}"),
        }
    }
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o775)).unwrap();
    let msg = load(&main).unwrap_err().to_string();
    assert!(
        msg.contains("mode 0775 lets group or other users replace") && msg.contains("chmod 755"),
        "{msg}"
    );
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    load(&main).unwrap();
    // A secrets file elsewhere is checked in its own directory.
    let sub = dir.path().join("private");
    fs::create_dir(&sub).unwrap();
    fs::rename(dir.path().join("s.toml"), sub.join("s.toml")).unwrap();
    let text = fs::read_to_string(&main)
        .unwrap()
        .replace("\"s.toml\"", "\"private/s.toml\"");
    fs::write(&main, text).unwrap();
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
    load(&main).unwrap();
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o770)).unwrap();
    match load(&main) {
        Err(ConfigError::Permissions { path, .. }) => assert_eq!(path, sub),
        other => panic!("expected a directory error, got {other:?}"),
    }
    // Through a symbolic link, the directory of the file it leads to counts too.
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
    let shared = dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::rename(sub.join("s.toml"), shared.join("s.toml")).unwrap();
    std::os::unix::fs::symlink(shared.join("s.toml"), sub.join("s.toml")).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o700)).unwrap();
    load(&main).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    match load(&main) {
        Err(ConfigError::Permissions { path, .. }) => {
            assert_eq!(path, fs::canonicalize(&shared).unwrap())
        }
        other => panic!("expected a directory error, got {other:?}"),
    }
}

#[test]
fn main_file_with_inline_secret_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.toml", BASE, 0o644);
    let msg = load(&p).unwrap_err().to_string();
    assert!(
        msg.contains("refusing to use: mode 0644") && msg.contains("inline"),
        "{msg}"
    );
    assert!(msg.contains(&p.display().to_string()), "{msg}");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    load(&p).unwrap();
}

#[test]
fn main_file_without_secrets_may_be_readable_not_writable() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.toml", "[psk]\nANY = \"x\"\n", 0o600);
    let main = format!(
        "secrets = \"s.toml\"\n{}",
        BASE.replace("psk = \"inline-psk\"\n", "")
            .replace("authentication = \"k8bytes!\"\n", "")
    );
    let p = write(dir.path(), "m.toml", &main, 0o644);
    load(&p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o664)).unwrap();
    let msg = load(&p).unwrap_err().to_string();
    assert!(msg.contains("write the configuration"), "{msg}");
}

#[test]
fn missing_file_names_it() {
    let msg = load(Path::new("/nonexistent/dmvpnd.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("/nonexistent/dmvpnd.toml: cannot read"),
        "{msg}"
    );
}

#[test]
fn psk_lookup_prefers_the_longest_prefix() {
    let text = BASE.replace(
        "[tunnel]",
        "[[ike.keyring]]\nname = \"HUB\"\npeer = \"198.51.100.1/32\"\npsk = \"hub-psk\"\n\n[tunnel]",
    );
    let dir = tempfile::tempdir().unwrap();
    let c = load(&write(dir.path(), "m.toml", &text, 0o600)).unwrap();
    assert_eq!(
        c.ike
            .psk_for(Ipv4Addr::new(198, 51, 100, 1))
            .unwrap()
            .expose(),
        b"hub-psk"
    );
    assert_eq!(
        c.ike
            .psk_for(Ipv4Addr::new(198, 51, 100, 2))
            .unwrap()
            .expose(),
        b"inline-psk"
    );
}

#[test]
fn dataplane_table_defaults_values_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(&write(dir.path(), "a.toml", BASE, 0o600)).unwrap();
    assert_eq!(c.dataplane, dmvpn_config::Dataplane::default());
    assert_eq!(c.dataplane.aead, dmvpn_config::AeadChoice::Auto);
    assert!(c.dataplane.offload);
    assert_eq!(
        c.dataplane.socket_buffer,
        dmvpn_config::DEFAULT_SOCKET_BUFFER
    );

    let text = format!(
        "{BASE}\n[dataplane]\nworkers = 3\noffload = false\nsocket-buffer = 1048576\naead = \"aws-lc-rs\"\n"
    );
    let c = load(&write(dir.path(), "b.toml", &text, 0o600)).unwrap();
    assert_eq!(c.dataplane.workers, 3);
    assert!(!c.dataplane.offload);
    assert_eq!(c.dataplane.socket_buffer, 1 << 20);
    assert_eq!(c.dataplane.aead, dmvpn_config::AeadChoice::AwsLc);

    let bad = format!("{BASE}\n[dataplane]\nworkers = 65\n");
    assert_err(&bad, "workers = 65", "dataplane.workers", "out of range");
    let bad = format!("{BASE}\n[dataplane]\nsocket-buffer = 1000\n");
    assert_err(
        &bad,
        "socket-buffer = 1000",
        "dataplane.socket-buffer",
        "out of range",
    );
    let bad = format!("{BASE}\n[dataplane]\naead = \"openssl\"\n");
    assert_err(&bad, "aead = \"openssl\"", "dataplane.aead", "auto");
}

#[test]
fn secrets_given_as_text_are_checked_like_a_file() {
    let text = BASE
        .replace("psk = \"inline-psk\"\n", "")
        .replace("authentication = \"k8bytes!\"\n", "");
    let text = format!("secrets = \"secrets.toml\"\n{text}");
    let origin = Path::new("/nonexistent/dmvpnd.toml");
    let good = "[psk]\nANY = \"from-text\"\n[nhrp]\nauthentication = \"NHRPKEY1\"\n";
    let c = dmvpn_config::parse_str_with_secrets(&text, origin, good).unwrap();
    assert_eq!(c.ike.keyring[0].psk.expose(), b"from-text");
    assert_eq!(c.nhrp.authentication.unwrap().expose(), b"NHRPKEY1");
    // The same content rules as a secrets file: a 9-byte NHRP key is refused, located in it.
    let bad = "[psk]\nANY = \"x\"\n[nhrp]\nauthentication = \"NINEBYTES\"\n";
    let e = dmvpn_config::parse_str_with_secrets(&text, origin, bad).unwrap_err();
    assert_eq!(e.key(), Some("nhrp.authentication"));
    assert_eq!(
        e.location().unwrap().path,
        Path::new("/nonexistent/secrets.toml")
    );
    assert_eq!(e.location().unwrap().line, 4);
}

#[test]
fn volume_lifetime_is_optional_and_range_checked() {
    let dir = tempfile::tempdir().unwrap();
    let ok = format!("{BASE}\n[ipsec]\nlifetime-kilobytes = 4608000\n");
    let p = write(dir.path(), "dmvpnd.toml", &ok, 0o600);
    assert_eq!(load(&p).unwrap().ipsec.lifetime_kilobytes, Some(4_608_000));
    let p = write(dir.path(), "plain.toml", BASE, 0o600);
    assert_eq!(load(&p).unwrap().ipsec.lifetime_kilobytes, None);
    let small = format!("{BASE}\n[ipsec]\nlifetime-kilobytes = 100\n");
    assert_err(
        &small,
        "lifetime-kilobytes = 100",
        "ipsec.lifetime-kilobytes",
        "out of range",
    );
}

#[test]
fn a_missing_secrets_file_is_named_with_how_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let main = BASE
        .replace("psk = \"inline-psk\"\n", "")
        .replace("authentication = \"k8bytes!\"\n", "");
    let main = format!("secrets = \"s.toml\"\n{main}");
    let p = write(dir.path(), "m.toml", &main, 0o644);
    let msg = load(&p).expect_err("no secrets file").to_string();
    let s = dir.path().join("s.toml");
    assert!(
        msg.starts_with(&format!("{}: no such secrets file", s.display())),
        "{msg}"
    );
    assert!(msg.contains(&format!("in {}", p.display())), "{msg}");
    assert!(
        msg.contains(&format!(
            "install -m 0600 conf/secrets.example.toml {}",
            s.display()
        )),
        "{msg}"
    );
}

#[test]
fn lifetimes_go_down_to_sixty_seconds_with_a_warning_below_two_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let base = BASE.replace("\"inline-psk\"", "\"a-psk-of-16bytes\"");
    let p = write(dir.path(), "plain.toml", &base, 0o600);
    assert_eq!(load(&p).unwrap().warnings(), Vec::<String>::new());
    let short = format!(
        "{}\n[ipsec]\nlifetime = 60\n",
        base.replacen("[ike]\n", "[ike]\nlifetime = 90\n", 1)
    );
    let p = write(dir.path(), "short.toml", &short, 0o600);
    let c = load(&p).unwrap();
    assert_eq!(
        (c.ike.lifetime, c.ipsec.lifetime),
        (Duration::from_secs(90), Duration::from_secs(60))
    );
    let w = c.warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].starts_with("ike.lifetime = 90 s is below 120 s"),
        "{w:?}"
    );
    assert!(w[1].starts_with("ipsec.lifetime = 60 s"), "{w:?}");
    let too_short = format!("{BASE}\n[ipsec]\nlifetime = 59\n");
    assert_err(
        &too_short,
        "lifetime = 59",
        "ipsec.lifetime",
        "out of range",
    );
}

#[test]
fn psks_shorter_than_sixteen_bytes_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    // BASE's inline key is 10 bytes.
    let p = write(dir.path(), "short.toml", BASE, 0o600);
    let w = load(&p).unwrap().warnings();
    assert_eq!(
        w,
        vec![
            "ike.keyring[0] (\"ANY\"): the pre-shared key is 10 bytes, shorter than 16: one \
             captured IKE_AUTH lets an attacker guess it offline; use at least 16 random bytes \
             (e.g. `openssl rand -base64 24`)"
                .to_owned()
        ]
    );
    // From the secrets file, one warning per short entry, none for a 16-byte key.
    let main = format!(
        "secrets = \"s.toml\"\n{}\n[[ike.keyring]]\nname = \"HUB\"\npeer = \"198.51.100.1/32\"\n",
        BASE.replace("psk = \"inline-psk\"\n", "")
    );
    let p = write(dir.path(), "m.toml", &main, 0o600);
    write(
        dir.path(),
        "s.toml",
        "[psk]\nANY = \"0123456789abcdef\"\nHUB = \"short\"\n",
        0o600,
    );
    let w = load(&p).unwrap().warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("ike.keyring[1] (\"HUB\"): the pre-shared key is 5 bytes"),
        "{w:?}"
    );
}

#[test]
fn nhs_priority_and_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let two = BASE.replace("multicast = true\n", "multicast = true\npriority = 2\n")
        + "\n[[nhrp.nhs]]\naddress = \"10.250.0.2\"\nnbma = \"198.51.100.2\"\npriority = 1\n";
    let two = two.replace(
        "network-id = 100\n",
        "network-id = 100\nnhs-fallback = 120\n",
    );
    let p = write(dir.path(), "two.toml", &two, 0o600);
    let c = load(&p).unwrap();
    let prio: Vec<(Ipv4Addr, u8)> = c.nhrp.nhs.iter().map(|n| (n.nbma, n.priority)).collect();
    assert_eq!(
        prio,
        [
            (Ipv4Addr::new(198, 51, 100, 1), 2),
            (Ipv4Addr::new(198, 51, 100, 2), 1)
        ]
    );
    assert_eq!(c.nhrp.nhs_fallback, Duration::from_secs(120));
    let p = write(dir.path(), "plain.toml", BASE, 0o600);
    let c = load(&p).unwrap();
    assert_eq!(
        (c.nhrp.nhs[0].priority, c.nhrp.nhs_fallback),
        (0, Duration::ZERO)
    );
    let long = BASE.replace(
        "network-id = 100\n",
        "network-id = 100\nnhs-fallback = 3601\n",
    );
    assert_err(
        &long,
        "nhs-fallback = 3601",
        "nhrp.nhs-fallback",
        "out of range",
    );
}

#[test]
fn nhs_clusters_and_max_connections() {
    let dir = tempfile::tempdir().unwrap();
    let nhs = |a: u8, cluster: &str| {
        format!("\n[[nhrp.nhs]]\naddress = \"10.250.0.{a}\"\nnbma = \"198.51.100.{a}\"\n{cluster}")
    };
    let three = BASE.to_owned()
        + &nhs(2, "cluster = 1\npriority = 1\n")
        + &nhs(3, "cluster = 1\n")
        + "\n[[nhrp.cluster]]\nid = 1\nmax-connections = 1\n";
    let p = write(dir.path(), "three.toml", &three, 0o600);
    let c = load(&p).unwrap_or_else(|e| panic!("{e}"));
    let clusters: Vec<u8> = c.nhrp.nhs.iter().map(|n| n.cluster).collect();
    assert_eq!(clusters, [0, 1, 1], "no `cluster`: the clusterless group 0");
    assert_eq!(
        c.nhrp.cluster_limits.into_iter().collect::<Vec<_>>(),
        [(1, 1)],
        "cluster 0 has no entry: no limit"
    );
    // A cluster referenced by an NHS but not configured: no limit, accepted.
    let p = write(
        dir.path(),
        "unlimited.toml",
        &(BASE.to_owned() + &nhs(2, "cluster = 4\n")),
        0o600,
    );
    let c = load(&p).unwrap();
    assert_eq!((c.nhrp.nhs[1].cluster, c.nhrp.cluster_limits.len()), (4, 0));

    assert_err(
        &(BASE.to_owned() + &nhs(2, "cluster = 11\n")),
        "cluster = 11",
        "nhrp.nhs[1].cluster",
        "out of range (0..=10)",
    );
    let limit =
        |id: &str, max: &str| format!("\n[[nhrp.cluster]]\nid = {id}\nmax-connections = {max}\n");
    assert_err(
        &(BASE.to_owned() + &limit("1", "0")),
        "max-connections = 0",
        "nhrp.cluster[0].max-connections",
        "out of range (1..=255)",
    );
    assert_err(
        &(BASE.to_owned() + &limit("1", "256")),
        "max-connections = 256",
        "nhrp.cluster[0].max-connections",
        "out of range (1..=255)",
    );
    assert_err(
        &(BASE.to_owned() + &limit("12", "1")),
        "id = 12",
        "nhrp.cluster[0].id",
        "out of range (0..=10)",
    );
    let twice = BASE.to_owned() + &limit("2", "1") + &limit("3", "1") + &limit("2", "2");
    let (e, _, _dir) = load_err(&twice);
    assert_eq!(e.key(), Some("nhrp.cluster[2].id"), "{e}");
    assert!(
        e.to_string().contains("cluster 2 is configured twice"),
        "{e}"
    );
    let hub = BASE.replace("role = \"spoke\"", "role = \"hub\"").replace(
        "[[nhrp.nhs]]\naddress = \"10.250.0.1\"\nnbma = \"198.51.100.1\"\nmulticast = true\n",
        "",
    ) + &limit("7", "1");
    assert_err(&hub, "id = 7", "nhrp.cluster", "role = \"spoke\" only");
    assert_err(
        &(BASE.to_owned() + "\n[[nhrp.cluster]]\nid = 1\n"),
        "[[nhrp.cluster]]",
        "nhrp.cluster[0]",
        "missing field `max-connections`",
    );
}
