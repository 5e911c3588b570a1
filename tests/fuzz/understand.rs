//! Target `understand`: what the clearing house reads in logged payloads, and the view it folds
//! them into (`understand::recognize`, `ProcessView::apply`, `render`, `encode`/`decode`).
//!
//! A case is a run of entries logged by two identities, each payload a transfer-process message
//! of a few consumerPids (in the spellings connectors use), arbitrary JSON, or either damaged by
//! byte mutations. Properties:
//! - nothing panics, whatever the bytes, and recognising the same bytes twice gives the same;
//! - the view has folded every entry (`entries` is the last sequence), and at most one transfer
//!   per distinct consumerPid among the recognised messages;
//! - the view decodes from its own encoding to itself, and folding the same entries again gives
//!   the same view (what `verify view` relies on to rebuild it offline).

use bytes::Bytes;
use clearinghouse::ids::ViewKind;
use clearinghouse::store::{Entry, Protection};
use clearinghouse::understand::{recognize, ProcessView, Recognized, ViewPage};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};

use crate::json::json_value;
use crate::mutate::{mutated, Mutation};
use crate::runner::{fuzz, Budget, Outcome, Target};

pub const TARGET: Target = Target {
    name: "understand",
    run,
};

const KINDS: [&str; 8] = [
    "TransferRequestMessage",
    "TransferStartMessage",
    "TransferSuspensionMessage",
    "TransferCompletionMessage",
    "TransferTerminationMessage",
    "TransferProcess",
    "TransferError",
    "ContractAgreementMessage",
];

fn message() -> impl Strategy<Value = Value> {
    (select(&KINDS[..]), 0..3u8, 0..3u8, any::<bool>()).prop_map(|(kind, pid, spelling, list)| {
        let consumer_pid = format!("urn:c{pid}");
        let (type_name, key) = match spelling {
            0 => (format!("dspace:{kind}"), "dspace:consumerPid".to_owned()),
            1 => (
                format!("https://w3id.org/dspace/v0.8/{kind}"),
                "https://w3id.org/dspace/v0.8/consumerPid".to_owned(),
            ),
            _ => (kind.to_owned(), "consumerPid".to_owned()),
        };
        let type_value = if list {
            json!([type_name])
        } else {
            json!(type_name)
        };
        json!({
            "@context": "https://w3id.org/dspace/2024/1/context.json",
            "@type": type_value,
            key: consumer_pid,
            "dspace:agreementId": "urn:a",
            "dspace:agreement": {"@id": "urn:a"},
        })
    })
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    let document = prop_oneof![3 => message(), 1 => json_value()];
    (document, vec(any::<Mutation>(), 0..3), 0..4u8).prop_map(|(document, mutations, damage)| {
        let bytes = document.to_string().into_bytes();
        // Most payloads arrive whole.
        if damage == 0 {
            mutated(bytes, &mutations)
        } else {
            bytes
        }
    })
}

fn run(budget: &Budget) -> Outcome {
    let case = vec((any::<bool>(), any::<bool>(), payload()), 0..24);
    fuzz(TARGET.name, budget, case, |logged| {
        let entries: Vec<Entry> = logged
            .iter()
            .enumerate()
            .map(|(index, (provider, received, payload))| Entry {
                pid: "p".into(),
                sequence: index as u64 + 1,
                document_id: format!("d{index}"),
                timestamp_ms: index as i64,
                client_id: if *provider { "provider" } else { "consumer" }.into(),
                header: if *received {
                    json!({"ch-ids-direction": "received"})
                } else {
                    json!({})
                },
                payload: Bytes::from(payload.clone()),
                payload_type: String::new(),
                entry_hash: [0; 32],
                chain_hash: [0; 32],
                protection: Protection::Plaintext,
            })
            .collect();
        let mut consumer_pids = std::collections::BTreeSet::new();
        for entry in &entries {
            let recognized = recognize(&entry.payload);
            prop_assert_eq!(&recognized, &recognize(&entry.payload));
            if let Some(Recognized::Transfer(message)) = recognized {
                consumer_pids.extend(message.consumer_pid);
            }
        }
        let fold = |entries: &[Entry]| {
            let mut view = ProcessView::default();
            entries.iter().for_each(|entry| view.apply(entry));
            view
        };
        let view = fold(&entries);
        prop_assert_eq!(view.entries_seen(), entries.len() as u64);
        let page = view.render(ViewPage {
            kind: ViewKind::Transfers,
            page: 1,
            size: 100,
        });
        prop_assert!(page["total"].as_u64().unwrap() <= consumer_pids.len() as u64);
        view.render(ViewPage {
            kind: ViewKind::Contracts,
            page: 2,
            size: 1,
        });
        let decoded = ProcessView::decode(&view.encode());
        prop_assert_eq!(decoded.as_ref(), Some(&view));
        prop_assert_eq!(fold(&entries), view);
        Ok(())
    })
}
