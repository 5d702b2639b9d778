//! HTTPS upload bodies (P-BAP-02): a JSON array, or NDJSON (one JSON value per line), split into
//! the payloads they carry. Parsed here, apart from HTTP, so that the rules are one function
//! that tests and the fuzzer call directly.

/// The most readings in one upload: one transaction, all or nothing.
pub const MAX_READINGS: usize = 10_000;

/// How an upload body is laid out, from its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadFormat {
    /// `application/json`: one array of values.
    JsonArray,
    /// `application/x-ndjson` (or `application/ndjson`): one value per line; blank lines are
    /// skipped.
    Ndjson,
}

impl UploadFormat {
    /// The format a `content-type` names (parameters such as `charset` are ignored), or `None`.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("application/json") {
            Some(Self::JsonArray)
        } else if essence.eq_ignore_ascii_case("application/x-ndjson")
            || essence.eq_ignore_ascii_case("application/ndjson")
        {
            Some(Self::Ndjson)
        } else {
            None
        }
    }
}

/// Why an upload body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// Not the JSON the format promises (HTTP 400).
    #[error("{0}")]
    Malformed(String),
    /// Valid, but without a reading (HTTP 422).
    #[error("no readings in the upload")]
    Empty,
    /// More than [`MAX_READINGS`] (HTTP 413).
    #[error("{0} readings in one upload; at most {MAX_READINGS}")]
    TooMany(usize),
}

/// Splits an upload into payloads. A JSON string is a text payload (stored as its characters);
/// any other value is stored as compact JSON. On success there are 1 to [`MAX_READINGS`]
/// payloads.
pub fn split_upload(format: UploadFormat, body: &[u8]) -> Result<Vec<Vec<u8>>, UploadError> {
    let values: Vec<serde_json::Value> = match format {
        UploadFormat::JsonArray => serde_json::from_slice(body)
            .map_err(|e| UploadError::Malformed(format!("body is not a JSON array: {e}")))?,
        UploadFormat::Ndjson => body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .map(|(n, line)| {
                serde_json::from_slice(line)
                    .map_err(|e| UploadError::Malformed(format!("line {}: {e}", n + 1)))
            })
            .collect::<Result<_, _>>()?,
    };
    if values.is_empty() {
        return Err(UploadError::Empty);
    }
    if values.len() > MAX_READINGS {
        return Err(UploadError::TooMany(values.len()));
    }
    Ok(values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => s.into_bytes(),
            other => other.to_string().into_bytes(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_name_their_format() {
        use UploadFormat::*;
        let f = UploadFormat::from_content_type;
        assert_eq!(f("application/json"), Some(JsonArray));
        assert_eq!(f("Application/JSON; charset=utf-8"), Some(JsonArray));
        assert_eq!(f("application/x-ndjson"), Some(Ndjson));
        assert_eq!(f("application/ndjson"), Some(Ndjson));
        assert_eq!(f("text/plain"), None);
        assert_eq!(f(""), None);
    }

    #[test]
    fn strings_are_text_payloads_and_other_values_compact_json() {
        let body = br#"["230.1\t50.0", {"p": 1.5 }, 7]"#;
        let got = split_upload(UploadFormat::JsonArray, body).unwrap();
        assert_eq!(
            got,
            vec![
                b"230.1\t50.0".to_vec(),
                br#"{"p":1.5}"#.to_vec(),
                b"7".to_vec()
            ]
        );
    }

    #[test]
    fn ndjson_skips_blank_lines_and_names_the_bad_one() {
        let got = split_upload(UploadFormat::Ndjson, b"{\"a\":1}\n\n  \r\n\"x\"\n").unwrap();
        assert_eq!(got, vec![br#"{"a":1}"#.to_vec(), b"x".to_vec()]);
        let err = split_upload(UploadFormat::Ndjson, b"1\n2\n{oops\n").unwrap_err();
        assert!(
            matches!(&err, UploadError::Malformed(m) if m.starts_with("line 3:")),
            "{err}"
        );
    }

    #[test]
    fn empty_oversized_and_non_array_uploads_are_refused() {
        assert_eq!(
            split_upload(UploadFormat::JsonArray, b"[]"),
            Err(UploadError::Empty)
        );
        assert_eq!(
            split_upload(UploadFormat::Ndjson, b"\n \n"),
            Err(UploadError::Empty)
        );
        let many = format!("[{}]", vec!["1"; MAX_READINGS + 1].join(","));
        assert_eq!(
            split_upload(UploadFormat::JsonArray, many.as_bytes()),
            Err(UploadError::TooMany(MAX_READINGS + 1))
        );
        assert!(matches!(
            split_upload(UploadFormat::JsonArray, b"{\"a\":1}"),
            Err(UploadError::Malformed(_))
        ));
    }
}
