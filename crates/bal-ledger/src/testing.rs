//! For tests of this crate and of the crates above it (feature `testing`): anvil, a real
//! Ethereum node, from the npm package `@foundry-rs/anvil-linux-amd64` that `npm ci` in
//! `contracts/` installs (the test command does), or the binary `BAL_TEST_ANVIL` names. Missing
//! anvil fails the tests that need it: they never skip.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alloy_provider::{Provider, ProviderBuilder};

/// anvil's first two dev keys (the well-known "test test ... junk" mnemonic): funded, so they
/// can deploy and anchor.
pub const ANVIL_KEY_0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
pub const ANVIL_KEY_1: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

/// A running anvil; killed on drop.
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

/// Where anvil is: `BAL_TEST_ANVIL`, else the npm package under `contracts/`.
pub fn anvil_binary() -> PathBuf {
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
    /// anvil on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("its address")
            .port();
        Self::start_on(port, None).await
    }

    /// anvil on `port`; with `state`, it loads that file at start (if it exists) and writes its
    /// state there when it stops (SIGTERM, see [`Anvil::terminate`]). Returns once it answers
    /// JSON-RPC.
    pub async fn start_on(port: u16, state: Option<&Path>) -> Self {
        // HTTP clients built without an explicit TLS provider use the process default, as
        // `bal` sets it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut cmd = Command::new(anvil_binary());
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
        let provider = ProviderBuilder::new().connect_http(anvil.url.parse().expect("a URL"));
        for _ in 0..100 {
            if provider.get_chain_id().await.is_ok() {
                return anvil;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("anvil did not start on {}", anvil.url);
    }

    /// Stops anvil as an operator would (SIGTERM), so that it writes its `--state` file.
    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {pid}");
        let _ = self.child.wait();
    }
}
