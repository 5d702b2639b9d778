//! `TCP_NODELAY` on the pool's TCP connections to PostgreSQL.
//!
//! sqlx 0.9.0 no longer sets it (launchbadge/sqlx#4335; fixed by #4336, in no release yet), so
//! Nagle's algorithm holds back the last segment of every request longer than one TCP segment
//! until the server's delayed ACK comes, ~40 ms later. The group-commit insert is such a request
//! at any load, so over TCP ingest was bounded by that delay (measured: 10 508 rows/s over TCP
//! against 75 698 over the Unix socket, store alone). sqlx gives no handle on its socket, so
//! after each connect this finds the process's TCP sockets whose peer is the database's port and
//! sets the option on them: it takes a duplicate of each descriptor with `pidfd_getfd` on this
//! process itself (no capability needed for one's own process), which is safe whatever another
//! thread does with the original meanwhile. Setting it on another socket to that port (a second
//! pool, `bal db copy`'s source) is harmless. Remove this when sqlx sets the option again.

use std::io;

/// Sets `TCP_NODELAY` on every TCP socket of this process whose peer's port is `port`; returns
/// how many it changed. Fails when descriptors cannot be duplicated at all (a seccomp profile
/// that refuses `pidfd_getfd`), so the caller can say that Nagle stays on.
#[cfg(target_os = "linux")]
pub(super) fn set_on_sockets_to(port: u16) -> io::Result<usize> {
    use rustix::net::sockopt::{set_tcp_nodelay, tcp_nodelay};
    let mut changed = 0;
    for_each_socket_to(port, |fd| {
        // A socket to that port that is not TCP (a connected UDP socket) has no such option.
        if let Ok(false) = tcp_nodelay(fd)
            && set_tcp_nodelay(fd, true).is_ok()
        {
            changed += 1;
        }
    })?;
    Ok(changed)
}

/// Whether each TCP socket of this process to `port` has `TCP_NODELAY` set: for tests and
/// diagnostics.
#[cfg(target_os = "linux")]
pub fn states(port: u16) -> io::Result<Vec<bool>> {
    let mut states = Vec::new();
    for_each_socket_to(port, |fd| {
        if let Ok(on) = rustix::net::sockopt::tcp_nodelay(fd) {
            states.push(on);
        }
    })?;
    Ok(states)
}

/// Calls `f` with a duplicate of each of this process's sockets whose peer's port is `port`.
#[cfg(target_os = "linux")]
fn for_each_socket_to(port: u16, mut f: impl FnMut(&rustix::fd::OwnedFd)) -> io::Result<()> {
    use rustix::io::Errno;
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

    let me = pidfd_open(getpid(), PidfdFlags::empty())?;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Some(n) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        let fd = match pidfd_getfd(&me, n, PidfdGetfdFlags::empty()) {
            Ok(fd) => fd,
            // Closed since the listing: simply gone.
            Err(Errno::BADF) => continue,
            // Refused (EPERM under a seccomp profile without CAP_SYS_PTRACE): none will work.
            Err(e) => return Err(e.into()),
        };
        let peer = rustix::net::getpeername(&fd)
            .ok()
            .flatten()
            .and_then(|a| std::net::SocketAddr::try_from(a).ok());
        if peer.is_some_and(|p| p.port() == port) {
            f(&fd);
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub(super) fn set_on_sockets_to(_port: u16) -> io::Result<usize> {
    Ok(0)
}

#[cfg(not(target_os = "linux"))]
pub fn states(_port: u16) -> io::Result<Vec<bool>> {
    Ok(Vec::new())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn nagle_is_turned_off_on_sockets_to_the_port_and_only_those() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let to_server = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let to_other = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!to_server.nodelay().unwrap(), "Nagle is on by default");

        let changed = set_on_sockets_to(server.local_addr().unwrap().port()).unwrap();
        assert!(changed >= 1, "changed {changed}");
        assert!(to_server.nodelay().unwrap());
        assert!(
            !to_other.nodelay().unwrap(),
            "a socket to another port is left alone"
        );
        // Idempotent: nothing left to change on that port.
        assert_eq!(
            set_on_sockets_to(server.local_addr().unwrap().port()).unwrap(),
            0
        );
        assert!(
            states(server.local_addr().unwrap().port())
                .unwrap()
                .iter()
                .all(|s| *s)
        );
    }
}
