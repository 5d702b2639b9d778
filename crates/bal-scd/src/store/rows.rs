//! Turning rows into `bal-core` values, on either backend. Times are Unix milliseconds on every
//! backend, so that the certified `receivedAtMs` is exactly what the column holds.

use alloy_primitives::{Address, B256};
use bal_core::merkle::{self, LeafValues};
use chrono::{DateTime, Utc};

use crate::StoreResult;
use crate::dialect::{Dialect, get};
use crate::error::corrupt;

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn time(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("timestamp out of range"))
}

/// A column holding text that parses as `T` (names, roles, topics, ids).
pub(crate) fn parse<DB: Dialect, T: std::str::FromStr>(
    row: &DB::Row,
    column: &str,
) -> StoreResult<T> {
    let raw: String = get::<DB, _>(row, column)?;
    raw.parse()
        .map_err(|_| corrupt(format!("{column} = {raw:?}")))
}

pub(crate) fn parse_opt<DB: Dialect, T: std::str::FromStr>(
    row: &DB::Row,
    column: &str,
) -> StoreResult<Option<T>> {
    let raw: Option<String> = get::<DB, _>(row, column)?;
    raw.map(|r| r.parse().map_err(|_| corrupt(format!("{column} = {r:?}"))))
        .transpose()
}

pub(crate) fn user_from_row<DB: Dialect>(row: &DB::Row) -> StoreResult<crate::User> {
    Ok(crate::User {
        username: parse::<DB, _>(row, "username")?,
        role: parse::<DB, bal_core::Role>(row, "role")?,
        topic: parse_opt::<DB, bal_core::Topic>(row, "topic")?,
        wallet: parse::<DB, bal_core::WalletAddress>(row, "wallet")?,
        created_at: time(get::<DB, _>(row, "created_at")?)?,
    })
}

pub(crate) fn subscription_from_row<DB: Dialect>(
    row: &DB::Row,
) -> StoreResult<bal_core::Subscription> {
    Ok(bal_core::Subscription {
        id: parse::<DB, _>(row, "id")?,
        consumer: parse::<DB, _>(row, "consumer")?,
        producer: parse::<DB, _>(row, "producer")?,
        topic: parse::<DB, _>(row, "topic")?,
        status: parse::<DB, _>(row, "status")?,
        creation_date: time(get::<DB, _>(row, "creation_date")?)?,
        modification_date: time(get::<DB, _>(row, "modification_date")?)?,
        expires_at: get::<DB, Option<i64>>(row, "expires_at")?
            .map(time)
            .transpose()?,
        decided_by: parse_opt::<DB, bal_core::Actor>(row, "decided_by")?,
        access: parse::<DB, _>(row, "access")?,
    })
}

pub(crate) fn measurement_from_row<DB: Dialect>(
    row: &DB::Row,
) -> StoreResult<bal_core::Measurement> {
    let hash: Vec<u8> = get::<DB, _>(row, "payload_hash")?;
    let fields: Option<String> = get::<DB, _>(row, "fields")?;
    Ok(bal_core::Measurement {
        id: get::<DB, _>(row, "id")?,
        producer: parse::<DB, _>(row, "producer")?,
        topic: parse::<DB, _>(row, "topic")?,
        received_at: time(get::<DB, _>(row, "received_at")?)?,
        payload: get::<DB, _>(row, "payload")?,
        payload_hash: alloy_primitives::B256::try_from(hash.as_slice())
            .map_err(|_| corrupt("payload_hash"))?,
        fields: fields
            .map(|f| serde_json::from_str(&f).map_err(|_| corrupt("fields")))
            .transpose()?,
    })
}

pub(crate) fn audit_entry_from_row<DB: Dialect>(row: &DB::Row) -> StoreResult<crate::AuditEntry> {
    let detail: String = get::<DB, _>(row, "detail")?;
    Ok(crate::AuditEntry {
        id: get::<DB, _>(row, "id")?,
        at: time(get::<DB, _>(row, "at")?)?,
        actor: parse::<DB, _>(row, "actor")?,
        action: parse::<DB, _>(row, "action")?,
        object: get::<DB, _>(row, "object")?,
        detail: serde_json::from_str(&detail).map_err(|_| corrupt("audit detail is not JSON"))?,
    })
}

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
        access: after.access,
    }
}

/// The audit action of a grant ended because its consumer or producer was deleted.
pub(crate) fn deletion_action(after: &bal_core::Subscription) -> bal_core::AuditAction {
    match after.status {
        bal_core::SubscriptionStatus::Revoked => bal_core::AuditAction::SubscriptionRevoked,
        _ => bal_core::AuditAction::SubscriptionCancelled,
    }
}

// Certification: the values each leaf is made of.

pub(crate) fn b256<DB: Dialect>(row: &DB::Row, column: &str) -> StoreResult<B256> {
    let raw: Vec<u8> = get::<DB, _>(row, column)?;
    B256::try_from(raw.as_slice()).map_err(|_| corrupt(column.to_owned()))
}

pub(crate) fn address(raw: &[u8], column: &str) -> StoreResult<Address> {
    Address::try_from(raw).map_err(|_| corrupt(column.to_owned()))
}

pub(crate) fn u64_of<DB: Dialect>(row: &DB::Row, column: &str) -> StoreResult<u64> {
    let v: i64 = get::<DB, _>(row, column)?;
    u64::try_from(v).map_err(|_| corrupt(column.to_owned()))
}

/// A wallet column as the BAL wrote it (checksummed). Only its hex is checked: the
/// EIP-55 checksum guards typed input, and recomputing it (a keccak per row) was the
/// certifier's largest cost per reading under load (callgrind).
pub(crate) fn wallet<DB: Dialect>(row: &DB::Row) -> StoreResult<Address> {
    let raw: String = get::<DB, _>(row, "wallet")?;
    raw.parse::<Address>()
        .map_err(|_| corrupt("wallet".to_owned()))
}

/// The certified values of an audit entry row joined with its grant and producer.
pub(crate) fn audit_leaf_from_row<DB: Dialect>(
    row: &DB::Row,
) -> StoreResult<(LeafValues, Vec<u8>)> {
    let id: i64 = get::<DB, _>(row, "id")?;
    let at: i64 = get::<DB, _>(row, "at")?;
    let action: String = get::<DB, _>(row, "action")?;
    let detail: String = get::<DB, _>(row, "detail")?;
    let payload = merkle::audit_payload(
        id,
        at,
        &get::<DB, String>(row, "actor")?,
        &action,
        &get::<DB, String>(row, "object")?,
        &detail,
    );
    let values = LeafValues {
        producer_wallet: wallet::<DB>(row)?,
        topic: merkle::audit_topic(&action, &get::<DB, String>(row, "topic")?),
        id: id as u64,
        received_at_ms: at as u64,
        payload_hash: alloy_primitives::keccak256(&payload),
    };
    Ok((values, payload))
}

pub(crate) fn measurement_leaf_from_row<DB: Dialect>(row: &DB::Row) -> StoreResult<LeafValues> {
    Ok(LeafValues {
        producer_wallet: wallet::<DB>(row)?,
        topic: get::<DB, _>(row, "topic")?,
        id: get::<DB, i64>(row, "id")? as u64,
        received_at_ms: get::<DB, i64>(row, "received_at")? as u64,
        payload_hash: b256::<DB>(row, "payload_hash")?,
    })
}
