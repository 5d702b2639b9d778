//! What lets one body of query code run on SQLite and on PostgreSQL.
//!
//! sqlx's query functions are generic over [`sqlx::Database`], but calling them from generic
//! code needs a bound per bound type (`i64: Encode<DB> + Type<DB>`, `&mut DB::Connection:
//! Executor<DB>`, ...) on every function, because Rust does not carry such bounds along with a
//! trait. [`Dialect`] turns them around: it is implemented for the two drivers' database types
//! only, and lists as *supertraits* (which Rust does carry) [`Binds<T>`] and [`Decodes<T>`] for
//! every value type the SCD stores. Generic code then needs one bound, `DB: Dialect`, and says
//! `.arg(v)`, `get(row, "col")`, `.all(&mut tx)` where it would say `.bind(v)`,
//! `row.try_get("col")`, `.fetch_all(&mut *tx)`.
//!
//! What truly differs between the backends is here too, and nowhere in the query code: the SQL
//! fragments of the database clock and of row locks ([`sql!`]), how a write transaction begins
//! (SQLite takes the write lock at once), and what a commit also sends (PostgreSQL's NOTIFY).
//! Queries use `$1`-style parameters, which both drivers accept.

use std::future::Future;

use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{Database, Pool, Postgres, QueryBuilder, Sqlite, Transaction};

use crate::{Backend, Change, StoreResult};

/// Where a query runs: a connection (of a transaction or from the pool) or the pool itself.
pub enum Exec<'c, DB: Database> {
    Conn(&'c mut DB::Connection),
    Pool(&'c Pool<DB>),
}

impl<'c, DB: Database> From<&'c Pool<DB>> for Exec<'c, DB> {
    fn from(pool: &'c Pool<DB>) -> Self {
        Exec::Pool(pool)
    }
}

impl<'c, DB: Database> From<&'c mut Transaction<'static, DB>> for Exec<'c, DB> {
    fn from(tx: &'c mut Transaction<'static, DB>) -> Self {
        Exec::Conn(&mut **tx)
    }
}

impl<'c, DB: Database> From<&'c mut PoolConnection<DB>> for Exec<'c, DB> {
    fn from(conn: &'c mut PoolConnection<DB>) -> Self {
        Exec::Conn(&mut **conn)
    }
}

/// An owned value `Self` can bind as a query parameter.
pub trait Binds<T>: Database {
    fn bind(query: Query<'_, Self, Self::Arguments>, value: T) -> Query<'_, Self, Self::Arguments>;
    fn push_bind(builder: &mut QueryBuilder<Self>, value: T);
}

/// A value `Self` can read from a column.
pub trait Decodes<T>: Database {
    fn decode(row: &Self::Row, column: &str) -> Result<T, sqlx::Error>;
    fn decode_at(row: &Self::Row, index: usize) -> Result<T, sqlx::Error>;
}

macro_rules! value_types {
    ($db:ty) => {
        impl<T> Binds<T> for $db
        where
            T: for<'t> sqlx::Encode<'t, $db> + sqlx::Type<$db>,
        {
            fn bind(
                query: Query<'_, Self, Self::Arguments>,
                value: T,
            ) -> Query<'_, Self, Self::Arguments> {
                query.bind(value)
            }
            fn push_bind(builder: &mut QueryBuilder<Self>, value: T) {
                builder.push_bind(value);
            }
        }

        impl<T> Decodes<T> for $db
        where
            T: for<'r> sqlx::Decode<'r, $db> + sqlx::Type<$db>,
        {
            fn decode(row: &Self::Row, column: &str) -> Result<T, sqlx::Error> {
                sqlx::Row::try_get(row, column)
            }
            fn decode_at(row: &Self::Row, index: usize) -> Result<T, sqlx::Error> {
                sqlx::Row::try_get(row, index)
            }
        }
    };
}
value_types!(Sqlite);
value_types!(Postgres);

/// A database the SCD runs on: [`Sqlite`] or [`Postgres`], and nothing else (the supertraits
/// name every value type the SCD's columns hold).
pub trait Dialect:
    Database
    + Binds<i64>
    + Binds<Option<i64>>
    + Binds<bool>
    + Binds<String>
    + Binds<Option<String>>
    + Binds<Vec<u8>>
    + Binds<Option<Vec<u8>>>
    + Decodes<i64>
    + Decodes<Option<i64>>
    + Decodes<bool>
    + Decodes<String>
    + Decodes<Option<String>>
    + Decodes<Vec<u8>>
    + Decodes<Option<Vec<u8>>>
{
    const BACKEND: Backend;

    /// What a store on this backend holds besides its pool and feed (PostgreSQL: the listener
    /// of other processes' changes).
    type Side: Send + Sync + 'static;

    /// Begins a write transaction: on SQLite with the write lock taken at once (`BEGIN
    /// IMMEDIATE`), so that two writers queue instead of failing when one would upgrade a read
    /// lock; on PostgreSQL a plain one (rows are locked where read).
    fn begin_write(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send;

    /// Runs in a write transaction just before it commits, with the changes it announces:
    /// PostgreSQL sends them to the other processes (NOTIFY is delivered at commit, or never).
    fn before_commit<'a>(
        tx: &'a mut Transaction<'static, Self>,
        side: &'a Self::Side,
        changes: &'a [Change],
    ) -> impl Future<Output = StoreResult<()>> + Send + 'a;

    /// Binds a borrowed value. (Borrowed types cannot be supertraits like the owned ones:
    /// `for<'a> Binds<&'a str>` is refused by the compiler.)
    fn bind_borrowed<'q>(
        query: Query<'q, Self, Self::Arguments>,
        value: Borrowed<'_>,
    ) -> Query<'q, Self, Self::Arguments>;
    fn push_borrowed(builder: &mut QueryBuilder<Self>, value: Borrowed<'_>);

    /// Certification: a read-only snapshot for choosing the next items, and the horizon in it:
    /// rows of transactions at or above it may still commit inside a span being chosen, so
    /// they wait. PostgreSQL: the oldest transaction still running on this database; SQLite:
    /// none (one writer, ids in commit order), so `i64::MAX`.
    fn snapshot(
        pool: &Pool<Self>,
    ) -> impl Future<Output = StoreResult<(Transaction<'static, Self>, i64)>> + Send;

    /// Certification: takes the lock that serialises batch writers across processes, in `tx`
    /// (PostgreSQL's advisory lock; SQLite's write transaction already holds the write lock).
    fn lock_batches<'a>(
        tx: &'a mut Transaction<'static, Self>,
    ) -> impl Future<Output = StoreResult<()>> + Send + 'a;

    fn fetch_all<'a>(
        query: Query<'a, Self, Self::Arguments>,
        on: Exec<'a, Self>,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send + 'a;

    fn fetch_optional<'a>(
        query: Query<'a, Self, Self::Arguments>,
        on: Exec<'a, Self>,
    ) -> impl Future<Output = Result<Option<Self::Row>, sqlx::Error>> + Send + 'a;

    /// Runs a statement; the number of rows it changed.
    fn execute<'a>(
        query: Query<'a, Self, Self::Arguments>,
        on: Exec<'a, Self>,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'a;
}

/// A borrowed parameter value.
pub enum Borrowed<'a> {
    Str(&'a str),
    OptStr(Option<&'a str>),
    Bytes(&'a [u8]),
    OptBytes(Option<&'a [u8]>),
}

/// The part of [`Dialect`] both drivers implement with the same code.
macro_rules! runs_queries {
    () => {
        fn bind_borrowed<'q>(
            query: Query<'q, Self, Self::Arguments>,
            value: Borrowed<'_>,
        ) -> Query<'q, Self, Self::Arguments> {
            match value {
                Borrowed::Str(v) => query.bind(v),
                Borrowed::OptStr(v) => query.bind(v),
                Borrowed::Bytes(v) => query.bind(v),
                Borrowed::OptBytes(v) => query.bind(v),
            }
        }

        fn push_borrowed(builder: &mut QueryBuilder<Self>, value: Borrowed<'_>) {
            match value {
                Borrowed::Str(v) => builder.push_bind(v),
                Borrowed::OptStr(v) => builder.push_bind(v),
                Borrowed::Bytes(v) => builder.push_bind(v),
                Borrowed::OptBytes(v) => builder.push_bind(v),
            };
        }

        fn fetch_all<'a>(
            query: Query<'a, Self, Self::Arguments>,
            on: Exec<'a, Self>,
        ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send + 'a {
            async move {
                match on {
                    Exec::Conn(c) => query.fetch_all(c).await,
                    Exec::Pool(p) => query.fetch_all(p).await,
                }
            }
        }

        fn fetch_optional<'a>(
            query: Query<'a, Self, Self::Arguments>,
            on: Exec<'a, Self>,
        ) -> impl Future<Output = Result<Option<Self::Row>, sqlx::Error>> + Send + 'a {
            async move {
                match on {
                    Exec::Conn(c) => query.fetch_optional(c).await,
                    Exec::Pool(p) => query.fetch_optional(p).await,
                }
            }
        }

        fn execute<'a>(
            query: Query<'a, Self, Self::Arguments>,
            on: Exec<'a, Self>,
        ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'a {
            async move {
                let done = match on {
                    Exec::Conn(c) => query.execute(c).await?,
                    Exec::Pool(p) => query.execute(p).await?,
                };
                Ok(done.rows_affected())
            }
        }
    };
}

impl Dialect for Sqlite {
    const BACKEND: Backend = Backend::Sqlite;
    type Side = ();

    fn begin_write(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send {
        pool.begin_with("BEGIN IMMEDIATE")
    }

    fn before_commit<'a>(
        _: &'a mut Transaction<'static, Self>,
        _: &'a (),
        _: &'a [Change],
    ) -> impl Future<Output = StoreResult<()>> + Send + 'a {
        std::future::ready(Ok(()))
    }

    async fn snapshot(pool: &Pool<Self>) -> StoreResult<(Transaction<'static, Self>, i64)> {
        Ok((pool.begin().await?, i64::MAX))
    }

    fn lock_batches<'a>(
        _: &'a mut Transaction<'static, Self>,
    ) -> impl Future<Output = StoreResult<()>> + Send + 'a {
        std::future::ready(Ok(()))
    }

    runs_queries!();
}

impl Dialect for Postgres {
    const BACKEND: Backend = Backend::Postgres;
    type Side = crate::postgres::Side;

    fn begin_write(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send {
        pool.begin()
    }

    fn before_commit<'a>(
        tx: &'a mut Transaction<'static, Self>,
        side: &'a crate::postgres::Side,
        changes: &'a [Change],
    ) -> impl Future<Output = StoreResult<()>> + Send + 'a {
        crate::postgres::notify(tx, side, changes)
    }

    fn snapshot(
        pool: &Pool<Self>,
    ) -> impl Future<Output = StoreResult<(Transaction<'static, Self>, i64)>> + Send {
        crate::postgres::snapshot(pool)
    }

    fn lock_batches<'a>(
        tx: &'a mut Transaction<'static, Self>,
    ) -> impl Future<Output = StoreResult<()>> + Send + 'a {
        crate::postgres::lock_batches(tx)
    }

    runs_queries!();
}

/// A value generic code can bind: the owned types [`Dialect`] lists, and borrowed text and
/// bytes.
pub trait Arg<DB: Dialect> {
    fn bind_to<'q>(self, query: Query<'q, DB, DB::Arguments>) -> Query<'q, DB, DB::Arguments>;
    fn push_to(self, builder: &mut QueryBuilder<DB>);
}

macro_rules! owned_args {
    ($($t:ty),+) => {$(
        impl<DB: Dialect> Arg<DB> for $t {
            fn bind_to<'q>(
                self,
                query: Query<'q, DB, DB::Arguments>,
            ) -> Query<'q, DB, DB::Arguments> {
                <DB as Binds<$t>>::bind(query, self)
            }
            fn push_to(self, builder: &mut QueryBuilder<DB>) {
                <DB as Binds<$t>>::push_bind(builder, self)
            }
        }
    )+};
}
owned_args!(
    i64,
    Option<i64>,
    bool,
    String,
    Option<String>,
    Vec<u8>,
    Option<Vec<u8>>
);

macro_rules! borrowed_args {
    ($($t:ty => $variant:ident),+) => {$(
        impl<'a, DB: Dialect> Arg<DB> for $t {
            fn bind_to<'q>(
                self,
                query: Query<'q, DB, DB::Arguments>,
            ) -> Query<'q, DB, DB::Arguments> {
                DB::bind_borrowed(query, Borrowed::$variant(self))
            }
            fn push_to(self, builder: &mut QueryBuilder<DB>) {
                DB::push_borrowed(builder, Borrowed::$variant(self))
            }
        }
    )+};
}
borrowed_args!(
    &'a str => Str,
    Option<&'a str> => OptStr,
    &'a [u8] => Bytes,
    Option<&'a [u8]> => OptBytes
);

/// A query's parameters and how it runs, in the words generic code can use.
pub trait QueryExt<'q, DB: Dialect>: Sized {
    /// Binds the next `$n` parameter.
    fn arg<T: Arg<DB>>(self, value: T) -> Self;
    fn all<'c>(
        self,
        on: impl Into<Exec<'c, DB>>,
    ) -> impl Future<Output = StoreResult<Vec<DB::Row>>> + Send + 'c
    where
        'q: 'c;
    fn optional<'c>(
        self,
        on: impl Into<Exec<'c, DB>>,
    ) -> impl Future<Output = StoreResult<Option<DB::Row>>> + Send + 'c
    where
        'q: 'c;
    /// Runs a statement; the number of rows it changed.
    fn run<'c>(
        self,
        on: impl Into<Exec<'c, DB>>,
    ) -> impl Future<Output = StoreResult<u64>> + Send + 'c
    where
        'q: 'c;
}

impl<'q, DB: Dialect> QueryExt<'q, DB> for Query<'q, DB, DB::Arguments> {
    fn arg<T: Arg<DB>>(self, value: T) -> Self {
        value.bind_to(self)
    }

    fn all<'c>(
        self,
        on: impl Into<Exec<'c, DB>>,
    ) -> impl Future<Output = StoreResult<Vec<DB::Row>>> + Send + 'c
    where
        'q: 'c,
    {
        let run = DB::fetch_all(self, on.into());
        async move { Ok(run.await?) }
    }

    fn optional<'c>(
        self,
        on: impl Into<Exec<'c, DB>>,
    ) -> impl Future<Output = StoreResult<Option<DB::Row>>> + Send + 'c
    where
        'q: 'c,
    {
        let run = DB::fetch_optional(self, on.into());
        async move { Ok(run.await?) }
    }

    fn run<'c>(
        self,
        on: impl Into<Exec<'c, DB>>,
    ) -> impl Future<Output = StoreResult<u64>> + Send + 'c
    where
        'q: 'c,
    {
        let run = DB::execute(self, on.into());
        async move { Ok(run.await?) }
    }
}

/// [`QueryBuilder::push_bind`] for generic code.
pub trait BuilderExt<DB: Dialect> {
    fn push_arg<T: Arg<DB>>(&mut self, value: T) -> &mut Self;
    /// `($1, $2, ...)`, one parameter per item: the right side of `IN`. Empty lists are the
    /// caller's to avoid (`IN ()` is not SQL).
    fn push_list<T: Arg<DB>>(&mut self, items: impl IntoIterator<Item = T>) -> &mut Self;
}

impl<DB: Dialect> BuilderExt<DB> for QueryBuilder<DB> {
    fn push_arg<T: Arg<DB>>(&mut self, value: T) -> &mut Self {
        value.push_to(self);
        self
    }

    fn push_list<T: Arg<DB>>(&mut self, items: impl IntoIterator<Item = T>) -> &mut Self {
        self.push("(");
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push_arg(item);
        }
        self.push(")")
    }
}

/// A column of `row`, decoded.
pub fn get<DB, T>(row: &DB::Row, column: &str) -> StoreResult<T>
where
    DB: Decodes<T>,
{
    Ok(DB::decode(row, column)?)
}

/// The first column of `row`, decoded: for `SELECT count(*)` and the like.
pub fn first<DB, T>(row: &DB::Row) -> StoreResult<T>
where
    DB: Decodes<T>,
{
    Ok(DB::decode_at(row, 0)?)
}

/// One SQL text for both backends, with the few fragments that differ written as words:
/// `NOW` (the database's clock in Unix ms), `FOR_UPDATE` and `FOR_SHARE` (row locks: on SQLite
/// nothing, its write transactions already hold the one write lock), `SUBSCRIPTION_COLUMNS`
/// and the like for column lists, certification's marks (`BATCH_COLUMNS`, `LAST_MARKS`,
/// `M_XID`, `A_XID`), and `{ postgres: "...", sqlite: "..." }` where the commit order makes a
/// condition differ (both texts take the same parameters; SQLite may leave some unused, which
/// its driver allows). Everything else is string literals, concatenated at compile time: the
/// result is a `&'static str` for either backend.
///
/// `sql!(DB; "SELECT ", SUBSCRIPTION_COLUMNS, " FROM subscriptions WHERE id = $1", FOR_UPDATE)`
macro_rules! sql {
    ($db:ty; $($piece:tt),+ $(,)?) => {
        match <$db as $crate::dialect::Dialect>::BACKEND {
            $crate::Backend::Sqlite => concat!($($crate::dialect::sqlite_piece!($piece)),+),
            $crate::Backend::Postgres => concat!($($crate::dialect::postgres_piece!($piece)),+),
        }
    };
}
pub(crate) use sql;

macro_rules! sqlite_piece {
    ({ postgres: $pg:literal, sqlite: $lite:literal $(,)? }) => {
        $lite
    };
    (NOW) => {
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    };
    // Certification (see `crate::certification`): SQLite's batches keep one id per span end
    // (its marks are `(0, id)`), read under PostgreSQL's names.
    (BATCH_COLUMNS) => {
        "seq, root, leaf_count, measurement_count, 0 AS m_after_xid, \
         measurements_after AS m_after_id, 0 AS m_upto_xid, measurements_upto AS m_upto_id, \
         0 AS a_after_xid, audit_after AS a_after_id, 0 AS a_upto_xid, audit_upto AS a_upto_id, \
         created_at, chain_id, contract, tx_hash, block_number, block_time, gas_used, anchored_at"
    };
    (LAST_MARKS) => {
        "SELECT 0 AS m_upto_xid, measurements_upto AS m_upto_id, 0 AS a_upto_xid, \
         audit_upto AS a_upto_id FROM cert_batches ORDER BY seq DESC LIMIT 1"
    };
    (M_XID) => {
        "0 AS xid"
    };
    (A_XID) => {
        "0 AS xid"
    };
    (FOR_UPDATE) => {
        ""
    };
    (FOR_SHARE) => {
        ""
    };
    ($other:tt) => {
        $crate::dialect::common_piece!($other)
    };
}
pub(crate) use sqlite_piece;

macro_rules! postgres_piece {
    ({ postgres: $pg:literal, sqlite: $lite:literal $(,)? }) => {
        $pg
    };
    (NOW) => {
        "bal_now_ms()"
    };
    (BATCH_COLUMNS) => {
        "seq, root, leaf_count, measurement_count, m_after_xid, m_after_id, m_upto_xid, \
         m_upto_id, a_after_xid, a_after_id, a_upto_xid, a_upto_id, created_at, chain_id, \
         contract, tx_hash, block_number, block_time, gas_used, anchored_at"
    };
    (LAST_MARKS) => {
        "SELECT m_upto_xid, m_upto_id, a_upto_xid, a_upto_id FROM cert_batches \
         ORDER BY seq DESC LIMIT 1"
    };
    (M_XID) => {
        "m.xid"
    };
    (A_XID) => {
        "a.xid"
    };
    (FOR_UPDATE) => {
        " FOR UPDATE"
    };
    (FOR_SHARE) => {
        " FOR SHARE"
    };
    ($other:tt) => {
        $crate::dialect::common_piece!($other)
    };
}
pub(crate) use postgres_piece;

macro_rules! common_piece {
    (SUBSCRIPTION_COLUMNS) => {
        "id, consumer, producer, topic, status, creation_date, modification_date, expires_at, \
         decided_by, access"
    };
    (SETPOINT_COLUMNS) => {
        "id, issuer, producer, device, values_json, values_hash, valid_until, seq, state, \
         reason, created_at, updated_at, attempts, signature"
    };
    (USER_COLUMNS) => {
        "username, role, topic, wallet, created_at"
    };
    (USER_COLUMNS_U) => {
        "u.username, u.role, u.topic, u.wallet, u.created_at"
    };
    (MEASUREMENT_COLUMNS) => {
        "id, producer, topic, received_at, payload, payload_hash, fields"
    };
    ($literal:literal) => {
        $literal
    };
}
pub(crate) use common_piece;
