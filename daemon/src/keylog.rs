//! Opt-in export of IKE and ESP keys for Wireshark (`[debug] key-export = DIR`): DIR becomes a
//! Wireshark configuration directory holding `ikev2_decryption_table` and `esp_sa` in the
//! formats of Wireshark's IKEv2 and ESP decryption tables, so a capture of dmvpnd's traffic
//! can be decrypted with `XDG_CONFIG_HOME=<parent> tshark ...` when DIR is `<parent>/wireshark`.
//! Files are created 0600 and appended to; this is a debugging aid that defeats the point of
//! IPsec for anyone who can read them, so an existing file is used only if it is a regular
//! file of ours that nobody else may access, and symbolic links are never followed.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

/// The two key tables.
#[derive(Debug)]
pub struct KeyLog {
    ike: File,
    esp: File,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens `dir/name` for appending, refusing anything another user could have prepared: a
/// symbolic link (it would send the keys wherever it points), a file that is not regular (a
/// FIFO someone reads), one with more than one link (a hard link to a file of ours), one not
/// owned by our effective uid, or one whose mode gives anyone else any access. The checks are
/// made on the open file (fstat), not the path, so nothing can be swapped in between.
fn open(dir: &Path, name: &str) -> Result<File> {
    let path = dir.join(name);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        // O_NONBLOCK: opening a FIFO for writing would otherwise wait for a reader.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => anyhow!(
                "key export file {} is a symbolic link; refusing to follow it (remove it)",
                path.display()
            ),
            _ => anyhow!("opening key export file {}: {e}", path.display()),
        })?;
    let meta = file
        .metadata()
        .with_context(|| format!("stat key export file {}", path.display()))?;
    check_file(&path, &meta, nix::unistd::geteuid().as_raw())?;
    Ok(file)
}

fn check_file(path: &Path, meta: &std::fs::Metadata, euid: u32) -> Result<()> {
    let p = path.display();
    if !meta.file_type().is_file() {
        bail!("key export file {p} is not a regular file; refusing to write keys to it");
    }
    if meta.nlink() > 1 {
        bail!(
            "key export file {p} has {} hard links; refusing to write keys to it (remove it)",
            meta.nlink()
        );
    }
    if meta.uid() != euid {
        bail!(
            "key export file {p} is owned by uid {}, not by dmvpnd's uid {euid}; refusing to \
             append keys to it (remove it or chown it)",
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & !0o600 != 0 {
        bail!(
            "key export file {p} has mode {mode:04o}, wider than 0600: others could read the \
             keys; refusing to use it (fix with `chmod 600 {p}` or remove it)"
        );
    }
    Ok(())
}

/// The directory, created 0700 if missing, may not be writable by anyone but its owner: who
/// can write it can replace the files between two starts.
fn check_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("stat key export directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("key export path {} is not a directory", dir.display());
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "key export directory {} has mode {mode:04o}: group or other users may write it; \
             refusing to use it (fix with `chmod go-w {}`)",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

impl KeyLog {
    /// Creates `dir` (0700) if needed and opens both tables, refusing files and directories
    /// that others could read or have prepared (see [`open`]).
    pub fn open(dir: &Path) -> Result<Self> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating key export directory {}", dir.display()))?;
        check_dir(dir)?;
        Ok(KeyLog {
            ike: open(dir, "ikev2_decryption_table")?,
            esp: open(dir, "esp_sa")?,
        })
    }

    /// One IKE SA: SPIi, SPIr, SK_ei, SK_er with AES-GCM-256 (RFC 5282), no integrity.
    pub fn ike_sa(&mut self, spi_i: u64, spi_r: u64, sk_ei: &[u8], sk_er: &[u8]) {
        let alg = match sk_ei.len() {
            20 => "AES-GCM-128 with 16 octet ICV [RFC5282]",
            _ => "AES-GCM-256 with 16 octet ICV [RFC5282]",
        };
        let line = format!(
            "{spi_i:016x},{spi_r:016x},{},{},\"{alg}\",,,\"NONE [RFC4306]\"\n",
            hex(sk_ei),
            hex(sk_er)
        );
        if let Err(e) = self.ike.write_all(line.as_bytes()) {
            tracing::warn!("key export: {e}");
        }
    }

    /// One ESP SA direction: `src` → `dst` with SPI and key ‖ salt (RFC 4106). Addresses are
    /// written as wildcards when behind NAT, because a capture may see either side of it.
    pub fn esp_sa(&mut self, src: Option<IpAddr>, dst: Option<IpAddr>, spi: u32, keymat: &[u8]) {
        let addr = |a: Option<IpAddr>| a.map_or_else(|| "*".to_owned(), |a| a.to_string());
        let line = format!(
            "\"IPv4\",\"{}\",\"{}\",\"0x{spi:08x}\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"\n",
            addr(src),
            addr(dst),
            hex(keymat)
        );
        if let Err(e) = self.esp.write_all(line.as_bytes()) {
            tracing::warn!("key export: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_wireshark_tables_privately() {
        let dir = std::env::temp_dir().join(format!("dmvpnd-keylog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut k = KeyLog::open(&dir).unwrap();
        k.ike_sa(0x0102, 0x0304, &[0xaa; 36], &[0xbb; 36]);
        k.esp_sa(
            None,
            Some("198.51.100.1".parse().unwrap()),
            0xc0ffee,
            &[0x11; 36],
        );
        let ike = std::fs::read_to_string(dir.join("ikev2_decryption_table")).unwrap();
        assert!(ike.starts_with("0000000000000102,0000000000000304,aaaa"));
        assert!(ike.contains("\"AES-GCM-256 with 16 octet ICV [RFC5282]\",,,\"NONE [RFC4306]\""));
        let esp = std::fs::read_to_string(dir.join("esp_sa")).unwrap();
        assert!(esp.starts_with("\"IPv4\",\"*\",\"198.51.100.1\",\"0x00c0ffee\","));
        assert!(esp.contains(&format!("\"0x{}\"", "11".repeat(36))));
        let mode = std::fs::metadata(dir.join("esp_sa"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn fresh_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("dmvpnd-keylog-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    fn refusal(dir: &Path) -> String {
        format!("{:#}", KeyLog::open(dir).unwrap_err())
    }

    #[test]
    fn refuses_a_symlink() {
        let dir = fresh_dir("symlink");
        let target = dir.join("elsewhere");
        std::fs::write(&target, "").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("ikev2_decryption_table")).unwrap();
        let err = refusal(&dir);
        assert!(
            err.contains("is a symbolic link; refusing to follow it"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
        // A dangling link is not created through either.
        std::fs::remove_file(&target).unwrap();
        let err = refusal(&dir);
        assert!(err.contains("symbolic link"), "{err}");
        assert!(!target.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_file_others_can_read() {
        let dir = fresh_dir("mode");
        let esp = dir.join("esp_sa");
        std::fs::write(&esp, "old\n").unwrap();
        std::fs::set_permissions(&esp, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = refusal(&dir);
        assert!(err.contains("has mode 0644, wider than 0600"), "{err}");
        // Fixed as the message says, it is used and appended to.
        std::fs::set_permissions(&esp, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut k = KeyLog::open(&dir).unwrap();
        k.esp_sa(None, None, 1, &[0; 4]);
        assert!(
            std::fs::read_to_string(&esp)
                .unwrap()
                .starts_with("old\n\"IPv4\"")
        );
        // Narrower than 0600 is fine too.
        std::fs::set_permissions(&esp, std::fs::Permissions::from_mode(0o400)).unwrap();
        std::fs::set_permissions(&esp, std::fs::Permissions::from_mode(0o200)).unwrap();
        assert!(KeyLog::open(&dir).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_other_owners_links_fifos_and_open_directories() {
        let dir = fresh_dir("owner");
        let ike = dir.join("ikev2_decryption_table");
        std::fs::write(&ike, "").unwrap();
        std::fs::set_permissions(&ike, std::fs::Permissions::from_mode(0o600)).unwrap();
        let meta = std::fs::metadata(&ike).unwrap();
        let err = check_file(&ike, &meta, meta.uid() + 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "is owned by uid {}, not by dmvpnd's uid",
                meta.uid()
            )),
            "{err}"
        );
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&ike, Some(65_534), None).unwrap();
            let err = refusal(&dir);
            assert!(err.contains("is owned by uid 65534"), "{err}");
            std::os::unix::fs::chown(&ike, Some(0), None).unwrap();
        }
        std::fs::hard_link(&ike, dir.join("copy")).unwrap();
        let err = refusal(&dir);
        assert!(err.contains("has 2 hard links"), "{err}");
        std::fs::remove_file(dir.join("copy")).unwrap();
        std::fs::remove_file(&ike).unwrap();
        nix::unistd::mkfifo(&ike, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = refusal(&dir);
        assert!(err.contains("ikev2_decryption_table"), "{err}");
        std::fs::remove_file(&ike).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = refusal(&dir);
        assert!(
            err.contains("has mode 0777: group or other users may write it"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
