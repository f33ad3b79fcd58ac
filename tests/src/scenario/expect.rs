//! What the daemons log, as predicates over one log line. The wording is the daemon's
//! (`daemon/src/control.rs`); when it changes, adjust it here, in one place, for every test.

fn has(line: &str, words: &[&str]) -> bool {
    let l = line.to_ascii_lowercase();
    words.iter().all(|w| l.contains(&w.to_ascii_lowercase()))
}

fn has_any(line: &str, words: &[&str]) -> bool {
    let l = line.to_ascii_lowercase();
    words.iter().any(|w| l.contains(&w.to_ascii_lowercase()))
}

/// The value of `key=value` in a tracing line.
pub fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// The line's `peer` field is `addr` (with or without a port).
pub fn peer_is(line: &str, addr: &str) -> bool {
    field(line, "peer")
        .is_some_and(|p| p == addr || p.strip_prefix(addr).is_some_and(|r| r.starts_with(':')))
}

/// The daemon has opened its underlay sockets (ready for IKE).
pub fn underlay_open(line: &str) -> bool {
    line.contains("underlay sockets open")
}

pub fn ike_sa_up(line: &str) -> bool {
    has(line, &["IKE SA up"])
}

/// A Child SA with any peer.
pub fn child_sa_installed(line: &str) -> bool {
    has(line, &["child SA installed"])
}

/// A Child SA with the peer at `nbma`.
pub fn child_sa_installed_with(line: &str, nbma: &str) -> bool {
    line.contains("child SA installed") && peer_is(line, nbma)
}

pub fn child_sa_deleted(line: &str, nbma: &str) -> bool {
    line.contains("child SA deleted") && peer_is(line, nbma)
}

pub fn ike_sa_down(line: &str, nbma: &str) -> bool {
    line.contains("IKE SA down") && peer_is(line, nbma)
}

/// A spoke's registration with its NHS succeeded.
pub fn registered_with_nhs(line: &str) -> bool {
    line.contains("NHRP registered with NHS")
}

/// The hub accepted the registration of the spoke with tunnel address `tunnel`.
pub fn registration_accepted(line: &str, tunnel: &str) -> bool {
    line.contains("NHRP registration accepted") && peer_is(line, tunnel)
}

/// Any line about a registration of `tunnel` that is not a failure (a looser
/// [`registration_accepted`], for lines that must never appear).
pub fn hub_registered(line: &str, tunnel: &str) -> bool {
    has(line, &["regist", tunnel]) && !has_any(line, &["fail", "refus", "reject"])
}

pub fn registration_removed(line: &str, tunnel: &str) -> bool {
    line.contains("NHRP registration removed") && peer_is(line, tunnel)
}

pub fn ike_auth_failed(line: &str) -> bool {
    has(line, &["IKE authentication failed"])
}

pub fn nhrp_auth_failed(line: &str) -> bool {
    has(line, &["NHRP authentication failure"])
}

/// DPD declared some peer dead.
pub fn peer_dead(line: &str) -> bool {
    line.contains("peer dead")
}

/// DPD declared the peer at `nbma` dead.
pub fn peer_dead_at(line: &str, nbma: &str) -> bool {
    has(line, &["dead", nbma])
}

/// The NHRP cache entry of `tunnel` is gone.
pub fn cache_dropped(line: &str, tunnel: &str) -> bool {
    has(line, &[tunnel]) && has_any(line, &["purge", "remov", "delet", "expire", "flush"])
}

pub fn reloaded(line: &str) -> bool {
    line.contains("configuration reloaded")
}

pub fn sighup_reload(line: &str) -> bool {
    line.contains("SIGHUP: reloading configuration")
}

pub fn keyring_delete(line: &str) -> bool {
    line.contains("reload: the new keyring has no key, or another key, for this peer")
}

/// An error-level line (tracing's level field).
pub fn error(line: &str) -> bool {
    line.contains(" ERROR ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn peer_field_matches_with_and_without_port() {
        let l = "INFO dmvpnd: NHRP registration removed peer=10.250.0.9 nbma=198.51.100.3";
        assert!(super::registration_removed(l, "10.250.0.9"));
        assert!(!super::registration_removed(l, "10.250.0.1"));
        let l = "INFO dmvpnd: IKE SA down peer=198.51.100.3:500 reason=deleted_by_peer";
        assert!(super::ike_sa_down(l, "198.51.100.3"));
        assert!(!super::ike_sa_down(l, "198.51.100.30"));
        assert_eq!(super::field(l, "reason"), Some("deleted_by_peer"));
    }
}
