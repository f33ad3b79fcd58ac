//! The control socket end to end: `ctl::serve` on a real socket in a temporary directory,
//! answered by a task playing the control loop with the example reports, driven by raw clients
//! and by the built `dmvpnctl` binary.

use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use dmvpn_api::{Ack, fixtures as examples};
use dmvpnd::ctl::{self, Answer, Command as CtlCommand, Request, Response, Show};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// The binary under test (one lookup for every test: `dmvpn_tests::bin`).
fn dmvpnctl_bin() -> std::path::PathBuf {
    dmvpn_tests::bin("dmvpnctl")
}

/// The control loop's side of the channel, answering from the example reports: the `show`s
/// as the daemon's loop does, a report encoded by the server off the loop ([`Answer::Encode`]).
fn answer(req: Request) -> Answer {
    let hub: IpAddr = "198.51.100.1".parse().unwrap();
    let resp = match req {
        Request::Show { what, .. } => {
            return match what {
                Show::Sa => Answer::ok(examples::sa()),
                Show::Dmvpn => Answer::ok(examples::dmvpn()),
                Show::Nhrp => Answer::ok(examples::nhrp()),
                Show::Ike => Answer::ok(examples::ike_report()),
                Show::Interface => Answer::ok(examples::interface()),
            };
        }
        Request::ClearSa { peer } if peer == hub => {
            Response::ok(&Ack::new(format!("cleared the IKE SA with {peer}")))
        }
        Request::ClearSa { peer } | Request::ClearChildSa { peer } => {
            Response::error(format!("no SA with {peer}"))
        }
        Request::ClearNhrp => Response::ok(&Ack::new("cleared 3 dynamic NHRP entries")),
        Request::Reload => Response::ok(&Ack::new("configuration reloaded")),
        Request::Explain { .. } => Response::ok(&examples::explain()),
    };
    Answer::Now(resp)
}

async fn start(path: &Path, groups: ctl::Groups) -> tokio::task::JoinHandle<()> {
    start_with(path, groups, answer).await
}

/// The server with a control loop that answers with `answer`.
async fn start_with(
    path: &Path,
    groups: ctl::Groups,
    answer: impl Fn(Request) -> Answer + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = mpsc::channel::<CtlCommand>(8);
    tokio::spawn(async move {
        while let Some((req, reply)) = rx.recv().await {
            let _ = reply.send(answer(req));
        }
    });
    ctl::serve(path, groups, tx).await.unwrap()
}

struct Client {
    r: BufReader<tokio::net::unix::OwnedReadHalf>,
    w: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    async fn connect(path: &Path) -> Self {
        let (r, w) = UnixStream::connect(path).await.unwrap().into_split();
        Self {
            r: BufReader::new(r),
            w,
        }
    }

    async fn send(&mut self, line: &[u8]) {
        self.w.write_all(line).await.unwrap();
    }

    async fn recv(&mut self) -> Option<Response> {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), self.r.read_line(&mut line))
            .await
            .expect("answer in time")
            .unwrap();
        (n > 0).then(|| serde_json::from_str(&line).expect("a JSON response line"))
    }

    async fn ask(&mut self, line: &str) -> Response {
        self.send(format!("{line}\n").as_bytes()).await;
        self.recv().await.expect("a response")
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        == 0
}

fn sock_in(dir: &Path) -> PathBuf {
    dir.join("run").join("dmvpnd.sock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_responses() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock_in(dir.path());
    let server = start(&path, ctl::Groups::default()).await;

    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    let run = std::fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(
        run.permissions().mode() & 0o7777,
        0o700,
        "no group: owner only"
    );
    assert!(
        std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .all(|e| e.unwrap().file_name() == "dmvpnd.sock"),
        "no temporary name left behind"
    );

    let mut c = Client::connect(&path).await;
    let r = c.ask(r#"{"cmd":"show","what":"dmvpn"}"#).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.schema_version, 2);
    assert_eq!(
        r.data.unwrap(),
        serde_json::to_value(examples::dmvpn()).unwrap()
    );

    // Garbage gets an error and the connection stays usable.
    let r = c.ask("{not json").await;
    assert!(!r.ok);
    assert!(r.error.unwrap().starts_with("invalid request:"));
    let r = c.ask(r#"{"cmd":"show","what":"routes"}"#).await;
    assert!(!r.ok);
    let r = c.ask(r#"{"cmd":"rm -rf"}"#).await;
    assert!(
        r.error.unwrap().contains("unknown cmd"),
        "names the problem"
    );
    c.send(b"\xff\xfe\x00\n").await;
    assert!(!c.recv().await.unwrap().ok);
    let r = c.ask("").await;
    assert_eq!(r.error.as_deref(), Some("empty request"));

    let r = c.ask(r#"{"cmd":"clear_sa","peer":"192.0.2.99"}"#).await;
    assert_eq!(r.error.as_deref(), Some("no SA with 192.0.2.99"));
    let r = c.ask(r#"{"cmd":"reload"}"#).await;
    assert_eq!(r.data.unwrap()["message"], "configuration reloaded");

    // An oversized line: an error, then the server hangs up.
    let mut big = vec![b'x'; ctl::MAX_REQUEST + 100];
    big.push(b'\n');
    c.send(&big).await;
    let r = c.recv().await.unwrap();
    assert!(r.error.unwrap().starts_with("request too large"));
    assert!(
        c.recv().await.is_none(),
        "closed after an oversized request"
    );

    // Several clients at once, each getting its own answer.
    let mut tasks = Vec::new();
    for what in ["sa", "nhrp", "ike", "interface"] {
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&path).await;
            let r = c.ask(&format!(r#"{{"cmd":"show","what":"{what}"}}"#)).await;
            (what, r)
        }));
    }
    for t in tasks {
        let (what, r) = t.await.unwrap();
        let want = match what {
            "sa" => serde_json::to_value(examples::sa()),
            "nhrp" => serde_json::to_value(examples::nhrp()),
            "ike" => serde_json::to_value(examples::ike_report()),
            _ => serde_json::to_value(examples::interface()),
        }
        .unwrap();
        assert_eq!(r.data.unwrap(), want, "{what}");
    }

    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock_in(dir.path());
    let (tx, mut rx) = mpsc::channel::<CtlCommand>(1);
    let _server = ctl::serve(&path, ctl::Groups::default(), tx).await.unwrap();
    // A control loop that drops one request unanswered and exits: the channel is closed
    // before the reply is dropped, so the client's next request finds it closed.
    tokio::spawn(async move {
        if let Some((_req, reply)) = rx.recv().await {
            drop(rx);
            drop(reply);
        }
    });
    let mut c = Client::connect(&path).await;
    let r = c.ask(r#"{"cmd":"show","what":"sa"}"#).await;
    assert_eq!(
        r.error.as_deref(),
        Some("dmvpnd dropped the request without answering")
    );
    let r = c.ask(r#"{"cmd":"show","what":"sa"}"#).await;
    assert_eq!(r.error.as_deref(), Some("dmvpnd is shutting down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_file_handling() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dmvpnd.sock");

    // A stale socket from a crashed daemon is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let first = start(&path, ctl::Groups::default()).await;
    Client::connect(&path).await;

    // A live one is not.
    let (tx, _rx) = mpsc::channel::<CtlCommand>(1);
    let err = ctl::serve(&path, ctl::Groups::default(), tx)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("another dmvpnd is running"),
        "{err:#}"
    );
    first.abort();

    // Nor is a file that is not a socket.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "data").unwrap();
    let (tx, _rx) = mpsc::channel::<CtlCommand>(1);
    let err = ctl::serve(&file, ctl::Groups::default(), tx)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("is not a socket"), "{err:#}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
}

async fn dmvpnctl(args: &[&str], ids: Option<(u32, u32)>) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(dmvpnctl_bin());
        cmd.args(&args);
        if let Some((uid, gid)) = ids {
            // Drop every supplementary group (root's included) so only uid/gid count.
            cmd.gid(gid).uid(uid);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

/// Runs dmvpnctl as `uid`/`gid` with exactly the supplementary `groups`, through setpriv(1)
/// (std's Command can set uid and gid but clears the supplementary groups).
async fn dmvpnctl_as(args: &[&str], uid: u32, gid: u32, groups: &[u32]) -> Output {
    let mut argv: Vec<String> = vec![
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        if groups.is_empty() {
            "--clear-groups".to_owned()
        } else {
            let list: Vec<String> = groups.iter().map(u32::to_string).collect();
            format!("--groups={}", list.join(","))
        },
        "--".to_owned(),
        dmvpnctl_bin().to_str().unwrap().to_owned(),
    ];
    argv.extend(args.iter().map(|s| (*s).to_owned()));
    tokio::task::spawn_blocking(move || Command::new("setpriv").args(&argv).output().unwrap())
        .await
        .unwrap()
}

fn read_only(group: u32) -> ctl::Groups {
    ctl::Groups {
        group: Some(group),
        admin_group: None,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmvpnctl_against_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock_in(dir.path());
    let sock = path.to_str().unwrap();
    let _server = start(&path, ctl::Groups::default()).await;

    let out = dmvpnctl(&["--socket", sock, "show", "dmvpn"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("\n     1 198.51.100.1         10.250.0.1    UP 00:04:12     S\n"));
    assert!(stdout.contains("\nType:Spoke, NHRP Peers:2,\n"));

    let out = dmvpnctl(&["--socket", sock, "show", "sa"], None).await;
    let stdout = text(&out.stdout);
    assert!(stdout.contains("\n    #pkts encaps: 1204, #pkts encrypt: 1204, #pkts digest: 1204\n"));
    assert!(stdout.contains("\n      spi: 0x1A2B3C4D(439041101)\n"));

    for (what, want) in [
        ("sa", serde_json::to_value(examples::sa()).unwrap()),
        ("dmvpn", serde_json::to_value(examples::dmvpn()).unwrap()),
        ("nhrp", serde_json::to_value(examples::nhrp()).unwrap()),
        ("ike", serde_json::to_value(examples::ike_report()).unwrap()),
        (
            "interface",
            serde_json::to_value(examples::interface()).unwrap(),
        ),
    ] {
        let out = dmvpnctl(&["--socket", sock, "show", what, "--json"], None).await;
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got, want, "{what}");
        assert_eq!(got["schema_version"], 2);
    }

    for what in ["nhrp", "ike", "interface"] {
        let out = dmvpnctl(&["--socket", sock, "show", what], None).await;
        assert!(out.status.success(), "{what}");
        assert!(!out.stdout.is_empty());
    }

    let out = dmvpnctl(&["--socket", sock, "clear", "sa", "198.51.100.1"], None).await;
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "cleared the IKE SA with 198.51.100.1\n");
    let out = dmvpnctl(&["--socket", sock, "clear", "nhrp"], None).await;
    assert_eq!(text(&out.stdout), "cleared 3 dynamic NHRP entries\n");
    let out = dmvpnctl(&["--socket", sock, "reload"], None).await;
    assert_eq!(text(&out.stdout), "configuration reloaded\n");

    // The daemon's refusal: exit 1 with its message.
    let out = dmvpnctl(&["--socket", sock, "clear", "sa", "192.0.2.99"], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "dmvpnctl: no SA with 192.0.2.99\n");
    assert!(out.stdout.is_empty());

    // Operator typos: exit 1, nothing sent.
    let out = dmvpnctl(&["--socket", sock, "clear", "sa", "hub1"], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("invalid value 'hub1'"));
    let out = dmvpnctl(&["--socket", sock, "show", "routes"], None).await;
    assert_eq!(out.status.code(), Some(1));

    // No daemon.
    let absent = dir.path().join("absent.sock");
    let out = dmvpnctl(
        &["--socket", absent.to_str().unwrap(), "show", "dmvpn"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "dmvpnctl: cannot connect to {}: is dmvpnd running? (no such socket)\n",
            absent.display()
        )
    );
}

/// Access control with real credentials: needs root to run dmvpnctl as other users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_root_and_the_group_get_in() {
    if !is_root() {
        eprintln!("skipped: needs root to switch uid/gid");
        return;
    }
    const GROUP: u32 = 47_123; // no such group in /etc/group: shown as a number
    const NOBODY: (u32, u32) = (65_534, 65_534);
    let dir = tempfile::tempdir().unwrap();
    // Others may traverse the test directory itself, as they may /run.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let path = sock_in(dir.path());
    let sock = path.to_str().unwrap();
    let _server = start(&path, read_only(GROUP)).await;

    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), GROUP);
    let run = std::fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(run.permissions().mode() & 0o7777, 0o750);
    assert_eq!(run.gid(), GROUP);

    // The file system keeps an outsider out, and dmvpnctl says what to do.
    let out = dmvpnctl(&["--socket", sock, "show", "dmvpn"], Some(NOBODY)).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "dmvpnctl: cannot connect to {sock}: is dmvpnd running? (permission denied: run as \
             root or a member of group {GROUP})\n"
        )
    );

    // A group member gets in.
    let out = dmvpnctl(&["--socket", sock, "show", "dmvpn"], Some((65_534, GROUP))).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("198.51.100.1"));

    // With the file modes opened up, SO_PEERCRED still refuses the outsider.
    std::fs::set_permissions(
        path.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = dmvpnctl(&["--socket", sock, "show", "dmvpn"], Some(NOBODY)).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("dmvpnctl: permission denied: uid 65534 is not root and not in group {GROUP}\n")
    );
    // Root always gets in.
    let out = dmvpnctl(&["--socket", sock, "show", "ike"], None).await;
    assert!(out.status.success());
}

/// The two tiers with real credentials (root needed to switch users): the control group may
/// show but not clear; the admin group may clear; supplementary groups count (SO_PEERGROUPS),
/// also past the first buffer's worth of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_group_reads_and_the_admin_group_changes() {
    if !is_root() {
        eprintln!("skipped: needs root to switch uid/gid");
        return;
    }
    const GROUP: u32 = 47_123;
    const ADMIN: u32 = 47_124;
    const NOBODY: u32 = 65_534;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let path = sock_in(dir.path());
    let sock = path.to_str().unwrap();
    let _server = start(
        &path,
        ctl::Groups {
            group: Some(GROUP),
            admin_group: Some(ADMIN),
        },
    )
    .await;

    // A supplementary member of the control group: show and explain, nothing else.
    let reader = |args: &'static [&'static str]| {
        let mut a = vec!["--socket", sock];
        a.extend_from_slice(args);
        a
    };
    let out = dmvpnctl_as(&reader(&["show", "sa"]), NOBODY, NOBODY, &[GROUP]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("spi: 0x1A2B3C4D"));
    let out = dmvpnctl_as(&reader(&["explain", "10.1.2.3"]), NOBODY, NOBODY, &[GROUP]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = dmvpnctl_as(
        &reader(&["clear", "sa", "198.51.100.1"]),
        NOBODY,
        NOBODY,
        &[GROUP],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr),
        format!(
            "dmvpnctl: permission denied: clear_sa changes state and needs root, dmvpnd's user \
             or in group {ADMIN}; uid {NOBODY} may only show and explain\n"
        )
    );
    for args in [&["reload"][..], &["clear", "nhrp"][..]] {
        let out = dmvpnctl_as(&reader(args), NOBODY, NOBODY, &[GROUP]).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out.stderr).contains("permission denied"), "{args:?}");
    }
    // The same user with the control group as its primary gid: the same tier.
    let out = dmvpnctl_as(&reader(&["reload"]), NOBODY, GROUP, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let out = dmvpnctl_as(&reader(&["show", "dmvpn"]), NOBODY, GROUP, &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // An admin-group member clears.
    let out = dmvpnctl_as(
        &reader(&["clear", "sa", "198.51.100.1"]),
        NOBODY,
        NOBODY,
        &[GROUP, ADMIN],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "cleared the IKE SA with 198.51.100.1\n");

    // Many supplementary groups (more than the first getsockopt buffer holds): the last one
    // (the kernel keeps them sorted) still counts. The control group opens the socket file.
    let mut many: Vec<u32> = (40_000..40_100).collect();
    many.extend([GROUP, ADMIN]);
    let out = dmvpnctl_as(&reader(&["reload"]), NOBODY, NOBODY, &many).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "configuration reloaded\n");

    // With the file modes opened up, an outsider is still refused by the credentials.
    std::fs::set_permissions(
        path.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = dmvpnctl_as(&reader(&["show", "sa"]), NOBODY, NOBODY, &many[..50]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("dmvpnctl: permission denied: uid {NOBODY} is not root and not in group {GROUP}\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_not_a_problem_for_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock_in(dir.path());
    let _server = start(&path, ctl::Groups::default()).await;
    // Clients that connect and say nothing, up to the limit, do not block a real one for long:
    // the excess is refused at once with an error line.
    let mut idle = Vec::new();
    for _ in 0..ctl::MAX_CLIENTS {
        idle.push(UnixStream::connect(&path).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = UnixStream::connect(&path).await.unwrap();
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_string(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let r: Response = serde_json::from_str(buf.trim()).unwrap();
    assert!(r.error.unwrap().contains("too many control connections"));
    drop(idle);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = Client::connect(&path).await;
    assert!(c.ask(r#"{"cmd":"show","what":"ike"}"#).await.ok);
}

/// Peers in the large report below: about 9 MB of JSON, far more than the server holds of one
/// answer at a time (`STREAM_DEPTH` pieces of `ctl::STREAM_CHUNK`).
const BIG: usize = 20_000;

/// A report encoded off the loop reaches the client whole however large it is, and an encoder
/// that fails or a client that goes away mid-answer costs the connection, never the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_stream_and_broken_ones_end_cleanly() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let path = sock_in(dir.path());
    // Bytes the endless encoder (`show ike`) wrote before its writer failed; 0 until then.
    let endless_stopped = Arc::new(AtomicU64::new(0));
    let stopped = endless_stopped.clone();
    let _server = start_with(&path, ctl::Groups::default(), move |req| {
        let Request::Show { what, .. } = req else {
            return answer(req);
        };
        match what {
            // Large: one example peer 20,000 times.
            Show::Sa => Answer::build(|w| {
                let mut r = examples::sa();
                let peer = r.peers[0].clone();
                r.peers = vec![peer; BIG];
                Response::write_ok(w, &r)
            }),
            // Fails before writing anything: an error line can take its place.
            Show::Dmvpn => Answer::build(|_| Err(std::io::Error::other("no report"))),
            // Fails after a megabyte has gone out: only closing the stream is left.
            Show::Nhrp => Answer::build(|w| {
                w.write_all(br#"{"schema_version":2,"ok":true,"data":"#)?;
                w.write_all(&vec![b' '; 1 << 20])?;
                Err(std::io::Error::other("broke off"))
            }),
            // Never ends: only the client's going away stops it.
            Show::Ike => {
                let stopped = stopped.clone();
                Answer::build(move |w| {
                    let mut n = 0u64;
                    loop {
                        if let Err(e) = w.write_all(&[b' '; 4096]) {
                            stopped.store(n.max(1), Ordering::SeqCst);
                            return Err(e);
                        }
                        n += 4096;
                    }
                })
            }
            Show::Interface => answer(req),
        }
    })
    .await;

    let mut c = Client::connect(&path).await;
    for _ in 0..2 {
        let r = c.ask(r#"{"cmd":"show","what":"sa"}"#).await;
        assert!(r.ok, "{r:?}");
        let back: dmvpn_api::SaReport = serde_json::from_value(r.data.unwrap()).unwrap();
        assert_eq!(back.peers.len(), BIG);
        assert_eq!(back.peers[BIG - 1], examples::sa().peers[0]);
    }
    let r = c.ask(r#"{"cmd":"show","what":"dmvpn"}"#).await;
    assert_eq!(
        r.error.as_deref(),
        Some("internal error: cannot encode the answer: no report")
    );
    // The connection still answers after that error line.
    assert!(c.ask(r#"{"cmd":"show","what":"interface"}"#).await.ok);

    // Broken off part-way: the client reads the part and then the end of the stream.
    let mut c = UnixStream::connect(&path).await.unwrap();
    c.write_all(b"{\"cmd\":\"show\",\"what\":\"nhrp\"}\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut got))
        .await
        .expect("the server closes the connection")
        .unwrap();
    assert!(got.len() >= 1 << 20, "{} bytes", got.len());
    assert!(!got.contains(&b'\n'), "no complete line");
    assert!(serde_json::from_slice::<Response>(&got).is_err());

    // A client that asks and goes away: the encoder's next write fails and it stops.
    let mut c = UnixStream::connect(&path).await.unwrap();
    c.write_all(b"{\"cmd\":\"show\",\"what\":\"ike\"}\n")
        .await
        .unwrap();
    let mut first = [0u8; 4096];
    c.read_exact(&mut first).await.unwrap();
    drop(c);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while endless_stopped.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the encoder still runs 20 s after its client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The server still serves.
    let mut c = Client::connect(&path).await;
    assert!(c.ask(r#"{"cmd":"show","what":"interface"}"#).await.ok);
}

/// Prints every sample as dmvpnctl shows it, text and JSON, for docs/dmvpnctl.md:
/// `cargo test -p dmvpnd --test ctl -- --ignored print_samples --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "generates documentation samples"]
async fn print_samples() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock_in(dir.path());
    let sock = path.to_str().unwrap();
    let _server = start(&path, ctl::Groups::default()).await;
    for what in ["dmvpn", "sa", "nhrp", "ike", "interface"] {
        for json in [false, true] {
            let mut args = vec!["--socket", sock, "show", what];
            if json {
                args.push("--json");
            }
            let out = dmvpnctl(&args, None).await;
            println!(
                "=== dmvpnctl {}\n{}",
                args[2..].join(" "),
                text(&out.stdout)
            );
        }
    }
    for json in [false, true] {
        let mut args = vec!["--socket", sock, "explain", "10.1.2.3"];
        if json {
            args.push("--json");
        }
        let out = dmvpnctl(&args, None).await;
        println!(
            "=== dmvpnctl {}\n{}",
            args[2..].join(" "),
            text(&out.stdout)
        );
    }
}
