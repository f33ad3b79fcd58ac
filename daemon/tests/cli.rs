//! The dmvpnd binary: `--check-config` on the shipped examples and on broken files, and a real
//! start in a network namespace with the example spoke configuration.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dmvpn_tests::{Netns, require_root_and_tools, veth, wait_for};
use serde_json::Value;

/// The binary under test (one lookup for every test: `dmvpn_tests::bin`).
fn dmvpnd() -> std::path::PathBuf {
    dmvpn_tests::bin("dmvpnd")
}

fn conf(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../conf")
        .join(name)
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// An example installed as it would be in /etc/dmvpnd: main file 0644, secrets.toml 0600 beside it.
fn install(dir: &Path, name: &str) -> PathBuf {
    let secrets = fs::read_to_string(conf("secrets.example.toml")).unwrap();
    write(dir, "secrets.toml", &secrets, 0o600);
    write(dir, name, &fs::read_to_string(conf(name)).unwrap(), 0o644)
}

fn check(path: &Path) -> (bool, i32, String) {
    let out = Command::new(dmvpnd())
        .arg("--check-config")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "check-config prints to stderr only");
    let code = out.status.code().unwrap_or(-1);
    (
        out.status.success(),
        code,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_the_examples() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["spoke.toml", "hub.toml"] {
        let p = install(dir.path(), name);
        let (ok, code, err) = check(&p);
        assert!(ok && code == 0, "{name}: exit {code}: {err}");
        assert!(err.contains("configuration OK"), "{err}");
    }
}

/// The examples' commented `[metrics]` section, enabled as an operator would, is accepted; a host
/// name instead of an address is refused at its line.
#[test]
fn check_config_accepts_the_metrics_section() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["spoke.toml", "hub.toml"] {
        let p = install(dir.path(), name);
        let text = fs::read_to_string(&p).unwrap();
        let on = text
            .replacen("# [metrics]", "[metrics]", 1)
            .replacen(
                "# listen = \"127.0.0.1:9477\"",
                "listen = \"127.0.0.1:9477\"",
                1,
            )
            .replacen("# max-peers = 256", "max-peers = 256", 1);
        assert_eq!(
            on.matches("\n[metrics]").count(),
            1,
            "{name} documents [metrics]"
        );
        let p = write(dir.path(), name, &on, 0o644);
        let (ok, code, err) = check(&p);
        assert!(ok && code == 0, "{name} with [metrics]: exit {code}: {err}");
        let bad = on.replacen(
            "listen = \"127.0.0.1:9477\"",
            "listen = \"localhost:9477\"",
            1,
        );
        let line = bad.lines().position(|l| l.contains("localhost")).unwrap() + 1;
        let p = write(dir.path(), name, &bad, 0o644);
        let (ok, code, err) = check(&p);
        assert!(!ok && code == 1, "{name}: a host name must be refused");
        assert!(
            err.starts_with(&format!("{}:{line}:", p.display()))
                && err.contains("metrics.listen: ")
                && err.contains("is not an address:port"),
            "{err}"
        );
    }
}

/// A short pre-shared key is accepted with a warning; the placeholder of the example is not
/// short. The owner and directory rules of the secrets file hold for --check-config too.
#[test]
fn check_config_warns_on_a_short_psk_and_refuses_a_shared_directory() {
    let dir = tempfile::tempdir().unwrap();
    let p = install(dir.path(), "spoke.toml");
    let (ok, _, err) = check(&p);
    assert!(ok && !err.contains("warning"), "{err}");
    let secrets = fs::read_to_string(conf("secrets.example.toml"))
        .unwrap()
        .replace("\"PRE_SHARED_KEY_HERE\"", "\"cisco123\"");
    write(dir.path(), "secrets.toml", &secrets, 0o600);
    let (ok, code, err) = check(&p);
    assert!(
        ok && code == 0,
        "a short key is a warning, not an error: {err}"
    );
    assert!(
        err.contains(&format!(
            "{}: warning: ike.keyring[0] (\"ANY\"): the pre-shared key is 8 bytes, shorter than 16",
            p.display()
        )),
        "{err}"
    );
    assert!(err.contains("configuration OK"), "{err}");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let (ok, code, err) = check(&p);
    assert!(!ok && code == 1, "{err}");
    assert!(
        err.contains("mode 0777 lets group or other users replace"),
        "{err}"
    );
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn check_config_rejects_broken_files_with_location() {
    let dir = tempfile::tempdir().unwrap();
    let good = fs::read_to_string(conf("spoke.toml")).unwrap();
    write(
        dir.path(),
        "secrets.toml",
        &fs::read_to_string(conf("secrets.example.toml")).unwrap(),
        0o600,
    );

    let cases = [
        ("mtu = 1400", "mtu = 14000", "tunnel.mtu", "out of range"),
        (
            "gre-key = 100",
            "gre-kee = 100",
            "tunnel.gre-kee",
            "unknown field",
        ),
        (
            "nbma = \"198.51.100.1\"",
            "nbma = \"hub.example\"",
            "nhrp.nhs[0].nbma",
            "invalid IPv4 address",
        ),
        (
            "mode = \"on-demand\"",
            "mode = \"sometimes\"",
            "ike.dpd.mode",
            "unknown variant",
        ),
    ];
    for (from, to, key, what) in cases {
        let text = good.replacen(from, to, 1);
        assert_ne!(text, good, "{from} not in spoke.toml");
        let p = write(dir.path(), "broken.toml", &text, 0o644);
        let line = text.lines().position(|l| l.contains(to)).unwrap() + 1;
        let (ok, code, err) = check(&p);
        assert!(!ok && code == 1, "{to}: exit {code}");
        let want = format!("{}:{line}:", p.display());
        assert!(
            err.starts_with(&want),
            "{to}: `{err}` should start with {want}"
        );
        assert!(
            err.contains(&format!("{key}: ")) && err.contains(what),
            "{to}: {err}"
        );
    }

    // A secrets file others can read is refused, naming the file.
    let p = install(dir.path(), "spoke.toml");
    fs::set_permissions(
        dir.path().join("secrets.toml"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (ok, code, err) = check(&p);
    assert!(!ok && code == 1);
    assert!(
        err.contains("secrets.toml: refusing to use: mode 0644"),
        "{err}"
    );

    let (ok, code, err) = check(Path::new("/nonexistent/dmvpnd.toml"));
    assert!(
        !ok && code == 1 && err.contains("/nonexistent/dmvpnd.toml: cannot read"),
        "{err}"
    );
}

#[test]
fn spoke_starts_in_a_namespace_and_stops_on_sigterm() {
    require_root_and_tools();
    let dir = tempfile::tempdir().unwrap();
    let cfg = install(dir.path(), "spoke.toml");
    // Its own control socket, so a dmvpnd running on the test machine is left alone.
    let sock = dir.path().join("ctl.sock");
    let mut text = fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("\n[control]\nsocket = \"{}\"\n", sock.display()));
    // The example's own route, commented out there (OSPF learns it in the reference deployment).
    text.push_str("\n[[route]]\nprefix = \"10.1.1.0/24\"\nvia = \"10.250.0.1\"\n");
    fs::write(&cfg, text).unwrap();
    let ns = Netns::new("spoke").unwrap();
    let hub = Netns::new("hub").unwrap();
    // The example binds the underlay to eth0 and names the NHS at 198.51.100.1.
    let (eth, _) = veth(&ns, "198.51.100.3/24", &hub, "198.51.100.1/24").unwrap();
    ns.ip(&["link", "set", &eth, "down"]).unwrap();
    ns.ip(&["link", "set", &eth, "name", "eth0"]).unwrap();
    ns.ip(&["link", "set", "eth0", "up"]).unwrap();

    let mut cmd = ns.command(dmvpnd());
    cmd.arg("--foreground")
        .arg("--config")
        .arg(&cfg)
        .env("DMVPND_LOG", "debug");
    let mut p = ns.spawn(cmd, &dir.path().join("dmvpnd.log")).unwrap();

    let route = wait_for(Duration::from_secs(10), || {
        let routes = ns.ip_json(&["route", "show", "dev", "dmvpn0"]).ok()?;
        routes
            .as_array()?
            .iter()
            .find(|r| r["dst"] == "10.1.1.0/24")
            .cloned()
    });
    let log = p.log();
    let route = route.unwrap_or_else(|| panic!("static route never appeared; log:\n{log}"));
    assert_eq!(route["gateway"], "10.250.0.1", "{route}");
    let link: Value = ns.ip_json(&["addr", "show", "dev", "dmvpn0"]).unwrap()[0].clone();
    assert_eq!(link["mtu"], 1400);
    assert!(
        link["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "MULTICAST"),
        "{link}"
    );
    let inet = link["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["family"] == "inet")
        .cloned()
        .unwrap();
    assert_eq!(
        (inet["local"].as_str(), inet["prefixlen"].as_u64()),
        (Some("10.250.0.9"), Some(24))
    );
    // The underlay sockets are bound: UDP 500 and 4500 in the namespace.
    let ss = ns.exec("ss", &["-Hnlu"]).unwrap();
    let ss = String::from_utf8_lossy(&ss.stdout);
    assert!(ss.contains(":500 ") && ss.contains(":4500 "), "{ss}");
    assert!(log.contains("local_nbma=198.51.100.3"), "{log}");
    assert!(sock.exists(), "control socket {} missing", sock.display());

    let status = p.terminate(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "exit {status}; log:\n{}", p.log());
    assert!(
        ns.ip(&["link", "show", "dev", "dmvpn0"]).is_err(),
        "TUN left behind"
    );
    assert!(!sock.exists(), "control socket left behind");
}
