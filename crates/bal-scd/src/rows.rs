//! Turning rows into `bal-core` values: one path, instantiated for each backend's row type by
//! [`row_mapping!`] (the two drivers' row types share no trait that would let one generic
//! function decode both without a wall of bounds). Times are Unix milliseconds on every
//! backend, so that the certified `receivedAtMs` is exactly what the column holds.

use chrono::{DateTime, Utc};

use crate::StoreResult;
use crate::error::corrupt;

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn time(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("timestamp out of range"))
}

/// Defines `get`, `parse`, `parse_opt`, `user_from_row`, `subscription_from_row` and
/// `measurement_from_row` for `$row` (a driver's row type) in the calling module.
macro_rules! row_mapping {
    ($row:ty, $db:ty) => {
        #[allow(dead_code)]
        pub(crate) fn get<'r, T>(row: &'r $row, column: &str) -> $crate::StoreResult<T>
        where
            T: sqlx::Decode<'r, $db> + sqlx::Type<$db>,
        {
            Ok(sqlx::Row::try_get(row, column)?)
        }

        pub(crate) fn parse<T: std::str::FromStr>(
            row: &$row,
            column: &str,
        ) -> $crate::StoreResult<T> {
            let raw: String = get(row, column)?;
            raw.parse()
                .map_err(|_| $crate::error::corrupt(format!("{column} = {raw:?}")))
        }

        pub(crate) fn parse_opt<T: std::str::FromStr>(
            row: &$row,
            column: &str,
        ) -> $crate::StoreResult<Option<T>> {
            let raw: Option<String> = get(row, column)?;
            raw.map(|r| {
                r.parse()
                    .map_err(|_| $crate::error::corrupt(format!("{column} = {r:?}")))
            })
            .transpose()
        }

        pub(crate) fn user_from_row(row: &$row) -> $crate::StoreResult<$crate::User> {
            Ok($crate::User {
                username: parse(row, "username")?,
                role: parse::<bal_core::Role>(row, "role")?,
                topic: parse_opt::<bal_core::Topic>(row, "topic")?,
                wallet: parse::<bal_core::WalletAddress>(row, "wallet")?,
                created_at: $crate::rows::time(get(row, "created_at")?)?,
            })
        }

        pub(crate) fn subscription_from_row(
            row: &$row,
        ) -> $crate::StoreResult<bal_core::Subscription> {
            Ok(bal_core::Subscription {
                id: parse(row, "id")?,
                consumer: parse(row, "consumer")?,
                producer: parse(row, "producer")?,
                topic: parse(row, "topic")?,
                status: parse(row, "status")?,
                creation_date: $crate::rows::time(get(row, "creation_date")?)?,
                modification_date: $crate::rows::time(get(row, "modification_date")?)?,
                expires_at: get::<Option<i64>>(row, "expires_at")?
                    .map($crate::rows::time)
                    .transpose()?,
                decided_by: parse_opt::<bal_core::Actor>(row, "decided_by")?,
            })
        }

        pub(crate) fn measurement_from_row(
            row: &$row,
        ) -> $crate::StoreResult<bal_core::Measurement> {
            let hash: Vec<u8> = get(row, "payload_hash")?;
            let fields: Option<String> = get(row, "fields")?;
            Ok(bal_core::Measurement {
                id: get(row, "id")?,
                producer: parse(row, "producer")?,
                topic: parse(row, "topic")?,
                received_at: $crate::rows::time(get(row, "received_at")?)?,
                payload: get(row, "payload")?,
                payload_hash: alloy_primitives::B256::try_from(hash.as_slice())
                    .map_err(|_| $crate::error::corrupt("payload_hash"))?,
                fields: fields
                    .map(|f| serde_json::from_str(&f).map_err(|_| $crate::error::corrupt("fields")))
                    .transpose()?,
            })
        }

        pub(crate) fn audit_entry_from_row(row: &$row) -> $crate::StoreResult<$crate::AuditEntry> {
            let detail: String = get(row, "detail")?;
            Ok($crate::AuditEntry {
                id: get(row, "id")?,
                at: $crate::rows::time(get(row, "at")?)?,
                actor: parse(row, "actor")?,
                action: parse(row, "action")?,
                object: get(row, "object")?,
                detail: serde_json::from_str(&detail)
                    .map_err(|_| $crate::error::corrupt("audit detail is not JSON"))?,
            })
        }
    };
}
pub(crate) use row_mapping;

// Column lists as macros so that every query stays a `&'static str`: sqlx refuses SQL built
// at run time unless it is asserted safe, and none of ours needs to be. The same on every
// backend.
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
pub(crate) use user_columns;

macro_rules! subscription_columns {
    () => {
        "id, consumer, producer, topic, status, creation_date, modification_date, expires_at, \
         decided_by"
    };
}
pub(crate) use subscription_columns;

macro_rules! measurement_columns {
    () => {
        "id, producer, topic, received_at, payload, payload_hash, fields"
    };
}
pub(crate) use measurement_columns;

/// What a subscription's change writes in the audit log, besides its action.
pub(crate) fn transition_detail(
    before: &bal_core::Subscription,
    after: &bal_core::Subscription,
    reason: Option<&str>,
) -> bal_core::AuditDetail {
    bal_core::AuditDetail::Transition {
        from: before.status,
        to: after.status,
        consumer: after.consumer.clone(),
        topic: after.topic.clone(),
        expires_at: after.expires_at,
        reason: reason.map(str::to_owned),
    }
}

/// The audit action of a grant ended because its consumer or producer was deleted.
pub(crate) fn deletion_action(after: &bal_core::Subscription) -> bal_core::AuditAction {
    match after.status {
        bal_core::SubscriptionStatus::Revoked => bal_core::AuditAction::SubscriptionRevoked,
        _ => bal_core::AuditAction::SubscriptionCancelled,
    }
}

/// Certification's row helpers for `$row` (leaf values of measurements and audit entries), in
/// the calling module.
macro_rules! cert_rows {
    ($row:ty) => {
        fn b256(row: &$row, column: &str) -> StoreResult<B256> {
            let raw: Vec<u8> = get(row, column)?;
            B256::try_from(raw.as_slice()).map_err(|_| corrupt(column.to_owned()))
        }

        fn address(raw: &[u8], column: &str) -> StoreResult<Address> {
            Address::try_from(raw).map_err(|_| corrupt(column.to_owned()))
        }

        fn u64_of(row: &$row, column: &str) -> StoreResult<u64> {
            let v: i64 = get(row, column)?;
            u64::try_from(v).map_err(|_| corrupt(column.to_owned()))
        }

        /// A wallet column as the BAL wrote it (checksummed). Only its hex is checked: the
        /// EIP-55 checksum guards typed input, and recomputing it (a keccak per row) was the
        /// certifier's largest cost per reading under load (callgrind).
        fn wallet(row: &$row) -> StoreResult<Address> {
            let raw: String = get(row, "wallet")?;
            raw.parse::<Address>()
                .map_err(|_| corrupt("wallet".to_owned()))
        }

        /// The certified values of an audit entry row joined with its grant and producer.
        fn audit_leaf_from_row(row: &$row) -> StoreResult<(LeafValues, Vec<u8>)> {
            let id: i64 = get(row, "id")?;
            let at: i64 = get(row, "at")?;
            let action: String = get(row, "action")?;
            let detail: String = get(row, "detail")?;
            let payload = merkle::audit_payload(
                id,
                at,
                &get::<String>(row, "actor")?,
                &action,
                &get::<String>(row, "object")?,
                &detail,
            );
            let values = LeafValues {
                producer_wallet: wallet(row)?,
                topic: merkle::audit_topic(&action, &get::<String>(row, "topic")?),
                id: id as u64,
                received_at_ms: at as u64,
                payload_hash: alloy_primitives::keccak256(&payload),
            };
            Ok((values, payload))
        }

        fn measurement_leaf_from_row(row: &$row) -> StoreResult<LeafValues> {
            Ok(LeafValues {
                producer_wallet: wallet(row)?,
                topic: get(row, "topic")?,
                id: get::<i64>(row, "id")? as u64,
                received_at_ms: get::<i64>(row, "received_at")? as u64,
                payload_hash: b256(row, "payload_hash")?,
            })
        }
    };
}
pub(crate) use cert_rows;
