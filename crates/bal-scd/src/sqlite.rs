//! The SQLite backend: one file in WAL mode, the BAL's embedded default.
//!
//! Writes open `BEGIN IMMEDIATE` transactions so that two writers queue on the file lock
//! instead of failing halfway with `SQLITE_BUSY` when a read lock would have to be upgraded.

use std::str::FromStr;
use std::time::Duration;

use alloy_primitives::B256;
use async_trait::async_trait;
use bal_core::{
    Actor, AuditAction, GrantAction, Measurement, NewMeasurement, Role, Subscription,
    SubscriptionId, Topic, Username, WalletAddress,
};
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use tokio::sync::broadcast;

use crate::{
    AuditEntry, AuditQuery, Change, Credentials, MeasurementQuery, NewUser, Store, StoreError,
    StoreResult, SubscriptionQuery, User,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
    changes: broadcast::Sender<Change>,
    /// The latest reception time stamped (ms), so stamps never go backwards with the clock.
    last_stamp: std::sync::atomic::AtomicI64,
}

/// Room for bursts of changes before a slow listener starts missing some (it is told, and
/// re-reads the database).
const CHANGE_BUFFER: usize = 4096;

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses nothing on a process crash (kill -9); only an OS crash or
            // power cut can drop the last commits. FULL would fsync on every commit.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(StoreError::backend)?;
        MIGRATOR.run(&pool).await.map_err(StoreError::backend)?;
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        Ok(Self {
            pool,
            changes,
            last_stamp: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// A reception time for rows committed now: the clock, but never before the last stamp.
    /// Called under the write lock, so stamps follow commit order.
    fn stamp(&self) -> i64 {
        let now = Utc::now().timestamp_millis();
        let last = self
            .last_stamp
            .fetch_max(now, std::sync::atomic::Ordering::SeqCst);
        now.max(last)
    }

    fn announce(&self, change: Change) {
        // Nobody listening is fine: the change is in the database either way.
        let _ = self.changes.send(change);
    }

    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::backend)
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("timestamp out of range"))
}

#[derive(Debug, thiserror::Error)]
#[error("corrupt row: {0}")]
struct Corrupt(String);

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::backend(Corrupt(what.into()))
}

fn parse<T: FromStr>(row: &SqliteRow, column: &str) -> StoreResult<T> {
    let raw: String = row.try_get(column).map_err(StoreError::backend)?;
    raw.parse()
        .map_err(|_| corrupt(format!("{column} = {raw:?}")))
}

fn parse_opt<T: FromStr>(row: &SqliteRow, column: &str) -> StoreResult<Option<T>> {
    let raw: Option<String> = row.try_get(column).map_err(StoreError::backend)?;
    raw.map(|r| r.parse().map_err(|_| corrupt(format!("{column} = {r:?}"))))
        .transpose()
}

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(column).map_err(StoreError::backend)
}

// Column lists as macros so that every query stays a `&'static str`: sqlx refuses SQL built
// at run time unless it is asserted safe, and none of ours needs to be.
macro_rules! user_columns {
    ($p:literal) => {
        concat!(
            $p,
            "username, ",
            $p,
            "role, ",
            $p,
            "topic, ",
            $p,
            "wallet, ",
            $p,
            "created_at"
        )
    };
}

fn user_from_row(row: &SqliteRow) -> StoreResult<User> {
    Ok(User {
        username: parse(row, "username")?,
        role: parse::<Role>(row, "role")?,
        topic: parse_opt::<Topic>(row, "topic")?,
        wallet: parse::<WalletAddress>(row, "wallet")?,
        created_at: time(get(row, "created_at")?)?,
    })
}

macro_rules! subscription_columns {
    () => {
        "id, consumer, producer, topic, status, creation_date, modification_date, expires_at, \
         decided_by"
    };
}

macro_rules! measurement_columns {
    () => {
        "id, producer, topic, received_at, payload, payload_hash, fields"
    };
}
fn subscription_from_row(row: &SqliteRow) -> StoreResult<Subscription> {
    Ok(Subscription {
        id: parse(row, "id")?,
        consumer: parse(row, "consumer")?,
        producer: parse(row, "producer")?,
        topic: parse(row, "topic")?,
        status: parse(row, "status")?,
        creation_date: time(get(row, "creation_date")?)?,
        modification_date: time(get(row, "modification_date")?)?,
        expires_at: get::<Option<i64>>(row, "expires_at")?
            .map(time)
            .transpose()?,
        decided_by: parse_opt::<Actor>(row, "decided_by")?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

async fn append_audit(
    conn: &mut SqliteConnection,
    at: DateTime<Utc>,
    actor: &Actor,
    action: AuditAction,
    object: &str,
    detail: serde_json::Value,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO audit_log (at, actor, action, object, detail) VALUES (?, ?, ?, ?, ?)")
        .bind(ms(at))
        .bind(actor.to_string())
        .bind(action.as_str())
        .bind(object)
        .bind(detail.to_string())
        .execute(conn)
        .await
        .map_err(StoreError::backend)?;
    Ok(())
}

/// Writes a subscription's new state and its audit entry.
async fn record_transition(
    conn: &mut SqliteConnection,
    before: &Subscription,
    after: &Subscription,
    action: AuditAction,
    actor: &Actor,
    reason: Option<&str>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE subscriptions SET status = ?, modification_date = ?, expires_at = ?, decided_by = ? \
         WHERE id = ?",
    )
    .bind(after.status.as_str())
    .bind(ms(after.modification_date))
    .bind(after.expires_at.map(ms))
    .bind(after.decided_by.as_ref().map(|a| a.to_string()))
    .bind(after.id.to_string())
    .execute(&mut *conn)
    .await
    .map_err(StoreError::backend)?;
    let mut detail = serde_json::json!({
        "from": before.status,
        "to": after.status,
        "consumer": after.consumer,
        "topic": after.topic,
    });
    if let Some(t) = after.expires_at {
        detail["expires_at"] = serde_json::json!(t);
    }
    if let Some(r) = reason {
        detail["reason"] = serde_json::json!(r);
    }
    append_audit(
        conn,
        after.modification_date,
        actor,
        action,
        &format!("subscription:{}", after.id),
        detail,
    )
    .await
}

async fn live_subscriptions_of(
    conn: &mut SqliteConnection,
    username: &Username,
) -> StoreResult<Vec<Subscription>> {
    let sql = concat!(
        "SELECT ",
        subscription_columns!(),
        " FROM subscriptions \
         WHERE (consumer = ?1 OR producer = ?1) AND status IN ('requested', 'accepted')"
    );
    sqlx::query(sql)
        .bind(username.as_str())
        .fetch_all(conn)
        .await
        .map_err(StoreError::backend)?
        .iter()
        .map(subscription_from_row)
        .collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }

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
            other => other.map_err(StoreError::backend)?,
        };
        let detail = serde_json::json!({ "role": new.role, "topic": topic, "wallet": new.wallet });
        let object = format!("user:{}", new.username);
        append_audit(
            &mut tx,
            now,
            actor,
            AuditAction::UserCreated,
            &object,
            detail,
        )
        .await?;
        tx.commit().await.map_err(StoreError::backend)?;
        self.announce(Change::UserCreated(new.username.clone()));
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
            .await
            .map_err(StoreError::backend)?
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
            .await
            .map_err(StoreError::backend)?
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
            .await
            .map_err(StoreError::backend)?;
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
        .await
        .map_err(StoreError::backend)?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound("user"));
        }
        sqlx::query("DELETE FROM sessions WHERE username = ?")
            .bind(username.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        let object = format!("user:{username}");
        let detail = serde_json::json!({});
        append_audit(
            &mut tx,
            now,
            actor,
            AuditAction::PasswordChanged,
            &object,
            detail,
        )
        .await?;
        tx.commit().await.map_err(StoreError::backend)?;
        self.announce(Change::PasswordChanged(username.clone()));
        Ok(())
    }

    async fn keep_broker_secret(
        &self,
        username: &Username,
        password_hash: &str,
        broker_secret: String,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE users SET broker_secret = ? WHERE username = ? AND password_hash = ? \
             AND broker_secret IS NULL AND deleted_at IS NULL",
        )
        .bind(&broker_secret)
        .bind(username.as_str())
        .bind(password_hash)
        .execute(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        let kept = done.rows_affected() == 1;
        if kept {
            self.announce(Change::BrokerSecret(username.clone()));
        }
        Ok(kept)
    }

    async fn broker_secrets(&self) -> StoreResult<Vec<(Username, String)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT username, broker_secret FROM users \
             WHERE broker_secret IS NOT NULL AND deleted_at IS NULL ORDER BY username",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::backend)?;
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
                .await
                .map_err(StoreError::backend)?;
        let role = role.ok_or(StoreError::NotFound("user"))?;
        if role == Role::Admin.as_str() {
            let admins: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM users WHERE role = 'admin' AND deleted_at IS NULL",
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
            if admins <= 1 {
                return Err(StoreError::Conflict("cannot delete the last admin".into()));
            }
        }
        let mut ended = Vec::new();
        for sub in live_subscriptions_of(&mut tx, username).await? {
            if let Some(after) = sub.end_for_deleted_user(username, actor, now) {
                let action = match after.status {
                    bal_core::SubscriptionStatus::Revoked => AuditAction::SubscriptionRevoked,
                    _ => AuditAction::SubscriptionCancelled,
                };
                record_transition(&mut tx, &sub, &after, action, actor, Some("user deleted"))
                    .await?;
                ended.push(after);
            }
        }
        sqlx::query("DELETE FROM sessions WHERE username = ?")
            .bind(username.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        sqlx::query(
            "UPDATE users SET password_hash = NULL, account = NULL, broker_secret = NULL, \
             deleted_at = ? WHERE username = ?",
        )
        .bind(ms(now))
        .bind(username.as_str())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        let object = format!("user:{username}");
        let detail = serde_json::json!({ "role": role, "ended_subscriptions": ended.len() });
        append_audit(
            &mut tx,
            now,
            actor,
            AuditAction::UserDeleted,
            &object,
            detail,
        )
        .await?;
        tx.commit().await.map_err(StoreError::backend)?;
        for s in &ended {
            self.announce(Change::Subscription(s.clone()));
        }
        self.announce(Change::UserDeleted(username.clone()));
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
        .await
        .map_err(StoreError::backend)?;
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
            .await
            .map_err(StoreError::backend)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn delete_session(&self, token_hash: [u8; 32]) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
            .bind(&token_hash[..])
            .execute(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn purge_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(ms(now))
            .execute(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(done.rows_affected())
    }

    async fn request_subscription(&self, request: Subscription) -> StoreResult<Subscription> {
        let now = request.creation_date;
        let mut tx = self.begin_write().await?;
        let producer_topic: Option<String> = sqlx::query_scalar(
            "SELECT topic FROM users WHERE username = ? AND role = 'producer' AND deleted_at IS NULL",
        )
        .bind(request.producer.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        if producer_topic.as_deref() != Some(request.topic.as_str()) {
            return Err(StoreError::NotFound("producer"));
        }
        // A lapsed grant still marked accepted must not block a new request: write its expiry.
        let expired = expire_due_in(&mut tx, now).await?;
        let inserted = sqlx::query(concat!(
            "INSERT INTO subscriptions (",
            subscription_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(request.id.to_string())
        .bind(request.consumer.as_str())
        .bind(request.producer.as_str())
        .bind(request.topic.as_str())
        .bind(request.status.as_str())
        .bind(ms(request.creation_date))
        .bind(ms(request.modification_date))
        .bind(request.expires_at.map(ms))
        .bind(request.decided_by.as_ref().map(|a| a.to_string()))
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "{} already has a live subscription request for {}",
                    request.consumer, request.topic
                )));
            }
            other => other.map_err(StoreError::backend)?,
        };
        let actor = Actor::User(request.consumer.clone());
        let detail = serde_json::json!({ "consumer": request.consumer, "topic": request.topic });
        let object = format!("subscription:{}", request.id);
        let action = AuditAction::SubscriptionRequested;
        append_audit(&mut tx, now, &actor, action, &object, detail).await?;
        tx.commit().await.map_err(StoreError::backend)?;
        for s in expired {
            self.announce(Change::Subscription(s));
        }
        self.announce(Change::Subscription(request.clone()));
        Ok(request)
    }

    async fn subscription(&self, id: SubscriptionId) -> StoreResult<Option<Subscription>> {
        let sql = concat!(
            "SELECT ",
            subscription_columns!(),
            " FROM subscriptions WHERE id = ?"
        );
        sqlx::query(sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::backend)?
            .as_ref()
            .map(subscription_from_row)
            .transpose()
    }

    async fn subscriptions(&self, query: &SubscriptionQuery) -> StoreResult<Vec<Subscription>> {
        let mut sql = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            subscription_columns!(),
            " FROM subscriptions WHERE 1 = 1"
        ));
        if let Some(c) = &query.consumer {
            sql.push(" AND consumer = ").push_bind(c.as_str());
        }
        if let Some(p) = &query.producer {
            sql.push(" AND producer = ").push_bind(p.as_str());
        }
        if let Some(s) = query.status {
            sql.push(" AND status = ").push_bind(s.as_str());
        }
        sql.push(" ORDER BY creation_date DESC, id DESC");
        sql.build()
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::backend)?
            .iter()
            .map(subscription_from_row)
            .collect()
    }

    async fn decide(
        &self,
        id: SubscriptionId,
        action: &GrantAction,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> StoreResult<Subscription> {
        let mut tx = self.begin_write().await?;
        let sql = concat!(
            "SELECT ",
            subscription_columns!(),
            " FROM subscriptions WHERE id = ?"
        );
        let before = sqlx::query(sql)
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::backend)?
            .as_ref()
            .map(subscription_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound("subscription"))?;
        let after = before.apply(action, actor, now)?;
        record_transition(&mut tx, &before, &after, action.into(), actor, None).await?;
        tx.commit().await.map_err(StoreError::backend)?;
        self.announce(Change::Subscription(after.clone()));
        Ok(after)
    }

    async fn expire_due(&self, now: DateTime<Utc>) -> StoreResult<Vec<Subscription>> {
        let mut tx = self.begin_write().await?;
        let expired = expire_due_in(&mut tx, now).await?;
        tx.commit().await.map_err(StoreError::backend)?;
        for s in &expired {
            self.announce(Change::Subscription(s.clone()));
        }
        Ok(expired)
    }

    async fn audit_log(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let mut sql = QueryBuilder::<Sqlite>::new(
            "SELECT id, at, actor, action, object, detail FROM audit_log WHERE 1 = 1",
        );
        if let Some(a) = &query.actor {
            sql.push(" AND actor = ").push_bind(a.to_string());
        }
        if let Some(a) = query.action {
            sql.push(" AND action = ").push_bind(a.as_str());
        }
        if let Some(o) = &query.object {
            sql.push(" AND object = ").push_bind(o.clone());
        }
        if let Some(b) = query.before_id {
            sql.push(" AND id < ").push_bind(b);
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(query.limit));
        sql.build()
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::backend)?
            .iter()
            .map(|row| {
                let detail: String = get(row, "detail")?;
                Ok(AuditEntry {
                    id: get(row, "id")?,
                    at: time(get(row, "at")?)?,
                    actor: parse(row, "actor")?,
                    action: parse(row, "action")?,
                    object: get(row, "object")?,
                    detail: serde_json::from_str(&detail)
                        .map_err(|_| corrupt("audit detail is not JSON"))?,
                })
            })
            .collect()
    }

    async fn can_read(
        &self,
        consumer: &Username,
        producer: &Username,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM subscriptions WHERE consumer = ? AND producer = ? \
             AND status = 'accepted' AND (expires_at IS NULL OR expires_at > ?) LIMIT 1",
        )
        .bind(consumer.as_str())
        .bind(producer.as_str())
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        Ok(found.is_some())
    }

    async fn insert_measurements(&self, batch: &[NewMeasurement]) -> StoreResult<Vec<i64>> {
        let mut tx = self.begin_write().await?;
        let stamp = self.stamp();
        let mut ids = Vec::with_capacity(batch.len());
        // Whether each item was stored now (false: a redelivery of a stored measurement).
        let mut new = Vec::with_capacity(batch.len());
        let mut fresh: Vec<&NewMeasurement> = Vec::with_capacity(batch.len());
        // Runs of new measurements go in multi-row INSERTs; a redelivery is looked up first,
        // in order, so it sees the rows inserted before it in the same batch.
        for m in batch {
            if let (Some(origin), true) = (m.origin, m.redelivered) {
                insert_rows(&mut tx, &fresh, stamp, &mut ids).await?;
                new.resize(ids.len(), true);
                fresh.clear();
                let latest: Option<(i64, Vec<u8>)> = sqlx::query_as(
                    "SELECT id, payload_hash FROM ( \
                         SELECT id, payload_hash, origin, received_at \
                         FROM measurements INDEXED BY measurements_by_producer_time \
                         WHERE producer = ? ORDER BY received_at DESC, id DESC LIMIT ?) \
                     WHERE origin = ? AND received_at >= ? ORDER BY id DESC LIMIT 1",
                )
                .bind(m.producer.as_str())
                .bind(REDELIVERY_SCAN_ROWS)
                .bind(origin)
                .bind(stamp - REDELIVERY_WINDOW_MS)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::backend)?;
                if let Some((id, _)) = latest.filter(|(_, h)| h[..] == m.payload_hash[..]) {
                    ids.push(id);
                    new.push(false);
                    continue;
                }
            }
            fresh.push(m);
        }
        insert_rows(&mut tx, &fresh, stamp, &mut ids).await?;
        new.resize(ids.len(), true);
        tx.commit().await.map_err(StoreError::backend)?;

        if self.changes.receiver_count() > 0 {
            let received_at = time(stamp)?;
            let stored: Vec<Measurement> = batch
                .iter()
                .zip(&ids)
                .zip(&new)
                .filter(|(_, is_new)| **is_new)
                .map(|((m, &id), _)| Measurement {
                    id,
                    producer: m.producer.clone(),
                    topic: m.topic.clone(),
                    received_at,
                    payload: m.payload.clone(),
                    payload_hash: m.payload_hash,
                    fields: m.fields.clone(),
                })
                .collect();
            if !stored.is_empty() {
                self.announce(Change::Measurements(stored.into()));
            }
        }
        Ok(ids)
    }

    async fn measurement(&self, id: i64) -> StoreResult<Option<Measurement>> {
        sqlx::query(concat!(
            "SELECT ",
            measurement_columns!(),
            " FROM measurements WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?
        .as_ref()
        .map(measurement_from_row)
        .transpose()
    }

    async fn measurements(&self, query: &MeasurementQuery) -> StoreResult<Vec<Measurement>> {
        let mut sql = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            measurement_columns!(),
            " FROM measurements WHERE producer = "
        ));
        sql.push_bind(query.producer.as_str());
        if let Some(from) = query.from {
            sql.push(" AND received_at >= ").push_bind(ms(from));
        }
        if let Some(to) = query.to {
            sql.push(" AND received_at < ").push_bind(ms(to));
        }
        if let Some(c) = query.after {
            sql.push(" AND (received_at, id) > (")
                .push_bind(c.received_at_ms)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        sql.push(" ORDER BY received_at, id LIMIT ")
            .push_bind(i64::from(query.limit));
        sql.build()
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::backend)?
            .iter()
            .map(measurement_from_row)
            .collect()
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

fn measurement_from_row(row: &SqliteRow) -> StoreResult<Measurement> {
    let hash: Vec<u8> = get(row, "payload_hash")?;
    let fields: Option<String> = get(row, "fields")?;
    Ok(Measurement {
        id: get(row, "id")?,
        producer: parse(row, "producer")?,
        topic: parse(row, "topic")?,
        received_at: time(get(row, "received_at")?)?,
        payload: get(row, "payload")?,
        payload_hash: B256::try_from(hash.as_slice()).map_err(|_| corrupt("payload_hash"))?,
        fields: fields
            .map(|f| serde_json::from_str(&f).map_err(|_| corrupt("fields")))
            .transpose()?,
    })
}

/// How far back a redelivery is looked for: longer than a client takes to reconnect and resend
/// after a BAL restart. Older duplicates are stored again (and still carry their origin).
const REDELIVERY_WINDOW_MS: i64 = 15 * 60 * 1000;

/// At most this many of the producer's latest rows are searched per redelivery, so that a
/// reconnect storm of a busy producer cannot hold the write lock for long (each lookup is a few
/// milliseconds); it also keeps a reused packet id from matching a message long gone by.
const REDELIVERY_SCAN_ROWS: i64 = 50_000;

/// Rows per INSERT statement: 7 parameters each stays far below SQLite's 32 766.
const ROWS_PER_INSERT: usize = 500;

/// Inserts `rows` with multi-row INSERTs and appends their ids to `ids`, in order. Inside the
/// write transaction nobody else inserts, so one statement's AUTOINCREMENT ids are consecutive
/// and end at `last_insert_rowid`.
async fn insert_rows(
    conn: &mut SqliteConnection,
    rows: &[&NewMeasurement],
    received_at_ms: i64,
    ids: &mut Vec<i64>,
) -> StoreResult<()> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut fields = Vec::with_capacity(chunk.len());
        for m in chunk {
            fields.push(
                m.fields
                    .as_ref()
                    .map(|f| serde_json::to_string(f).map_err(StoreError::backend))
                    .transpose()?,
            );
        }
        let mut sql = QueryBuilder::<Sqlite>::new(
            "INSERT INTO measurements \
             (producer, topic, received_at, payload, payload_hash, fields, origin) ",
        );
        sql.push_values(chunk.iter().zip(fields), |mut row, (m, f)| {
            row.push_bind(m.producer.as_str())
                .push_bind(m.topic.as_str())
                .push_bind(received_at_ms)
                .push_bind(&m.payload[..])
                .push_bind(m.payload_hash.as_slice())
                .push_bind(f)
                .push_bind(m.origin);
        });
        let done = sql
            .build()
            .execute(&mut *conn)
            .await
            .map_err(StoreError::backend)?;
        let last = done.last_insert_rowid();
        let first = last - chunk.len() as i64 + 1;
        ids.extend(first..=last);
    }
    Ok(())
}

async fn expire_due_in(
    conn: &mut SqliteConnection,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Subscription>> {
    let sql = concat!(
        "SELECT ",
        subscription_columns!(),
        " FROM subscriptions \
         WHERE status = 'accepted' AND expires_at IS NOT NULL AND expires_at <= ?"
    );
    let due: Vec<Subscription> = sqlx::query(sql)
        .bind(ms(now))
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::backend)?
        .iter()
        .map(subscription_from_row)
        .collect::<StoreResult<_>>()?;
    let mut expired = Vec::with_capacity(due.len());
    for before in due {
        let after = before.apply(&GrantAction::Expire, &Actor::System, now)?;
        let action = AuditAction::SubscriptionExpired;
        record_transition(conn, &before, &after, action, &Actor::System, None).await?;
        expired.push(after);
    }
    Ok(expired)
}

// After the column macros, which the submodules use.
mod certification;
mod chain;
