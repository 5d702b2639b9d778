//! A PostgreSQL server of a test's own, for what the shared server cannot show: TLS with a
//! test CA, and the database going away mid-run and coming back.
//!
//! `initdb` and `pg_ctl` (from `BAL_TEST_PG_BIN`, or the newest `/usr/lib/postgresql/*/bin`)
//! refuse to run as root, so as root they run as the `postgres` user (`runuser`) on a folder
//! it owns. The server listens on 127.0.0.1 on a free port, which it keeps across restarts.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The certificate and key the server presents (PEM), when it must speak TLS.
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A running private server; stopped and removed when dropped.
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    running: bool,
}

impl PrivateCluster {
    /// Initialises and starts a server. With `tls`, only TLS connections are accepted over
    /// TCP (`hostssl` with trust, `host` rejected), so a client that connects has used TLS.
    pub fn start(tls: Option<ServerTls>) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let bin = pg_bin();
        let port = free_port();
        let cluster = Self {
            dir,
            bin,
            port,
            running: false,
        };
        cluster.hand_to_postgres(cluster.dir.path());
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data().display().to_string(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{}'\nmax_connections = 40\nfsync = off\n",
            cluster.dir.path().display()
        );
        let mut hba = String::from("local all all trust\n");
        if let Some(tls) = tls {
            let (cert, key) = (
                cluster.data().join("server.crt"),
                cluster.data().join("server.key"),
            );
            std::fs::write(&cert, tls.cert_pem).expect("write the certificate");
            std::fs::write(&key, tls.key_pem).expect("write the key");
            // PostgreSQL refuses a key others can read.
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            cluster.hand_to_postgres(&cert);
            cluster.hand_to_postgres(&key);
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            hba.push_str("hostssl all all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 reject\n");
        } else {
            hba.push_str("host all all 127.0.0.1/32 trust\n");
        }
        append(&cluster.data().join("postgresql.conf"), &conf);
        std::fs::write(cluster.data().join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        let mut cluster = cluster;
        cluster.resume();
        cluster
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server as an outage would look to clients: connections are cut at once.
    pub fn halt(&mut self) {
        if self.running {
            self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
            self.running = false;
        }
    }

    /// Starts the server again on the same port and data.
    pub fn resume(&mut self) {
        if !self.running {
            let log = self.dir.path().join("server.log").display().to_string();
            self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log]);
            self.running = true;
        }
    }

    /// The server's log, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data().display().to_string();
        let mut all = vec!["-D", &data];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all);
    }

    /// Runs one of the server's programs, as `postgres` when this process is root.
    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}{}\n{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn hand_to_postgres(&self, path: &Path) {
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(path)
                .status()
                .expect("chown");
            assert!(status.success(), "chown {} to postgres", path.display());
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if self.running {
            let data = self.data().display().to_string();
            let program = self.bin.join("pg_ctl");
            let mut cmd = if is_root() {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&program);
                c
            } else {
                Command::new(&program)
            };
            let _ = cmd.args(["-D", &data, "stop", "-m", "immediate"]).output();
        }
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `BAL_TEST_PG_BIN`, or the newest installed server's programs.
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("BAL_TEST_PG_BIN") {
        return dir.into();
    }
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    versions.sort_unstable();
    let version = versions.last().unwrap_or_else(|| {
        panic!("no PostgreSQL server programs in /usr/lib/postgresql: set BAL_TEST_PG_BIN")
    });
    PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"))
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes()).expect("append");
}
