//! What the benchmarks read about processes from Linux's `/proc`: CPU time, resident memory,
//! the PostgreSQL server's processes and the process listening on a TCP port. Missing files
//! (another OS, a process that has exited) read as zero or `None`, never as an error: a
//! benchmark then reports less, it does not fail.

use std::time::Duration;

/// `/proc/<pid>/stat`'s fields after the command name (which may hold spaces and parentheses).
fn stat_fields(pid: &str) -> Option<(String, Vec<u64>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let (name, rest) = stat[open + 1..].rsplit_once(") ")?;
    // The state letter is not a number; keep the positions of the rest (state is field 3).
    let fields = rest
        .split(' ')
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .collect();
    Some((name.to_owned(), fields))
}

/// Clock ticks to time. CLK_TCK is 100 on every Linux this runs on (it is fixed by the ABI for
/// x86_64 and arm64 user space).
fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 10)
}

/// User plus system CPU time of process `pid` (0 when it cannot be read).
pub fn cpu_time(pid: u32) -> Duration {
    // utime and stime are fields 14 and 15; after the name, 11 and 12 (0-based).
    stat_fields(&pid.to_string()).map_or(Duration::ZERO, |(_, f)| {
        ticks(f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0))
    })
}

/// This process's CPU time.
pub fn own_cpu_time() -> Duration {
    cpu_time(std::process::id())
}

/// CPU time of every `postgres` process on this machine, including what exited children
/// (backends of closed connections) left in their parent's cutime and cstime; `None` when no
/// PostgreSQL server runs here (a remote database's CPU cannot be read).
pub fn postgres_cpu_time() -> Option<Duration> {
    let mut total = 0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Some((comm, f)) = stat_fields(pid) else {
            continue;
        };
        if comm != "postgres" {
            continue;
        }
        found = true;
        total += (11..=14).filter_map(|i| f.get(i)).sum::<u64>();
    }
    found.then(|| ticks(total))
}

/// Resident memory of process `pid`, in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The process listening on TCP `port` on this machine (an external Mosquitto, say), found
/// through the socket's inode in `/proc/net/tcp{,6}` and the processes' open descriptors.
pub fn listener_pid(port: u16) -> Option<u32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let local_port = f.get(1)?.rsplit_once(':')?.1;
                    // State 0A is LISTEN.
                    let inode = f.get(9)?;
                    (u16::from_str_radix(local_port, 16).ok()? == port && *f.get(3)? == "0A")
                        .then(|| format!("socket:[{inode}]"))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        // Burn a little CPU so that at least one tick is counted.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(own_cpu_time() > Duration::ZERO);
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 1 << 20));
    }

    #[test]
    fn finds_the_listener_of_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(listener_pid(port), Some(std::process::id()));
        drop(listener);
        assert_eq!(listener_pid(port), None);
    }

    #[test]
    fn a_process_that_is_gone_reads_as_nothing() {
        assert_eq!(cpu_time(u32::MAX), Duration::ZERO);
        assert_eq!(rss_bytes(u32::MAX), None);
    }
}
