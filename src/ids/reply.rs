//! Writing replies: the Information Model header of every answer (a rejection's among them) and
//! its extra headers.
//!
//! A JVM peer silently drops a reply whose header does not deserialize as an Infomodel message
//! and then waits out its timeout, so every header written here carries all the fields the Java
//! serializer requires, in the shapes it writes itself (`{"@id": ...}` references, a typed
//! `xsd:dateTimeStamp` literal for `ids:issued`).

use std::ops::Range;

use time::OffsetDateTime;
use uuid::Uuid;

use super::header::RequestHeader;
use super::infomodel::{
    push_json_string, rfc3339_ms, IDS_CODE_NAMESPACE, IDS_CONTEXT_JSON, MODEL_VERSION,
    XSD_DATE_TIME_STAMP,
};
use super::params::QueryParams;
use super::rejection::RejectionReason;
use crate::idscp2::proto::app::HeaderEntry;

const AUTOGEN: &str = "https://w3id.org/idsa/autogen/";

/// What the clearing house says about itself in every reply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplyContext<'a> {
    /// The configured connector id (an IRI): issuer and sender of every reply.
    pub(crate) connector_id: &'a str,
    /// The clearing house's own DAT, when it has a DAPS.
    pub(crate) own_dat: Option<&'a str>,
}

/// `ids:MessageProcessedNotificationMessage`: create and log succeeded.
pub(crate) fn processed_header(ctx: &ReplyContext, request: Option<&RequestHeader>) -> String {
    reply_header(
        ctx,
        request,
        "ids:MessageProcessedNotificationMessage",
        "messageProcessedNotificationMessage",
        None,
    )
}

/// `ids:ResultMessage`: the answer to a query.
pub(crate) fn result_header(ctx: &ReplyContext, request: Option<&RequestHeader>) -> String {
    reply_header(ctx, request, "ids:ResultMessage", "resultMessage", None)
}

/// `ids:RejectionMessage`. `request` is `None` when the request header itself was unreadable;
/// the reply then cannot correlate.
pub(crate) fn rejection_header(
    ctx: &ReplyContext,
    request: Option<&RequestHeader>,
    reason: RejectionReason,
) -> String {
    reply_header(
        ctx,
        request,
        "ids:RejectionMessage",
        "rejectionMessage",
        Some(&reason.uri()),
    )
}

fn reply_header(
    ctx: &ReplyContext,
    request: Option<&RequestHeader>,
    type_name: &str,
    autogen_name: &str,
    rejection_reason: Option<&str>,
) -> String {
    let header = MessageHeader {
        type_name,
        autogen_name,
        connector_id: ctx.connector_id,
        sender_agent: ctx.connector_id,
        security_token: ctx.own_dat,
    };
    let reply = ReplyFields {
        correlation: request.map(|r| r.id.as_str()),
        recipient_connector: request.and_then(|r| r.issuer_connector.as_deref()),
        recipient_agent: request.and_then(|r| r.sender_agent.as_deref()),
        rejection_reason,
    };
    header.write(Some(&reply)).text
}

/// The fields every Infomodel message carries, requests and replies alike.
pub(crate) struct MessageHeader<'a> {
    /// `@type`, e.g. `ids:LogMessage`.
    pub(crate) type_name: &'a str,
    /// The class name in the `@id`'s autogen IRI, e.g. `logMessage`.
    pub(crate) autogen_name: &'a str,
    /// `ids:issuerConnector`.
    pub(crate) connector_id: &'a str,
    /// `ids:senderAgent`.
    pub(crate) sender_agent: &'a str,
    /// The DAT, sent as an `ids:DynamicAttributeToken`.
    pub(crate) security_token: Option<&'a str>,
}

/// What a reply says besides the fields every message carries.
struct ReplyFields<'a> {
    /// `ids:correlationMessage`: the request's `@id`, when its header was read.
    correlation: Option<&'a str>,
    /// `ids:recipientConnector` and `ids:recipientAgent`: who the request said it came from.
    /// The Java serializer writes unknown recipients as empty lists rather than leaving them
    /// out.
    recipient_connector: Option<&'a str>,
    recipient_agent: Option<&'a str>,
    /// The IRI of a rejection's `ids:rejectionReason`.
    rejection_reason: Option<&'a str>,
}

/// Room for everything of a header but its token.
const HEADER_CAPACITY: usize = 1024;

impl MessageHeader<'_> {
    /// The header as compact JSON text, and where its `@id` and `ids:issued` are in it.
    ///
    /// Written as text, field by field: the same bytes `compact_json` writes for the same
    /// header as a `serde_json` map (keys in their sorted order, strings escaped alike), at a
    /// fraction of the cost of building the map and serializing it (BENCHMARKS.md, issue 14,
    /// "Request path"). Only the strings that come from configuration or a peer are escaped;
    /// the rest are this module's constants, a UUID and a date.
    fn write(&self, reply: Option<&ReplyFields>) -> WrittenHeader {
        let token_room = self.security_token.map_or(0, str::len);
        let mut out = String::with_capacity(HEADER_CAPACITY + token_room);
        out.push_str("{\"@context\":");
        out.push_str(IDS_CONTEXT_JSON);
        out.push_str(",\"@id\":\"");
        let id_start = out.len();
        push_autogen_id(&mut out, self.autogen_name);
        let id = id_start..out.len();
        out.push_str("\",\"@type\":");
        push_json_string(&mut out, self.type_name);
        if let Some(correlation) = reply.and_then(|r| r.correlation) {
            out.push_str(",\"ids:correlationMessage\":");
            push_reference(&mut out, correlation);
        }
        out.push_str(",\"ids:issued\":{\"@type\":\"");
        out.push_str(XSD_DATE_TIME_STAMP);
        out.push_str("\",\"@value\":\"");
        let issued_start = out.len();
        out.push_str(&rfc3339_ms(OffsetDateTime::now_utc()));
        let issued = issued_start..out.len();
        out.push_str("\"},\"ids:issuerConnector\":");
        push_reference(&mut out, self.connector_id);
        out.push_str(",\"ids:modelVersion\":\"");
        out.push_str(MODEL_VERSION);
        out.push('"');
        if let Some(reply) = reply {
            out.push_str(",\"ids:recipientAgent\":");
            push_references(&mut out, reply.recipient_agent);
            out.push_str(",\"ids:recipientConnector\":");
            push_references(&mut out, reply.recipient_connector);
            if let Some(reason) = reply.rejection_reason {
                out.push_str(",\"ids:rejectionReason\":");
                push_reference(&mut out, reason);
            }
        }
        if let Some(token) = self.security_token {
            out.push_str(",\"ids:securityToken\":{\"@id\":\"");
            push_autogen_id(&mut out, "dynamicAttributeToken");
            out.push_str(
                "\",\"@type\":\"ids:DynamicAttributeToken\",\"ids:tokenFormat\":{\"@id\":\"",
            );
            out.push_str(IDS_CODE_NAMESPACE);
            out.push_str("JWT\"},\"ids:tokenValue\":");
            push_json_string(&mut out, token);
            out.push('}');
        }
        out.push_str(",\"ids:senderAgent\":");
        push_reference(&mut out, self.sender_agent);
        out.push('}');
        WrittenHeader {
            text: out,
            id,
            issued,
        }
    }

    /// A request's header: its JSON text, and where its `@id` (which a reply will carry as
    /// `ids:correlationMessage`) and `ids:issued` are.
    pub(crate) fn write_request(&self) -> WrittenHeader {
        self.write(None)
    }
}

/// A header's JSON text, and where the parts that differ from one message to the next are in
/// it.
pub(crate) struct WrittenHeader {
    pub(crate) text: String,
    /// The `@id`: an autogen IRI that ends in a fresh UUID ([`UUID_LENGTH`] characters).
    pub(crate) id: Range<usize>,
    /// The value of `ids:issued`.
    pub(crate) issued: Range<usize>,
}

/// The length of a hyphenated UUID, the end of every autogen `@id`.
pub(crate) const UUID_LENGTH: usize = uuid::fmt::Hyphenated::LENGTH;

/// `{"@id": iri}`.
fn push_reference(out: &mut String, iri: &str) {
    out.push_str("{\"@id\":");
    push_json_string(out, iri);
    out.push('}');
}

/// `[{"@id": iri}]`, or `[]` without one.
fn push_references(out: &mut String, iri: Option<&str>) {
    out.push('[');
    if let Some(iri) = iri {
        push_reference(out, iri);
    }
    out.push(']');
}

/// A fresh instance IRI in the form the Java builders generate.
fn push_autogen_id(out: &mut String, autogen_name: &str) {
    out.push_str(AUTOGEN);
    out.push_str(autogen_name);
    out.push('/');
    let mut uuid = Uuid::encode_buffer();
    out.push_str(Uuid::new_v4().hyphenated().encode_lower(&mut uuid));
}

/// Extra headers of every reply about a process.
pub(crate) fn reply_extra_headers(pid: &str) -> Vec<HeaderEntry> {
    vec![header_entry("ch-ids-pid", pid.to_owned())]
}

/// Extra headers of a page reply: the effective paging (`ch-ids-size` shows a lowered size) and
/// the total number of entries in the window.
pub(crate) fn page_extra_headers(pid: &str, query: &QueryParams, total: u64) -> Vec<HeaderEntry> {
    vec![
        header_entry("ch-ids-pid", pid.to_owned()),
        header_entry("ch-ids-page", query.page.to_string()),
        header_entry("ch-ids-size", query.size.to_string()),
        header_entry("ch-ids-sort", query.order.as_str().to_owned()),
        header_entry("ch-ids-total", total.to_string()),
    ]
}

/// One extra header of a reply or request.
pub(crate) fn header_entry(name: &str, value: String) -> HeaderEntry {
    HeaderEntry {
        name: name.to_owned(),
        value,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map, Value};

    use super::*;
    use crate::ids::compact_json;
    use crate::ids::params::ChParams;
    use crate::idscp2::proto::app::HeaderEntry;

    const CH: &str = "https://clearinghouse.example/connector";

    fn request() -> RequestHeader {
        RequestHeader::parse(
            &json!({
                "@type": "ids:LogMessage",
                "@id": "https://w3id.org/idsa/autogen/logMessage/req-1",
                "ids:issuerConnector": {"@id": "https://client.example/connector"},
                "ids:senderAgent": {"@id": "https://client.example/agent"},
            })
            .to_string(),
        )
        .unwrap()
    }

    fn parse(header: &str) -> Map<String, Value> {
        match serde_json::from_str(header).unwrap() {
            Value::Object(object) => object,
            other => panic!("header is not an object: {other}"),
        }
    }

    fn assert_common(header: &Map<String, Value>, type_name: &str, autogen_name: &str) {
        assert_eq!(
            header["@context"],
            json!({"ids": "https://w3id.org/idsa/core/", "idsc": "https://w3id.org/idsa/code/"})
        );
        assert_eq!(header["@type"], json!(type_name));
        let id = header["@id"].as_str().unwrap();
        let uuid = id
            .strip_prefix(&format!("https://w3id.org/idsa/autogen/{autogen_name}/"))
            .unwrap_or_else(|| panic!("@id {id}"));
        assert_eq!(Uuid::parse_str(uuid).unwrap().get_version_num(), 4);
        assert_eq!(header["ids:modelVersion"], json!("4.2.7"));
        assert_eq!(header["ids:issuerConnector"], json!({"@id": CH}));
        assert_eq!(header["ids:senderAgent"], json!({"@id": CH}));

        let issued = &header["ids:issued"];
        assert_eq!(
            issued["@type"],
            json!("http://www.w3.org/2001/XMLSchema#dateTimeStamp")
        );
        let issued = issued["@value"].as_str().unwrap();
        let parsed =
            OffsetDateTime::parse(issued, &time::format_description::well_known::Rfc3339).unwrap();
        let age = OffsetDateTime::now_utc() - parsed;
        assert!(age.whole_seconds().abs() < 60, "issued {issued} is not now");
    }

    fn assert_correlated(header: &Map<String, Value>) {
        assert_eq!(
            header["ids:correlationMessage"],
            json!({"@id": "https://w3id.org/idsa/autogen/logMessage/req-1"})
        );
        assert_eq!(
            header["ids:recipientConnector"],
            json!([{"@id": "https://client.example/connector"}])
        );
        assert_eq!(
            header["ids:recipientAgent"],
            json!([{"@id": "https://client.example/agent"}])
        );
    }

    #[test]
    fn processed_header_has_every_required_field() {
        let ctx = ReplyContext {
            connector_id: CH,
            own_dat: None,
        };
        let header = parse(&processed_header(&ctx, Some(&request())));
        assert_common(
            &header,
            "ids:MessageProcessedNotificationMessage",
            "messageProcessedNotificationMessage",
        );
        assert_correlated(&header);
        assert!(!header.contains_key("ids:securityToken"));
        assert!(!header.contains_key("ids:rejectionReason"));
    }

    #[test]
    fn result_header_carries_our_dat_as_a_dynamic_attribute_token() {
        let ctx = ReplyContext {
            connector_id: CH,
            own_dat: Some("eyJ.our.dat"),
        };
        let header = parse(&result_header(&ctx, Some(&request())));
        assert_common(&header, "ids:ResultMessage", "resultMessage");
        assert_correlated(&header);
        let token = &header["ids:securityToken"];
        assert_eq!(token["@type"], json!("ids:DynamicAttributeToken"));
        assert!(token["@id"]
            .as_str()
            .unwrap()
            .starts_with("https://w3id.org/idsa/autogen/dynamicAttributeToken/"));
        assert_eq!(token["ids:tokenValue"], json!("eyJ.our.dat"));
        assert_eq!(
            token["ids:tokenFormat"],
            json!({"@id": "https://w3id.org/idsa/code/JWT"})
        );
    }

    #[test]
    fn rejection_header_names_the_reason_uri() {
        let ctx = ReplyContext {
            connector_id: CH,
            own_dat: None,
        };
        let header = parse(&rejection_header(
            &ctx,
            Some(&request()),
            RejectionReason::NotAuthorized,
        ));
        assert_common(&header, "ids:RejectionMessage", "rejectionMessage");
        assert_correlated(&header);
        assert_eq!(
            header["ids:rejectionReason"],
            json!({"@id": "https://w3id.org/idsa/code/NOT_AUTHORIZED"})
        );
    }

    #[test]
    fn rejection_without_request_has_no_correlation() {
        let ctx = ReplyContext {
            connector_id: CH,
            own_dat: None,
        };
        let header = parse(&rejection_header(
            &ctx,
            None,
            RejectionReason::MalformedMessage,
        ));
        assert_common(&header, "ids:RejectionMessage", "rejectionMessage");
        assert!(!header.contains_key("ids:correlationMessage"));
        assert_eq!(header["ids:recipientConnector"], json!([]));
        assert_eq!(header["ids:recipientAgent"], json!([]));
        assert_eq!(
            header["ids:rejectionReason"],
            json!({"@id": "https://w3id.org/idsa/code/MALFORMED_MESSAGE"})
        );
    }

    #[test]
    fn each_reply_gets_a_fresh_id() {
        let ctx = ReplyContext {
            connector_id: CH,
            own_dat: None,
        };
        let first = parse(&processed_header(&ctx, None));
        let second = parse(&processed_header(&ctx, None));
        assert_ne!(first["@id"], second["@id"]);
    }

    /// The text is what `compact_json` writes for the header it reads as: same keys in the same
    /// order, strings escaped alike, in every shape a header takes.
    #[test]
    fn headers_written_as_text_are_the_bytes_compact_json_writes() {
        let odd = "urn:x:\"quoted\" back\\slash \n\t\u{1} é \u{1F600}";
        let odd_request = RequestHeader::parse(
            &json!({
                "@type": "ids:LogMessage",
                "@id": odd,
                "ids:issuerConnector": {"@id": odd},
                "ids:senderAgent": {"@id": "urn:agent"},
            })
            .to_string(),
        )
        .unwrap();
        let plain = ReplyContext {
            connector_id: CH,
            own_dat: None,
        };
        let odd_context = ReplyContext {
            connector_id: odd,
            own_dat: Some(odd),
        };
        let mut headers = Vec::new();
        for ctx in [&plain, &odd_context] {
            for request in [None, Some(&request()), Some(&odd_request)] {
                headers.push(processed_header(ctx, request));
                headers.push(result_header(ctx, request));
                headers.push(rejection_header(ctx, request, RejectionReason::NotFound));
            }
        }
        for security_token in [None, Some("eyJ.a.b"), Some(odd)] {
            let header = MessageHeader {
                type_name: odd,
                autogen_name: "logMessage",
                connector_id: odd,
                sender_agent: "urn:agent",
                security_token,
            };
            let WrittenHeader { text, id, .. } = header.write_request();
            let id = &text[id];
            assert!(
                id.starts_with("https://w3id.org/idsa/autogen/logMessage/"),
                "{id}"
            );
            assert_eq!(parse(&text)["@id"], json!(id));
            headers.push(text);
        }
        for text in headers {
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(compact_json(&value), text);
        }
    }

    fn pairs(entries: &[HeaderEntry]) -> Vec<(&str, &str)> {
        entries
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect()
    }

    #[test]
    fn extra_headers_name_the_pid() {
        assert_eq!(pairs(&reply_extra_headers("p-1")), [("ch-ids-pid", "p-1")]);
    }

    #[test]
    fn page_extra_headers_show_the_effective_paging() {
        let query = ChParams::parse(
            &[
                HeaderEntry {
                    name: "ch-ids-size".into(),
                    value: "5000".into(),
                },
                HeaderEntry {
                    name: "ch-ids-sort".into(),
                    value: "ASC".into(),
                },
            ],
            &crate::ids::params::ParamLimits::default(),
        )
        .unwrap()
        .query()
        .unwrap();
        assert_eq!(
            pairs(&page_extra_headers("p-1", &query, 42)),
            [
                ("ch-ids-pid", "p-1"),
                ("ch-ids-page", "1"),
                ("ch-ids-size", "1000"),
                ("ch-ids-sort", "asc"),
                ("ch-ids-total", "42"),
            ]
        );
    }
}
