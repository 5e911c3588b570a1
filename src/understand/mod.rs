//! Understanding what is logged: Dataspace Protocol and IDS messages recognised in entries, and
//! each process's transfers and contracts as both parties recorded them.
//!
//! An entry is an opaque payload to everything else in the clearing house: its receipt, its
//! hash and its place in the chain never depend on what it says. This room reads it a second
//! time, best-effort, to answer the questions a clearing house exists for: was this transfer
//! ever started, who ended it and when, did provider and consumer log the same story?
//!
//! - [`recognize`] (pure, bounded: see `node`): an entry's payload as a DSP transfer-process
//!   message (`dsp`), a DSP contract agreement, or an IDS Information Model message
//!   (`ids_message`), in whichever JSON-LD spelling it came. Anything else, malformed or too
//!   large, is simply not recognised; recognition can fail no log.
//! - `transition`: the transfer-process state machine, as a table (its doc has the table and
//!   where the specification text differs from it).
//! - [`ProcessView`] (`view`): the fold of a process's entries in sequence order into transfers
//!   and contracts, incremental and reproducible: the same entries give the same view, whether
//!   the clearing house folds them as they are queried or `clearinghouse verify view` folds an
//!   export.
//! - `render`: the view as the JSON a query returns, with the findings that need the whole
//!   process (an unmatched completion, an unknown agreement).
//!
//! The room knows the store's [`Entry`](crate::store::Entry) and the JSON-LD spellings of
//! `ids::jsonld`; nothing above them.

mod dsp;
mod ids_message;
mod node;
mod render;
mod transition;
mod view;

pub use dsp::{TransferMessage, TransferMessageKind};
pub use ids_message::IdsMessage;
pub use node::{MAX_MEMBERS, MAX_MEMBER_BYTES, MAX_RECOGNIZED_BYTES, MAX_TEXT_CHARS};
pub use render::ViewPage;
pub use transition::{sender, transition, Side, TransferState, Transition};
pub use view::{
    Direction, ProcessView, MAX_CONTRACTS, MAX_EVENTS, MAX_FINDINGS, MAX_PARTIES, MAX_TRANSFERS,
};

/// A message recognised in a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recognized {
    /// A DSP transfer-process message or response.
    Transfer(TransferMessage),
    /// A DSP `ContractAgreementMessage`: the agreement with this `@id` was concluded.
    Agreement {
        /// The agreement's `@id`.
        agreement_id: String,
    },
    /// An IDS Information Model message.
    Ids(IdsMessage),
}

/// What `payload` is, if it is a message this room knows; see the module documentation for the
/// bounds. Never fails: anything else is `None`.
pub fn recognize(payload: &[u8]) -> Option<Recognized> {
    let node = node::Node::read(payload)?;
    match dsp::recognize(&node) {
        Some(dsp::DspMessage::Transfer(message)) => Some(Recognized::Transfer(message)),
        Some(dsp::DspMessage::Agreement { agreement_id }) => {
            Some(Recognized::Agreement { agreement_id })
        }
        None => ids_message::recognize(&node).map(Recognized::Ids),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_edge_cases_are_not_recognised() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep_object = format!(
            r#"{{"@type": "dspace:TransferStartMessage", "dspace:consumerPid": {}"urn:c"{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let huge_array = format!("[{}0]", "0,".repeat(1 << 20));
        for payload in [
            &b""[..],
            b"\x00\x01\x02",
            b"{",
            br#"{"@type": "dspace:TransferStartMessage", "dspace:consumerPid": "urn:c""#,
            b"null",
            deep.as_bytes(),
            huge_array.as_bytes(),
        ] {
            assert_eq!(recognize(payload), None);
        }
        // Deep nesting where a field is expected: the message is recognised, the field is not.
        let Some(Recognized::Transfer(message)) = recognize(deep_object.as_bytes()) else {
            panic!("a start message with an unreadable consumerPid");
        };
        assert_eq!(message.consumer_pid, None);
    }

    #[test]
    fn dsp_comes_before_ids() {
        let start = br#"{"@type": "dspace:TransferStartMessage", "dspace:consumerPid": "urn:c"}"#;
        assert!(matches!(recognize(start), Some(Recognized::Transfer(_))));
        let ids = br#"{"@type": "ids:ArtifactRequestMessage", "@id": "urn:m"}"#;
        assert!(matches!(recognize(ids), Some(Recognized::Ids(_))));
    }
}
