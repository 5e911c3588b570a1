//! IDS Information Model messages as the Dataspace Connector exchanges them, logged either as
//! the message's JSON-LD header alone or as an envelope `{"header": {...}, "payload": ...}`
//! (the multipart message as one JSON document).
//!
//! Every IDS term ending in `Message` is a message of the family (`ContractRequestMessage`,
//! `ArtifactRequestMessage`, `RejectionMessage`, ...); the fields read are those the contract
//! view needs. A `ContractAgreementMessage` names its agreement by `ids:transferContract` or,
//! in an envelope, by the `@id` of the `ids:ContractAgreement` it carries.

use serde::{Deserialize, Serialize};

use super::node::{iri, Node};
use crate::ids::jsonld::IDS;

/// What an IDS message says, as far as the view needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdsMessage {
    /// The IDS term of its type, e.g. `ArtifactRequestMessage`.
    pub message_type: String,
    /// Its `@id`.
    pub id: Option<String>,
    /// `ids:issuerConnector`: who claims to have sent it.
    pub issuer_connector: Option<String>,
    /// The first `ids:recipientConnector`.
    pub recipient_connector: Option<String>,
    /// `ids:transferContract`, or the agreement an agreement message carries.
    pub transfer_contract: Option<String>,
    /// `ids:requestedArtifact`.
    pub requested_artifact: Option<String>,
    /// `ids:correlationMessage`.
    pub correlation_message: Option<String>,
}

pub(crate) fn recognize(node: &Node<'_>) -> Option<IdsMessage> {
    if let Some(header) = node.member_node("header") {
        let mut message = read_header(&header)?;
        if message.transfer_contract.is_none() && message.message_type == "ContractAgreementMessage"
        {
            message.transfer_contract = node.member_node("payload").and_then(|agreement| {
                let names = agreement.names(&IDS);
                let is_agreement = agreement
                    .types(&names)
                    .iter()
                    .any(|t| t == "ContractAgreement");
                is_agreement.then(|| agreement.value("@id").as_ref().and_then(iri))?
            });
        }
        return Some(message);
    }
    read_header(node)
}

fn read_header(node: &Node<'_>) -> Option<IdsMessage> {
    let names = node.names(&IDS);
    let message_type = node
        .types(&names)
        .into_iter()
        .find(|t| t.ends_with("Message"))?;
    let field = |term: &str| node.property(&names, term).as_ref().and_then(iri);
    Some(IdsMessage {
        message_type,
        id: node.value("@id").as_ref().and_then(iri),
        issuer_connector: field("issuerConnector"),
        recipient_connector: node
            .property(&names, "recipientConnector")
            .and_then(|value| match value {
                serde_json::Value::Array(list) => list.first().and_then(iri),
                one => iri(&one),
            }),
        transfer_contract: field("transferContract"),
        requested_artifact: field("requestedArtifact"),
        correlation_message: field("correlationMessage"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn read(payload: Value) -> Option<IdsMessage> {
        let bytes = payload.to_string();
        recognize(&Node::read(bytes.as_bytes())?)
    }

    #[test]
    fn an_artifact_request_is_read_in_every_spelling() {
        let expected = IdsMessage {
            message_type: "ArtifactRequestMessage".into(),
            id: Some("https://w3id.org/idsa/autogen/artifactRequestMessage/1".into()),
            issuer_connector: Some("https://consumer.example".into()),
            recipient_connector: Some("https://provider.example".into()),
            transfer_contract: Some("https://provider.example/agreements/1".into()),
            requested_artifact: Some("https://provider.example/artifacts/7".into()),
            correlation_message: None,
        };
        for payload in [
            json!({
                "@context": {"ids": "https://w3id.org/idsa/core/", "idsc": "https://w3id.org/idsa/code/"},
                "@type": "ids:ArtifactRequestMessage",
                "@id": "https://w3id.org/idsa/autogen/artifactRequestMessage/1",
                "ids:issuerConnector": {"@id": "https://consumer.example"},
                "ids:recipientConnector": [{"@id": "https://provider.example"}],
                "ids:transferContract": {"@id": "https://provider.example/agreements/1"},
                "ids:requestedArtifact": {"@id": "https://provider.example/artifacts/7"},
            }),
            json!({
                "@context": "https://w3id.org/idsa/contexts/context.jsonld",
                "@type": ["ArtifactRequestMessage"],
                "@id": "https://w3id.org/idsa/autogen/artifactRequestMessage/1",
                "issuerConnector": "https://consumer.example",
                "recipientConnector": "https://provider.example",
                "transferContract": "https://provider.example/agreements/1",
                "requestedArtifact": "https://provider.example/artifacts/7",
            }),
            json!({"header": {
                "@type": "https://w3id.org/idsa/core/ArtifactRequestMessage",
                "@id": "https://w3id.org/idsa/autogen/artifactRequestMessage/1",
                "https://w3id.org/idsa/core/issuerConnector": {"@id": "https://consumer.example"},
                "https://w3id.org/idsa/core/recipientConnector": [{"@id": "https://provider.example"}],
                "https://w3id.org/idsa/core/transferContract": {"@id": "https://provider.example/agreements/1"},
                "https://w3id.org/idsa/core/requestedArtifact": {"@id": "https://provider.example/artifacts/7"},
            }, "payload": "anything"}),
        ] {
            assert_eq!(read(payload.clone()).as_ref(), Some(&expected), "{payload}");
        }
    }

    #[test]
    fn an_agreement_message_names_the_agreement_it_carries() {
        let message = read(json!({
            "header": {"@type": "ids:ContractAgreementMessage", "@id": "urn:m",
                       "ids:issuerConnector": {"@id": "https://provider.example"}},
            "payload": {"@context": {"ids": "https://w3id.org/idsa/core/"},
                        "@type": "ids:ContractAgreement", "@id": "https://provider.example/agreements/1"},
        }))
        .unwrap();
        assert_eq!(message.message_type, "ContractAgreementMessage");
        assert_eq!(
            message.transfer_contract.as_deref(),
            Some("https://provider.example/agreements/1")
        );
    }

    #[test]
    fn non_messages_are_not_recognised() {
        for payload in [
            json!({"@type": "ids:ContractAgreement", "@id": "urn:a"}),
            json!({"@type": "ArtifactRequestMessage"}),
            json!({"header": "not an object"}),
            json!({"@type": "dspace:TransferStartMessage"}),
        ] {
            assert_eq!(read(payload.clone()), None, "{payload}");
        }
    }
}
