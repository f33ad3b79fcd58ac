//! The daemon's one audited `unsafe`: system calls that neither nix, socket2 nor std wrap.
//! Every function here is safe to call; each `unsafe` block says why it is sound.
//!
//! - `getsockopt(SO_PEERGROUPS)` (Linux 4.13): the supplementary groups a Unix socket's peer
//!   had when it called `connect()`, captured by the kernel with its SO_PEERCRED credentials.
//!   Reading `/proc/<pid>/status` after `accept()` instead races with the client exiting and
//!   its pid being reused by another process.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// The kernel's limit on supplementary groups (`NGROUPS_MAX`): a bigger answer is a bug.
const NGROUPS_MAX: usize = 65_536;

/// The supplementary groups of the peer of the connected Unix socket `sock`, as the kernel
/// recorded them at connect time (the primary gid is SO_PEERCRED's, not in this list unless it
/// is also supplementary, as with getgroups(2)).
pub fn peer_groups(sock: &impl AsFd) -> io::Result<Vec<u32>> {
    let fd = sock.as_fd().as_raw_fd();
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    // Most users have a handful of groups; a larger list gets ERANGE with the size it needs.
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    // The list cannot change under us (it was fixed at connect), so the second try fits; the
    // bound only keeps a kernel surprise from looping.
    for _ in 0..3 {
        let mut len = libc::socklen_t::try_from(groups.len() * GID)
            .map_err(|_| io::Error::from_raw_os_error(libc::ERANGE))?;
        // SAFETY: `groups` is a live, writable buffer of exactly `len` bytes (gid_t is a
        // plain integer, any bit pattern valid), and `len` is a valid socklen_t the kernel
        // may overwrite; `fd` is borrowed from `sock` for the duration of the call.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if r == 0 {
            // The kernel writes whole gid_t values and reports the bytes it wrote.
            groups.truncate((len / GID).min(groups.len()));
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        // ERANGE: the buffer was too small and `len` now holds the size needed.
        if err.raw_os_error() != Some(libc::ERANGE) || len / GID > NGROUPS_MAX {
            return Err(err);
        }
        groups.resize(len / GID + 1, 0);
    }
    Err(io::Error::from_raw_os_error(libc::ERANGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_groups_are_the_connecting_process_groups() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut want: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        want.sort_unstable();
        for sock in [&a, &b] {
            let mut got = peer_groups(sock).unwrap();
            got.sort_unstable();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn not_a_unix_socket_is_an_error() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(peer_groups(&udp).is_err());
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(peer_groups(&file).is_err());
    }
}
