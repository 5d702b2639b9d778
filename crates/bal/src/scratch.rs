//! Scratch PostgreSQL databases for the benchmarks: created on a server, dropped afterwards.

use anyhow::Context;

/// A database made for one benchmark phase on the server at a `postgres://` URL.
pub struct ScratchDatabase {
    pub url: String,
    server: String,
    name: String,
}

impl ScratchDatabase {
    /// Creates `bal_bench_<pid>_<n>` on the server `server` names (any database of it).
    pub async fn create(server: &str, n: u32) -> anyhow::Result<Self> {
        anyhow::ensure!(
            bal_scd::Backend::of(server)? == bal_scd::Backend::Postgres,
            "--database takes a postgres:// URL of a server where scratch databases may be made"
        );
        let name = format!("bal_bench_{}_{n}", std::process::id());
        let url = bal_scd::postgres::create_database(server, &name)
            .await
            .context("cannot create a scratch database on --database (the role needs CREATEDB)")?;
        Ok(Self {
            url,
            server: server.to_owned(),
            name,
        })
    }

    /// Runs `bench` on a scratch database of `server` (`--database`), dropped afterwards even
    /// when the bench fails; with no server, on none (`None`: the bench uses SQLite).
    pub async fn around<T, Fut>(
        server: Option<&str>,
        n: u32,
        bench: impl FnOnce(Option<String>) -> Fut,
    ) -> anyhow::Result<T>
    where
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let scratch = match server {
            Some(server) => Some(Self::create(server, n).await?),
            None => None,
        };
        let result = bench(scratch.as_ref().map(|s| s.url.clone())).await;
        if let Some(s) = scratch {
            s.drop_now().await?;
        }
        result
    }

    /// Drops the database (the phase's connections are closed with `FORCE`).
    pub async fn drop_now(self) -> anyhow::Result<()> {
        Ok(bal_scd::postgres::drop_database(&self.server, &self.name).await?)
    }
}
