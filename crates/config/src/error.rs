//! Configuration errors that name the file, the line and column, and the key (dotted TOML path).

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a configuration file, 1-based, as editors and compilers print it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// Converts a byte offset into `text` to a line and a column counted in characters, so a
    /// non-ASCII string earlier on the line does not shift the column an operator sees.
    pub fn from_offset(path: &Path, text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        // A span may start inside a multi-byte character only if the parser is wrong; step back to
        // a boundary rather than panic on slicing.
        let mut start = offset;
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location {
            path: path.to_path_buf(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// Everything that can make a configuration unusable. The `Display` form is the message printed
/// by `dmvpnd --check-config`, one line, starting with `file:line:column:` where a position is known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The I/O error is part of the message, not a `source`: with both, an error chain printed
    // by the daemon (`{:#}`) would repeat it.
    #[error("{}: cannot read: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The secrets file the configuration names does not exist: say which and how to make it.
    #[error(
        "{}: no such secrets file (named by `secrets` in {}); create it from the example and \
         put your keys in it: `install -m 0600 conf/secrets.example.toml {}` (from the \
         repository, or /usr/share/doc/dmvpnd/examples when installed), owned by the user \
         dmvpnd runs as; it holds [psk] <keyring name> = \"...\" and [nhrp] authentication = \"...\"",
        path.display(),
        config.display(),
        path.display()
    )]
    MissingSecrets { path: PathBuf, config: PathBuf },
    #[error(
        "{}: refusing to use: mode {mode:04o} {reason}; fix with `chmod {fix:o} {}`",
        path.display(),
        path.display()
    )]
    Permissions {
        path: PathBuf,
        mode: u32,
        reason: &'static str,
        fix: u32,
    },
    /// A file holding or choosing secrets belongs to a user other than root and the one dmvpnd
    /// runs as: that user could change it (or its mode) at will.
    #[error(
        "{}: refusing to use: owned by uid {owner}, which is neither root, nor uid {euid} (the \
         user this runs as), nor the service user `dmvpnd`, and could change it; fix with \
         `chown root {}` (or to the user dmvpnd runs as), or run the check as that user \
         (`runuser -u dmvpnd -- dmvpnd --check-config ...`)",
        path.display(),
        path.display()
    )]
    Owner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    /// The file is not TOML, or a value has the wrong type, an unknown key, a bad address…
    /// `key` is the dotted path of the offending key where it could be found.
    #[error("{location}: {}{message}", key_prefix(key))]
    Invalid {
        location: Location,
        key: Option<String>,
        message: String,
    },
}

fn key_prefix(key: &Option<String>) -> String {
    match key {
        Some(k) if !k.is_empty() => format!("{k}: "),
        _ => String::new(),
    }
}

impl ConfigError {
    /// The location of an `Invalid` error, for tests and tools that jump to it.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Invalid { location, .. } => Some(location),
            _ => None,
        }
    }

    /// The dotted key of an `Invalid` error, if known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => key.as_deref(),
            _ => None,
        }
    }
}
