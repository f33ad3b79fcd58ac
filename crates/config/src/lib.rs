//! dmvpnd configuration: one TOML file for IKEv2 (RFC 7296), ESP (RFC 4303), the mGRE tunnel
//! (RFC 2890) and NHRP (RFC 2332), mirroring the Cisco DMVPN commands it replaces, plus an optional
//! secrets file. See `conf/spoke.toml` and `conf/hub.toml` for the annotated schema.
//!
//! File permissions (decided here, enforced by [`load`]):
//! - the secrets file must not be accessible by group or others at all (`mode & 0o077 == 0`);
//! - the main file may be world-readable only when it holds no secret inline; if it holds a PSK or
//!   the NHRP key it follows the secrets-file rule;
//! - neither file may be group- or other-writable: whoever can write the main file can point
//!   `secrets` or `debug.key-export` anywhere, which is as good as reading the keys;
//! - both files must belong to root, to the user reading them (the daemon's effective uid,
//!   normally the service user) or to the service user `dmvpnd` (so root can check the
//!   packaged configuration): any other owner may chmod or rewrite them at will;
//! - neither file's directory may be group- or other-writable (sticky or not): whoever can
//!   write it can replace the file with one of their own. Only the containing directory is
//!   checked (and, for a symbolic link, the directory of the file it leads to), not parents.

mod error;
mod locate;
mod model;
mod net;
mod raw;
mod validate;
mod warnings;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use error::{ConfigError, Location};
pub use model::{
    AeadChoice, Config, Control, DEFAULT_CONTROL_SOCKET, DEFAULT_METRICS_MAX_PEERS,
    DEFAULT_SOCKET_BUFFER, DEFAULT_TXQUEUELEN, Dataplane, DhGroup, Dpd, DpdMode, Encryption, Ike,
    IkeProposal, Ipsec, IpsecMode, KeyringEntry, MAX_NHS_CLUSTER, Metrics, Nhrp, Nhs, Prf, Role,
    Secret, StaticRoute, Tunnel, Underlay,
};
pub use net::Ipv4Net;

/// Default location of the main configuration file.
pub const DEFAULT_PATH: &str = "/etc/dmvpnd/dmvpnd.toml";

/// Reads, permission-checks and validates the configuration at `path` (and the secrets file it
/// names, resolved relative to the main file's directory).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let (text, meta) = read_file(path)?;
    check_owner_and_dir(path, &meta, euid())?;
    parse_inner(&text, path, Some(meta.mode), None)
}

/// What the permission checks need to know of a file.
#[derive(Debug, Clone, Copy)]
struct FileMeta {
    /// Permission bits (`& 0o7777`).
    mode: u32,
    uid: u32,
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Validates configuration text as if it had been read from `origin` (used in messages and to
/// resolve a relative `secrets` path), without checking the main file's permissions. A secrets
/// file it names is still read and checked.
pub fn parse_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    parse_inner(text, origin, None, None)
}

/// Like [`parse_str`], but the secrets file the configuration names is not read: `secrets` is
/// its text (for tools that produce both files before writing them, e.g. `dmvpnctl
/// import-ios`). Every check [`load`] makes on the contents applies; file modes are not checked.
pub fn parse_str_with_secrets(
    text: &str,
    origin: &Path,
    secrets: &str,
) -> Result<Config, ConfigError> {
    parse_inner(text, origin, None, Some(secrets))
}

/// The control socket the daemon configured at `path` uses (`[control] socket`, else the
/// default), for `dmvpnctl`: only the main file is read, neither validated as a whole nor its
/// secrets file opened (a control-group member may not read those).
pub fn control_socket(path: &Path) -> Result<PathBuf, ConfigError> {
    let (text, _) = read_file(path)?;
    let raw: raw::RawConfig = from_toml(&text, path)?;
    match &raw.control.socket {
        None => Ok(PathBuf::from(model::DEFAULT_CONTROL_SOCKET)),
        Some(p) if Path::new(p.get_ref()).is_absolute() => Ok(PathBuf::from(p.get_ref())),
        Some(p) => Err(ConfigError::Invalid {
            location: error::Location::from_offset(path, &text, p.span().start),
            key: Some("control.socket".to_owned()),
            message: "must be an absolute path".to_owned(),
        }),
    }
}

fn parse_inner(
    text: &str,
    origin: &Path,
    mode: Option<u32>,
    secrets_text: Option<&str>,
) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig = from_toml(text, origin)?;
    if let Some(mode) = mode {
        let inline_secret = raw.ike.keyring.get_ref().iter().any(|e| e.psk.is_some())
            || raw.nhrp.authentication.is_some();
        check_main_mode(origin, mode, inline_secret)?;
    }
    let secrets = match &raw.secrets {
        None => None,
        Some(p) => {
            let path = resolve_relative(origin, p.get_ref());
            let stext = match secrets_text {
                Some(t) => t.to_owned(),
                None => {
                    let (stext, smeta) = match read_file(&path) {
                        Err(ConfigError::Read { error, .. })
                            if error.kind() == std::io::ErrorKind::NotFound =>
                        {
                            return Err(ConfigError::MissingSecrets {
                                path,
                                config: origin.to_path_buf(),
                            });
                        }
                        r => r?,
                    };
                    check_secrets_mode(&path, smeta.mode)?;
                    check_owner_and_dir(&path, &smeta, euid())?;
                    stext
                }
            };
            let s: raw::RawSecrets = from_toml(&stext, &path)?;
            Some(validate::SecretsFile {
                path,
                text: stext,
                raw: s,
            })
        }
    };
    validate::validate(raw, text, origin, secrets)
}

fn read_file(path: &Path) -> Result<(String, FileMeta), ConfigError> {
    let read_err = |error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    };
    // The checks are made on the file that was read (fstat of the open file), not on whatever
    // the path names a moment later.
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).map_err(read_err)?;
    Ok((
        text,
        FileMeta {
            mode: meta.permissions().mode() & 0o7777,
            uid: meta.uid(),
        },
    ))
}

/// The user the Debian package runs dmvpnd as (packaging/debian, sysusers.d).
const SERVICE_USER: &str = "dmvpnd";

/// The owner and directory rules of the module documentation, for a file read by `euid`.
fn check_owner_and_dir(path: &Path, meta: &FileMeta, euid: u32) -> Result<(), ConfigError> {
    // The service user the package creates (sysusers.d) owns the secrets file it installs;
    // root checking that configuration (`dmvpnd --check-config` from a root shell) must
    // accept it as the daemon will.
    let service_uid = || {
        nix::unistd::User::from_name(SERVICE_USER)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    };
    if meta.uid != 0 && meta.uid != euid && service_uid() != Some(meta.uid) {
        return Err(ConfigError::Owner {
            path: path.to_path_buf(),
            owner: meta.uid,
            euid,
        });
    }
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // The directory of the name given, and, when that is a symbolic link, the directory of
    // the file it leads to: either could be written to swap the file.
    let mut dirs = vec![parent(path)];
    if let Ok(real) = std::fs::canonicalize(path)
        && parent(&real) != dirs[0]
    {
        dirs.push(parent(&real));
    }
    for dir in dirs {
        let dmeta = std::fs::metadata(&dir).map_err(|error| ConfigError::Read {
            path: dir.clone(),
            error,
        })?;
        let mode = dmeta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(ConfigError::Permissions {
                path: dir,
                mode,
                reason: "lets group or other users replace the configuration or secrets file in it",
                fix: mode & !0o022,
            });
        }
    }
    Ok(())
}

fn check_secrets_mode(path: &Path, mode: u32) -> Result<(), ConfigError> {
    if mode & 0o077 != 0 {
        return Err(ConfigError::Permissions {
            path: path.to_path_buf(),
            mode,
            reason: "gives group or other users access to a file holding secrets",
            fix: mode & 0o700,
        });
    }
    Ok(())
}

fn check_main_mode(path: &Path, mode: u32, inline_secret: bool) -> Result<(), ConfigError> {
    if inline_secret {
        if mode & 0o077 != 0 {
            return Err(ConfigError::Permissions {
                path: path.to_path_buf(),
                mode,
                reason: "gives group or other users access, and the file holds a secret inline \
                         (psk or nhrp.authentication; move it to the secrets file or restrict the mode)",
                fix: mode & 0o700,
            });
        }
    } else if mode & 0o022 != 0 {
        return Err(ConfigError::Permissions {
            path: path.to_path_buf(),
            mode,
            reason: "lets group or other users write the configuration",
            fix: mode & 0o755,
        });
    }
    Ok(())
}

fn resolve_relative(origin: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        origin.parent().unwrap_or_else(|| Path::new(".")).join(p)
    }
}

/// Deserializes TOML, turning the parser's byte span into `file:line:column` and the dotted key
/// found at that position.
fn from_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        ConfigError::Invalid {
            location: Location::from_offset(path, text, offset),
            key: e.span().and_then(|s| locate::key_at(text, s.start)),
            message: e.message().trim_end().replace('\n', "; "),
        }
    })
}
