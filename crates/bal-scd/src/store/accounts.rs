//! [`AccountStore`] on either backend.

use async_trait::async_trait;
use bal_core::{Actor, AuditAction, AuditDetail, Role, Subscription, Topic, Username};
use chrono::{DateTime, Utc};

use sqlx::QueryBuilder;

use super::grants::{live_subscriptions_of, record_transition};
use super::rows::{deletion_action, ms, user_from_row};
use super::{SqlStore, append_audit, is_unique_violation};
use crate::dialect::{BuilderExt, Dialect, QueryExt, first, get, sql};
use crate::error::corrupt;
use crate::{AccountStore, Change, Credentials, NewUser, StoreError, StoreResult, User};

#[async_trait]
impl<DB: Dialect> AccountStore for SqlStore<DB> {
    async fn create_user(
        &self,
        new: NewUser,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> StoreResult<User> {
        let topic = (new.role == Role::Producer).then(|| Topic::for_producer(&new.username));
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query::<DB>(
            "INSERT INTO users \
             (username, password_hash, role, topic, wallet, account, created_at, broker_secret) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .arg(new.username.as_str())
        .arg(new.password_hash.as_str())
        .arg(new.role.as_str())
        .arg(topic.as_ref().map(Topic::as_str))
        .arg(new.wallet.to_string())
        .arg(new.account.as_str())
        .arg(ms(now))
        .arg(new.broker_secret.as_deref())
        .run(&mut tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "username {} is already taken",
                    new.username
                )));
            }
            other => other?,
        };
        let detail = AuditDetail::UserCreated {
            role: new.role,
            topic: topic.clone(),
            wallet: new.wallet,
        };
        let object = format!("user:{}", new.username);
        append_audit(
            &mut tx,
            now,
            actor,
            AuditAction::UserCreated,
            &object,
            &detail,
        )
        .await?;
        tx.announce(Change::UserCreated(new.username.clone()));
        tx.commit(self).await?;
        Ok(User {
            username: new.username,
            role: new.role,
            topic,
            wallet: new.wallet,
            created_at: bal_core::millis(now),
        })
    }

    async fn user(&self, username: &Username) -> StoreResult<Option<User>> {
        let sql = sql!(DB;
            "SELECT ",
            USER_COLUMNS,
            " FROM users WHERE username = $1 AND deleted_at IS NULL"
        );
        sqlx::query::<DB>(sql)
            .arg(username.as_str())
            .optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row::<DB>)
            .transpose()
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        let sql = sql!(DB;
            "SELECT ",
            USER_COLUMNS,
            " FROM users WHERE deleted_at IS NULL ORDER BY username"
        );
        sqlx::query::<DB>(sql)
            .all(&self.pool)
            .await?
            .iter()
            .map(user_from_row::<DB>)
            .collect()
    }

    async fn credentials(&self, username: &Username) -> StoreResult<Option<Credentials>> {
        let sql = sql!(DB;
            "SELECT ",
            USER_COLUMNS,
            ", password_hash, broker_secret IS NOT NULL AS has_broker_secret \
             FROM users WHERE username = $1 AND deleted_at IS NULL"
        );
        let row = sqlx::query::<DB>(sql)
            .arg(username.as_str())
            .optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Credentials {
                user: user_from_row::<DB>(&row)?,
                password_hash: get::<DB, _>(&row, "password_hash")?,
                has_broker_secret: get::<DB, _>(&row, "has_broker_secret")?,
            })
        })
        .transpose()
    }

    async fn wallet_keystore(&self, username: &Username) -> StoreResult<Option<String>> {
        let row = sqlx::query::<DB>(
            "SELECT account FROM users WHERE username = $1 AND deleted_at IS NULL",
        )
        .arg(username.as_str())
        .optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| get::<DB, Option<String>>(&r, "account"))
            .transpose()?
            .flatten())
    }

    async fn set_password(
        &self,
        username: &Username,
        password_hash: String,
        broker_secret: Option<String>,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query::<DB>(
            "UPDATE users SET password_hash = $1, broker_secret = $2 \
             WHERE username = $3 AND deleted_at IS NULL",
        )
        .arg(password_hash.as_str())
        .arg(broker_secret.as_deref())
        .arg(username.as_str())
        .run(&mut tx)
        .await?;
        if updated == 0 {
            return Err(StoreError::NotFound("user"));
        }
        sqlx::query::<DB>("DELETE FROM sessions WHERE username = $1")
            .arg(username.as_str())
            .run(&mut tx)
            .await?;
        let object = format!("user:{username}");
        let detail = AuditDetail::PasswordChanged;
        append_audit(
            &mut tx,
            now,
            actor,
            AuditAction::PasswordChanged,
            &object,
            &detail,
        )
        .await?;
        tx.announce(Change::PasswordChanged(username.clone()));
        tx.commit(self).await?;
        Ok(())
    }

    async fn keep_broker_secret(
        &self,
        username: &Username,
        password_hash: &str,
        broker_secret: String,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query::<DB>(
            "UPDATE users SET broker_secret = $1 WHERE username = $2 AND password_hash = $3 \
             AND broker_secret IS NULL AND deleted_at IS NULL",
        )
        .arg(broker_secret.as_str())
        .arg(username.as_str())
        .arg(password_hash)
        .run(&mut tx)
        .await?;
        let kept = done == 1;
        if kept {
            tx.announce(Change::BrokerSecret(username.clone()));
        }
        tx.commit(self).await?;
        Ok(kept)
    }

    async fn broker_secrets(&self) -> StoreResult<Vec<(Username, String)>> {
        let rows = sqlx::query::<DB>(
            "SELECT username, broker_secret FROM users \
             WHERE broker_secret IS NOT NULL AND deleted_at IS NULL ORDER BY username",
        )
        .all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let u: String = get::<DB, _>(r, "username")?;
                let name = Username::parse(&u).map_err(|_| corrupt("username"))?;
                Ok((name, get::<DB, String>(r, "broker_secret")?))
            })
            .collect()
    }

    async fn delete_user(
        &self,
        username: &Username,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Subscription>> {
        let mut tx = self.begin_write().await?;
        let role: Option<String> =
            sqlx::query::<DB>("SELECT role FROM users WHERE username = $1 AND deleted_at IS NULL")
                .arg(username.as_str())
                .optional(&mut tx)
                .await?
                .map(|r| first::<DB, String>(&r))
                .transpose()?;
        let role: Role = role
            .ok_or(StoreError::NotFound("user"))?
            .parse()
            .map_err(|_| corrupt("role"))?;
        if role == Role::Admin {
            // Lock every live admin, in name order, before counting: a concurrent deletion of
            // another admin waits here, then sees this one gone (rows are re-read under lock).
            let admins: Vec<String> = sqlx::query::<DB>(sql!(DB;
                "SELECT username FROM users WHERE role = 'admin' AND deleted_at IS NULL \
                 ORDER BY username",
                FOR_UPDATE
            ))
            .all(&mut tx)
            .await?
            .iter()
            .map(first::<DB, String>)
            .collect::<StoreResult<_>>()?;
            if !admins.iter().any(|a| a == username.as_str()) {
                return Err(StoreError::NotFound("user"));
            }
            if admins.len() <= 1 {
                return Err(StoreError::Conflict("cannot delete the last admin".into()));
            }
        } else {
            let locked = sqlx::query::<DB>(sql!(DB;
                "SELECT username FROM users WHERE username = $1 AND deleted_at IS NULL",
                FOR_UPDATE
            ))
            .arg(username.as_str())
            .optional(&mut tx)
            .await?;
            if locked.is_none() {
                return Err(StoreError::NotFound("user"));
            }
        }
        let mut ended = Vec::new();
        for sub in live_subscriptions_of(&mut tx, username).await? {
            if let Some(after) = sub.end_for_deleted_user(username, actor, now) {
                let action = deletion_action(&after);
                record_transition(&mut tx, &sub, &after, action, actor, Some("user deleted"))
                    .await?;
                ended.push(after);
            }
        }
        sqlx::query::<DB>("DELETE FROM sessions WHERE username = $1")
            .arg(username.as_str())
            .run(&mut tx)
            .await?;
        sqlx::query::<DB>(
            "UPDATE users SET password_hash = NULL, account = NULL, broker_secret = NULL, \
             deleted_at = $1 WHERE username = $2",
        )
        .arg(ms(now))
        .arg(username.as_str())
        .run(&mut tx)
        .await?;
        let object = format!("user:{username}");
        let detail = AuditDetail::UserDeleted {
            role,
            ended_subscriptions: ended.len(),
        };
        append_audit(
            &mut tx,
            now,
            actor,
            AuditAction::UserDeleted,
            &object,
            &detail,
        )
        .await?;
        for s in &ended {
            tx.announce(Change::Subscription(s.clone()));
        }
        tx.announce(Change::UserDeleted(username.clone()));
        tx.commit(self).await?;
        Ok(ended)
    }

    async fn create_session(
        &self,
        token_hash: [u8; 32],
        username: &Username,
        password_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        // Shared lock on the user: a password change or deletion waits for this session, then
        // ends it; it cannot slip in after them.
        let done = sqlx::query::<DB>(sql!(DB;
            "INSERT INTO sessions (token_hash, username, created_at, expires_at) \
             SELECT $1, username, $2, $3 FROM users \
             WHERE username = $4 AND password_hash = $5 AND deleted_at IS NULL",
            FOR_SHARE
        ))
        .arg(&token_hash[..])
        .arg(ms(now))
        .arg(ms(expires_at))
        .arg(username.as_str())
        .arg(password_hash)
        .run(&self.pool)
        .await?;
        Ok(done == 1)
    }

    async fn session_user(
        &self,
        token_hash: [u8; 32],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let sql = sql!(DB;
            "SELECT ",
            USER_COLUMNS_U,
            " FROM sessions s JOIN users u ON u.username = s.username \
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.deleted_at IS NULL"
        );
        sqlx::query::<DB>(sql)
            .arg(&token_hash[..])
            .arg(ms(now))
            .optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row::<DB>)
            .transpose()
    }

    async fn delete_session(&self, token_hash: [u8; 32]) -> StoreResult<()> {
        sqlx::query::<DB>("DELETE FROM sessions WHERE token_hash = $1")
            .arg(&token_hash[..])
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn purge_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query::<DB>("DELETE FROM sessions WHERE expires_at <= $1")
            .arg(ms(now))
            .run(&self.pool)
            .await?;
        Ok(done)
    }

    async fn login_failures(&self, keys: &[String], since: DateTime<Utc>) -> StoreResult<Vec<u32>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql =
            QueryBuilder::<DB>::new("SELECT key, count(*) AS n FROM login_failures WHERE at >= ");
        sql.push_arg(ms(since)).push(" AND key IN ");
        sql.push_list(keys.iter().map(String::as_str));
        sql.push(" GROUP BY key");
        let rows = sql.build().all(&self.pool).await?;
        let mut counts = Vec::with_capacity(keys.len());
        for k in keys {
            let mut n = 0;
            for r in &rows {
                if get::<DB, String>(r, "key")? == *k {
                    n = u32::try_from(get::<DB, i64>(r, "n")?).unwrap_or(u32::MAX);
                }
            }
            counts.push(n);
        }
        Ok(counts)
    }

    async fn record_login_failure(
        &self,
        keys: &[String],
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let mut forget = QueryBuilder::<DB>::new("DELETE FROM login_failures WHERE at < ");
        forget.push_arg(ms(forget_before)).push(" AND key IN ");
        forget.push_list(keys.iter().map(String::as_str));
        forget.build().run(&mut tx).await?;
        let mut insert = QueryBuilder::<DB>::new("INSERT INTO login_failures (key, at) VALUES ");
        for (i, key) in keys.iter().enumerate() {
            insert.push(if i == 0 { "(" } else { ", (" });
            insert
                .push_arg(key.as_str())
                .push(", ")
                .push_arg(ms(at))
                .push(")");
        }
        insert.build().run(&mut tx).await?;
        tx.commit(self).await?;
        Ok(())
    }

    async fn clear_login_failures(&self, key: &str) -> StoreResult<()> {
        sqlx::query::<DB>("DELETE FROM login_failures WHERE key = $1")
            .arg(key)
            .run(&self.pool)
            .await?;
        Ok(())
    }
}
