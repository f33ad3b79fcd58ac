//! The dmvpnctl binary against a stand-in for dmvpnd: a plain std Unix socket server in a
//! thread that records each request line and answers it from the example reports (or with
//! whatever a test wants to see). No daemon, no root, no async runtime.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;

use dmvpn_api::{Ack, Request, Response, Show, fixtures};

const DMVPNCTL: &str = env!("CARGO_BIN_EXE_dmvpnctl");

/// The answers the daemon would give, from the examples.
fn answer(req: &Request) -> Response {
    match req {
        Request::Show { what, .. } => match what {
            Show::Sa => Response::ok(&fixtures::sa()),
            Show::Dmvpn => Response::ok(&fixtures::dmvpn()),
            Show::Nhrp => Response::ok(&fixtures::nhrp()),
            Show::Ike => Response::ok(&fixtures::ike_report()),
            Show::Interface => Response::ok(&fixtures::interface()),
        },
        Request::ClearSa { peer } if peer.to_string() == "198.51.100.1" => {
            Response::ok(&Ack::new(format!("IKE SA with {peer} deleted")))
        }
        Request::ClearSa { peer } => Response::error(format!("no IKE SA with {peer}")),
        Request::ClearChildSa { peer } => {
            Response::ok(&Ack::new(format!("1 Child SA with {peer} deleted")))
        }
        Request::ClearNhrp => Response::ok(&Ack::new("cleared 3 dynamic NHRP entries")),
        Request::Reload => Response::ok(&Ack::new("configuration reloaded")),
        Request::Explain { .. } => Response::ok(&fixtures::explain()),
    }
}

/// Serves one connection at `path` with `reply` (given the request line), sending each request
/// line it receives down the returned channel.
fn serve_once(
    path: &Path,
    reply: impl Fn(&str) -> Vec<u8> + Send + 'static,
) -> mpsc::Receiver<String> {
    let listener = UnixListener::bind(path).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let _ = (&stream).write_all(&reply(line.trim_end()));
            let _ = tx.send(std::mem::take(&mut line));
        }
    });
    rx
}

/// Like dmvpnd: parses the request and answers it from the examples.
fn serve_examples(path: &Path) -> mpsc::Receiver<String> {
    serve_once(path, |line| match serde_json::from_str::<Request>(line) {
        Ok(req) => answer(&req).line(),
        Err(e) => Response::error(format!("invalid request: {e}")).line(),
    })
}

fn run(args: &[&str]) -> Output {
    Command::new(DMVPNCTL)
        .args(args)
        .env_remove("DMVPN_SOCKET")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Scratch {
    _dir: tempdir::Dir,
    sock: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = tempdir::Dir::new(name);
        let sock = dir.path().join("ctl.sock");
        Self { _dir: dir, sock }
    }

    fn sock(&self) -> &str {
        self.sock.to_str().unwrap()
    }
}

/// A scratch directory removed on drop (std only, so the dependency tree stays small).
mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!("dmvpnctl-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn show_prints_the_ios_text_and_the_json() {
    let cases: [(&str, String, serde_json::Value); 5] = [
        (
            "sa",
            fixtures::sa().to_string(),
            serde_json::to_value(fixtures::sa()).unwrap(),
        ),
        (
            "dmvpn",
            fixtures::dmvpn().to_string(),
            serde_json::to_value(fixtures::dmvpn()).unwrap(),
        ),
        (
            "nhrp",
            fixtures::nhrp().to_string(),
            serde_json::to_value(fixtures::nhrp()).unwrap(),
        ),
        (
            "ike",
            fixtures::ike_report().to_string(),
            serde_json::to_value(fixtures::ike_report()).unwrap(),
        ),
        (
            "interface",
            fixtures::interface().to_string(),
            serde_json::to_value(fixtures::interface()).unwrap(),
        ),
    ];
    for (what, want_text, want_json) in cases {
        let s = Scratch::new(&format!("show-{what}"));
        let requests = serve_examples(&s.sock);
        let out = run(&["--socket", s.sock(), "show", what]);
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), want_text, "{what}");
        assert_eq!(
            requests.recv().unwrap(),
            format!("{{\"cmd\":\"show\",\"what\":\"{what}\"}}\n")
        );

        let s = Scratch::new(&format!("json-{what}"));
        let _requests = serve_examples(&s.sock);
        let out = run(&["--socket", s.sock(), "show", what, "--json"]);
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.ends_with("}\n"), "{stdout}");
        let got: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(got, want_json, "{what}");
        assert_eq!(got["schema_version"], 2);
    }
}

#[test]
fn clear_and_reload_send_their_requests() {
    let cases = [
        (
            vec!["clear", "sa", "198.51.100.1"],
            r#"{"cmd":"clear_sa","peer":"198.51.100.1"}"#,
            "IKE SA with 198.51.100.1 deleted\n",
        ),
        (
            vec!["clear", "child-sa", "198.51.100.1"],
            r#"{"cmd":"clear_child_sa","peer":"198.51.100.1"}"#,
            "1 Child SA with 198.51.100.1 deleted\n",
        ),
        (
            vec!["clear", "nhrp"],
            r#"{"cmd":"clear_nhrp"}"#,
            "cleared 3 dynamic NHRP entries\n",
        ),
        (
            vec!["reload"],
            r#"{"cmd":"reload"}"#,
            "configuration reloaded\n",
        ),
    ];
    for (i, (args, request, printed)) in cases.into_iter().enumerate() {
        let s = Scratch::new(&format!("clear-{i}"));
        let requests = serve_examples(&s.sock);
        let mut all = vec!["--socket", s.sock()];
        all.extend(args);
        let out = run(&all);
        assert!(out.status.success(), "{request}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), printed);
        assert_eq!(requests.recv().unwrap().trim_end(), request);
    }
}

#[test]
fn errors_exit_1_with_the_daemons_message() {
    let s = Scratch::new("error");
    let _requests = serve_examples(&s.sock);
    let out = run(&["--socket", s.sock(), "clear", "sa", "203.0.113.99"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "dmvpnctl: no IKE SA with 203.0.113.99\n");
    assert!(out.stdout.is_empty());
}

#[test]
fn no_daemon_says_so() {
    let s = Scratch::new("absent");
    let out = run(&["--socket", s.sock(), "show", "dmvpn"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot connect to") && err.contains("is dmvpnd running? (no such socket)"),
        "{err}"
    );
}

#[test]
fn another_schema_version_is_named() {
    let s = Scratch::new("schema");
    let _requests = serve_once(&s.sock, |_| {
        let data = serde_json::json!({"schema_version": 3, "renamed": []});
        let r = Response {
            schema_version: 3,
            ok: true,
            data: Some(data),
            error: None,
        };
        r.line()
    });
    let out = run(&["--socket", s.sock(), "show", "dmvpn"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("dmvpnd speaks schema version 3, this dmvpnctl version 2"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_1_help_exits_0() {
    for bad in [
        &["show"][..],
        &["show", "routes"],
        &["clear", "sa", "not-an-ip"],
        &["frobnicate"],
    ] {
        let out = run(bad);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        assert!(!out.stderr.is_empty(), "{bad:?}");
    }
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(help.contains("Show and control a running dmvpnd"), "{help}");
    assert!(help.contains("/run/dmvpnd/dmvpnd.sock"), "{help}");
}

#[test]
fn show_filters_go_into_the_request() {
    let s = Scratch::new("filter");
    let requests = serve_examples(&s.sock);
    let out = run(&[
        "--socket",
        s.sock(),
        "show",
        "nhrp",
        "10.250.3.7/16",
        "--peer",
        "198.51.100.7",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        requests.recv().unwrap().trim_end(),
        r#"{"cmd":"show","what":"nhrp","peer":"198.51.100.7","prefix":"10.250.0.0/16"}"#
    );
    let bad = run(&["--socket", s.sock(), "show", "nhrp", "10.250.0.0/40"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("prefix length"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn the_socket_comes_from_dmvpn_socket_or_the_daemons_configuration() {
    // $DMVPN_SOCKET, no --socket.
    let s = Scratch::new("env");
    let requests = serve_examples(&s.sock);
    let out = Command::new(DMVPNCTL)
        .args(["show", "dmvpn"])
        .env("DMVPN_SOCKET", s.sock())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(requests.recv().unwrap().contains("\"dmvpn\""));

    // The daemon's configuration names it: the example spoke with a [control] table (its
    // secrets file is not needed, nor read).
    let s = Scratch::new("config");
    let requests = serve_examples(&s.sock);
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/spoke.toml"))
            .unwrap();
    let conf = s.sock.with_file_name("dmvpnd.toml");
    std::fs::write(
        &conf,
        format!("{example}\n[control]\nsocket = \"{}\"\n", s.sock()),
    )
    .unwrap();
    let out = run(&["--config", conf.to_str().unwrap(), "show", "sa"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(requests.recv().unwrap().contains("\"sa\""));

    // --socket wins over both.
    let other = Scratch::new("flag");
    let requests = serve_examples(&other.sock);
    let out = Command::new(DMVPNCTL)
        .args(["--socket", other.sock(), "--config", conf.to_str().unwrap()])
        .args(["show", "ike"])
        .env("DMVPN_SOCKET", "/nonexistent/dmvpnd.sock")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(requests.recv().unwrap().contains("\"ike\""));

    // A configuration that names a relative socket is an error naming file, line and key.
    std::fs::write(
        &conf,
        format!("{example}\n[control]\nsocket = \"ctl.sock\"\n"),
    )
    .unwrap();
    let out = run(&["--config", conf.to_str().unwrap(), "show", "sa"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("finding the control socket in")
            && err.contains("control.socket")
            && err.contains("must be an absolute path"),
        "{err}"
    );
}

#[test]
fn explain_sends_the_destination_and_prints_text_or_json() {
    let s = Scratch::new("explain");
    let requests = serve_examples(&s.sock);
    let out = run(&["--socket", s.sock(), "explain", "10.1.2.3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), fixtures::explain().to_string());
    assert!(text(&out.stdout).starts_with("Destination 10.1.2.3: sent to NBMA 203.0.113.7"));
    assert_eq!(
        requests.recv().unwrap().trim_end(),
        r#"{"cmd":"explain","destination":"10.1.2.3"}"#
    );

    let s = Scratch::new("explain-json");
    let requests = serve_examples(&s.sock);
    let out = run(&["--socket", s.sock(), "explain", "10.1.2.3", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got, serde_json::to_value(fixtures::explain()).unwrap());
    assert_eq!(got["route"]["source"], "nhrp_shortcut");
    assert_eq!(
        requests.recv().unwrap().trim_end(),
        r#"{"cmd":"explain","destination":"10.1.2.3"}"#
    );

    // Unparsable destinations are usage errors, never sent.
    for bad in ["10.1.2", "10.1.2.3/24", "2001:db8::1", "host.example"] {
        let out = run(&["--socket", s.sock(), "explain", bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = text(&out.stderr);
        assert!(
            err.contains("invalid value") && err.contains(bad),
            "{bad}: {err}"
        );
    }
    let out = run(&["--socket", s.sock(), "explain"]);
    assert_eq!(out.status.code(), Some(1));
}
