//! This process's TCP sockets to a port, for the test that every pool connection to PostgreSQL
//! has `TCP_NODELAY` (which sqlx 0.9.1 sets itself; 0.9.0 did not, and each insert longer than
//! one segment waited ~40 ms for the server's delayed ACK). sqlx gives no handle on its
//! sockets, so this reads them from `/proc/self/fd`, each through a duplicate taken with
//! `pidfd_getfd` on this process itself: safe whatever another thread does with the original.

use std::io;

/// Whether each TCP socket of this process whose peer's port is `port` has `TCP_NODELAY`.
#[cfg(target_os = "linux")]
pub fn tcp_nodelay_states(port: u16) -> io::Result<Vec<bool>> {
    use rustix::io::Errno;
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

    let me = pidfd_open(getpid(), PidfdFlags::empty())?;
    let mut states = Vec::new();
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
            Err(e) => return Err(e.into()),
        };
        let peer = rustix::net::getpeername(&fd)
            .ok()
            .flatten()
            .and_then(|a| std::net::SocketAddr::try_from(a).ok());
        if peer.is_some_and(|p| p.port() == port)
            && let Ok(on) = rustix::net::sockopt::tcp_nodelay(&fd)
        {
            states.push(on);
        }
    }
    Ok(states)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn sockets_to_the_port_are_read_and_only_those() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let to_server = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let _to_other = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert_eq!(
            tcp_nodelay_states(port).unwrap(),
            [false],
            "Nagle is on by default"
        );
        to_server.set_nodelay(true).unwrap();
        assert_eq!(tcp_nodelay_states(port).unwrap(), [true]);
    }
}
