//! dmvpnctl: the operator's command line for a running dmvpnd, over its control socket.
//!
//! Text output follows the IOS commands it stands for (`show dmvpn`, `show crypto ipsec sa`,
//! `show ip nhrp`, `show crypto ikev2 sa detailed`, `show interfaces`; `explain` condenses
//! `show ip route X`, `show ip nhrp` and `show crypto ipsec sa peer`); `--json` prints the
//! response data as documented in docs/dmvpnctl.md. Exit status: 0 on success, 1 on any error
//! (usage errors included).
//!
//! Plain blocking std I/O: one request and one response need no async runtime.

mod import_ios;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dmvpn_api::ctl::{self, Request, Response, Show};
use dmvpn_api::{SCHEMA_VERSION, render};

mod cli;
use cli::{Args, ClearWhat, Cmd, What};

/// How long to wait for dmvpnd; its own answer timeout is shorter, so this only fires when the
/// daemon is wedged.
const TIMEOUT: Duration = Duration::from_secs(15);

fn main() -> ExitCode {
    // Usage errors exit 1 like every other failure (clap's default is 2), so scripts need
    // only tell success from failure; --help and --version still exit 0.
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Cmd::ImportIos(a) = &args.cmd {
        return import_ios::run(a);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmvpnctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let req = match &args.cmd {
        Cmd::Show {
            what, prefix, peer, ..
        } => Request::Show {
            what: match what {
                What::Sa => Show::Sa,
                What::Dmvpn => Show::Dmvpn,
                What::Nhrp => Show::Nhrp,
                What::Ike => Show::Ike,
                What::Interface => Show::Interface,
            },
            filter: ctl::ShowFilter {
                peer: *peer,
                prefix: *prefix,
            },
        },
        Cmd::Clear {
            what: ClearWhat::Sa { peer },
        } => Request::ClearSa { peer: *peer },
        Cmd::Clear {
            what: ClearWhat::ChildSa { peer },
        } => Request::ClearChildSa { peer: *peer },
        Cmd::Clear {
            what: ClearWhat::Nhrp,
        } => Request::ClearNhrp,
        Cmd::Reload => Request::Reload,
        Cmd::Explain { destination, .. } => Request::Explain {
            destination: *destination,
        },
        Cmd::ImportIos(_) => unreachable!("import-ios is dispatched in main"),
    };
    let socket = socket_path(args)?;
    let resp = exchange(&socket, &req)?;
    if !resp.ok {
        return Err(resp
            .error
            .unwrap_or_else(|| "dmvpnd reported an error without a message".to_owned()));
    }
    let data = resp.data.unwrap_or(serde_json::Value::Null);
    let out = match &args.cmd {
        Cmd::Show { json: true, .. } | Cmd::Explain { json: true, .. } => {
            serde_json::to_string_pretty(&data)
                .map(|s| s + "\n")
                .map_err(|e| e.to_string())?
        }
        _ => render::text(&req, data).map_err(|e| match e.other_version() {
            Some(v) => format!(
                "dmvpnd speaks schema version {v}, this dmvpnctl version {SCHEMA_VERSION}: \
                 use the dmvpnctl installed with dmvpnd, or --json ({})",
                e.error
            ),
            None => format!("unexpected answer from dmvpnd: {}", e.error),
        })?,
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`dmvpnctl show sa | head`) is not an error worth reporting.
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    Ok(())
}

/// The control socket: --socket or $DMVPN_SOCKET (clap reads both), else the daemon's
/// configuration's `[control] socket`, else the default when that file does not exist.
fn socket_path(args: &Args) -> Result<PathBuf, String> {
    if let Some(s) = &args.socket {
        return Ok(s.clone());
    }
    match dmvpn_config::control_socket(&args.config) {
        Ok(s) => Ok(s),
        Err(dmvpn_config::ConfigError::Read { error, .. })
            if error.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(PathBuf::from(ctl::DEFAULT_SOCKET))
        }
        Err(e) => Err(format!(
            "finding the control socket in {}: {e} (or pass --socket PATH / set DMVPN_SOCKET)",
            args.config.display()
        )),
    }
}

fn exchange(socket: &Path, req: &Request) -> Result<Response, String> {
    let stream = UnixStream::connect(socket).map_err(|e| connect_error(socket, &e))?;
    let io_err = |e: std::io::Error| format!("talking to dmvpnd on {}: {e}", socket.display());
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io_err)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io_err)?;
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    if let Err(e) = (&stream).write_all(&line) {
        // dmvpnd may have refused us (SO_PEERCRED) and hung up before reading: its
        // explanation is already waiting to be read, and says more than EPIPE.
        if !matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ) {
            return Err(io_err(e));
        }
    }
    let mut reader = BufReader::new((&stream).take(ctl::MAX_RESPONSE as u64 + 1));
    let mut buf = Vec::new();
    reader.read_until(b'\n', &mut buf).map_err(|e| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            format!("dmvpnd did not answer within {} s", TIMEOUT.as_secs())
        } else {
            io_err(e)
        }
    })?;
    if buf.is_empty() {
        return Err("dmvpnd closed the connection without answering".to_owned());
    }
    if buf.len() > ctl::MAX_RESPONSE {
        return Err("answer from dmvpnd too large".to_owned());
    }
    serde_json::from_slice(&buf).map_err(|e| format!("unreadable answer from dmvpnd: {e}"))
}

fn connect_error(socket: &Path, e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let why = match e.kind() {
        ErrorKind::NotFound => "no such socket".to_owned(),
        ErrorKind::ConnectionRefused => {
            "connection refused: the socket is left over from a dmvpnd that is gone".to_owned()
        }
        ErrorKind::PermissionDenied => match socket_group(socket) {
            Some(g) => format!("permission denied: run as root or a member of group {g}"),
            None => "permission denied: run as root".to_owned(),
        },
        _ => e.to_string(),
    };
    format!(
        "cannot connect to {}: is dmvpnd running? ({why})",
        socket.display()
    )
}

/// The group that may use the socket: the socket's group if it can be seen, else its
/// directory's (a 0750 directory hides the socket itself from non-members). `None` for root.
fn socket_group(socket: &Path) -> Option<String> {
    let gid = std::fs::metadata(socket)
        .ok()
        .or_else(|| std::fs::metadata(socket.parent()?).ok())?
        .gid();
    if gid == 0 {
        return None;
    }
    let name = ctl::group_name(gid);
    Some(name.unwrap_or_else(|| gid.to_string()))
}
