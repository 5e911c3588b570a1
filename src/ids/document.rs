//! How stored entries are shown in query results: each as an `ids:LogMessage` JSON-LD document
//! (the reference's shape, which clients parse), and a page of them with its paging facts.
//!
//! A document must still deserialize as an Infomodel LogMessage even when the stored header
//! lacks a field the Java model requires, so missing ones are filled from the entry itself.
//! The entry's own facts (hashes, sequence, payload) always override same-named header keys:
//! they are what the receipt and the chain vouch for. A header stored in another JSON-LD
//! spelling than `ids:` (see `jsonld`) is shown as stored, with the fields it has in any spelling
//! not filled twice, and the `ids` prefix declared in its context for the names written here.

use base64::Engine as _;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::infomodel::{
    ids_context, rfc3339_ms, xsd_date_time_stamp, IDS_NAMESPACE, MODEL_VERSION,
};
use super::jsonld::{context_declares_ids_prefix, Names};
use super::params::QueryParams;
use super::rejection::{Rejection, RejectionReason};

/// One stored entry, borrowed from wherever the store keeps it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogDocument<'a> {
    /// The stored header (see [`super::RequestHeader::stored`]).
    pub(crate) header: &'a Value,
    pub(crate) payload: &'a [u8],
    /// The payload's media type as sent; empty when none was.
    pub(crate) payload_type: &'a str,
    pub(crate) document_id: &'a str,
    pub(crate) sequence: u64,
    pub(crate) timestamp_ms: i64,
    pub(crate) client_id: &'a str,
    pub(crate) entry_hash: &'a [u8],
    pub(crate) chain_hash: &'a [u8],
    /// The process was erased: header and payload are gone, and the document says so with
    /// `"erased": true` (and an empty payload).
    pub(crate) erased: bool,
}

/// The entry as an `ids:LogMessage` document. Fails only for a timestamp outside the years
/// -9999..=9999, which only a damaged store holds.
pub(crate) fn log_document(entry: &LogDocument) -> Result<Value, Rejection> {
    let timestamp =
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(entry.timestamp_ms) * 1_000_000)
            .map_err(|_| {
                Rejection::with_default_status(
                    RejectionReason::InternalRecipientError,
                    format!(
                        "stored entry {} has an impossible timestamp",
                        entry.document_id
                    ),
                )
            })?;

    let mut document = entry.header.as_object().cloned().unwrap_or_default();
    let names = Names::of(&document);
    document.insert("@type".into(), "ids:LogMessage".into());
    declare_ids_prefix(&mut document);
    document.entry("@id").or_insert_with(|| {
        format!(
            "https://w3id.org/idsa/autogen/logMessage/{}",
            entry.document_id
        )
        .into()
    });
    let mut fill_ids = |term: &str, value: Value| {
        if !names.has(&document, term) {
            document.insert(format!("ids:{term}"), value);
        }
    };
    fill_ids("modelVersion", MODEL_VERSION.into());
    fill_ids("issued", xsd_date_time_stamp(timestamp));
    fill_ids("issuerConnector", client_reference(entry.client_id));
    fill_ids("senderAgent", client_reference(entry.client_id));

    let (payload, encoding) = render_payload(entry.payload, entry.payload_type);
    document.insert("payload".into(), payload.into());
    document.insert("payload_type".into(), entry.payload_type.into());
    document.insert("payload_encoding".into(), encoding.into());
    document.insert("document_id".into(), entry.document_id.into());
    document.insert("sequence".into(), entry.sequence.into());
    document.insert("timestamp".into(), rfc3339_ms(timestamp).into());
    document.insert("client_id".into(), entry.client_id.into());
    document.insert("entry_hash".into(), hex::encode(entry.entry_hash).into());
    document.insert("chain_hash".into(), hex::encode(entry.chain_hash).into());
    if entry.erased {
        document.insert("erased".into(), true.into());
    }
    Ok(Value::Object(document))
}

/// The document writes `ids:` names, and a header stored in another spelling (full IRIs, terms
/// under `@vocab`) may carry a context in which `ids:` means nothing to a JSON-LD processor: the
/// binding is added to it. A context that already declares it is left as it was.
fn declare_ids_prefix(document: &mut Map<String, Value>) {
    match document.get_mut("@context") {
        None => {
            document.insert("@context".into(), ids_context());
        }
        Some(context) if context_declares_ids_prefix(context) => {}
        Some(Value::Object(definitions)) if !definitions.contains_key("ids") => {
            definitions.insert("ids".into(), IDS_NAMESPACE.into());
        }
        Some(Value::Array(contexts)) => contexts.push(ids_context()),
        Some(context) => *context = json!([context.take(), ids_context()]),
    }
}

/// The Infomodel wants an IRI here, and a client id (`SKI:keyid:AKI`, or a DAT `sub`) is not
/// always one, so it is percent-encoded into a URN.
fn client_reference(client_id: &str) -> Value {
    let mut urn = String::from("urn:clearinghouse:client:");
    for byte in client_id.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:".contains(&byte) {
            urn.push(char::from(byte));
        } else {
            urn.push_str(&format!("%{byte:02X}"));
        }
    }
    json!({"@id": urn})
}

/// Text is shown as text only when it is valid UTF-8 and declared textual: bytes that merely
/// happen to decode (an image, or text in another charset) would otherwise be shown wrong.
fn render_payload(payload: &[u8], media_type: &str) -> (String, &'static str) {
    match std::str::from_utf8(payload) {
        Ok(text) if is_textual(media_type) => (text.to_owned(), "utf-8"),
        _ => (
            base64::engine::general_purpose::STANDARD.encode(payload),
            "base64",
        ),
    }
}

fn is_textual(media_type: &str) -> bool {
    let mut parts = media_type.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let other_charset = parts.any(|param| {
        let Some((name, value)) = param.split_once('=') else {
            return false;
        };
        let value = value.trim().trim_matches('"');
        name.trim().eq_ignore_ascii_case("charset")
            && !value.eq_ignore_ascii_case("utf-8")
            && !value.eq_ignore_ascii_case("us-ascii")
    });
    if other_charset {
        return false;
    }
    if essence.is_empty() {
        return true;
    }
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind == "text"
        || subtype == "json"
        || subtype.ends_with("+json")
        || subtype == "xml"
        || subtype.ends_with("+xml")
}

/// The ResultMessage payload of a page query. `pages` lets a client know when it has
/// everything; a page past the end simply has no documents.
pub fn page_payload(query: &QueryParams, total: u64, documents: Vec<Value>) -> Value {
    json!({
        "date_from": query.date_from_text,
        "date_to": query.date_to_text,
        "page": query.page,
        "size": query.size,
        "order": query.order.as_str(),
        "total": total,
        "pages": total.div_ceil(query.size),
        "documents": documents,
    })
}

/// A process as the ResultMessage payload of a process-info query (`ch-ids-operation: info`).
pub(crate) struct ProcessInfoDocument<'a> {
    pub(crate) pid: &'a str,
    /// Sorted.
    pub(crate) owners: Vec<&'a str>,
    pub(crate) created_at_ms: i64,
    /// The latest entry's sequence: also the number of entries, owner changes included.
    pub(crate) head_sequence: u64,
    pub(crate) head_chain_hash: &'a [u8],
    /// `plaintext`, `encrypted` or `erased`.
    pub(crate) content: &'a str,
    /// Who erased the process and when (UTC ms), if it was.
    pub(crate) erasure: Option<(&'a str, i64)>,
}

/// UTC milliseconds as RFC 3339 with milliseconds; empty outside the years -9999..=9999.
pub(crate) fn rfc3339_of_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(rfc3339_ms)
        .unwrap_or_default()
}

/// `{"pid", "owners", "created_at", "entries", "head": {"sequence", "chain_hash"}, "content",
/// "erasure": {"by", "at"}}`, the chain hash in hex as in receipts: a client compares it with
/// its latest receipt's; `erasure` only for an erased process, so auditors see who erased it
/// and when.
pub(crate) fn process_info_payload(info: &ProcessInfoDocument) -> Value {
    let mut payload = json!({
        "pid": info.pid,
        "owners": info.owners,
        "created_at": rfc3339_of_ms(info.created_at_ms),
        "entries": info.head_sequence,
        "head": {
            "sequence": info.head_sequence,
            "chain_hash": hex::encode(info.head_chain_hash),
        },
        "content": info.content,
    });
    if let Some((by, at_ms)) = info.erasure {
        payload["erasure"] = json!({ "by": by, "at": rfc3339_of_ms(at_ms) });
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::params::{QueryParams, SortOrder};

    const HASH_A: [u8; 4] = [0xAB, 0xCD, 0x01, 0x23];
    const HASH_B: [u8; 2] = [0xFF, 0x00];

    fn entry<'a>(header: &'a Value, payload: &'a [u8], payload_type: &'a str) -> LogDocument<'a> {
        LogDocument {
            header,
            payload,
            payload_type,
            document_id: "7d4c1a9e-4c1f-4f3e-9a55-2b1d1c0e9f10",
            sequence: 3,
            timestamp_ms: 1_710_028_800_123,
            client_id: "AA:BB:keyid:CC:DD",
            entry_hash: &HASH_A,
            chain_hash: &HASH_B,
            erased: false,
        }
    }

    #[test]
    fn stored_header_fields_are_kept_and_entry_facts_added() {
        let header = json!({
            "@context": "https://w3id.org/idsa/contexts/context.jsonld",
            "@type": "ids:LogMessage",
            "@id": "https://w3id.org/idsa/autogen/logMessage/original",
            "ids:modelVersion": "4.1.0",
            "ids:issued": {"@value": "2024-03-09T10:00:00.000+01:00", "@type": "http://www.w3.org/2001/XMLSchema#dateTimeStamp"},
            "ids:issuerConnector": {"@id": "https://client.example/connector"},
            "ids:senderAgent": {"@id": "https://client.example/agent"},
            "ids:contentVersion": "2",
            "payload": "a header key the entry overrides",
        });
        let document = log_document(&entry(&header, b"{\"a\":1}", "application/json")).unwrap();
        let mut expected = header.clone();
        let expected_map = expected.as_object_mut().unwrap();
        for (key, value) in [
            ("payload", json!("{\"a\":1}")),
            ("payload_type", json!("application/json")),
            ("payload_encoding", json!("utf-8")),
            ("document_id", json!("7d4c1a9e-4c1f-4f3e-9a55-2b1d1c0e9f10")),
            ("sequence", json!(3)),
            ("timestamp", json!("2024-03-10T00:00:00.123Z")),
            ("client_id", json!("AA:BB:keyid:CC:DD")),
            ("entry_hash", json!("abcd0123")),
            ("chain_hash", json!("ff00")),
        ] {
            expected_map.insert(key.into(), value);
        }
        assert_eq!(document, expected);
    }

    #[test]
    fn missing_infomodel_fields_are_filled_from_the_entry() {
        let header = json!({"@type": "https://w3id.org/idsa/core/LogMessage"});
        let document = log_document(&entry(&header, b"x", "text/plain")).unwrap();
        assert_eq!(document["@type"], json!("ids:LogMessage"));
        assert_eq!(
            document["@context"],
            json!({"ids": "https://w3id.org/idsa/core/", "idsc": "https://w3id.org/idsa/code/"})
        );
        assert_eq!(
            document["@id"],
            json!("https://w3id.org/idsa/autogen/logMessage/7d4c1a9e-4c1f-4f3e-9a55-2b1d1c0e9f10")
        );
        assert_eq!(document["ids:modelVersion"], json!("4.2.7"));
        assert_eq!(
            document["ids:issued"],
            json!({"@value": "2024-03-10T00:00:00.123Z", "@type": "http://www.w3.org/2001/XMLSchema#dateTimeStamp"})
        );
        let client = json!({"@id": "urn:clearinghouse:client:AA:BB:keyid:CC:DD"});
        assert_eq!(document["ids:issuerConnector"], client);
        assert_eq!(document["ids:senderAgent"], client);
    }

    #[test]
    fn headers_in_other_spellings_are_not_filled_twice_and_get_the_ids_prefix() {
        let header = json!({
            "@context": {"@vocab": "https://w3id.org/idsa/core/"},
            "@type": "LogMessage",
            "@id": "urn:m:1",
            "modelVersion": "4.1.0",
            "https://w3id.org/idsa/core/issued": "2024-03-09T10:00:00Z",
            "issuerConnector": {"@id": "https://client.example/connector"},
            "senderAgent": [{"@id": "https://client.example/agent"}],
        });
        let document = log_document(&entry(&header, b"x", "text/plain")).unwrap();
        let mut expected_header = header.clone();
        expected_header["@context"]["ids"] = json!("https://w3id.org/idsa/core/");
        expected_header["@type"] = json!("ids:LogMessage");
        for (key, value) in expected_header.as_object().unwrap() {
            assert_eq!(&document[key], value, "{key}");
        }
        for key in [
            "ids:modelVersion",
            "ids:issued",
            "ids:issuerConnector",
            "ids:senderAgent",
        ] {
            assert!(document.get(key).is_none(), "{key} filled twice");
        }
        for (context, expected) in [
            (
                json!("https://example.org/context.jsonld"),
                json!(["https://example.org/context.jsonld", ids_context()]),
            ),
            (json!(["urn:x"]), json!(["urn:x", ids_context()])),
            (
                json!("https://w3id.org/idsa/contexts/context.jsonld"),
                json!("https://w3id.org/idsa/contexts/context.jsonld"),
            ),
        ] {
            let header = json!({"@context": context, "@type": "ids:LogMessage"});
            let document = log_document(&entry(&header, b"x", "")).unwrap();
            assert_eq!(document["@context"], expected);
        }
    }

    #[test]
    fn client_ids_that_are_not_iris_are_percent_encoded() {
        assert_eq!(
            client_reference("a b/ü"),
            json!({"@id": "urn:clearinghouse:client:a%20b%2F%C3%BC"})
        );
    }

    #[test]
    fn a_non_object_header_still_renders() {
        let header = json!("damaged");
        let document = log_document(&entry(&header, b"x", "")).unwrap();
        assert_eq!(document["@type"], json!("ids:LogMessage"));
        assert_eq!(document["sequence"], json!(3));
    }

    #[test]
    fn textual_media_types_show_utf8_text() {
        for media_type in [
            "",
            "text/plain",
            "text/csv; charset=UTF-8",
            "application/json",
            "application/ld+json",
            "application/vnd.api+json",
            "application/xml",
            "application/atom+xml",
            "Application/JSON",
        ] {
            let header = json!({});
            let document = log_document(&entry(&header, "grüß".as_bytes(), media_type)).unwrap();
            assert_eq!(document["payload_encoding"], json!("utf-8"), "{media_type}");
            assert_eq!(document["payload"], json!("grüß"), "{media_type}");
            assert_eq!(document["payload_type"], json!(media_type));
        }
    }

    #[test]
    fn binary_types_invalid_utf8_or_foreign_charsets_are_base64() {
        let cases: [(&[u8], &str); 5] = [
            (b"hello", "application/octet-stream"),
            (b"hello", "image/png"),
            (b"hello", "text/plain; charset=iso-8859-1"),
            (b"hello", "json"),
            (&[0xC3, 0x28], "text/plain"),
        ];
        for (payload, media_type) in cases {
            let header = json!({});
            let document = log_document(&entry(&header, payload, media_type)).unwrap();
            assert_eq!(
                document["payload_encoding"],
                json!("base64"),
                "{media_type}"
            );
            assert_eq!(
                document["payload"],
                json!(base64::engine::general_purpose::STANDARD.encode(payload))
            );
        }
    }

    #[test]
    fn impossible_timestamp_is_an_internal_error() {
        let header = json!({});
        let mut broken = entry(&header, b"x", "");
        broken.timestamp_ms = i64::MAX;
        let rejection = log_document(&broken).unwrap_err();
        assert_eq!(rejection.reason, RejectionReason::InternalRecipientError);
        assert_eq!(rejection.status, 500);
    }

    #[test]
    fn page_payload_has_paging_facts() {
        let query = QueryParams {
            page: 2,
            size: 5,
            size_lowered: false,
            order: SortOrder::Asc,
            from_ms: Some(0),
            to_ms: None,
            date_from_text: Some("2024-03-10".into()),
            date_to_text: None,
        };
        let payload = page_payload(&query, 42, vec![json!({"sequence": 6})]);
        assert_eq!(
            payload,
            json!({
                "date_from": "2024-03-10",
                "date_to": null,
                "page": 2,
                "size": 5,
                "order": "asc",
                "total": 42,
                "pages": 9,
                "documents": [{"sequence": 6}],
            })
        );
        assert_eq!(page_payload(&query, 0, vec![])["pages"], json!(0));
        assert_eq!(page_payload(&query, 5, vec![])["pages"], json!(1));
    }
}
