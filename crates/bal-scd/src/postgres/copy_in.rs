//! Measurements in PostgreSQL's binary `COPY` format, for group commits.
//!
//! Layout (PostgreSQL docs, "COPY", binary format): an 11-byte signature, a flags word and a
//! header-extension length; per row a 16-bit field count, then per field a 32-bit length
//! (-1 for NULL) and the value in the type's binary send format; a 16-bit -1 ends the data.

use bal_core::NewMeasurement;
use sqlx::PgConnection;

use crate::{StoreError, StoreResult};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// The statement [`encode`]'s bytes are for: column order matters.
pub(super) const STATEMENT: &str = "COPY measurements \
     (id, producer, topic, received_at, payload, payload_hash, fields, origin) \
     FROM STDIN (FORMAT BINARY)";

/// Copies `rows` (with their allocated ids) in: two round trips whatever the batch size, and
/// no arrays for the server to unpack.
pub(super) async fn copy_rows(
    conn: &mut PgConnection,
    rows: &[(i64, &NewMeasurement)],
    received_at_ms: i64,
) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let data = encode(rows, received_at_ms)?;
    let mut copy = conn.copy_in_raw(STATEMENT).await?;
    if let Err(e) = copy.send(data).await {
        // Abort so that the connection is usable again; the transaction fails either way.
        let _ = copy.abort("sending the rows failed").await;
        return Err(e.into());
    }
    copy.finish().await?;
    Ok(())
}

/// The rows as one binary COPY stream.
pub(super) fn encode(rows: &[(i64, &NewMeasurement)], received_at_ms: i64) -> StoreResult<Vec<u8>> {
    let size: usize = rows
        .iter()
        .map(|(_, m)| 96 + m.producer.as_str().len() + m.topic.as_str().len() + m.payload.len())
        .sum();
    let mut out = Vec::with_capacity(SIGNATURE.len() + 8 + size + 2);
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
    out.extend_from_slice(&0i32.to_be_bytes()); // no header extension
    for (id, m) in rows {
        let fields = m
            .fields
            .as_ref()
            .map(|f| serde_json::to_string(f).map_err(StoreError::backend))
            .transpose()?;
        out.extend_from_slice(&8i16.to_be_bytes());
        field(&mut out, Some(&id.to_be_bytes()))?;
        field(&mut out, Some(m.producer.as_str().as_bytes()))?;
        field(&mut out, Some(m.topic.as_str().as_bytes()))?;
        field(&mut out, Some(&received_at_ms.to_be_bytes()))?;
        field(&mut out, Some(&m.payload))?;
        field(&mut out, Some(m.payload_hash.as_slice()))?;
        field(&mut out, fields.as_deref().map(str::as_bytes))?;
        field(&mut out, m.origin.map(i64::to_be_bytes).as_ref().map(|o| &o[..]))?;
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(out)
}

fn field(out: &mut Vec<u8>, value: Option<&[u8]>) -> StoreResult<()> {
    match value {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(v) => {
            let len = i32::try_from(v.len())
                .map_err(|_| StoreError::Conflict("a value over 2 GiB cannot be stored".into()))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_is_laid_out_as_postgresql_reads_it() {
        let topic = bal_core::Topic::parse("platone/p1").unwrap();
        let m = NewMeasurement::new(topic, b"x".to_vec()).with_origin(7, false);
        let out = encode(&[(5, &m)], 1000).unwrap();
        assert_eq!(&out[..11], SIGNATURE);
        assert_eq!(&out[11..19], &[0; 8]);
        assert_eq!(&out[19..21], &8i16.to_be_bytes());
        // id: length 8, then 5 as a big-endian int8.
        assert_eq!(&out[21..25], &8i32.to_be_bytes());
        assert_eq!(&out[25..33], &5i64.to_be_bytes());
        // producer: length 2, "p1".
        assert_eq!(&out[33..37], &2i32.to_be_bytes());
        assert_eq!(&out[37..39], b"p1");
        // `fields` of a non-JSON payload is NULL, then the origin, then the trailer.
        let tail = &out[out.len() - 18..];
        assert_eq!(&tail[..4], &(-1i32).to_be_bytes());
        assert_eq!(&tail[4..8], &8i32.to_be_bytes());
        assert_eq!(&tail[8..16], &7i64.to_be_bytes());
        assert_eq!(&tail[16..18], &(-1i16).to_be_bytes());
    }
}
