//! `dmvpnctl import-ios FILE`: translates the DMVPN blocks of an IOS-XE running configuration
//! into a dmvpnd configuration and secrets file, validated exactly as `dmvpnd --check-config`
//! validates them, and lints what silently degrades on Cisco (docs/dmvpnctl.md, "import-ios").
//!
//! - [`reader`]: IOS text → lines with numbers and the indentation hierarchy;
//! - [`ios`]: the DMVPN-relevant blocks as typed records;
//! - [`translate`]: records → dmvpnd TOML + secrets, reporting what it cannot translate;
//! - [`lint`]: records → findings about the IOS configuration itself.
//!
//! Exit status: 0 when a valid configuration was produced, 1 when none could be (errors, I/O,
//! a file that exists without `--force`), 2 with `--strict` when there were lints or lines it
//! could not translate (the files are still written).

mod crypto;
mod emit;
pub mod ios;
pub mod lint;
pub mod reader;
pub mod translate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// File names written into `--output DIR`; the configuration names the secrets file relative
/// to itself.
pub const CONFIG_FILE: &str = "dmvpnd.toml";
pub const SECRETS_FILE: &str = "secrets.toml";

/// Exit status with `--strict` when there were lints or untranslated lines.
pub const EXIT_STRICT: u8 = 2;

pub use crate::cli::ImportIosArgs as Args;

/// What a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No valid configuration can be produced.
    Error,
    /// Something that silently degrades on Cisco; the code is stable.
    Lint(&'static str),
    /// A DMVPN setting with no (or only an approximate) dmvpnd counterpart.
    NotTranslated,
    /// Outside dmvpnd's scope, or a default chosen; for information.
    Note,
}

/// One reported item, about line `line` of the IOS file (0: the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: usize,
    pub kind: Kind,
    pub message: String,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Error => f.write_str("error"),
            Kind::Lint(code) => write!(f, "lint[{code}]"),
            Kind::NotTranslated => f.write_str("not translated"),
            Kind::Note => f.write_str("note"),
        }
    }
}

impl Finding {
    pub fn render(&self, file: &Path) -> String {
        if self.line == 0 {
            format!("{}: {}: {}", file.display(), self.kind, self.message)
        } else {
            format!(
                "{}:{}: {}: {}",
                file.display(),
                self.line,
                self.kind,
                self.message
            )
        }
    }
}

/// The whole import of IOS text, without I/O: the configuration and secrets text (if one could
/// be built) and every finding, sorted by line.
#[derive(Debug, Clone)]
pub struct Import {
    pub config: Option<String>,
    pub secrets: String,
    pub findings: Vec<Finding>,
}

pub fn import(
    text: &str,
    placeholders: &BTreeMap<String, String>,
    opts: &translate::Options,
) -> Import {
    let lines = reader::parse(text, placeholders);
    let ios = ios::read(&lines);
    let tr = translate::translate(&ios, opts);
    let mut findings = tr.findings;
    findings.extend(lint::check(&ios, &tr.facts));
    findings.sort_by_key(|f| f.line);
    Import {
        config: tr.config,
        secrets: tr.secrets,
        findings,
    }
}

fn pairs(list: &[String], what: &str) -> Result<BTreeMap<String, String>, String> {
    list.iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(format!("{what} `{p}`: expected NAME=VALUE")),
        })
        .collect()
}

/// Runs the subcommand; messages go to stderr, the configuration to stdout or --output.
pub fn run(args: &Args) -> ExitCode {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dmvpnctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: &Args) -> Result<ExitCode, String> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let placeholders = pairs(&args.placeholders, "--placeholder")?;
    let opts = translate::Options {
        interfaces: pairs(&args.interfaces, "--interface")?,
        tunnel: args.tunnel.clone(),
    };
    let imp = import(&text, &placeholders, &opts);
    for f in &imp.findings {
        eprintln!("{}", f.render(&args.file));
    }
    let count = |pred: fn(&Kind) -> bool| imp.findings.iter().filter(|f| pred(&f.kind)).count();
    let lints = count(|k| matches!(k, Kind::Lint(_)));
    let untranslated = count(|k| *k == Kind::NotTranslated);
    let notes = count(|k| *k == Kind::Note);
    let summary = format!("{lints} lint(s), {untranslated} not translated, {notes} note(s)");
    let Some(config) = &imp.config else {
        return Err(format!(
            "{}: no configuration produced ({summary})",
            args.file.display()
        ));
    };

    // Validate as the daemon will, before anything is written.
    let dir = args.output.clone().unwrap_or_else(|| PathBuf::from("."));
    let config_path = dir.join(CONFIG_FILE);
    let secrets_path = dir.join(SECRETS_FILE);
    dmvpn_config::parse_str_with_secrets(config, &config_path, &imp.secrets).map_err(|e| {
        // The generated line cites the IOS line it came from.
        let generated = e
            .location()
            .filter(|l| l.path == config_path)
            .and_then(|l| config.lines().nth(l.line - 1))
            .map_or(String::new(), |l| {
                format!(" (generated from: `{}`)", l.trim())
            });
        format!("the translated configuration does not validate: {e}{generated}")
    })?;

    if args.output.is_some() {
        if !args.force {
            for p in [&config_path, &secrets_path] {
                if p.exists() {
                    return Err(format!(
                        "{} exists: not overwriting it (use --force)",
                        p.display()
                    ));
                }
            }
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        write_file(&secrets_path, &imp.secrets, 0o600)?;
        write_file(&config_path, config, 0o644)?;
        // Exactly what `dmvpnd --check-config` runs, permissions included.
        dmvpn_config::load(&config_path)
            .map_err(|e| format!("the written configuration does not load: {e}"))?;
        eprintln!(
            "dmvpnctl: wrote {} and {} (mode 0600); dmvpnd --check-config accepts them ({summary})",
            config_path.display(),
            secrets_path.display()
        );
    } else {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(config.as_bytes());
        let _ = stdout.flush();
        eprintln!(
            "dmvpnctl: configuration valid ({summary}); secrets are not printed: use --output DIR \
             to write {SECRETS_FILE} as well"
        );
    }
    if args.strict && lints + untranslated > 0 {
        return Ok(ExitCode::from(EXIT_STRICT));
    }
    Ok(ExitCode::SUCCESS)
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    // An existing file (--force) keeps its mode through open(); set it.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}
