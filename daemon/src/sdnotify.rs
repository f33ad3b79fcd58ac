//! systemd readiness and watchdog notifications (sd_notify(3) protocol: newline-separated
//! `KEY=VALUE` assignments in one datagram to the AF_UNIX socket named by `$NOTIFY_SOCKET`).
//!
//! Written against std instead of the `sd-notify` crate: the protocol is one datagram, and std
//! already handles abstract socket names (`@…`), so no dependency and no unsafe are needed.
//!
//! Use from the daemon:
//! - after the TUN, sockets and control socket are up: `notifier.ready()`;
//! - on SIGTERM before purging: `notifier.stopping()`;
//! - with `watchdog_interval()` = `Some(d)`: `notifier.watchdog()` every `d / 2` from the
//!   control loop itself, so a wedged loop (not merely a live process) gets restarted.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go; does nothing when not started by systemd (no `$NOTIFY_SOCKET`).
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`. A malformed value is an error rather than silently ignored, so a
    /// `Type=notify` unit fails loudly at start instead of timing out.
    pub fn from_env() -> io::Result<Self> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(Self { target: None }),
            Some(v) => Self::connect(&v.to_string_lossy()),
        }
    }

    /// To the socket `name`: a filesystem path, or `@name` for the abstract namespace.
    pub fn connect(name: &str) -> io::Result<Self> {
        let addr = if let Some(abs) = name.strip_prefix('@') {
            abstract_addr(abs.as_bytes())?
        } else if name.starts_with('/') {
            SocketAddr::from_pathname(name)?
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET={name:?} is neither an absolute path nor @abstract"),
            ));
        };
        let sock = UnixDatagram::unbound()?;
        // A notification must never stall the control loop if systemd is slow to read.
        sock.set_nonblocking(true)?;
        Ok(Self {
            target: Some((sock, addr)),
        })
    }

    /// True when notifications go somewhere.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (e.g. `"READY=1\nSTATUS=running"`). Ok(false) when disabled.
    pub fn notify(&self, state: &str) -> io::Result<bool> {
        let Some((sock, addr)) = &self.target else {
            return Ok(false);
        };
        sock.send_to_addr(state.as_bytes(), addr)?;
        Ok(true)
    }

    /// Startup finished.
    pub fn ready(&self) -> io::Result<bool> {
        self.notify("READY=1")
    }

    /// Shutdown begun (stops systemd's start/stop timeout from counting the purge as a hang).
    pub fn stopping(&self) -> io::Result<bool> {
        self.notify("STOPPING=1")
    }

    /// Watchdog keep-alive.
    pub fn watchdog(&self) -> io::Result<bool> {
        self.notify("WATCHDOG=1")
    }

    /// Free-form status line shown by `systemctl status`. Newlines would start new
    /// assignments, so they are replaced.
    pub fn status(&self, text: &str) -> io::Result<bool> {
        self.notify(&format!("STATUS={}", text.replace('\n', " ")))
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets are Linux-only",
    ))
}

/// The watchdog interval systemd expects pings within, from `$WATCHDOG_USEC`, if it is meant for
/// this process (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] on given values: `None` for absent, zero or malformed values, or a
/// `WATCHDOG_PID` that names another process (sd_watchdog_enabled(3)).
pub fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    if let Some(p) = pid
        && p.trim().parse::<u32>().ok()? != my_pid
    {
        return None;
    }
    let us: u64 = usec?.trim().parse().ok()?;
    (us > 0).then(|| Duration::from_micros(us))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let systemd = UnixDatagram::bind(&path).unwrap();
        systemd
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::connect(path.to_str().unwrap()).unwrap();
        assert!(n.enabled());
        assert!(n.ready().unwrap());
        assert_eq!(recv(&systemd), "READY=1");
        n.watchdog().unwrap();
        assert_eq!(recv(&systemd), "WATCHDOG=1");
        n.stopping().unwrap();
        assert_eq!(recv(&systemd), "STOPPING=1");
        n.status("two\nlines").unwrap();
        assert_eq!(recv(&systemd), "STATUS=two lines");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("dmvpnd-sdnotify-test-{}", std::process::id());
        let systemd =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        systemd
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::connect(&format!("@{name}")).unwrap();
        n.ready().unwrap();
        assert_eq!(recv(&systemd), "READY=1");
    }

    #[test]
    fn disabled_and_bad_targets() {
        let n = Notifier { target: None };
        assert!(!n.ready().unwrap());
        assert!(Notifier::connect("relative/path").is_err());
        // A path nobody listens on: the send fails, so the caller can log it.
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::connect(dir.path().join("absent").to_str().unwrap()).unwrap();
        assert!(n.ready().is_err());
    }

    #[test]
    fn watchdog_usec() {
        assert_eq!(
            parse_watchdog(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_watchdog(Some("500000"), Some("7"), 7),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_watchdog(Some("500000"), Some("8"), 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("abc"), None, 7), None);
        assert_eq!(parse_watchdog(None, None, 7), None);
        assert_eq!(parse_watchdog(Some("1"), Some("x"), 7), None);
    }
}
