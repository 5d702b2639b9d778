//! `bal db migrate|status|copy`: the database's schema, and moving a SQLite installation to
//! PostgreSQL.

use anyhow::Context;

use crate::settings::Settings;

/// A database URL as it may be printed: without its password.
fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("<redacted>"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let url = settings.database_url();
    let options = settings.connect_options(bal_scd::Migrate::Auto);
    let status = bal_scd::migrate(&url, &options)
        .await
        .with_context(|| format!("cannot migrate {} (database.url)", shown(&url)))?;
    // The embedded chain's tables (bal-ledger's own migrations), so that a server role that
    // may not create tables can use them.
    bal_ledger::embedded::store::connect(&url)
        .await
        .with_context(|| {
            format!(
                "cannot migrate the embedded chain's tables in {}",
                shown(&url)
            )
        })?;
    println!(
        "{}: schema version {} (this bal knows up to {})",
        shown(&url),
        status.version(),
        status.latest_known
    );
    Ok(())
}

pub async fn status(settings: &Settings) -> anyhow::Result<()> {
    let url = settings.database_url();
    let options = settings.connect_options(bal_scd::Migrate::Refuse);
    let store = bal_scd::connect(&url, &options)
        .await
        .with_context(|| format!("cannot open {} (database.url)", shown(&url)))?;
    println!(
        "{} ({}): up to date for this bal",
        shown(&url),
        store.backend().as_str()
    );
    Ok(())
}

pub async fn copy(settings: &Settings, from: &str, to: &str) -> anyhow::Result<()> {
    let options = settings.connect_options(bal_scd::Migrate::Refuse);
    // The embedded chain's tables are bal-ledger's: it creates them at the target first.
    let copy = async {
        bal_ledger::embedded::store::connect(to).await?;
        bal_scd::copy::copy(from, to, &options, &bal_ledger::embedded::store::TABLES).await
    };
    let report = copy
        .await
        .with_context(|| format!("cannot copy {} to {}", shown(from), shown(to)))?;
    println!("copied {} to {}:", shown(from), shown(to));
    for (table, rows) in &report.tables {
        println!("  {table:<20} {rows} rows");
    }
    println!(
        "Carry the keys over: the master key (keys.master_key, or master.key in the data \
         folder) and the chain operator key (chain.operator_key, or operator.key). The database \
         now records the master key's fingerprint and refuses another. Sessions were not \
         copied: users log in again."
    );
    Ok(())
}
