//! Opt-in export of IKE and ESP keys for Wireshark (`[debug] key-export = DIR`): DIR becomes a
//! Wireshark configuration directory holding `ikev2_decryption_table` and `esp_sa` in the
//! formats of Wireshark's IKEv2 and ESP decryption tables, so a capture of dmvpnd's traffic
//! can be decrypted with `XDG_CONFIG_HOME=<parent> tshark ...` when DIR is `<parent>/wireshark`.
//! Files are created 0600 and appended to; this is a debugging aid that defeats the point of
//! IPsec for anyone who can read them.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// The two key tables.
#[derive(Debug)]
pub struct KeyLog {
    ike: File,
    esp: File,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn open(dir: &Path, name: &str) -> Result<File> {
    let path = dir.join(name);
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening key export file {}", path.display()))
}

impl KeyLog {
    /// Creates `dir` (0700) if needed and opens both tables.
    pub fn open(dir: &Path) -> Result<Self> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating key export directory {}", dir.display()))?;
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
}
