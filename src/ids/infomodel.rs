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
/// `compact_json` would have written. The chain's canonical JSON (`store::chain`) specifies the
/// same escapes, and writes its strings with this too.
pub(crate) fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let bytes = text.as_bytes();
    let mut plain_from = 0;
    while let Some(at) = next_to_escape(bytes, plain_from) {
        // `at` is an ASCII byte, so both slices end on character boundaries.
        out.push_str(&text[plain_from..at]);
        plain_from = at + 1;
        let byte = bytes[at];
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
        }
    }
    out.push_str(&text[plain_from..]);
    out.push('"');
}

/// Where the first byte from `from` on that a JSON string must escape is: a control character,
/// `"` or `\`. Eight bytes at a time while there is none (a DAT in a header is about 1.5 KiB
/// that needs no escape), with the word tricks of "Bit Twiddling Hacks" (`haszero`, `hasless`),
/// which tell exactly whether a word holds such a byte; the byte loop then finds it.
fn next_to_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let has_zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGH_BITS != 0;
    let mut at = from;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH_BITS != 0;
        if control
            || has_zero_byte(word ^ (ONES * u64::from(b'"')))
            || has_zero_byte(word ^ (ONES * u64::from(b'\\')))
        {
            break;
        }
        at += 8;
    }
    bytes
        .get(at..)?
        .iter()
        .position(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
        .map(|offset| at + offset)
}

pub(crate) fn ids_context() -> Value {
    json!({"ids": IDS_NAMESPACE, "idsc": IDS_CODE_NAMESPACE})
}

/// RFC 3339 in UTC with exactly three fractional digits, the precision entries are stored with.
pub(crate) fn rfc3339_ms(instant: OffsetDateTime) -> String {
    let utc = instant.to_offset(UtcOffset::UTC);
    // Digit by digit: `format!` spent about 3,000 instructions on each reply header's
    // `ids:issued` (BENCHMARKS.md, issue 14, "Request path"). Like `{:04}`, a negative year
    // counts its sign in the four places.
    let mut text = String::with_capacity(24);
    let year = utc.year();
    if year < 0 {
        text.push('-');
    }
    push_padded(&mut text, year.unsigned_abs(), if year < 0 { 3 } else { 4 });
    let fields = [
        ('-', u32::from(u8::from(utc.month())), 2),
        ('-', u32::from(utc.day()), 2),
        ('T', u32::from(utc.hour()), 2),
        (':', u32::from(utc.minute()), 2),
        (':', u32::from(utc.second()), 2),
        ('.', u32::from(utc.millisecond()), 3),
    ];
    for (separator, value, width) in fields {
        text.push(separator);
        push_padded(&mut text, value, width);
    }
    text.push('Z');
    text
}

/// `value` in decimal, with leading zeros to at least `width` digits.
fn push_padded(out: &mut String, value: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut start = digits.len();
    let mut rest = value;
    loop {
        start -= 1;
        // A digit, so the cast cannot truncate.
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let start = start.min(digits.len().saturating_sub(width));
    digits[start..]
        .iter()
        .for_each(|&digit| out.push(char::from(digit)));
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
        let mut texts = vec![
            String::new(),
            "plain".into(),
            "\"".into(),
            "a\\b".into(),
            every_ascii,
        ];
        // Each escaped byte at every offset of a long plain text, as word and byte loops see it.
        for escaped in ['"', '\\', '\n', '\u{0}', '\u{1f}', '\u{7f}', 'é'] {
            for at in 0..20 {
                let mut text = "x".repeat(40);
                text.insert(at, escaped);
                texts.push(text);
            }
        }
        for text in &texts {
            let mut out = String::from("x");
            push_json_string(&mut out, text);
            assert_eq!(out, format!("x{}", Value::from(text.as_str())), "{text:?}");
        }
    }

    #[test]
    fn rfc3339_ms_writes_what_format_writes() {
        let seconds = [
            -377_705_116_800, // -9999-01-01
            -62_198_755_200,  // -0001-01-01
            -62_135_596_800,  // 0001-01-01
            0,
            951_782_400, // 2000-02-29
            1_710_028_800,
            253_402_300_799, // 9999-12-31T23:59:59
        ];
        for second in seconds {
            for millis in [0, 7, 999] {
                let instant = OffsetDateTime::from_unix_timestamp(second).unwrap()
                    + time::Duration::milliseconds(millis);
                let expected = format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                    instant.year(),
                    u8::from(instant.month()),
                    instant.day(),
                    instant.hour(),
                    instant.minute(),
                    instant.second(),
                    instant.millisecond()
                );
                assert_eq!(rfc3339_ms(instant), expected);
            }
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
