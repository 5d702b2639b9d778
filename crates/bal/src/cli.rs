//! `bal user add|list|passwd`: user administration on the same database `bal serve` uses,
//! for the first steps and for when the API is out of reach.

use std::io::{BufRead, IsTerminal};

use anyhow::Context;
use bal_api::accounts;
use bal_core::{Actor, Role, Username};
use zeroize::Zeroizing;

use crate::app::open_store;
use crate::settings::Settings;

/// Reads a password from the first line of standard input.
fn read_password_line() -> anyhow::Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    anyhow::ensure!(
        !stdin.is_terminal(),
        "--password-stdin needs the password piped in, e.g. `printf %s \"$PW\" | bal user ...`"
    );
    let mut line = Zeroizing::new(String::new());
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read standard input")?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

/// The password from stdin, or a generated one that is printed once.
fn password(from_stdin: bool) -> anyhow::Result<(Zeroizing<String>, bool)> {
    if from_stdin {
        Ok((read_password_line()?, false))
    } else {
        Ok((Zeroizing::new(accounts::generate_password()), true))
    }
}

pub async fn add(
    settings: &Settings,
    username: &str,
    role: &str,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let username = Username::parse(username).with_context(|| format!("username {username:?}"))?;
    let role: Role = role.parse().with_context(|| format!("role {role:?}"))?;
    let (password, generated) = password(password_stdin)?;
    let (store, key) = open_store(settings, bal_scd::Migrate::Refuse).await?;
    let user = accounts::create_user(
        store.as_ref(),
        &key,
        username,
        role,
        password.to_string(),
        &Actor::System,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("created {} ({})", user.username, user.role);
    if let Some(topic) = &user.topic {
        println!("  topic:  {topic}");
    }
    println!("  wallet: {}", user.wallet);
    if generated {
        println!("  password: {} (shown once)", password.as_str());
    }
    Ok(())
}

pub async fn list(settings: &Settings) -> anyhow::Result<()> {
    let (store, _) = open_store(settings, bal_scd::Migrate::Refuse).await?;
    let users = store.users().await?;
    println!("{:<32}  {:<8}  {:<42}  TOPIC", "USERNAME", "ROLE", "WALLET");
    for u in users {
        let topic = u
            .topic
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        println!(
            "{:<32}  {:<8}  {:<42}  {topic}",
            u.username, u.role, u.wallet
        );
    }
    Ok(())
}

pub async fn passwd(
    settings: &Settings,
    username: &str,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let username = Username::parse(username).with_context(|| format!("username {username:?}"))?;
    let (password, generated) = password(password_stdin)?;
    let (store, keys) = open_store(settings, bal_scd::Migrate::Refuse).await?;
    accounts::change_password(
        store.as_ref(),
        &keys,
        &username,
        password.to_string(),
        &Actor::System,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("password of {username} changed; its sessions have ended");
    if generated {
        println!("  password: {} (shown once)", password.as_str());
    }
    Ok(())
}
