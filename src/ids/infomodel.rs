//! The Information Model vocabulary every IDS message here shares: namespaces, the model
//! version, the literal shapes dates take, and the compact JSON text messages are written as.
//!
//! Requests, replies, rejections and query documents all write these; keeping them in one
//! leaf room lets each of those rooms use them without importing one another.

use serde_json::{json, Value};
use time::{OffsetDateTime, UtcOffset};

pub(crate) const IDS_NAMESPACE: &str = "https://w3id.org/idsa/core/";
pub(crate) const IDS_CODE_NAMESPACE: &str = "https://w3id.org/idsa/code/";
pub(crate) const MODEL_VERSION: &str = "4.2.7";
pub(crate) const XSD_DATE_TIME_STAMP: &str = "http://www.w3.org/2001/XMLSchema#dateTimeStamp";
/// [`ids_context`] as compact JSON text, for headers written as text.
pub(crate) const IDS_CONTEXT_JSON: &str =
    r#"{"ids":"https://w3id.org/idsa/core/","idsc":"https://w3id.org/idsa/code/"}"#;

/// The compact JSON text of `value`: the same bytes as `value.to_string()`, written straight
/// into one buffer. `Display` passes every fragment through `fmt::Formatter`, which made the JSON
/// headers and payloads of each request and reply cost about twice what they need (see
/// BENCHMARKS.md). Serializing a `Value` into memory cannot fail (its keys are strings); if it
/// ever did, the empty text would make the peer drop the message, not the server panic.
pub(crate) fn compact_json(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Appends `text` to `out` as a JSON string literal, escaped exactly as `serde_json` escapes it
/// (`\"`, `\\`, the short escapes of `\b \f \n \r \t`, `\u00XX` for other control characters,
/// everything else as is), so that headers written as text read back as the same bytes
/// `compact_json` would have written.
pub(crate) fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut plain_from = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[plain_from..at]);
        plain_from = at + 1;
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escape);
        }
    }
    out.push_str(&text[plain_from..]);
    out.push('"');
}

pub(crate) fn ids_context() -> Value {
    json!({"ids": IDS_NAMESPACE, "idsc": IDS_CODE_NAMESPACE})
}

/// RFC 3339 in UTC with exactly three fractional digits, the precision entries are stored with.
pub(crate) fn rfc3339_ms(instant: OffsetDateTime) -> String {
    let utc = instant.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.millisecond()
    )
}

/// A typed `xsd:dateTimeStamp` literal, the shape Infomodel uses for `ids:issued`.
pub(crate) fn xsd_date_time_stamp(instant: OffsetDateTime) -> Value {
    json!({"@value": rfc3339_ms(instant), "@type": XSD_DATE_TIME_STAMP})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_json_writes_what_to_string_writes() {
        let value = json!({
            "documents": [{"payload": "line\n\"quoted\" \u{7f} \u{1F600}", "sequence": 1}],
            "total": 1_000_000u64,
            "date_from": null,
            "ratio": 0.5,
        });
        assert_eq!(compact_json(&value), value.to_string());
    }

    #[test]
    fn the_context_text_is_the_context() {
        assert_eq!(IDS_CONTEXT_JSON, compact_json(&ids_context()));
    }

    #[test]
    fn push_json_string_escapes_as_serde_json_does() {
        let mut every_ascii: String = (0u8..0x80).map(char::from).collect();
        every_ascii.push_str("é \u{2028} \u{1F600} \"end\\");
        for text in ["", "plain", "\"", "a\\b", every_ascii.as_str()] {
            let mut out = String::from("x");
            push_json_string(&mut out, text);
            assert_eq!(out, format!("x{}", Value::from(text)), "{text:?}");
        }
    }

    #[test]
    fn rfc3339_ms_is_utc_with_three_digits() {
        let instant = OffsetDateTime::from_unix_timestamp_nanos(1_710_028_800_007_900_000)
            .unwrap()
            .to_offset(UtcOffset::from_hms(2, 0, 0).unwrap());
        assert_eq!(rfc3339_ms(instant), "2024-03-10T00:00:00.007Z");
    }
}
