//! Reading the Information Model header of a request, and the form of it that gets stored.
//!
//! Only the few fields the clearing house acts on are lifted out; everything else stays in `stored`,
//! because the stored entry must keep what the connector actually sent. Tokens are the exception:
//! a DAT is a short-lived bearer credential, and a tamper-evident log that nobody may edit is the
//! last place to leave one lying around.

use serde_json::Value;

use super::jsonld::{literal, reference, single, DuplicateProperty, Names, Property};
use super::rejection::{Rejection, RejectionReason};

const SECURITY_TOKEN: &str = "securityToken";
const AUTHORIZATION_TOKEN: &str = "authorizationToken";

/// The message types the clearing house understands, from the header's `@type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageType {
    /// `ids:RequestMessage`: create a process.
    Request,
    /// `ids:LogMessage`: append an entry.
    Log,
    /// `ids:QueryMessage`: read entries.
    Query,
    /// Any other `@type`, kept verbatim so the rejection can name it.
    Other(String),
}

impl MessageType {
    fn from_type(type_name: &str, names: &Names) -> Self {
        match names.term(type_name) {
            Some("RequestMessage") => Self::Request,
            Some("LogMessage") => Self::Log,
            Some("QueryMessage") => Self::Query,
            _ => Self::Other(type_name.to_owned()),
        }
    }
}

/// Why a request header could not be read. Every variant is a MALFORMED_MESSAGE for the client.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The header is not JSON at all.
    #[error("the IDS header is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// The header is JSON, but not an object.
    #[error("the IDS header is not a JSON object")]
    NotAnObject,
    /// The header names no message type.
    #[error("the IDS header has no \"@type\" string")]
    MissingType,
    /// The header has no message id to correlate the reply with.
    #[error("the IDS header has no \"@id\" string")]
    MissingId,
    /// The header gives a property under two spellings.
    #[error("the IDS header is ambiguous: {0}")]
    Ambiguous(#[from] DuplicateProperty),
}

impl From<HeaderError> for Rejection {
    fn from(error: HeaderError) -> Self {
        Rejection::with_default_status(RejectionReason::MalformedMessage, error.to_string())
    }
}

/// A request's IDS header: the fields the clearing house needs, plus the JSON-LD object as it
/// is stored.
///
/// The fields are read in any JSON-LD spelling of their IDS names (see `ids::jsonld`).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestHeader {
    /// The message's `@type`.
    pub message_type: MessageType,
    /// The message's `@id`, echoed as `ids:correlationMessage` in the reply.
    pub id: String,
    /// `ids:issuerConnector`: the connector the client says it is.
    pub issuer_connector: Option<String>,
    /// `ids:senderAgent`: the agent the client says it sends for.
    pub sender_agent: Option<String>,
    /// The `ids:tokenValue` of `ids:securityToken`: the DAT the client put into the header.
    pub security_token: Option<String>,
    /// The header as it is stored with the entry and hashed into the chain: as sent, without
    /// tokens (in whichever spelling they came). A header in the prefixed form is stored exactly
    /// as before other spellings were read, so chains and their hashes do not change; other
    /// spellings are stored as sent rather than rewritten, because the entry must keep what the
    /// connector said, and a rewrite would be this clearing house's reading of it.
    ///
    /// The tokens are taken out of the parsed object itself, which then is the stored form: a
    /// request's header is parsed once and never copied on its way to the store (BENCHMARKS.md,
    /// issue 14, "Request path").
    pub stored: Value,
}

impl RequestHeader {
    /// Reads the header's JSON-LD text, checking only what every request needs.
    pub fn parse(header: &str) -> Result<Self, HeaderError> {
        let Value::Object(mut object) = serde_json::from_str(header)? else {
            return Err(HeaderError::NotAnObject);
        };
        let names = Names::of(&object);
        let message_type = object
            .get("@type")
            .and_then(single)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(|t| MessageType::from_type(t, &names))
            .ok_or(HeaderError::MissingType)?;
        let id = object
            .get("@id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or(HeaderError::MissingId)?
            .to_owned();
        // One pass over the keys, each key's term computed once.
        let mut issuer_connector = Property::new("issuerConnector");
        let mut sender_agent = Property::new("senderAgent");
        let mut security_token = Property::new(SECURITY_TOKEN);
        let mut token_keys = Vec::new();
        for (key, value) in &object {
            match names.term(key) {
                Some("issuerConnector") => issuer_connector.offer(key, value),
                Some("senderAgent") => sender_agent.offer(key, value),
                Some(SECURITY_TOKEN) => {
                    security_token.offer(key, value);
                    token_keys.push(key.clone());
                }
                Some(AUTHORIZATION_TOKEN) => token_keys.push(key.clone()),
                _ => {}
            }
        }
        let issuer_connector = issuer_connector.value()?.and_then(reference);
        let sender_agent = sender_agent.value()?.and_then(reference);
        let security_token = match security_token
            .value()?
            .and_then(single)
            .and_then(Value::as_object)
        {
            Some(token) => names.property(token, "tokenValue")?.and_then(literal),
            None => None,
        };
        for key in &token_keys {
            object.remove(key);
        }
        Ok(Self {
            message_type,
            id,
            issuer_connector,
            sender_agent,
            security_token,
            stored: Value::Object(object),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<RequestHeader, HeaderError> {
        RequestHeader::parse(&value.to_string())
    }

    #[test]
    fn not_json_is_rejected() {
        assert!(matches!(
            RequestHeader::parse("{\"@type\": "),
            Err(HeaderError::NotJson(_))
        ));
        assert!(matches!(
            RequestHeader::parse(""),
            Err(HeaderError::NotJson(_))
        ));
    }

    #[test]
    fn array_or_scalar_is_not_an_object() {
        let array = json!([{"@type": "ids:LogMessage", "@id": "urn:m:1"}]);
        assert!(matches!(parse(array), Err(HeaderError::NotAnObject)));
        assert!(matches!(
            RequestHeader::parse("\"ids:LogMessage\""),
            Err(HeaderError::NotAnObject)
        ));
    }

    #[test]
    fn missing_or_empty_type_is_rejected() {
        assert!(matches!(
            parse(json!({"@id": "urn:m:1"})),
            Err(HeaderError::MissingType)
        ));
        assert!(matches!(
            parse(json!({"@type": "", "@id": "urn:m:1"})),
            Err(HeaderError::MissingType)
        ));
        for types in [
            json!([]),
            json!(["ids:LogMessage", "ids:Message"]),
            json!([7]),
        ] {
            assert!(matches!(
                parse(json!({"@type": types, "@id": "urn:m:1"})),
                Err(HeaderError::MissingType)
            ));
        }
    }

    #[test]
    fn missing_or_empty_id_is_rejected() {
        assert!(matches!(
            parse(json!({"@type": "ids:LogMessage"})),
            Err(HeaderError::MissingId)
        ));
        assert!(matches!(
            parse(json!({"@type": "ids:LogMessage", "@id": ""})),
            Err(HeaderError::MissingId)
        ));
        assert!(matches!(
            parse(json!({"@type": "ids:LogMessage", "@id": 7})),
            Err(HeaderError::MissingId)
        ));
    }

    #[test]
    fn header_errors_become_malformed_message_rejections() {
        let rejection = Rejection::from(HeaderError::MissingId);
        assert_eq!(rejection.reason, RejectionReason::MalformedMessage);
        assert_eq!(rejection.status, 400);
        assert!(rejection.message.contains("@id"), "{}", rejection.message);
    }

    #[test]
    fn message_types_map_from_type() {
        let cases = [
            ("ids:RequestMessage", MessageType::Request),
            ("ids:LogMessage", MessageType::Log),
            ("ids:QueryMessage", MessageType::Query),
            (
                "ids:ArtifactRequestMessage",
                MessageType::Other("ids:ArtifactRequestMessage".into()),
            ),
        ];
        for (type_name, expected) in cases {
            let header = parse(json!({"@type": type_name, "@id": "urn:m:1"})).unwrap();
            assert_eq!(header.message_type, expected, "{type_name}");
        }
    }

    #[test]
    fn fields_are_read_in_the_java_serializer_shape() {
        let header = parse(json!({
            "@context": {"ids": "https://w3id.org/idsa/core/"},
            "@type": "ids:LogMessage",
            "@id": "https://w3id.org/idsa/autogen/logMessage/1",
            "ids:issuerConnector": {"@id": "https://connector.example/"},
            "ids:senderAgent": {"@id": "https://agent.example/"},
            "ids:securityToken": {
                "@type": "ids:DynamicAttributeToken",
                "@id": "https://w3id.org/idsa/autogen/dynamicAttributeToken/2",
                "ids:tokenValue": "eyJ.dat",
                "ids:tokenFormat": {"@id": "https://w3id.org/idsa/code/JWT"}
            }
        }))
        .unwrap();
        assert_eq!(header.id, "https://w3id.org/idsa/autogen/logMessage/1");
        assert_eq!(
            header.issuer_connector.as_deref(),
            Some("https://connector.example/")
        );
        assert_eq!(
            header.sender_agent.as_deref(),
            Some("https://agent.example/")
        );
        assert_eq!(header.security_token.as_deref(), Some("eyJ.dat"));
    }

    #[test]
    fn plain_string_references_and_typed_literal_token_are_read() {
        let header = parse(json!({
            "@type": "ids:QueryMessage",
            "@id": "urn:m:1",
            "ids:issuerConnector": "https://connector.example/",
            "ids:senderAgent": "https://agent.example/",
            "ids:securityToken": {"ids:tokenValue": {"@value": "eyJ.typed"}}
        }))
        .unwrap();
        assert_eq!(
            header.issuer_connector.as_deref(),
            Some("https://connector.example/")
        );
        assert_eq!(
            header.sender_agent.as_deref(),
            Some("https://agent.example/")
        );
        assert_eq!(header.security_token.as_deref(), Some("eyJ.typed"));
    }

    #[test]
    fn absent_or_unusable_optional_fields_are_none() {
        let header = parse(json!({
            "@type": "ids:LogMessage",
            "@id": "urn:m:1",
            "ids:issuerConnector": {"@id": ""},
            "ids:senderAgent": 42,
            "ids:securityToken": {"@type": "ids:DynamicAttributeToken"}
        }))
        .unwrap();
        assert_eq!(header.issuer_connector, None);
        assert_eq!(header.sender_agent, None);
        assert_eq!(header.security_token, None);
    }

    #[test]
    fn stored_form_strips_every_spelling_of_the_tokens_and_nothing_else() {
        let header = parse(json!({
            "@context": "https://w3id.org/idsa/contexts/context.jsonld",
            "@type": "LogMessage",
            "@id": "urn:m:1",
            "securityToken": {"tokenValue": "eyJ.dat"},
            "ids:authorizationToken": 1,
            "https://w3id.org/idsa/core/authorizationToken": 2,
            "authorizationToken": 3,
            "authorizationTokens": 4,
        }))
        .unwrap();
        assert_eq!(header.security_token.as_deref(), Some("eyJ.dat"));
        assert_eq!(
            header.stored,
            json!({
                "@context": "https://w3id.org/idsa/contexts/context.jsonld",
                "@type": "LogMessage",
                "@id": "urn:m:1",
                "authorizationTokens": 4,
            })
        );
    }

    #[test]
    fn stored_form_strips_both_tokens_and_keeps_the_rest() {
        let raw = json!({
            "@type": "ids:LogMessage",
            "@id": "urn:m:1",
            "ids:issuerConnector": {"@id": "https://connector.example/"},
            "ids:securityToken": {"ids:tokenValue": "eyJ.dat"},
            "ids:authorizationToken": {"ids:tokenValue": "eyJ.auth"},
            "ids:contentVersion": "1"
        });
        let header = parse(raw).unwrap();
        assert_eq!(header.security_token.as_deref(), Some("eyJ.dat"));
        assert_eq!(
            header.stored,
            json!({
                "@type": "ids:LogMessage",
                "@id": "urn:m:1",
                "ids:issuerConnector": {"@id": "https://connector.example/"},
                "ids:contentVersion": "1"
            })
        );
    }
}
