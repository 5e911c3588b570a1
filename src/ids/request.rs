//! The client side of the IDS messages: request headers a connector or auditor sends, and the
//! reading of the replies it gets. The clearing house's own CLI client, the tests and the load
//! generator write their requests with it, in the shape a Trusted Connector sends.

use bytes::Bytes;
use serde_json::Value;

use super::header::MessageType;
use super::jsonld::{reference, single, Names};
use super::reply::MessageHeader;
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
    request_header_with_id(ctx, message_type).0
}

/// [`request_header`] with the header's `@id`, which the reply will carry as
/// `ids:correlationMessage`: known here, so that the client need not parse its own header back.
pub(crate) fn request_header_with_id(
    ctx: &RequestContext,
    message_type: &MessageType,
) -> (String, String) {
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
    .write_request()
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
    /// The whole reply header.
    pub header: Value,
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
    pub(crate) fn from_ids(message: &IdsMessage) -> Result<Reply, ReplyError> {
        let header: Value =
            serde_json::from_str(&message.header).map_err(|e| ReplyError(e.to_string()))?;
        let node = header
            .as_object()
            .ok_or_else(|| ReplyError("not a JSON object".into()))?;
        let names = Names::of(node);
        let type_name = node
            .get("@type")
            .and_then(single)
            .and_then(Value::as_str)
            .ok_or_else(|| ReplyError("no @type".into()))?;
        // Callers compare with the prefixed form, whichever spelling the peer chose.
        let message_type = match names.term(type_name) {
            Some(term) => format!("ids:{term}"),
            None => type_name.to_owned(),
        };
        let reference_of = |term: &str| -> Result<Option<String>, ReplyError> {
            let value = names
                .property(node, term)
                .map_err(|e| ReplyError(e.to_string()))?;
            Ok(value.and_then(reference))
        };
        let rejection_reason = reference_of("rejectionReason")?
            .map(|uri| uri.rsplit('/').next().unwrap_or_default().to_owned());
        let correlation = reference_of("correlationMessage")?;
        Ok(Reply {
            message_type,
            rejection_reason,
            correlation,
            header,
            http_status: None,
            payload: message.payload.clone(),
            extra_headers: message
                .extra_headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        })
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
        let reply = Reply::from_ids(&message).unwrap();
        assert_eq!(reply.message_type, "ids:RejectionMessage");
        assert_eq!(reply.rejection_reason.as_deref(), Some("NOT_FOUND"));
        assert_eq!(reply.correlation.as_deref(), Some("urn:request:1"));
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
        let reply = Reply::from_ids(&message).unwrap();
        assert_eq!(reply.message_type, "ids:RejectionMessage");
        assert_eq!(reply.rejection_reason.as_deref(), Some("NOT_FOUND"));
        assert_eq!(reply.correlation.as_deref(), Some(request.id.as_str()));
        assert_eq!(reply.json().unwrap()["status"], 404);
    }
}
