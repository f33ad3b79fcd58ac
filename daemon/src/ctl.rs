//! The control socket behind `dmvpnctl`: a Unix stream socket speaking line-delimited JSON,
//! one request line in, one response line out, as many pairs per connection as the client likes.
//! The protocol (requests, responses, limits) is `dmvpn_api::ctl`'s; this is the server.
//!
//! The server knows nothing about the engines: each parsed [`Request`] goes down an mpsc
//! channel with a oneshot for the [`Response`], and the control loop (which owns the engines)
//! answers it. Keeping the engines single-owner this way means no locks around them.
//!
//! Access: the socket file is mode 0660 (group = the configured group, if any), and every
//! connection is checked again with SO_PEERCRED and SO_PEERGROUPS, because file modes alone do
//! not cover a client that connected before the mode was set or a socket reached through
//! another path. Both come from the socket, as the kernel recorded them at connect time; a
//! read of `/proc/<pid>` after accept could see another process that reused the pid.
//!
//! Two tiers: root, the daemon's own user and members of `[control] admin-group` may run every
//! command; members of `[control] group` only those that change nothing (`show`, `explain`).
//! A refused command is answered with an error and logged; the connection stays usable.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

pub use dmvpn_api::ctl::{
    DEFAULT_SOCKET, MAX_REQUEST, MAX_RESPONSE, Request, Response, Show, ShowFilter, group_id,
    group_name,
};

/// A client that sends nothing for this long is disconnected.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client waits for the control loop to answer before getting an error.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are refused with an error instead of queued.
pub const MAX_CLIENTS: usize = 16;
/// Of those, kept for admins (root, the daemon's user, `[control] admin-group`): read-only
/// clients holding connections open cannot lock an admin out of `clear` and `reload`.
pub const ADMIN_RESERVED: usize = 4;

/// What the control loop receives: a request and where to send its answer. Dropping the
/// sender without answering gives the client an error, never a hang.
pub type Command = (Request, oneshot::Sender<Answer>);

/// Writes an answer's line: a report built and encoded off the control loop.
pub type Encoder = Box<dyn FnOnce(&mut dyn io::Write) -> io::Result<()> + Send>;

/// The control loop's answer to one request.
pub enum Answer {
    /// Complete.
    Now(Response),
    /// A report from what the control loop copied out of its state, built and encoded into
    /// the response line off the loop (on tokio's blocking pool) and streamed to the client
    /// as it is encoded: at 10,000 peers the joins and the encoding of a `show` are tens of
    /// milliseconds the loop would otherwise not be running IKE, NHRP and DPD, and megabytes
    /// the daemon would otherwise hold in one buffer.
    Encode(Encoder),
}

impl Answer {
    /// `Response::ok(report)`, encoded later.
    pub fn ok<T: serde::Serialize + Send + 'static>(report: T) -> Self {
        Self::build(move |w| Response::write_ok(w, &report))
    }

    /// An answer `write` builds and writes (with [`Response::write_ok`]) off the loop.
    pub fn build(
        write: impl FnOnce(&mut dyn io::Write) -> io::Result<()> + Send + 'static,
    ) -> Self {
        Self::Encode(Box::new(write))
    }

    /// The answer as a [`Response`], encoding it here (for callers inside the daemon).
    pub fn into_response(self) -> Response {
        match self {
            Self::Now(r) => r,
            Self::Encode(f) => {
                let mut line = Vec::new();
                if let Err(e) = f(&mut line) {
                    return Response::error(format!(
                        "internal error: cannot encode the answer: {e}"
                    ));
                }
                serde_json::from_slice(&line).unwrap_or_else(|e| {
                    Response::error(format!("internal error: cannot decode the answer: {e}"))
                })
            }
        }
    }

    /// Writes the response line to `w`. A report is encoded on the blocking pool and handed
    /// over in [`STREAM_CHUNK`]-byte pieces as it is encoded. `false`: the connection cannot
    /// carry another answer (the client stopped reading, or an answer broke off part-way).
    async fn write_to(self, w: &mut (impl tokio::io::AsyncWrite + Unpin)) -> bool {
        let f = match self {
            Self::Now(r) => return write_timed(w, &r.line()).await,
            Self::Encode(f) => f,
        };
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_DEPTH);
        let encoder = tokio::task::spawn_blocking(move || {
            let mut out = Chunks::new(tx);
            match f(&mut out) {
                Ok(()) => io::Write::flush(&mut out),
                // Nothing of the line has gone out: an error line can still take its place.
                Err(e) if !out.sent => {
                    tracing::error!("encoding a control answer failed: {e}");
                    out.buf.clear();
                    out.buf.extend(
                        Response::error(format!("internal error: cannot encode the answer: {e}"))
                            .line(),
                    );
                    io::Write::flush(&mut out)
                }
                Err(e) => Err(e),
            }
        });
        let mut written = false;
        while let Some(chunk) = rx.recv().await {
            if !write_timed(w, &chunk).await {
                // Dropping the receiver stops the encoder at its next chunk.
                return false;
            }
            written = true;
        }
        match encoder.await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!("control answer broke off: {e}");
                false
            }
            Err(e) => {
                let msg = if e.is_cancelled() {
                    "dmvpnd is shutting down"
                } else {
                    tracing::error!("encoding a control answer failed: {e}");
                    "internal error: encoding the answer failed"
                };
                !written && write_timed(w, &Response::error(msg).line()).await
            }
        }
    }
}

/// Bytes of a streamed answer handed to the socket task at a time, and how many such pieces
/// may wait for a slow client: the daemon holds at most about 256 KiB of any one answer.
pub const STREAM_CHUNK: usize = 64 << 10;
const STREAM_DEPTH: usize = 3;

/// `write_all` within [`IDLE_TIMEOUT`]; `false` if it failed or the client stopped reading.
async fn write_timed(w: &mut (impl tokio::io::AsyncWrite + Unpin), bytes: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(IDLE_TIMEOUT, w.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

/// The encoder's side of a streamed answer: fills a buffer and sends it on when full.
struct Chunks {
    buf: Vec<u8>,
    tx: mpsc::Sender<Vec<u8>>,
    /// Some of the line has gone to the socket task.
    sent: bool,
}

impl Chunks {
    fn new(tx: mpsc::Sender<Vec<u8>>) -> Self {
        Chunks {
            buf: Vec::with_capacity(STREAM_CHUNK),
            tx,
            sent: false,
        }
    }
}

impl io::Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= STREAM_CHUNK {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(STREAM_CHUNK));
        self.sent = true;
        // Blocks while the client is slower than the encoder (STREAM_DEPTH pieces queued); an
        // error once the socket task has given up on the client.
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Now(r) => f.debug_tuple("Now").field(r).finish(),
            Self::Encode(_) => f.write_str("Encode(..)"),
        }
    }
}

impl From<Response> for Answer {
    fn from(r: Response) -> Self {
        Self::Now(r)
    }
}

/// Binds the control socket at `path` (mode 0660, of group `groups.group`, or of
/// `groups.admin_group` when only that is set), and serves it until the returned task is
/// aborted. A stale socket left by a crash is replaced; a live one (another dmvpnd answering)
/// or a non-socket file at `path` is an error.
pub async fn serve(
    path: &Path,
    groups: Groups,
    tx: mpsc::Sender<Command>,
) -> Result<JoinHandle<()>> {
    let listener = bind(path, groups.group.or(groups.admin_group)).await?;
    // The socket file is owned by our effective uid: that user may always connect (it is the
    // daemon's own account when dmvpnd runs as a dedicated user).
    let server_uid = std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .uid();
    let access = Arc::new(Access { server_uid, groups });
    let slots = Slots::new();
    tracing::info!(
        socket = %path.display(),
        group = ?groups.group,
        admin_group = ?groups.admin_group,
        "control socket listening"
    );
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    tracing::warn!("control socket accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let access = access.clone();
            let tx = tx.clone();
            let (peer, tier_of) = match classify(&stream, &access) {
                Some(c) => c,
                None => continue,
            };
            match slots.take(tier_of) {
                Some(permit) => {
                    tokio::spawn(async move {
                        client(stream, peer, tier_of, &access, tx).await;
                        drop(permit);
                    });
                }
                None => {
                    tokio::spawn(async move {
                        let mut s = stream;
                        let r = Response::error("too many control connections; try again");
                        let _ = tokio::time::timeout(IDLE_TIMEOUT, s.write_all(&r.line())).await;
                    });
                }
            }
        }
    }))
}

/// The connection slots: [`MAX_CLIENTS`], of which [`ADMIN_RESERVED`] only admins may take.
struct Slots {
    any: Arc<Semaphore>,
    admin: Arc<Semaphore>,
}

impl Slots {
    fn new() -> Self {
        Slots {
            any: Arc::new(Semaphore::new(MAX_CLIENTS - ADMIN_RESERVED)),
            admin: Arc::new(Semaphore::new(ADMIN_RESERVED)),
        }
    }

    /// A slot for a client of `tier` (`None`: refused access, which still gets its error
    /// line from a shared slot), or `None` if all it may take are in use.
    fn take(&self, tier: Option<Tier>) -> Option<OwnedSemaphorePermit> {
        self.any.clone().try_acquire_owned().ok().or_else(|| {
            (tier == Some(Tier::Admin))
                .then(|| self.admin.clone().try_acquire_owned().ok())
                .flatten()
        })
    }
}

/// Who is connecting (the kernel recorded the credentials at connect) and what they may do:
/// `None` for the tier when nothing. `None` overall when the credentials are unreadable.
fn classify(stream: &UnixStream, access: &Access) -> Option<(Peer, Option<Tier>)> {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("control socket: no peer credentials: {e}");
            return None;
        }
    };
    let peer = Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid().unwrap_or(0),
    };
    let mut tier_of = tier(access, peer.uid, peer.gid, &[]);
    if tier_of != Some(Tier::Admin)
        && (access.groups.group.is_some() || access.groups.admin_group.is_some())
    {
        // Unreadable groups only narrow access: the client gets what uid and gid give it.
        match crate::sys::peer_groups(stream) {
            Ok(groups) => tier_of = tier(access, peer.uid, peer.gid, &groups),
            Err(e) => tracing::warn!(uid = peer.uid, "control socket: SO_PEERGROUPS: {e}"),
        }
    }
    Some((peer, tier_of))
}

async fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Only the group needs to reach the socket; others get nothing.
        let mode = if group.is_some() { 0o750 } else { 0o700 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", dir.display()))?;
        if let Some(g) = group {
            std::os::unix::fs::chown(dir, None, Some(g))
                .with_context(|| format!("chgrp {g} {}", dir.display()))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                bail!(
                    "{} is in use: another dmvpnd is running with this control socket",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
    }
    // Bind under a temporary name and rename into place once mode and group are right, so the
    // published path never has the umask's permissions, even briefly.
    let tmp = tmp_name(path);
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).with_context(|| format!("binding {}", tmp.display()))?;
    let setup = || -> Result<()> {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("chmod 0660 {}", tmp.display()))?;
        if let Some(g) = group {
            std::os::unix::fs::chown(&tmp, None, Some(g))
                .with_context(|| format!("chgrp {g} {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    };
    if let Err(e) = setup() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Who may use the socket, and for what: the groups from `[control]`, as gids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Groups {
    /// `[control] group`: members may run read-only commands.
    pub group: Option<u32>,
    /// `[control] admin-group`: members may also run commands that change state.
    pub admin_group: Option<u32>,
}

#[derive(Debug)]
struct Access {
    server_uid: u32,
    groups: Groups,
}

/// What a connection may do, decided once from its credentials (which cannot change after
/// connect: the kernel recorded them then).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    /// `show` and `explain`: reports only.
    ReadOnly,
    /// Everything, including `clear` and `reload`.
    Admin,
}

/// The tier of a peer with `uid`, primary `gid` and supplementary `groups`, or `None` if it
/// may not use the socket at all. Root and the daemon's own user are admins; an admin-group
/// member is an admin even outside `group` (if the socket file lets it in).
fn tier(access: &Access, uid: u32, gid: u32, groups: &[u32]) -> Option<Tier> {
    let member = |g: Option<u32>| g.is_some_and(|g| gid == g || groups.contains(&g));
    if uid == 0 || uid == access.server_uid || member(access.groups.admin_group) {
        Some(Tier::Admin)
    } else if member(access.groups.group) {
        Some(Tier::ReadOnly)
    } else {
        None
    }
}

/// The tier a request needs. Exhaustive on purpose: a new request must be placed here.
fn needs(req: &Request) -> Tier {
    match req {
        Request::Show { .. } | Request::Explain { .. } => Tier::ReadOnly,
        Request::ClearSa { .. }
        | Request::ClearChildSa { .. }
        | Request::ClearNhrp
        | Request::Reload => Tier::Admin,
    }
}

/// The wire name of a request, for refusals.
fn cmd_name(req: &Request) -> &'static str {
    match req {
        Request::Show { .. } => "show",
        Request::Explain { .. } => "explain",
        Request::ClearSa { .. } => "clear_sa",
        Request::ClearChildSa { .. } => "clear_child_sa",
        Request::ClearNhrp => "clear_nhrp",
        Request::Reload => "reload",
    }
}

/// A group for messages: its name where /etc/group has one, else the number.
fn group_label(gid: u32) -> String {
    group_name(gid).unwrap_or_else(|| gid.to_string())
}

/// Credentials of a client, from the socket itself (never from /proc, see `sys`).
#[derive(Debug, Clone, Copy)]
struct Peer {
    uid: u32,
    gid: u32,
    pid: i32,
}

async fn client(
    stream: UnixStream,
    peer: Peer,
    tier_of: Option<Tier>,
    access: &Access,
    tx: mpsc::Sender<Command>,
) {
    let (r, mut w) = stream.into_split();
    let Some(tier_of) = tier_of else {
        tracing::warn!(
            uid = peer.uid,
            gid = peer.gid,
            pid = peer.pid,
            "control socket: access denied"
        );
        let msg = match access.groups.group {
            Some(g) => format!(
                "permission denied: uid {} is not root and not in group {}",
                peer.uid,
                group_label(g)
            ),
            None => format!("permission denied: uid {} is not root", peer.uid),
        };
        let _ = w.write_all(&Response::error(msg).line()).await;
        return;
    };
    let mut reader = BufReader::new(r);
    loop {
        let line = match tokio::time::timeout(IDLE_TIMEOUT, read_line(&mut reader)).await {
            Err(_) => return, // idle
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => return, // EOF
            Ok(Err(LineError::TooLong)) => {
                let r = Response::error(format!(
                    "request too large (limit {MAX_REQUEST} bytes per line)"
                ));
                // The rest of the oversized line cannot be told from a next request: close.
                let _ = w.write_all(&r.line()).await;
                return;
            }
            Ok(Err(LineError::Io(e))) => {
                tracing::debug!("control socket read: {e}");
                return;
            }
        };
        if !answer(&line, tier_of, access, peer, &tx)
            .await
            .write_to(&mut w)
            .await
        {
            return;
        }
    }
}

async fn answer(
    line: &[u8],
    tier_of: Tier,
    access: &Access,
    peer: Peer,
    tx: &mpsc::Sender<Command>,
) -> Answer {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Response::error("empty request").into();
    }
    let req: Request = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => return Response::error(format!("invalid request: {e}")).into(),
    };
    if needs(&req) > tier_of {
        let cmd = cmd_name(&req);
        tracing::warn!(
            uid = peer.uid,
            gid = peer.gid,
            pid = peer.pid,
            cmd,
            "control socket: command refused (read-only access)"
        );
        let who = match access.groups.admin_group {
            Some(g) => format!("root, dmvpnd's user or in group {}", group_label(g)),
            None => "root or dmvpnd's user".to_owned(),
        };
        return Response::error(format!(
            "permission denied: {cmd} changes state and needs {who}; uid {} may only show and explain",
            peer.uid
        ))
        .into();
    }
    let (otx, orx) = oneshot::channel();
    // A full queue means the control loop is busy; wait a bounded time rather than fail at once.
    match tokio::time::timeout(ANSWER_TIMEOUT, tx.send((req, otx))).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Response::error("dmvpnd is shutting down").into(),
        Err(_) => return Response::error("dmvpnd is busy: request not accepted in time").into(),
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, orx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Response::error("dmvpnd dropped the request without answering").into(),
        Err(_) => Response::error("dmvpnd did not answer in time").into(),
    }
}

#[derive(Debug)]
enum LineError {
    TooLong,
    Io(io::Error),
}

/// One `\n`-terminated line (terminator removed) of at most [`MAX_REQUEST`] bytes, reading
/// no further than the limit; `None` at a clean EOF. A final line without `\n` still counts.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, LineError> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await.map_err(LineError::Io)?;
        if buf.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let chunk = buf.get(..take).unwrap_or_default();
        let body = if done {
            chunk.get(..take - 1).unwrap_or_default()
        } else {
            chunk
        };
        if line.len() + body.len() > MAX_REQUEST {
            return Err(LineError::TooLong);
        }
        line.extend_from_slice(body);
        r.consume(take);
        if done {
            return Ok(Some(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_cannot_take_the_admins_slots() {
        let slots = Slots::new();
        let readers: Vec<_> = std::iter::from_fn(|| slots.take(Some(Tier::ReadOnly))).collect();
        assert_eq!(readers.len(), MAX_CLIENTS - ADMIN_RESERVED);
        assert!(
            slots.take(None).is_none(),
            "a refused client gets no reserved slot"
        );
        let admins: Vec<_> = std::iter::from_fn(|| slots.take(Some(Tier::Admin))).collect();
        assert_eq!(admins.len(), ADMIN_RESERVED, "an admin still gets in");
        drop(readers);
        assert!(
            slots.take(Some(Tier::ReadOnly)).is_some(),
            "slots come back"
        );
    }

    #[test]
    fn who_may_do_what() {
        let a = Access {
            server_uid: 990,
            groups: Groups {
                group: Some(991),
                admin_group: Some(992),
            },
        };
        assert_eq!(tier(&a, 0, 0, &[]), Some(Tier::Admin), "root");
        assert_eq!(
            tier(&a, 990, 990, &[]),
            Some(Tier::Admin),
            "the daemon's own user"
        );
        assert_eq!(
            tier(&a, 1000, 991, &[]),
            Some(Tier::ReadOnly),
            "primary group"
        );
        assert_eq!(
            tier(&a, 1000, 1000, &[4, 991]),
            Some(Tier::ReadOnly),
            "supplementary group"
        );
        assert_eq!(
            tier(&a, 1000, 992, &[]),
            Some(Tier::Admin),
            "primary admin group"
        );
        assert_eq!(
            tier(&a, 1000, 1000, &[991, 992]),
            Some(Tier::Admin),
            "both groups"
        );
        assert_eq!(
            tier(&a, 1000, 1000, &[992]),
            Some(Tier::Admin),
            "admin group only"
        );
        assert_eq!(tier(&a, 1000, 1000, &[4, 24]), None, "other user");
        let no_admin = Access {
            server_uid: 990,
            groups: Groups {
                group: Some(991),
                admin_group: None,
            },
        };
        assert_eq!(tier(&no_admin, 1000, 991, &[991]), Some(Tier::ReadOnly));
        assert_eq!(tier(&no_admin, 990, 990, &[]), Some(Tier::Admin));
        let none = Access {
            server_uid: 0,
            groups: Groups::default(),
        };
        assert_eq!(tier(&none, 1000, 0, &[0]), None, "gid 0 is not root");
    }

    #[test]
    fn what_needs_admin() {
        let show = Request::Show {
            what: Show::Sa,
            filter: ShowFilter::default(),
        };
        assert_eq!(needs(&show), Tier::ReadOnly);
        let explain = Request::Explain {
            destination: "10.0.0.1".parse().unwrap(),
        };
        assert_eq!(needs(&explain), Tier::ReadOnly);
        let clear_sa = Request::ClearSa {
            peer: "192.0.2.1".parse().unwrap(),
        };
        for r in [clear_sa, Request::ClearNhrp, Request::Reload] {
            assert_eq!(needs(&r), Tier::Admin, "{r:?}");
        }
    }

    #[tokio::test]
    async fn line_reader_limits() {
        let mut r = BufReader::new(&b"abc\n\ndef"[..]);
        assert_eq!(read_line(&mut r).await.unwrap(), Some(b"abc".to_vec()));
        assert_eq!(read_line(&mut r).await.unwrap(), Some(Vec::new()));
        assert_eq!(read_line(&mut r).await.unwrap(), Some(b"def".to_vec()));
        assert_eq!(read_line(&mut r).await.unwrap(), None);

        let exact = vec![b'x'; MAX_REQUEST];
        let mut input = exact.clone();
        input.push(b'\n');
        let mut r = BufReader::with_capacity(64, &input[..]);
        assert_eq!(read_line(&mut r).await.unwrap(), Some(exact));

        let big = vec![b'x'; MAX_REQUEST + 1];
        let mut r = BufReader::with_capacity(64, &big[..]);
        assert!(matches!(read_line(&mut r).await, Err(LineError::TooLong)));
    }
}
