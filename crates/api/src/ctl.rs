//! The control socket's protocol, shared by dmvpnd (server) and dmvpnctl (client): a Unix
//! stream socket speaking line-delimited JSON, one [`Request`] line in, one [`Response`] line
//! out, as many pairs per connection as the client likes.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::schema::SCHEMA_VERSION;

/// Where dmvpnd listens and dmvpnctl connects unless told otherwise. systemd's
/// `RuntimeDirectory=dmvpnd` creates the directory.
pub const DEFAULT_SOCKET: &str = "/run/dmvpnd/dmvpnd.sock";
/// Longest request line. Real requests are under 100 bytes; the limit only stops a client from
/// making the daemon buffer without bound.
pub const MAX_REQUEST: usize = 4096;
/// Longest response line dmvpnctl accepts (a hub with thousands of peers stays well below).
pub const MAX_RESPONSE: usize = 64 << 20;

/// What `show` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Show {
    /// [`SaReport`](crate::SaReport)
    Sa,
    /// [`DmvpnReport`](crate::DmvpnReport)
    Dmvpn,
    /// [`NhrpReport`](crate::NhrpReport)
    Nhrp,
    /// [`IkeReport`](crate::IkeReport)
    Ike,
    /// [`InterfaceReport`](crate::InterfaceReport)
    Interface,
}

/// An IPv4 prefix a `show` is narrowed to (`10.250.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// Network address (host bits cleared).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Prefix {
    fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    /// Whether `ip` lies in the prefix (IPv6 never does).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => a.to_bits() & Self::mask(self.len) == self.addr.to_bits(),
            IpAddr::V6(_) => false,
        }
    }
}

impl std::str::FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        if !l.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s:?}: prefix length must be 0..=32"));
        }
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{s:?}: not an IPv4 prefix"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0..=32"))?;
        Ok(Self {
            addr: Ipv4Addr::from_bits(addr.to_bits() & Self::mask(len)),
            len,
        })
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What a `show` is narrowed to; empty: everything. A hub with 10,000 peers answers for one
/// peer or one prefix without listing the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShowFilter {
    /// Only this peer (NBMA address, pre- or post-NAT).
    pub peer: Option<IpAddr>,
    /// Only entries whose tunnel (protocol) address lies in this prefix.
    pub prefix: Option<Prefix>,
}

/// A request line: `{"cmd":"show","what":"sa"}`, `{"cmd":"clear_sa","peer":"1.2.3.4"}`,
/// `{"cmd":"clear_child_sa","peer":"1.2.3.4"}`, `{"cmd":"clear_nhrp"}`, `{"cmd":"reload"}`,
/// `{"cmd":"explain","destination":"10.1.2.3"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRequest", into = "RawRequest")]
pub enum Request {
    /// Answer with the report for `what`, narrowed by `filter` (`"peer"`, `"prefix"` on the
    /// wire).
    Show { what: Show, filter: ShowFilter },
    /// Delete the IKE SA (and so its Child SAs) with the peer at this NBMA address; answer
    /// with [`Ack`](crate::Ack).
    ClearSa { peer: IpAddr },
    /// Delete the Child SAs with the peer at this NBMA address and keep the IKE SA (IOS's
    /// `clear crypto sa peer`); answer with [`Ack`](crate::Ack).
    ClearChildSa { peer: IpAddr },
    /// Purge the dynamic NHRP cache (static entries and NHS registrations stay); [`Ack`](crate::Ack).
    ClearNhrp,
    /// Re-read the configuration as SIGHUP does; [`Ack`](crate::Ack).
    Reload,
    /// Why traffic to `destination` goes where it goes; answered with
    /// [`ExplainReport`](crate::ExplainReport).
    Explain { destination: Ipv4Addr },
}

/// The flat wire form of a [`Request`]. Parsing goes through it because serde's tagged enums
/// ignore unknown fields in unit variants, and a misspelt `{"cmd":"clear_nhrp","peer":…}` must be
/// refused, not taken as "clear everything".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    cmd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    what: Option<Show>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peer: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    destination: Option<String>,
}

impl TryFrom<RawRequest> for Request {
    type Error = String;

    fn try_from(r: RawRequest) -> Result<Self, String> {
        let req = match r.cmd.as_str() {
            "show" => Request::Show {
                what: r.what.ok_or("show needs \"what\"")?,
                filter: ShowFilter {
                    peer: r.peer,
                    prefix: r.prefix.as_deref().map(str::parse).transpose()?,
                },
            },
            "clear_sa" => Request::ClearSa {
                peer: r.peer.ok_or("clear_sa needs \"peer\"")?,
            },
            "clear_child_sa" => Request::ClearChildSa {
                peer: r.peer.ok_or("clear_child_sa needs \"peer\"")?,
            },
            "clear_nhrp" => Request::ClearNhrp,
            "reload" => Request::Reload,
            "explain" => Request::Explain {
                destination: explain_destination(r.destination.as_deref())?,
            },
            other => {
                return Err(format!(
                    "unknown cmd {other:?} (expected show, clear_sa, clear_child_sa, clear_nhrp, reload or explain)"
                ));
            }
        };
        let expects_what = matches!(req, Request::Show { .. });
        let expects_peer = matches!(
            req,
            Request::ClearSa { .. } | Request::ClearChildSa { .. } | Request::Show { .. }
        );
        if r.what.is_some() && !expects_what
            || r.peer.is_some() && !expects_peer
            || r.prefix.is_some() && !expects_what
            || r.destination.is_some() && !matches!(req, Request::Explain { .. })
        {
            return Err(format!("unexpected field for cmd {:?}", r.cmd));
        }
        Ok(req)
    }
}

impl From<Request> for RawRequest {
    fn from(r: Request) -> Self {
        let destination = match &r {
            Request::Explain { destination } => Some(destination.to_string()),
            _ => None,
        };
        let (cmd, what, peer, prefix) = match r {
            Request::Show { what, filter } => (
                "show",
                Some(what),
                filter.peer,
                filter.prefix.map(|p| p.to_string()),
            ),
            Request::ClearSa { peer } => ("clear_sa", None, Some(peer), None),
            Request::ClearChildSa { peer } => ("clear_child_sa", None, Some(peer), None),
            Request::ClearNhrp => ("clear_nhrp", None, None, None),
            Request::Reload => ("reload", None, None, None),
            Request::Explain { .. } => ("explain", None, None, None),
        };
        Self {
            cmd: cmd.to_owned(),
            what,
            peer,
            prefix,
            destination,
        }
    }
}

/// The `destination` of an `explain` request: an IPv4 address (the tunnel carries IPv4
/// only), named in the error when it is anything else.
fn explain_destination(d: Option<&str>) -> Result<Ipv4Addr, String> {
    let d = d.ok_or("explain needs \"destination\"")?;
    match d.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Ok(a),
        Ok(IpAddr::V6(_)) => Err(format!(
            "explain: {d:?} is IPv6; the tunnel carries IPv4 only"
        )),
        Err(_) => Err(format!("explain: {d:?} is not an IPv4 address")),
    }
}

/// A response line: `{"schema_version":2,"ok":true,"data":…}` or
/// `{"schema_version":2,"ok":false,"error":"…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    #[serde(default)]
    pub schema_version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// Success with `data` (one of the reports, or [`Ack`](crate::Ack)).
    pub fn ok(data: &impl Serialize) -> Self {
        match serde_json::to_value(data) {
            Ok(v) => Self {
                schema_version: SCHEMA_VERSION,
                ok: true,
                data: Some(v),
                error: None,
            },
            Err(e) => Self::error(format!("internal error: cannot encode the answer: {e}")),
        }
    }

    /// The wire form of `Response::ok(data)` ([`Response::line`]), encoded straight from
    /// `data` without building the JSON value tree first: a hub's 10,000-peer report costs
    /// one pass instead of three. Parses back to the same [`Response`].
    pub fn ok_line(data: &impl Serialize) -> Vec<u8> {
        let mut v = Vec::new();
        match Self::write_ok(&mut v, data) {
            Ok(()) => v,
            Err(e) => Self::error(format!("internal error: cannot encode the answer: {e}")).line(),
        }
    }

    /// [`Response::ok_line`] written to `w` as it is encoded, so a large report streams out
    /// instead of being built in one buffer first. On an error part of the line may have been
    /// written: the caller cannot send another answer on that stream and closes it.
    pub fn write_ok(w: &mut dyn std::io::Write, data: &impl Serialize) -> std::io::Result<()> {
        #[derive(Serialize)]
        struct Ok<'a, T> {
            schema_version: u32,
            ok: bool,
            data: &'a T,
        }
        let line = Ok {
            schema_version: SCHEMA_VERSION,
            ok: true,
            data,
        };
        serde_json::to_writer(&mut *w, &line)?;
        w.write_all(b"\n")
    }

    /// Failure, with a message for the operator.
    pub fn error(msg: impl Into<String>) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            ok: false,
            data: None,
            error: Some(msg.into()),
        }
    }

    /// The wire form: one JSON line, `\n`-terminated.
    pub fn line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| {
            format!(r#"{{"schema_version":{SCHEMA_VERSION},"ok":false,"error":"internal error"}}"#)
                .into_bytes()
        });
        v.push(b'\n');
        v
    }
}

// Group lookups, for both ends of the socket: dmvpnd resolves a configured group name,
// dmvpnctl names the group in a permission error.

/// The gid of group `name` from /etc/group, for a configured control group given by name.
/// Only local groups are seen (no NSS/LDAP): the control group is a local system group.
pub fn group_id(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    group_entries(&groups).find_map(|(n, id)| (n == name).then_some(id))
}

/// The name of group `gid` from /etc/group.
pub fn group_name(gid: u32) -> Option<String> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    group_entries(&groups).find_map(|(n, id)| (id == gid).then(|| n.to_owned()))
}

/// (name, gid) of each well-formed `name:password:gid:members` line.
pub(crate) fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32)> {
    text.lines().filter_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let gid = f.nth(1)?.trim().parse().ok()?;
        Some((name, gid))
    })
}
