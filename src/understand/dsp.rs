//! The Dataspace Protocol (2024-1) messages a connector may log: the transfer-process messages
//! and responses, and the contract agreement that transfers refer to.
//!
//! Names are read in the spellings [`crate::ids::jsonld`] describes, for the DSP namespace
//! `https://w3id.org/dspace/v0.8/` (prefix `dspace:`, bare terms under a DSP context document
//! such as `https://w3id.org/dspace/2024/1/context.json` or a `@vocab`), and `dct:format` in the
//! Dublin Core namespace `http://purl.org/dc/terms/` (prefix `dct:`, or bare under a DSP context
//! document, which defines it).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::node::{iri, text, Node};
use crate::ids::jsonld::Vocabulary;

/// The Dataspace Protocol's namespace.
pub(crate) static DSPACE: Vocabulary = Vocabulary {
    namespace: "https://w3id.org/dspace/v0.8/",
    prefix: "dspace",
    is_context_document: is_dsp_context_document,
};

/// Dublin Core terms, for `dct:format`.
static DCT: Vocabulary = Vocabulary {
    namespace: "http://purl.org/dc/terms/",
    prefix: "dct",
    is_context_document: is_dsp_context_document,
};

fn is_dsp_context_document(url: &str) -> bool {
    url.strip_prefix("https://w3id.org/dspace/")
        .is_some_and(|rest| rest.ends_with("context.json") || rest.ends_with("context.jsonld"))
}

/// A transfer-process message type (`dspace:` term).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferMessageKind {
    /// `TransferRequestMessage`.
    Request,
    /// `TransferStartMessage`.
    Start,
    /// `TransferSuspensionMessage`.
    Suspension,
    /// `TransferCompletionMessage`.
    Completion,
    /// `TransferTerminationMessage`.
    Termination,
    /// `TransferProcess`: the ACK response.
    Process,
    /// `TransferError`: the ERROR response.
    Error,
}

impl TransferMessageKind {
    const ALL: [(&'static str, TransferMessageKind); 7] = [
        ("TransferRequestMessage", TransferMessageKind::Request),
        ("TransferStartMessage", TransferMessageKind::Start),
        ("TransferSuspensionMessage", TransferMessageKind::Suspension),
        ("TransferCompletionMessage", TransferMessageKind::Completion),
        (
            "TransferTerminationMessage",
            TransferMessageKind::Termination,
        ),
        ("TransferProcess", TransferMessageKind::Process),
        ("TransferError", TransferMessageKind::Error),
    ];

    fn of_term(term: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == term)
            .map(|(_, kind)| *kind)
    }

    /// The DSP term, e.g. `TransferStartMessage`.
    pub fn term(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, kind)| *kind == self)
            .map_or("", |(name, _)| name)
    }
}

/// What a transfer-process message says, as far as the view needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferMessage {
    /// Its type.
    pub kind: TransferMessageKind,
    /// `dspace:consumerPid`.
    pub consumer_pid: Option<String>,
    /// `dspace:providerPid`.
    pub provider_pid: Option<String>,
    /// `dspace:agreementId` (requests).
    pub agreement_id: Option<String>,
    /// `dct:format` (requests).
    pub format: Option<String>,
    /// `dspace:code` (termination, error).
    pub code: Option<String>,
    /// `dspace:reason` as text: the first reason's text or IRI.
    pub reason: Option<String>,
    /// `dspace:state` (the ACK), e.g. `dspace:STARTED`.
    pub state: Option<String>,
}

/// A DSP message recognised in a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DspMessage {
    Transfer(TransferMessage),
    /// `ContractAgreementMessage` (or `ContractAgreementVerificationMessage`): an agreement
    /// with this `@id` was concluded.
    Agreement {
        agreement_id: String,
    },
}

pub(crate) fn recognize(node: &Node<'_>) -> Option<DspMessage> {
    let names = node.names(&DSPACE);
    let types = node.types(&names);
    if let Some(kind) = types.iter().find_map(|t| TransferMessageKind::of_term(t)) {
        let dct = node.names(&DCT);
        let field = |term: &str| node.property(&names, term);
        return Some(DspMessage::Transfer(TransferMessage {
            kind,
            consumer_pid: field("consumerPid").as_ref().and_then(text),
            provider_pid: field("providerPid").as_ref().and_then(text),
            agreement_id: field("agreementId").as_ref().and_then(text),
            format: node.property(&dct, "format").as_ref().and_then(text_or_iri),
            code: field("code").as_ref().and_then(text),
            reason: field("reason").as_ref().and_then(first_reason),
            state: field("state").as_ref().and_then(text_or_iri),
        }));
    }
    if types.iter().any(|t| t == "ContractAgreementMessage") {
        let agreement = node.property(&names, "agreement")?;
        let agreement_id = iri(&agreement)?;
        return Some(DspMessage::Agreement { agreement_id });
    }
    None
}

fn text_or_iri(value: &Value) -> Option<String> {
    text(value).or_else(|| iri(value))
}

/// `dspace:reason` is a list of anything; the first one that reads as text stands for it.
fn first_reason(value: &Value) -> Option<String> {
    match value {
        Value::Array(reasons) => reasons.iter().find_map(text_or_iri),
        reason => text_or_iri(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn transfer(payload: Value) -> Option<TransferMessage> {
        let bytes = payload.to_string();
        match recognize(&Node::read(bytes.as_bytes())?)? {
            DspMessage::Transfer(message) => Some(message),
            DspMessage::Agreement { .. } => None,
        }
    }

    #[test]
    fn every_transfer_message_type_is_recognised_by_its_term() {
        for (term, kind) in TransferMessageKind::ALL {
            let message = transfer(json!({
                "@context": "https://w3id.org/dspace/2024/1/context.json",
                "@type": format!("dspace:{term}"),
                "dspace:consumerPid": "urn:c",
            }))
            .unwrap_or_else(|| panic!("{term}"));
            assert_eq!(message.kind, kind);
            assert_eq!(kind.term(), term);
        }
    }

    #[test]
    fn fields_are_read_in_every_spelling() {
        let expected = TransferMessage {
            kind: TransferMessageKind::Request,
            consumer_pid: Some("urn:uuid:c1".into()),
            provider_pid: None,
            agreement_id: Some("urn:uuid:a1".into()),
            format: Some("example:HTTP_PULL".into()),
            code: None,
            reason: None,
            state: None,
        };
        for payload in [
            // Compact with the 2024-1 context document (as a list), prefixed names.
            json!({
                "@context": ["https://w3id.org/dspace/2024/1/context.json"],
                "@type": "dspace:TransferRequestMessage",
                "dspace:consumerPid": "urn:uuid:c1",
                "dspace:agreementId": "urn:uuid:a1",
                "dct:format": "example:HTTP_PULL",
                "dspace:callbackAddress": "https://consumer.example/callback",
            }),
            // No context at all: the usual prefixes are read anyway.
            json!({
                "@type": ["dspace:TransferRequestMessage"],
                "dspace:consumerPid": ["urn:uuid:c1"],
                "dspace:agreementId": {"@value": "urn:uuid:a1"},
                "dct:format": {"@id": "example:HTTP_PULL"},
            }),
            // Full IRIs.
            json!({
                "@type": "https://w3id.org/dspace/v0.8/TransferRequestMessage",
                "https://w3id.org/dspace/v0.8/consumerPid": "urn:uuid:c1",
                "https://w3id.org/dspace/v0.8/agreementId": "urn:uuid:a1",
                "http://purl.org/dc/terms/format": "example:HTTP_PULL",
            }),
            // Bare terms under the context document; another prefix bound inline.
            json!({
                "@context": ["https://w3id.org/dspace/2024/1/context.json", {"ds": "https://w3id.org/dspace/v0.8/"}],
                "@type": "TransferRequestMessage",
                "consumerPid": "urn:uuid:c1",
                "ds:agreementId": "urn:uuid:a1",
                "format": "example:HTTP_PULL",
            }),
            // An object context with @vocab.
            json!({
                "@context": {"@vocab": "https://w3id.org/dspace/v0.8/", "dct": "http://purl.org/dc/terms/"},
                "@type": "TransferRequestMessage",
                "consumerPid": "urn:uuid:c1",
                "agreementId": "urn:uuid:a1",
                "dct:format": "example:HTTP_PULL",
            }),
        ] {
            assert_eq!(
                transfer(payload.clone()).as_ref(),
                Some(&expected),
                "{payload}"
            );
        }
    }

    #[test]
    fn errors_and_terminations_carry_code_and_reason() {
        let message = transfer(json!({
            "@type": "dspace:TransferError",
            "dspace:providerPid": "urn:p",
            "dspace:consumerPid": "urn:c",
            "dspace:code": "400",
            "dspace:reason": [{"@value": "bad format", "@language": "en"}, "other"],
        }))
        .unwrap();
        assert_eq!(message.code.as_deref(), Some("400"));
        assert_eq!(message.reason.as_deref(), Some("bad format"));
        assert_eq!(message.provider_pid.as_deref(), Some("urn:p"));
    }

    #[test]
    fn other_namespaces_and_shapes_are_not_transfer_messages() {
        for payload in [
            json!({"@type": "TransferRequestMessage"}),
            json!({"@type": "other:TransferRequestMessage"}),
            json!({"@type": "http://w3id.org/dspace/v0.8/TransferRequestMessage"}),
            json!({"@context": "https://example.org/context.json", "@type": "TransferStartMessage"}),
            json!({"@type": 7}),
            json!({"type": "dspace:TransferStartMessage"}),
        ] {
            assert_eq!(transfer(payload.clone()), None, "{payload}");
        }
    }

    #[test]
    fn a_contract_agreement_message_names_its_agreement() {
        let payload = json!({
            "@context": "https://w3id.org/dspace/2024/1/context.json",
            "@type": "dspace:ContractAgreementMessage",
            "dspace:providerPid": "urn:p",
            "dspace:consumerPid": "urn:c",
            "dspace:agreement": {"@id": "urn:agreement:1", "@type": "odrl:Agreement"},
        })
        .to_string();
        assert_eq!(
            recognize(&Node::read(payload.as_bytes()).unwrap()),
            Some(DspMessage::Agreement {
                agreement_id: "urn:agreement:1".into()
            })
        );
    }
}
