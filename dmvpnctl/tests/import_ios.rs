//! `dmvpnctl import-ios` end to end: the binary on the reference IOS configurations (copied
//! from shared/reference into tests/fixtures) must write files that dmvpn-config loads exactly
//! as `dmvpnd --check-config` does and that are equivalent to conf/spoke.toml and
//! conf/hub.toml; deliberately broken IOS snippets must each produce their lint at the right
//! line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use dmvpn_config::Config;

const DMVPNCTL: &str = env!("CARGO_BIN_EXE_dmvpnctl");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("dmvpnctl-import-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(DMVPNCTL).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The placeholders of the reference files mapped to the values conf/ uses: the hub's public
/// address is the documentation address 198.51.100.1 (RFC 5737) in conf/spoke.toml, and
/// conf/secrets.example.toml holds `PRE_SHARED_KEY_HERE` and the 8-byte stand-in `NHRPKEY1`
/// (the IOS placeholder itself is 30 bytes, which IOS would truncate; see the lint tests).
const PLACEHOLDERS: [&str; 6] = [
    "--placeholder",
    "PUBLIC_IP_ADDRESS_OF_HUB_1_HERE=198.51.100.1",
    "--placeholder",
    "PRE_SHARED_KEY_HERE=PRE_SHARED_KEY_HERE",
    "--placeholder",
    "NHRP_AUTHENTICATION_KEY_HERE=NHRPKEY1",
];

/// The example configuration, validated with the example secrets file in place of the
/// `secrets.toml` it names (which the repository does not ship).
fn example(name: &str) -> Config {
    let path = repo().join("conf").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let secrets = std::fs::read_to_string(repo().join("conf/secrets.example.toml")).unwrap();
    dmvpn_config::parse_str_with_secrets(&text, &path, &secrets).unwrap()
}

/// Field by field, so a field added to `Config` fails to compile here until it is compared.
fn assert_equivalent(got: &Config, want: &Config) {
    let Config {
        ike,
        ipsec,
        tunnel,
        nhrp,
        underlay,
        routes,
        key_export,
        ignore_purge,
        control,
        dataplane,
        metrics,
    } = got;
    assert_eq!(ike.proposals, want.ike.proposals, "ike.proposal");
    assert_eq!(ike.keyring.len(), want.ike.keyring.len(), "ike.keyring");
    for (g, w) in ike.keyring.iter().zip(&want.ike.keyring) {
        assert_eq!(g.name, w.name, "ike.keyring.name");
        assert_eq!(g.peer, w.peer, "ike.keyring.peer");
        assert_eq!(g.psk, w.psk, "ike.keyring psk");
    }
    assert_eq!(ike.dpd, want.ike.dpd, "ike.dpd");
    assert_eq!(
        ike.nat_keepalive, want.ike.nat_keepalive,
        "ike.nat-keepalive"
    );
    assert_eq!(ike.lifetime, want.ike.lifetime, "ike.lifetime");
    assert_eq!(*ipsec, want.ipsec, "ipsec");
    assert_eq!(*tunnel, want.tunnel, "tunnel");
    assert_eq!(nhrp.network_id, want.nhrp.network_id, "nhrp.network-id");
    assert_eq!(
        nhrp.authentication, want.nhrp.authentication,
        "nhrp authentication"
    );
    assert_eq!(
        nhrp.holding_time, want.nhrp.holding_time,
        "nhrp.holding-time"
    );
    assert_eq!(nhrp.role, want.nhrp.role, "nhrp.role");
    assert_eq!(nhrp.nhs, want.nhrp.nhs, "nhrp.nhs");
    assert_eq!(*underlay, want.underlay, "underlay");
    assert_eq!(*routes, want.routes, "route");
    assert_eq!(*key_export, want.key_export, "debug.key-export");
    assert_eq!(*ignore_purge, want.ignore_purge, "debug.ignore-purge");
    assert_eq!(*control, want.control, "control");
    assert_eq!(*dataplane, want.dataplane, "dataplane");
    // IOS has no metrics endpoint to translate: both sides keep it off.
    assert_eq!(*metrics, want.metrics, "metrics");
}

/// Runs import-ios into a fresh directory and loads the result as `dmvpnd --check-config`
/// does (`dmvpn_config::load`: permissions, the secrets file it names, every check).
fn import_reference(ios: &str, extra: &[&str], dir: &Scratch) -> (Config, Output) {
    let out = dir.0.join("out");
    let file = fixture(ios);
    let mut args = vec![
        "import-ios",
        file.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(&PLACEHOLDERS);
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "import-ios failed: {}", stderr(&o));
    let config = dmvpn_config::load(&out.join("dmvpnd.toml"))
        .unwrap_or_else(|e| panic!("written configuration does not load: {e}"));
    (config, o)
}

#[test]
fn fixtures_are_the_shared_reference_files() {
    // CI checks out shared/ next to the repository; elsewhere the copies stand alone.
    let shared = repo().join("../shared/reference");
    if !shared.is_dir() {
        eprintln!("{} not present: skipped", shared.display());
        return;
    }
    for name in ["csr1000v-spoke.ios", "asr1000-hub.ios"] {
        assert_eq!(
            std::fs::read(fixture(name)).unwrap(),
            std::fs::read(shared.join(name)).unwrap(),
            "tests/fixtures/{name} differs from shared/reference/{name}"
        );
    }
}

#[test]
fn spoke_reference_is_equivalent_to_conf_spoke() {
    let dir = Scratch::new("spoke");
    let (got, o) = import_reference(
        "csr1000v-spoke.ios",
        &["--interface", "GigabitEthernet1=eth0"],
        &dir,
    );
    // Neither has a static route: the CSR learns the enterprise prefix from `router ospf 10`,
    // which import-ios leaves to FRR and reports, and conf/spoke.toml leaves it to OSPF too.
    let want = example("spoke.toml");
    assert!(want.routes.is_empty() && got.routes.is_empty());
    assert_equivalent(&got, &want);
    let err = stderr(&o);
    assert!(
        err.contains(":60: note: `router ospf 10` not translated"),
        "{err}"
    );
    // The secrets file is private, as dmvpnd requires.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.0.join("out/secrets.toml"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn hub_reference_is_equivalent_to_conf_hub() {
    let dir = Scratch::new("hub");
    let (got, o) = import_reference(
        "asr1000-hub.ios",
        &["--interface", "Port-channel1.105=eth0"],
        &dir,
    );
    let mut want = example("hub.toml");
    // conf/hub.toml pins its public address to the documentation address 198.51.100.1; the
    // ASR's `tunnel source Port-channel1.105` names an interface that is not in the file (its
    // address appears only in a comment), so the translation leaves local-address to the
    // route's source address and says so.
    assert_eq!(
        want.underlay.local_address,
        Some("198.51.100.1".parse().unwrap())
    );
    want.underlay.local_address = None;
    assert_equivalent(&got, &want);
    let err = stderr(&o);
    assert!(
        err.contains(":50: note: `interface Port-channel1.105` is not in this file"),
        "{err}"
    );
}

#[test]
fn stdout_matches_the_written_file_and_strict_fails_on_lints() {
    let dir = Scratch::new("stdout");
    let file = fixture("csr1000v-spoke.ios");
    let mut args = vec!["import-ios", file.to_str().unwrap()];
    args.extend_from_slice(&PLACEHOLDERS);
    args.extend_from_slice(&["--interface", "GigabitEthernet1=eth0"]);
    let printed = run(&args);
    assert!(printed.status.success(), "{}", stderr(&printed));
    let (_, _) = import_reference(
        "csr1000v-spoke.ios",
        &["--interface", "GigabitEthernet1=eth0"],
        &dir,
    );
    let written = std::fs::read(dir.0.join("out/dmvpnd.toml")).unwrap();
    assert_eq!(printed.stdout, written);
    // The reference spoke has `mode transport` without `require`: a lint, so --strict exits 2.
    args.push("--strict");
    let strict = run(&args);
    assert_eq!(strict.status.code(), Some(2), "{}", stderr(&strict));
    assert!(stderr(&strict).contains(":30: lint[transport-not-required]"));
}

#[test]
fn refuses_to_overwrite_without_force() {
    let dir = Scratch::new("force");
    let out = dir.0.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("secrets.toml"), "keep me").unwrap();
    let file = fixture("asr1000-hub.ios");
    let mut args = vec![
        "import-ios",
        file.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(&PLACEHOLDERS);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("exists: not overwriting it (use --force)"));
    assert_eq!(
        std::fs::read_to_string(out.join("secrets.toml")).unwrap(),
        "keep me"
    );
    assert!(!out.join("dmvpnd.toml").exists());
    args.push("--force");
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    dmvpn_config::load(&out.join("dmvpnd.toml")).unwrap();
}

#[test]
fn unresolved_address_placeholder_is_an_error_with_its_line() {
    let file = fixture("csr1000v-spoke.ios");
    let o = run(&["import-ios", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(
            "csr1000v-spoke.ios:43: error: `ip nhrp nhs 10.250.0.1 nbma <PUBLIC_IP_ADDRESS_OF_HUB_1_HERE> multicast`: unresolved placeholder"
        ),
        "{err}"
    );
    assert!(err.contains("no configuration produced"), "{err}");
    assert!(o.stdout.is_empty());
}

// --- lints on broken snippets ------------------------------------------------------------

/// The reference spoke with edits; each edit finds the first line starting with a text.
struct Ios(Vec<String>);

impl Ios {
    fn spoke() -> Self {
        Self::from_fixture("csr1000v-spoke.ios")
    }
    fn from_fixture(name: &str) -> Self {
        let t = std::fs::read_to_string(fixture(name)).unwrap();
        Ios(t.lines().map(str::to_owned).collect())
    }
    fn find(&self, needle: &str) -> usize {
        self.0
            .iter()
            .position(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}"))
    }
    /// Replaces the line containing `needle` with `with`; returns its 1-based number.
    fn replace(mut self, needle: &str, with: &str) -> (Self, usize) {
        let i = self.find(needle);
        self.0[i] = with.to_owned();
        (self, i + 1)
    }
    fn remove(mut self, needle: &str) -> Self {
        let i = self.find(needle);
        self.0.remove(i);
        self
    }
    /// Inserts `line` after the line containing `needle`; returns its 1-based number.
    fn insert_after(mut self, needle: &str, line: &str) -> (Self, usize) {
        let i = self.find(needle) + 1;
        self.0.insert(i, line.to_owned());
        (self, i + 1)
    }
    /// Line number (1-based) of the line containing `needle`.
    fn line_of(&self, needle: &str) -> usize {
        self.find(needle) + 1
    }
    /// Runs import-ios on this text and returns stderr.
    fn lint(&self, placeholders: &[&str]) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = Scratch::new(&format!("lint-{}", N.fetch_add(1, Ordering::Relaxed)));
        let file = dir.0.join("broken.ios");
        std::fs::write(&file, self.0.join("\n") + "\n").unwrap();
        let mut args = vec!["import-ios", file.to_str().unwrap()];
        args.extend_from_slice(placeholders);
        args.extend_from_slice(&["--interface", "GigabitEthernet1=eth0"]);
        let o = run(&args);
        stderr(&o)
    }
}

fn lints_at(stderr: &str) -> Vec<(usize, String)> {
    stderr
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("broken.ios:")?;
            let (line, rest) = rest.split_once(": lint[")?;
            let code = rest.split_once(']')?.0;
            Some((line.parse().ok()?, code.to_owned()))
        })
        .collect()
}

fn assert_lint(stderr: &str, line: usize, code: &str) {
    let lints = lints_at(stderr);
    assert!(
        lints.contains(&(line, code.to_owned())),
        "expected lint[{code}] at line {line}, got {lints:?}\n{stderr}"
    );
}

fn assert_no_lint(stderr: &str, code: &str) {
    let lints = lints_at(stderr);
    assert!(
        !lints.iter().any(|(_, c)| c == code),
        "unexpected lint[{code}]: {lints:?}\n{stderr}"
    );
}

#[test]
fn the_reference_spoke_has_only_the_transport_lint() {
    // The baseline the snippet tests break: everything else in it is sound.
    let err = Ios::spoke().lint(&PLACEHOLDERS);
    assert_eq!(
        lints_at(&err),
        [(30, "transport-not-required".to_owned())],
        "{err}"
    );
}

#[test]
fn lint_proposal_unused() {
    let (ios, line) = Ios::spoke().insert_after("!", "crypto ikev2 proposal SPARE");
    let (ios, _) = ios.insert_after("crypto ikev2 proposal SPARE", " encryption aes-gcm-128");
    let (ios, _) = ios.insert_after(" encryption aes-gcm-128", " prf sha256");
    let (ios, _) = ios.insert_after(" prf sha256", " group 19");
    assert_lint(&ios.lint(&PLACEHOLDERS), line, "proposal-unused");
    // Without any policy, the referenced proposal is unused too (IOS uses its default).
    let ios = Ios::spoke()
        .remove("crypto ikev2 policy AES/GCM/256")
        .remove(" match fvrf any")
        .remove(" proposal AES/GCM/256");
    let line = ios.line_of("crypto ikev2 proposal AES/GCM/256");
    assert_lint(&ios.lint(&PLACEHOLDERS), line, "proposal-unused");
}

#[test]
fn lint_transport_not_required() {
    let ios = Ios::spoke();
    assert_lint(
        &ios.lint(&PLACEHOLDERS),
        ios.line_of(" mode transport"),
        "transport-not-required",
    );
    let (fixed, _) = Ios::spoke().replace(" mode transport", " mode transport require");
    assert_no_lint(&fixed.lint(&PLACEHOLDERS), "transport-not-required");
}

#[test]
fn lint_nhrp_key_truncated() {
    let long = [
        "--placeholder",
        "PUBLIC_IP_ADDRESS_OF_HUB_1_HERE=198.51.100.1",
        "--placeholder",
        "PRE_SHARED_KEY_HERE=x",
        "--placeholder",
        "NHRP_AUTHENTICATION_KEY_HERE=NINEBYTES",
    ];
    let ios = Ios::spoke();
    let err = ios.lint(&long);
    assert_lint(
        &err,
        ios.line_of(" ip nhrp authentication"),
        "nhrp-key-truncated",
    );
    assert!(err.contains("the key is 9 bytes"), "{err}");
    // The unresolved placeholder itself is 30 bytes.
    assert_lint(
        &ios.lint(&long[..4]),
        ios.line_of(" ip nhrp authentication"),
        "nhrp-key-truncated",
    );
}

#[test]
fn lint_mtu_fragments() {
    // 1450 + GRE 8 + ESP-GCM 36..39 + IPv4 20 + UDP 8 > 1500; 1430 is the largest that fits.
    let (ios, line) = Ios::spoke().replace(" ip mtu 1400", " ip mtu 1450");
    let (ios, _) = ios.replace(" ip tcp adjust-mss", " ip tcp adjust-mss 1380");
    let err = ios.lint(&PLACEHOLDERS);
    assert_lint(&err, line, "mtu-fragments");
    assert!(err.contains("at most 1430"), "{err}");
    let (ok, _) = Ios::spoke().replace(" ip mtu 1400", " ip mtu 1430");
    assert_no_lint(&ok.lint(&PLACEHOLDERS), "mtu-fragments");
}

#[test]
fn lint_mtu_and_mss_missing() {
    let ios = Ios::spoke()
        .remove(" ip mtu 1400")
        .remove(" ip tcp adjust-mss");
    let err = ios.lint(&PLACEHOLDERS);
    let tunnel = ios.line_of("interface Tunnel0");
    assert_lint(&err, tunnel, "mtu-missing");
    assert_lint(&err, tunnel, "mss-missing");
    // IOS's own 1472-byte estimate then fragments after encryption.
    assert_lint(&err, tunnel, "mtu-fragments");
}

#[test]
fn lint_mss_too_large() {
    let (ios, line) = Ios::spoke().replace(" ip tcp adjust-mss", " ip tcp adjust-mss 1380");
    let err = ios.lint(&PLACEHOLDERS);
    assert_lint(&err, line, "mss-too-large");
    // dmvpnd refuses MSS > mtu - 40: translated clamped, and said so.
    assert!(
        err.contains(&format!(
            "broken.ios:{line}: not translated: ip tcp adjust-mss 1380"
        )),
        "{err}"
    );
}

#[test]
fn lint_replay_windows() {
    let ios = Ios::spoke().remove("crypto ipsec security-association replay");
    let err = ios.lint(&PLACEHOLDERS);
    assert_lint(
        &err,
        ios.line_of("interface Tunnel0"),
        "replay-window-default",
    );

    let (ios, line) = Ios::spoke().replace(
        "crypto ipsec security-association replay",
        "crypto ipsec security-association replay window-size 128",
    );
    assert_lint(&ios.lint(&PLACEHOLDERS), line, "replay-window-small");

    let (ios, line) = Ios::spoke().insert_after(
        " set ikev2-profile",
        " set security-association replay window-size 512",
    );
    let err = ios.lint(&PLACEHOLDERS);
    assert_lint(&err, line, "replay-window-mismatch");
    assert_lint(&err, line, "replay-window-small");
}

#[test]
fn lint_registration_timeout() {
    let (ios, line) = Ios::spoke().insert_after(
        " ip nhrp network-id 100",
        " ip nhrp registration timeout 3000",
    );
    let err = ios.lint(&PLACEHOLDERS);
    assert_lint(&err, line, "registration-timeout");
    assert!(
        err.contains("over a third of the holding time 7200 (2400)"),
        "{err}"
    );
    let (ios, _) = Ios::spoke().insert_after(" ip nhrp network-id 100", " ip nhrp holdtime 600");
    let (ios, line) =
        ios.insert_after(" ip nhrp holdtime 600", " ip nhrp registration timeout 600");
    let err = ios.lint(&PLACEHOLDERS);
    assert_lint(&err, line, "registration-timeout");
    assert!(
        err.contains("not shorter than the holding time 600"),
        "{err}"
    );
    let (ok, _) = Ios::spoke().insert_after(
        " ip nhrp network-id 100",
        " ip nhrp registration timeout 2400",
    );
    assert_no_lint(&ok.lint(&PLACEHOLDERS), "registration-timeout");
}

#[test]
fn lint_isakmp_keepalive_and_dpd_missing() {
    let (ios, line) = Ios::spoke().insert_after(
        "crypto ipsec security-association replay",
        "crypto isakmp keepalive 10 10",
    );
    assert_lint(&ios.lint(&PLACEHOLDERS), line, "isakmp-keepalive");
    let ios = Ios::spoke().remove(" dpd 40 5 on-demand");
    let err = ios.lint(&PLACEHOLDERS);
    assert_lint(
        &err,
        ios.line_of("crypto ikev2 profile DMVPN-IKEv2-PROFILE"),
        "dpd-missing",
    );
}

#[test]
fn hub_reference_lints() {
    let dir = Scratch::new("hub-lints");
    let (_, o) = import_reference("asr1000-hub.ios", &[], &dir);
    let err = stderr(&o);
    for (line, code) in [
        (26, "isakmp-keepalive"),
        (28, "replay-window-small"),
        (31, "transport-not-required"),
    ] {
        assert!(
            err.contains(&format!("asr1000-hub.ios:{line}: lint[{code}]")),
            "missing {code} at {line}: {err}"
        );
    }
    assert!(
        err.contains("asr1000-hub.ios:32: not translated: `crypto ipsec df-bit clear`"),
        "{err}"
    );
}

#[test]
fn a_value_dmvpnd_refuses_is_reported_with_the_ios_line() {
    // IOS accepts holdtimes up to 65535 only too, but say it did not: dmvpn-config's refusal
    // must point back at the IOS line through the generated comment.
    let (ios, line) =
        Ios::spoke().insert_after(" ip nhrp network-id 100", " ip nhrp holdtime 70000");
    let dir = Scratch::new("refused");
    let file = dir.0.join("broken.ios");
    std::fs::write(&file, ios.0.join("\n") + "\n").unwrap();
    let mut args = vec!["import-ios", file.to_str().unwrap()];
    args.extend_from_slice(&PLACEHOLDERS);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("nhrp.holding-time: 70000 is out of range"),
        "{err}"
    );
    assert!(
        err.contains(&format!("# line {line}: ip nhrp holdtime")),
        "{err}"
    );
}
