//! The client side of the IDS messages: request headers a connector or auditor sends, and the
//! reading of the replies it gets. The clearing house's own CLI client, the tests and the load
//! generator write their requests with it, in the shape a Trusted Connector sends.

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::header::MessageType;
use super::infomodel::rfc3339_ms;
use super::jsonld::{reference, single, Names, IDS};
use super::members::Members;
use super::reply::{MessageHeader, WrittenHeader, UUID_LENGTH};
use crate::idscp2::proto::app::IdsMessage;

/// Who sends a request.
pub struct RequestContext<'a> {
    /// `ids:issuerConnector`: the sending connector's id.
    pub connector_id: &'a str,
    /// `ids:senderAgent`: the agent the connector sends for.
    pub sender_agent: &'a str,
    /// The sender's DAT, placed into `ids:securityToken` as connectors do.
    pub security_token: Option<&'a str>,
}

/// An Infomodel header for a request of `message_type` (Request, Log or Query).
pub fn request_header(ctx: &RequestContext, message_type: &MessageType) -> String {
    message_header(ctx, message_type).write_request().text
}

fn message_header<'a>(
    ctx: &RequestContext<'a>,
    message_type: &'a MessageType,
) -> MessageHeader<'a> {
    let (type_name, autogen_name) = match message_type {
        MessageType::Request => ("ids:RequestMessage", "requestMessage"),
        MessageType::Log => ("ids:LogMessage", "logMessage"),
        MessageType::Query => ("ids:QueryMessage", "queryMessage"),
        MessageType::Other(other) => (other.as_str(), "message"),
    };
    MessageHeader {
        type_name,
        autogen_name,
        connector_id: ctx.connector_id,
        sender_agent: ctx.sender_agent,
        security_token: ctx.security_token,
    }
}

/// A request header written once and sent with every request of its type and token: only the
/// message's `@id` (its UUID) and `ids:issued` differ from one request to the next, and they
/// are written over the previous ones in place. Escaping a 1.5 KiB DAT and writing the rest of
/// the header for every request was about a tenth of what the load generator spent per request
/// (BENCHMARKS.md, issue 14, "Seventh session: header work").
pub(crate) struct RequestTemplate {
    header: WrittenHeader,
    message_type: MessageType,
    /// The DAT as the issuer gave it; `None` without an issuer.
    token: Option<Bytes>,
}

impl RequestTemplate {
    /// A template for requests of `message_type` from `connector_id` (also the sender agent),
    /// carrying `token` as `ids:securityToken` when it is UTF-8, as a DAT always is.
    pub(crate) fn new(connector_id: &str, message_type: MessageType, token: Option<Bytes>) -> Self {
        let security_token = token.as_deref().and_then(|t| std::str::from_utf8(t).ok());
        let ctx = RequestContext {
            connector_id,
            sender_agent: connector_id,
            security_token,
        };
        let header = message_header(&ctx, &message_type).write_request();
        RequestTemplate {
            header,
            message_type,
            token,
        }
    }

    /// Whether this template writes requests of `message_type` carrying `token`.
    pub(crate) fn fits(&self, message_type: &MessageType, token: Option<&Bytes>) -> bool {
        self.message_type == *message_type && self.token.as_ref() == token
    }

    /// The next request's header, with a fresh `@id` and the current time as `ids:issued`,
    /// and that `@id`.
    pub(crate) fn next_header(&mut self) -> (String, String) {
        let header = &mut self.header;
        let mut uuid = Uuid::encode_buffer();
        let uuid = Uuid::new_v4().hyphenated().encode_lower(&mut uuid);
        header
            .text
            .replace_range(header.id.end - UUID_LENGTH..header.id.end, uuid);
        // A date is 24 characters for every year from 0 to 9999; other years keep the header
        // right too, only the range moves (the `@id` comes before `ids:issued`).
        let issued = rfc3339_ms(OffsetDateTime::now_utc());
        header.text.replace_range(header.issued.clone(), &issued);
        header.issued = header.issued.start..header.issued.start + issued.len();
        (
            header.text.clone(),
            header.text[header.id.clone()].to_owned(),
        )
    }
}

/// A reply as a client reads it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The header's `@type` in the prefixed form, e.g. `ids:ResultMessage`, whichever JSON-LD
    /// spelling the peer wrote it in (another namespace's type is kept as sent).
    pub message_type: String,
    /// For a RejectionMessage, the reason code (`NOT_FOUND`, ...).
    pub rejection_reason: Option<String>,
    /// The `@id` of the request this answers.
    pub correlation: Option<String>,
    /// The header's JSON text; [`Reply::header`] parses it.
    header: String,
    /// The HTTP status, when the reply came over IDS-Multipart.
    pub http_status: Option<u16>,
    pub(crate) payload: Bytes,
    pub(crate) extra_headers: Vec<(String, String)>,
}

/// A reply whose header cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("the reply header is not an Infomodel message: {0}")]
pub struct ReplyError(String);

impl Reply {
    /// The reply `message`, read without building its header as a `Value` (see
    /// `ids::members`): only `@context`, `@type` and the two properties read are parsed.
    pub(crate) fn from_ids(message: IdsMessage) -> Result<Reply, ReplyError> {
        let (message_type, rejection_reason, correlation) = read_reply_header(&message.header)?;
        Ok(Reply {
            message_type,
            rejection_reason,
            correlation,
            header: message.header,
            http_status: None,
            payload: message.payload,
            extra_headers: message
                .extra_headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
        })
    }

    /// The whole reply header.
    pub fn header(&self) -> Result<Value, ReplyError> {
        serde_json::from_str(&self.header).map_err(|e| ReplyError(e.to_string()))
    }

    /// Whether this is a RejectionMessage.
    pub fn is_rejection(&self) -> bool {
        self.rejection_reason.is_some()
    }

    /// The payload as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.payload).ok()
    }

    /// The value of the extra header `name` (case-insensitive), e.g. `ch-ids-total`.
    pub fn extra_header(&self, name: &str) -> Option<&str> {
        self.extra_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The `@type` (prefixed), rejection reason code and correlation of the reply header `text`.
fn read_reply_header(text: &str) -> Result<(String, Option<String>, Option<String>), ReplyError> {
    let members = Members::of(text).map_err(|_| {
        // Why, in the words of a full parse: not JSON, or JSON but no object.
        match serde_json::from_str::<Value>(text) {
            Err(error) => ReplyError(error.to_string()),
            Ok(_) => ReplyError("not a JSON object".into()),
        }
    })?;
    let parse = |raw: &RawValue| -> Result<Value, ReplyError> {
        serde_json::from_str(raw.get()).map_err(|e| ReplyError(e.to_string()))
    };
    let context = members.get("@context").map(parse).transpose()?;
    let names = Names::of_context(&IDS, context.as_ref());
    let type_value = members.get("@type").map(parse).transpose()?;
    let type_name = type_value
        .as_ref()
        .and_then(single)
        .and_then(Value::as_str)
        .ok_or_else(|| ReplyError("no @type".into()))?;
    // Callers compare with the prefixed form, whichever spelling the peer chose.
    let message_type = match names.term(type_name) {
        Some(term) => format!("ids:{term}"),
        None => type_name.to_owned(),
    };
    // The members that spell the properties read, as the object a full parse would hold of
    // them, so that a property given twice is refused alike.
    let mut read = Map::new();
    for (key, raw) in members.iter() {
        if matches!(
            names.term(key),
            Some(REJECTION_REASON | CORRELATION_MESSAGE)
        ) {
            read.insert(key.to_owned(), parse(raw)?);
        }
    }
    let reference_of = |term: &str| -> Result<Option<String>, ReplyError> {
        let value = names
            .property(&read, term)
            .map_err(|e| ReplyError(e.to_string()))?;
        Ok(value.and_then(reference))
    };
    let rejection_reason = reference_of(REJECTION_REASON)?
        .map(|uri| uri.rsplit('/').next().unwrap_or_default().to_owned());
    let correlation = reference_of(CORRELATION_MESSAGE)?;
    Ok((message_type, rejection_reason, correlation))
}

const REJECTION_REASON: &str = "rejectionReason";
const CORRELATION_MESSAGE: &str = "correlationMessage";

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ids::{rejection_header, RejectionReason, ReplyContext, RequestHeader};

    #[test]
    fn request_headers_parse_back_with_their_type_and_token() {
        let ctx = RequestContext {
            connector_id: "https://connector.example/a",
            sender_agent: "https://connector.example/agent",
            security_token: Some("a.b.c"),
        };
        for (message_type, name) in [
            (MessageType::Request, "ids:RequestMessage"),
            (MessageType::Log, "ids:LogMessage"),
            (MessageType::Query, "ids:QueryMessage"),
        ] {
            let header = RequestHeader::parse(&request_header(&ctx, &message_type)).unwrap();
            assert_eq!(header.message_type, message_type);
            assert_eq!(header.stored["@type"], name);
            assert_eq!(header.security_token.as_deref(), Some("a.b.c"));
            assert_eq!(header.issuer_connector.as_deref(), Some(ctx.connector_id));
            assert_eq!(header.sender_agent.as_deref(), Some(ctx.sender_agent));
        }
    }

    #[test]
    fn a_template_writes_a_fresh_id_and_issued_time_into_an_otherwise_fixed_header() {
        let token = Bytes::from_static(b"eyJ.\"dat\"");
        let mut template = RequestTemplate::new("urn:c", MessageType::Log, Some(token.clone()));
        assert!(template.fits(&MessageType::Log, Some(&token)));
        assert!(!template.fits(&MessageType::Query, Some(&token)));
        assert!(!template.fits(&MessageType::Log, Some(&Bytes::from_static(b"eyJ.other"))));
        assert!(!template.fits(&MessageType::Log, None));

        let fresh: Value = serde_json::from_str(&request_header(
            &RequestContext {
                connector_id: "urn:c",
                sender_agent: "urn:c",
                security_token: Some("eyJ.\"dat\""),
            },
            &MessageType::Log,
        ))
        .unwrap();
        let mut ids = std::collections::BTreeSet::new();
        let mut previous_issued = String::new();
        for _ in 0..3 {
            let before = crate::ids::rfc3339_ms(time::OffsetDateTime::now_utc());
            let (text, id) = template.next_header();
            let header = RequestHeader::parse(&text).unwrap();
            assert_eq!(header.id, id);
            assert_eq!(header.message_type, MessageType::Log);
            assert_eq!(header.security_token.as_deref(), Some("eyJ.\"dat\""));
            assert!(ids.insert(id.clone()), "{id} twice");
            let mut sent: Value = serde_json::from_str(&text).unwrap();
            let issued = sent["ids:issued"]["@value"].as_str().unwrap().to_owned();
            assert!(issued >= before && issued >= previous_issued, "{issued}");
            previous_issued = issued;
            // Everything else is what a freshly written header says, the DAT's own id aside.
            let mut expected = fresh.clone();
            for value in [&mut sent, &mut expected] {
                value["@id"] = Value::Null;
                value["ids:issued"]["@value"] = Value::Null;
                value["ids:securityToken"]["@id"] = Value::Null;
            }
            assert_eq!(sent, expected);
        }
    }

    #[test]
    fn a_reply_in_another_spelling_reads_as_the_prefixed_one() {
        let header = json!({
            "@context": "https://w3id.org/idsa/contexts/context.jsonld",
            "@type": ["https://w3id.org/idsa/core/RejectionMessage"],
            "@id": "urn:reply:1",
            "rejectionReason": {"@id": "https://w3id.org/idsa/code/NOT_FOUND"},
            "https://w3id.org/idsa/core/correlationMessage": [{"@id": "urn:request:1"}],
        });
        let message = IdsMessage {
            header: header.to_string(),
            payload: Bytes::new(),
            extra_headers: vec![],
        };
        let reply = Reply::from_ids(message).unwrap();
        assert_eq!(reply.message_type, "ids:RejectionMessage");
        assert_eq!(reply.rejection_reason.as_deref(), Some("NOT_FOUND"));
        assert_eq!(reply.correlation.as_deref(), Some("urn:request:1"));
    }

    #[test]
    fn a_reply_is_read_as_a_full_parse_would_read_it() {
        let message = |header: &str| IdsMessage {
            header: header.to_owned(),
            payload: Bytes::new(),
            extra_headers: vec![],
        };
        // The last of two equal keys counts, also where the context makes the spelling.
        let text = r#"{"@type":"ids:LogMessage","@context":"urn:other","ids:securityToken":{"ids:tokenValue":"eyJ.a"},"@type":"RejectionMessage","@context":"https://w3id.org/idsa/contexts/context.jsonld","correlationMessage":{"@id":"urn:r:1"}}"#;
        let reply = Reply::from_ids(message(text)).unwrap();
        assert_eq!(reply.message_type, "ids:RejectionMessage");
        assert_eq!(reply.correlation.as_deref(), Some("urn:r:1"));
        assert_eq!(
            reply.header().unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );

        let twice = r#"{"@type":"ids:ResultMessage","ids:correlationMessage":{"@id":"urn:a"},"https://w3id.org/idsa/core/correlationMessage":{"@id":"urn:b"}}"#;
        let error = Reply::from_ids(message(twice)).unwrap_err();
        assert!(error.to_string().contains("given twice"), "{error}");
        for (text, expected) in [
            ("{\"@type\": ", "EOF while parsing"),
            ("[1]", "not a JSON object"),
            ("{\"@id\":\"urn:x\"}", "no @type"),
        ] {
            let error = Reply::from_ids(message(text)).unwrap_err();
            assert!(error.to_string().contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn a_rejection_reads_back_with_reason_and_correlation() {
        let ctx = RequestContext {
            connector_id: "urn:a",
            sender_agent: "urn:a",
            security_token: None,
        };
        let request = RequestHeader::parse(&request_header(&ctx, &MessageType::Log)).unwrap();
        let reply_ctx = ReplyContext {
            connector_id: "urn:ch",
            own_dat: None,
        };
        let message = IdsMessage {
            header: rejection_header(&reply_ctx, Some(&request), RejectionReason::NotFound),
            payload: Bytes::from_static(b"{\"status\":404}"),
            extra_headers: vec![],
        };
        let reply = Reply::from_ids(message).unwrap();
        assert_eq!(reply.message_type, "ids:RejectionMessage");
        assert_eq!(reply.rejection_reason.as_deref(), Some("NOT_FOUND"));
        assert_eq!(reply.correlation.as_deref(), Some(request.id.as_str()));
        assert_eq!(reply.json().unwrap()["status"], 404);
    }
}
