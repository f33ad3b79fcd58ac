//! End-to-end test support: throwaway topologies of network namespaces (ip-netns(8)) joined by
//! veth pairs (veth(4)), an optional NAT router namespace (nft(8) masquerade), processes run
//! inside a namespace, and in-process code run inside one through setns(2).
//!
//! Everything is torn down on drop: processes we started (by PID), then namespaces (deleting a
//! namespace destroys its veth ends, TUN devices and routes). Names are unique per process and
//! call so tests run in parallel. Tests need root and the `ip` and `nft` tools; when something is
//! missing the helpers fail loudly rather than skip (run tests/install-deps.sh).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod bgp;
pub mod e2e;
pub mod ospf;
pub mod scenario;

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short identifier unique within this machine for the life of this process: interface names
/// are limited to 15 bytes, so it stays short.
pub fn unique_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:x}", std::process::id() & 0xffff, n)
}

/// The path of the program `name` under test (`dmvpnd`, `dmvpnctl`). Every namespace test finds
/// its binaries here and nowhere else, so a binary that moves to another package changes this
/// one function.
///
/// Cargo builds a package's binaries for its integration tests and gives each test the path in
/// `CARGO_BIN_EXE_<name>` (when compiling and when running it, so a runtime lookup sees the same
/// value as `env!`). Without that variable (a binary of another workspace package, or a test
/// binary run by hand) the program is taken from the target directory the running test lives
/// in (`target/<profile>/<name>`); it must then have been built (`cargo build -p <package>`).
pub fn bin(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let exe = std::env::current_exe().expect("the running test's own path");
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .unwrap_or_else(|| PathBuf::from(name));
    assert!(
        candidate.is_file(),
        "no `{name}` for this test: CARGO_BIN_EXE_{name} is unset and {} does not exist \
         (build it first, e.g. `cargo build --workspace --bins`)",
        candidate.display()
    );
    candidate
}

/// Panics unless running as root with `ip` and `nft` available: these tests must fail, not skip,
/// on a machine that cannot run them.
pub fn require_root_and_tools() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "namespace tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN)"
    );
    for tool in ["ip", "nft"] {
        let ok = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "`{tool}` is missing: run tests/install-deps.sh");
    }
}

/// Runs a command, failing with its stderr if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `dmvpnt-<id>-<tag>` with its loopback up.
    pub fn new(tag: &str) -> Result<Self> {
        Self::named(format!("dmvpnt-{}-{tag}", unique_id()))
    }

    /// Creates the namespace `name` (which must not exist) with its loopback up; deleted on drop.
    pub fn named(name: String) -> Result<Self> {
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS…`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `ip -j -n NAME ARGS…`, parsed.
    pub fn ip_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let out = run(Command::new("ip")
            .arg("-j")
            .arg("-n")
            .arg(&self.name)
            .args(args))?;
        serde_json::from_str(&out)
            .with_context(|| format!("parsing `ip -j {args:?}` output: {out}"))
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`, which execs the
    /// program in place, so the child's PID is the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs a program inside the namespace to completion.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        self.command(program)
            .args(args)
            .output()
            .with_context(|| format!("running {program} in {}", self.name))
    }

    /// Runs `nft` once per command inside the namespace, stopping at the first that fails.
    pub fn nft(&self, cmds: &[Vec<&str>]) -> Result<()> {
        for cmd in cmds {
            let out = self.exec("nft", cmd)?;
            if !out.status.success() {
                bail!("nft {cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(())
    }

    /// Starts a program inside the namespace; its stderr goes to `log` so a long-running process
    /// cannot block on a full pipe.
    pub fn spawn(&self, mut cmd: Command, log: &Path) -> Result<NsProcess> {
        let err = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        Ok(NsProcess {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Runs `f` on a fresh thread that has joined this namespace (setns(2) with CLONE_NEWNET
    /// affects only the calling thread), so sockets, TUN devices and netlink handles it opens
    /// live in the namespace. A panic in `f` is re-raised here.
    pub fn run_in<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = PathBuf::from("/run/netns").join(&self.name);
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                let fd =
                    File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
                setns(&fd, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
                f()
            });
            match h.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    /// Like [`Netns::run_in`] with a single-threaded tokio runtime (its threads all stay in the
    /// namespace).
    pub fn block_on<F: std::future::Future + Send>(&self, fut: F) -> F::Output
    where
        F::Output: Send,
    {
        self.run_in(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a tokio runtime")
                .block_on(fut)
        })
    }

    /// Enables IPv4 forwarding inside the namespace.
    pub fn enable_forwarding(&self) -> Result<()> {
        self.sysctl("net.ipv4.ip_forward=1")
    }

    /// `sysctl -qw SETTING` inside the namespace.
    pub fn sysctl(&self, setting: &str) -> Result<()> {
        let out = self.exec("sysctl", &["-qw", setting])?;
        if !out.status.success() {
            bail!(
                "sysctl {setting} in {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Errors are reported but cannot fail the test from a destructor.
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Connects `a` and `b` with a veth pair named `a_name` (in `a`) and `b_name` (in `b`), both
/// down and without addresses. Names are created unique in the root namespace, then renamed,
/// so the same names may be used in many namespaces at once.
pub fn veth_named(a: &Netns, a_name: &str, b: &Netns, b_name: &str) -> Result<()> {
    let id = unique_id();
    let (ta, tb) = (format!("ta{id}"), format!("tb{id}"));
    run(Command::new("ip").args([
        "link",
        "add",
        &ta,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        &tb,
        "netns",
        b.name(),
    ]))?;
    a.ip(&["link", "set", &ta, "name", a_name])?;
    b.ip(&["link", "set", &tb, "name", b_name])?;
    Ok(())
}

/// Connects `a` and `b` with a veth pair, assigns the CIDR addresses and brings both ends up.
/// Returns the interface names (in `a`, in `b`).
pub fn veth(a: &Netns, a_cidr: &str, b: &Netns, b_cidr: &str) -> Result<(String, String)> {
    let id = unique_id();
    let (na, nb) = (format!("va{id}"), format!("vb{id}"));
    run(Command::new("ip").args([
        "link",
        "add",
        &na,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        &nb,
        "netns",
        b.name(),
    ]))?;
    a.ip(&["addr", "add", a_cidr, "dev", &na])?;
    b.ip(&["addr", "add", b_cidr, "dev", &nb])?;
    a.ip(&["link", "set", &na, "up"])?;
    b.ip(&["link", "set", &nb, "up"])?;
    Ok((na, nb))
}

/// Two hosts with a NAT router between them, like a spoke behind an EC2 Elastic IP:
/// inside 10.77.0.2/24 -- router 10.77.0.1 | router 198.51.100.254/24 -- outside 198.51.100.1/24.
/// The router masquerades traffic leaving its outside interface.
#[derive(Debug)]
pub struct NatTopology {
    pub inside: Netns,
    pub router: Netns,
    pub outside: Netns,
    pub inside_addr: std::net::Ipv4Addr,
    pub router_outside_addr: std::net::Ipv4Addr,
    pub outside_addr: std::net::Ipv4Addr,
}

impl NatTopology {
    pub fn new() -> Result<Self> {
        let inside = Netns::new("in")?;
        let router = Netns::new("nat")?;
        let outside = Netns::new("out")?;
        veth(&inside, "10.77.0.2/24", &router, "10.77.0.1/24")?;
        let (r_out, _) = veth(&router, "198.51.100.254/24", &outside, "198.51.100.1/24")?;
        inside.ip(&["route", "add", "default", "via", "10.77.0.1"])?;
        router.enable_forwarding()?;
        let hook = "{ type nat hook postrouting priority srcnat; }";
        router.nft(&[
            vec!["add", "table", "ip", "nat"],
            vec!["add", "chain", "ip", "nat", "postrouting", hook],
            vec![
                "add",
                "rule",
                "ip",
                "nat",
                "postrouting",
                "oifname",
                &r_out,
                "masquerade",
            ],
        ])?;
        Ok(NatTopology {
            inside,
            router,
            outside,
            inside_addr: [10, 77, 0, 2].into(),
            router_outside_addr: [198, 51, 100, 254].into(),
            outside_addr: [198, 51, 100, 1].into(),
        })
    }
}

/// A process started in a namespace; stopped (SIGTERM, then SIGKILL) on drop if still running.
/// Only this PID is ever signalled.
#[derive(Debug)]
pub struct NsProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl NsProcess {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit, then SIGKILL.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut child = self.child.take().context("process already reaped")?;
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        if matches!(child.try_wait(), Ok(None)) {
            let _ = kill(pid, Signal::SIGTERM);
        }
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= end {
                let _ = child.kill();
                child.wait()?;
                bail!("pid {pid} did not exit within {timeout:?} of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl NsProcess {
    /// SIGKILL (this PID only, like `kill -9`), then reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("process already reaped")?;
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        kill(pid, Signal::SIGKILL).with_context(|| format!("kill -9 {pid}"))?;
        Ok(child.wait()?)
    }

    /// The path its stderr is written to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.terminate(Duration::from_secs(3));
        }
    }
}
