//! dmvpn-gen: generates what the Debian package ships besides the binaries, from the sources
//! that define it, so nothing is copied by hand:
//!
//! - `dmvpnd.8`, `dmvpnctl.8` and one `dmvpnctl-<command>.8` per subcommand, rendered by
//!   clap_mangen from the clap definitions in `daemon/src/cli.rs` and `dmvpnctl/src/cli.rs`
//!   (compiled into this program, so the pages cannot drift from the binaries);
//! - `dmvpnd.toml.5` from the configuration reference: the annotated examples
//!   `conf/spoke.toml`, `conf/hub.toml` and `conf/secrets.example.toml` (every table, key, example
//!   value and comment) and the file-permission rules documented in `crates/config/src/lib.rs`.
//!   It fails if a key of the configuration schema (`crates/config/src/raw.rs`) appears in none of
//!   the examples, so an undocumented key breaks the package build;
//! - bash, zsh and fish completions for dmvpnctl (clap_complete).
//!
//! Usage: `dmvpn-gen OUT_DIR` (writes `OUT_DIR/man/*` and `OUT_DIR/completions/*`). The date in
//! the pages is `SOURCE_DATE_EPOCH` (the build script passes the last commit's time).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;

#[allow(dead_code)] // only the clap definition is used here, not the fields
#[path = "../../../daemon/src/cli.rs"]
mod dmvpnd_cli;

#[allow(dead_code)]
#[path = "../../../dmvpnctl/src/cli.rs"]
mod dmvpnctl_cli;

mod conf;
mod roff;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: dmvpn-gen OUT_DIR");
        return ExitCode::FAILURE;
    };
    match run(Path::new(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmvpn-gen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root (this crate lives in `packaging/gen`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> Result<String, String> {
    let p = repo_root().join(rel);
    fs::read_to_string(&p).map_err(|e| format!("reading {}: {e}", p.display()))
}

fn write(path: &Path, data: &[u8]) -> Result<(), String> {
    fs::write(path, data).map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}

fn run(out: &Path) -> Result<(), String> {
    let man = out.join("man");
    let comp = out.join("completions");
    for d in [&man, &comp] {
        fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let date = roff::source_date();

    // dmvpnd(8)
    let mut page = render_clap(dmvpnd_cli::Args::command(), "8", &date)?;
    page.push_str(DMVPND_EXTRA);
    write(&man.join("dmvpnd.8"), page.as_bytes())?;

    // dmvpnctl(8) and its subcommands
    let mut ctl = dmvpnctl_cli::Args::command();
    ctl.build();
    let mut page = render_clap(ctl.clone(), "8", &date)?;
    page.push_str(DMVPNCTL_EXTRA);
    write(&man.join("dmvpnctl.8"), page.as_bytes())?;
    for sub in ctl.get_subcommands() {
        let name = format!("dmvpnctl-{}", sub.get_name());
        let sub = sub.clone().name(&*name.clone().leak()); // clap wants a static name
        let mut page = render_clap(sub, "8", &date)?;
        page.push_str(".SH SEE ALSO\n.BR dmvpnctl (8)\n");
        write(&man.join(format!("{name}.8")), page.as_bytes())?;
    }

    // dmvpnd.toml(5)
    let page = conf::manpage(&date)?;
    write(&man.join("dmvpnd.toml.5"), page.as_bytes())?;

    // completions
    use clap_complete::Shell;
    for (shell, file) in [
        (Shell::Bash, "dmvpnctl"),
        (Shell::Zsh, "_dmvpnctl"),
        (Shell::Fish, "dmvpnctl.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(
            shell,
            &mut dmvpnctl_cli::Args::command(),
            "dmvpnctl",
            &mut buf,
        );
        write(&comp.join(file), &buf)?;
    }
    Ok(())
}

fn render_clap(cmd: clap::Command, section: &str, date: &str) -> Result<String, String> {
    let man = clap_mangen::Man::new(cmd)
        .section(section)
        .date(date)
        .manual("dmvpnd manual")
        .source(format!("dmvpnd {}", env!("CARGO_PKG_VERSION")));
    let mut buf = Vec::new();
    man.render(&mut buf).map_err(|e| e.to_string())?;
    String::from_utf8(buf).map_err(|e| e.to_string())
}

const DMVPND_EXTRA: &str = r#".SH SIGNALS
.TP
.B SIGHUP
Re-read the configuration; security associations the new configuration still allows stay up.
.B systemctl reload dmvpnd
checks the file with
.B \-\-check\-config
first and only then sends the signal.
.TP
.BR SIGTERM ", " SIGINT
Shut down: purge the NHRP registrations, send IKE DELETE to every peer, remove the routes and the
tunnel device.
.SH ENVIRONMENT
.TP
.B DMVPND_LOG
Log filter (tracing EnvFilter syntax, e.g.
.BR debug " or " info,dmvpnd=debug );
default
.BR info .
.TP
.B JOURNAL_STREAM
Set by systemd: logs are written without timestamps since the journal adds its own.
.SH FILES
.TP
.I /etc/dmvpnd/dmvpnd.toml
The configuration, see
.BR dmvpnd.toml (5).
.TP
.I /etc/dmvpnd/secrets.toml
Pre-shared keys and the NHRP key; mode 0600, owned by the service user
.BR dmvpnd .
.TP
.I /run/dmvpnd/dmvpnd.sock
The control socket used by
.BR dmvpnctl (8).
.TP
.I /usr/lib/systemd/system/dmvpnd.service
The systemd unit (Type=notify, watchdog, user dmvpnd with CAP_NET_ADMIN, CAP_NET_RAW and
CAP_NET_BIND_SERVICE only).
.SH SEE ALSO
.BR dmvpnd.toml (5),
.BR dmvpnctl (8),
.BR systemctl (1),
.BR journalctl (1)
"#;

const DMVPNCTL_EXTRA: &str = r#".SH EXIT STATUS
0 on success, 1 on any error, usage errors included.
.SH FILES
.TP
.I /run/dmvpnd/dmvpnd.sock
The default control socket. dmvpnd serves every command to root, its own user and members of
the admin group, and only
.B show
and
.B explain
to members of the control group, both configured in
.BR dmvpnd.toml (5)
.RB ( "[control] admin-group" ,
.BR "[control] group" ).
A refused command exits with status 1 and says which group it needs.
.SH SEE ALSO
.BR dmvpnd (8),
.BR dmvpnd.toml (5),
.BR dmvpnctl\-show (8),
.BR dmvpnctl\-clear (8),
.BR dmvpnctl\-reload (8)
"#;

/// Names (keys and table names) a schema struct declares, as written in TOML.
fn schema_names(raw_rs: &str, structs: &dyn Fn(&str) -> bool) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut inside = false;
    let mut rename: Option<String> = None;
    for line in raw_rs.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("pub(crate) struct ") {
            let name = rest.split([' ', '{', '<']).next().unwrap_or("");
            inside = structs(name);
            continue;
        }
        if t.starts_with('}') {
            inside = false;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(i) = t.find("rename = \"") {
            let r = &t[i + 10..];
            rename = r.split('"').next().map(str::to_owned);
            continue;
        }
        if let Some(rest) = t.strip_prefix("pub ")
            && let Some((field, _)) = rest.split_once(':')
        {
            let n = rename
                .take()
                .unwrap_or_else(|| field.trim().replace('_', "-"));
            names.insert(n);
        }
    }
    names
}

/// Every key and table of the schema must appear in the annotated examples.
fn check_schema(main: &conf::Doc, secrets: &conf::Doc) -> Result<(), String> {
    let raw = read("crates/config/src/raw.rs")?;
    let mut missing = Vec::new();
    for (doc, pick) in [
        (
            main,
            &(|n: &str| n.starts_with("Raw") && !n.starts_with("RawSecrets"))
                as &dyn Fn(&str) -> bool,
        ),
        (secrets, &|n: &str| n.starts_with("RawSecrets")),
    ] {
        let known = doc.names();
        let names = schema_names(&raw, pick);
        if names.is_empty() {
            return Err("found no schema structs in crates/config/src/raw.rs".into());
        }
        missing.extend(names.into_iter().filter(|n| !known.contains(n)));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        let mut m = String::from(
            "configuration keys missing from the annotated examples in conf/ (document them there, \
             commented out if optional): ",
        );
        let _ = write!(m, "{}", missing.join(", "));
        Err(m)
    }
}
