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

    /// Drops the database (the phase's connections are closed with `FORCE`).
    pub async fn drop_now(self) -> anyhow::Result<()> {
        Ok(bal_scd::postgres::drop_database(&self.server, &self.name).await?)
    }
}
