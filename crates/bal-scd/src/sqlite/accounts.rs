//! [`AccountStore`] on SQLite.

use async_trait::async_trait;
use bal_core::{Actor, AuditAction, AuditDetail, Role, Subscription, Topic, Username};
use chrono::{DateTime, Utc};

use super::grants::{live_subscriptions_of, record_transition};
use super::{SqliteStore, append_audit, get, is_unique_violation, user_from_row};
use crate::error::corrupt;
use crate::rows::{deletion_action, ms, user_columns};
use crate::{AccountStore, Change, Credentials, NewUser, StoreError, StoreResult, User};

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_user(
        &self,
        new: NewUser,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> StoreResult<User> {
        let topic = (new.role == Role::Producer).then(|| Topic::for_producer(&new.username));
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO users \
             (username, password_hash, role, topic, wallet, account, created_at, broker_secret) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(new.username.as_str())
        .bind(&new.password_hash)
        .bind(new.role.as_str())
        .bind(topic.as_ref().map(Topic::as_str))
        .bind(new.wallet.to_string())
        .bind(&new.account)
        .bind(ms(now))
        .bind(&new.broker_secret)
        .execute(&mut *tx)
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
        tx.commit(&self.feed).await?;
        Ok(User {
            username: new.username,
            role: new.role,
            topic,
            wallet: new.wallet,
            created_at: bal_core::millis(now),
        })
    }

    async fn user(&self, username: &Username) -> StoreResult<Option<User>> {
        let sql = concat!(
            "SELECT ",
            user_columns!(""),
            " FROM users WHERE username = ? AND deleted_at IS NULL"
        );
        sqlx::query(sql)
            .bind(username.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        let sql = concat!(
            "SELECT ",
            user_columns!(""),
            " FROM users WHERE deleted_at IS NULL ORDER BY username"
        );
        sqlx::query(sql)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn credentials(&self, username: &Username) -> StoreResult<Option<Credentials>> {
        let sql = concat!(
            "SELECT ",
            user_columns!(""),
            ", password_hash, broker_secret IS NOT NULL AS has_broker_secret \
             FROM users WHERE username = ? AND deleted_at IS NULL"
        );
        let row = sqlx::query(sql)
            .bind(username.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Credentials {
                user: user_from_row(&row)?,
                password_hash: get(&row, "password_hash")?,
                has_broker_secret: get(&row, "has_broker_secret")?,
            })
        })
        .transpose()
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
        let updated = sqlx::query(
            "UPDATE users SET password_hash = ?, broker_secret = ? \
             WHERE username = ? AND deleted_at IS NULL",
        )
        .bind(&password_hash)
        .bind(&broker_secret)
        .bind(username.as_str())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound("user"));
        }
        sqlx::query("DELETE FROM sessions WHERE username = ?")
            .bind(username.as_str())
            .execute(&mut *tx)
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
        tx.commit(&self.feed).await?;
        Ok(())
    }

    async fn keep_broker_secret(
        &self,
        username: &Username,
        password_hash: &str,
        broker_secret: String,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE users SET broker_secret = ? WHERE username = ? AND password_hash = ? \
             AND broker_secret IS NULL AND deleted_at IS NULL",
        )
        .bind(&broker_secret)
        .bind(username.as_str())
        .bind(password_hash)
        .execute(&mut *tx)
        .await?;
        let kept = done.rows_affected() == 1;
        if kept {
            tx.announce(Change::BrokerSecret(username.clone()));
        }
        tx.commit(&self.feed).await?;
        Ok(kept)
    }

    async fn broker_secrets(&self) -> StoreResult<Vec<(Username, String)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT username, broker_secret FROM users \
             WHERE broker_secret IS NOT NULL AND deleted_at IS NULL ORDER BY username",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(u, s)| Ok((Username::parse(&u).map_err(|_| corrupt("username"))?, s)))
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
            sqlx::query_scalar("SELECT role FROM users WHERE username = ? AND deleted_at IS NULL")
                .bind(username.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let role: Role = role
            .ok_or(StoreError::NotFound("user"))?
            .parse()
            .map_err(|_| corrupt("role"))?;
        if role == Role::Admin {
            let admins: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM users WHERE role = 'admin' AND deleted_at IS NULL",
            )
            .fetch_one(&mut *tx)
            .await?;
            if admins <= 1 {
                return Err(StoreError::Conflict("cannot delete the last admin".into()));
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
        sqlx::query("DELETE FROM sessions WHERE username = ?")
            .bind(username.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE users SET password_hash = NULL, account = NULL, broker_secret = NULL, \
             deleted_at = ? WHERE username = ?",
        )
        .bind(ms(now))
        .bind(username.as_str())
        .execute(&mut *tx)
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
        tx.commit(&self.feed).await?;
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
        let done = sqlx::query(
            "INSERT INTO sessions (token_hash, username, created_at, expires_at) \
             SELECT ?, username, ?, ? FROM users \
             WHERE username = ? AND password_hash = ? AND deleted_at IS NULL",
        )
        .bind(&token_hash[..])
        .bind(ms(now))
        .bind(ms(expires_at))
        .bind(username.as_str())
        .bind(password_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn session_user(
        &self,
        token_hash: [u8; 32],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let sql = concat!(
            "SELECT ",
            user_columns!("u."),
            " FROM sessions s JOIN users u ON u.username = s.username \
             WHERE s.token_hash = ? AND s.expires_at > ? AND u.deleted_at IS NULL"
        );
        sqlx::query(sql)
            .bind(&token_hash[..])
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn delete_session(&self, token_hash: [u8; 32]) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
            .bind(&token_hash[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn purge_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn login_failures(&self, keys: &[String], since: DateTime<Utc>) -> StoreResult<Vec<u32>> {
        let mut counts = Vec::with_capacity(keys.len());
        for key in keys {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM login_failures WHERE key = ? AND at >= ?")
                    .bind(key)
                    .bind(ms(since))
                    .fetch_one(&self.pool)
                    .await?;
            counts.push(u32::try_from(n).unwrap_or(u32::MAX));
        }
        Ok(counts)
    }

    async fn record_login_failure(
        &self,
        keys: &[String],
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> StoreResult<()> {
        for key in keys {
            sqlx::query("DELETE FROM login_failures WHERE key = ? AND at < ?")
                .bind(key)
                .bind(ms(forget_before))
                .execute(&self.pool)
                .await?;
            sqlx::query("INSERT INTO login_failures (key, at) VALUES (?, ?)")
                .bind(key)
                .bind(ms(at))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn clear_login_failures(&self, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM login_failures WHERE key = ?")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
