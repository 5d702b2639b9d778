//! anvil (a real Ethereum node) from the npm package `@foundry-rs/anvil-linux-amd64`, which
//! `npm ci` in `contracts/` installs (`.ci/run` does), or `BAL_TEST_ANVIL`. Missing anvil
//! fails the tests that need it: they never skip.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// anvil's first dev key (the well-known "test test ... junk" mnemonic): funded, so it can
/// deploy and anchor.
pub const KEY_0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

pub struct Anvil {
    child: Child,
    pub url: String,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("BAL_TEST_ANVIL") {
        return p.into();
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        p.exists(),
        "anvil not found at {}: run `npm ci` in contracts/ (or set BAL_TEST_ANVIL)",
        p.display()
    );
    p
}

impl Anvil {
    pub async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port, None).await
    }

    /// anvil on `port`; with `state`, it loads that file at start (if it exists) and writes its
    /// state there when it stops (SIGTERM, see [`Anvil::terminate`]).
    pub async fn start_on(port: u16, state: Option<&std::path::Path>) -> Self {
        crate::helpers::install_crypto_provider();
        let mut cmd = Command::new(binary());
        cmd.args([
            "--port",
            &port.to_string(),
            "--host",
            "127.0.0.1",
            "--silent",
        ]);
        if let Some(state) = state {
            cmd.arg("--state").arg(state);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start anvil");
        let anvil = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let ping = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]});
        for _ in 0..100 {
            if client.post(&anvil.url).json(&ping).send().await.is_ok() {
                return anvil;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("anvil did not start on {}", anvil.url);
    }

    /// Stops anvil as an operator would (SIGTERM), so that it writes its `--state` file.
    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let _ = self.child.wait();
    }
}
