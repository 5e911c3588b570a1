//! Target `export`: what an auditor runs on an export and receipts (`audit::read_export`,
//! `verify_export`, `verify_receipt`, `Jwks::parse` and `verify`, composed as
//! `clearinghouse verify receipt --export` composes them).
//!
//! A case is a genuine process (entries chained with the same `next_link` every store appends
//! through, exported line by line as `export_process` writes them, each with a receipt signed
//! by an EdDSA receipt key derived from the run seed), then damage: bytes changed, a field of one
//! line set to another value, lines dropped, swapped or doubled, a receipt altered. Properties:
//! - nothing panics, whatever the bytes;
//! - the genuine export verifies to the head of its last entry, and every receipt with its entry;
//! - a damaged export that still verifies holds exactly the genuine entries up to the head it
//!   reports (a shorter head is how truncation shows): it never verifies as intact otherwise;
//! - an altered receipt never verifies, and a genuine receipt verifies only against an entry
//!   that agrees with the genuine one on everything the receipt vouches for.

use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use clearinghouse::audit::{read_export, verify_export, verify_receipt, ExportedEntry};
use clearinghouse::receipt::{payload_hash, Jwks, ReceiptAlgorithm, ReceiptClaims, ReceiptSigner};
use clearinghouse::store::chain::{canonical_json, genesis_hash, next_link, ChainHead, LinkFields};
use clearinghouse::store::{Entry, Protection};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{json, Value};

use crate::json::json_value;
use crate::mutate::{mutated, Mutation};
use crate::runner::{fuzz, Budget, Outcome, SplitMix, Target};

pub const TARGET: Target = Target {
    name: "export",
    run,
};

struct Keys {
    signer: ReceiptSigner,
    jwks: Jwks,
}

impl Keys {
    /// Ed25519 signatures are deterministic, so with the key from the run seed a failing case
    /// replays byte for byte.
    fn generate(run_seed: u64) -> Keys {
        let mut seeds = SplitMix(run_seed ^ 0xe4b0);
        // PKCS#8 v1 of an Ed25519 private key: a fixed prefix, then the 32-byte seed.
        let mut der = hex::decode("302e020100300506032b657004220420").expect("hex");
        for _ in 0..4 {
            der.extend_from_slice(&seeds.next().to_le_bytes());
        }
        let signer =
            ReceiptSigner::from_pem(ReceiptAlgorithm::EdDsa, pem("PRIVATE KEY", &der).as_bytes())
                .expect("an Ed25519 receipt key");
        // A retired key of another kind next to it, as after a rotation.
        let retired_der = {
            let mut der = hex::decode("302e020100300506032b657004220420").expect("hex");
            der.extend_from_slice(&[7u8; 32]);
            der
        };
        let retired = ReceiptSigner::from_pem(
            ReceiptAlgorithm::EdDsa,
            pem("PRIVATE KEY", &retired_der).as_bytes(),
        )
        .expect("a second Ed25519 key");
        let jwks = Jwks::new(&signer, vec![retired.public_jwk()]);
        Keys { signer, jwks }
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
}

#[derive(Debug, Clone)]
struct EntrySpec {
    client_id: String,
    timestamp_step: i64,
    header: Value,
    payload: Vec<u8>,
    payload_type: String,
}

#[derive(Debug, Clone)]
enum Damage {
    Bytes(Vec<Mutation>),
    /// One line's field set to another value.
    Field(Index, &'static str, Replacement),
    DropLine(Index),
    SwapLines(Index, Index),
    DoubleLine(Index),
}

/// Values a field is set to; some mean the same as before (hex in capitals), most do not.
#[derive(Debug, Clone)]
enum Replacement {
    Value(Value),
    Upper,
    /// The same field of another line.
    FromLine(Index),
    Mutated(Vec<Mutation>),
}

#[derive(Debug, Clone)]
enum Case {
    Export {
        pid: String,
        entries: Vec<EntrySpec>,
        damage: Vec<Damage>,
        /// Which receipt to alter, and how.
        receipt_damage: Option<(Index, Vec<Mutation>)>,
    },
    Garbage {
        export: Vec<u8>,
        jwks: Vec<u8>,
        receipt: String,
    },
}

const FIELDS: &[&str] = &[
    "pid",
    "sequence",
    "document_id",
    "timestamp_ms",
    "client_id",
    "header",
    "payload",
    "payload_type",
    "entry_hash",
    "chain_hash",
];

fn entry_spec() -> impl Strategy<Value = EntrySpec> {
    (
        ".{0,12}",
        prop_oneof![Just(0i64), 0i64..5000],
        json_value(),
        vec(any::<u8>(), 0..40),
        prop_oneof![Just(String::new()), Just("text/plain".to_owned()), ".{0,8}"],
    )
        .prop_map(
            |(client_id, timestamp_step, header, payload, payload_type)| EntrySpec {
                client_id,
                timestamp_step,
                header,
                payload,
                payload_type,
            },
        )
}

fn replacement() -> impl Strategy<Value = Replacement> {
    prop_oneof![
        2 => prop_oneof![
            json_value(),
            any::<u64>().prop_map(Value::from),
            (0u64..8).prop_map(Value::from),
            Just(json!(1.0)),
            Just(json!("")),
            Just(json!("0".repeat(64))),
        ].prop_map(Replacement::Value),
        1 => Just(Replacement::Upper),
        2 => any::<Index>().prop_map(Replacement::FromLine),
        2 => vec(any::<Mutation>(), 1..3).prop_map(Replacement::Mutated),
    ]
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => vec(any::<Mutation>(), 1..4).prop_map(Damage::Bytes),
        4 => (any::<Index>(), select(FIELDS), replacement()).prop_map(|(line, field, value)| Damage::Field(line, field, value)),
        1 => any::<Index>().prop_map(Damage::DropLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Damage::SwapLines(a, b)),
        1 => any::<Index>().prop_map(Damage::DoubleLine),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let export = (
        prop_oneof!["[a-z0-9-]{1,12}", ".{1,8}"],
        vec(entry_spec(), 0..6),
        vec(damage(), 0..3),
        proptest::option::of((any::<Index>(), vec(any::<Mutation>(), 1..3))),
    )
        .prop_map(|(pid, entries, damage, receipt_damage)| Case::Export {
            pid,
            entries,
            damage,
            receipt_damage,
        });
    let garbage = (
        prop_oneof![vec(any::<u8>(), 0..200), "(\\{.{0,40}\\}\n){0,3}".prop_map(String::into_bytes)],
        prop_oneof![vec(any::<u8>(), 0..80), Just(b"{\"keys\": [{}]}".to_vec()), Just(b"{\"keys\": [{\"kid\": \"k\", \"alg\": \"EdDSA\", \"kty\": \"OKP\", \"crv\": \"Ed25519\", \"x\": \"\"}]}".to_vec())],
        prop_oneof![".{0,60}", "[A-Za-z0-9_-]{0,20}\\.[A-Za-z0-9_-]{0,20}\\.[A-Za-z0-9_-]{0,20}", Just("eyJhbGciOiJFZERTQSIsImtpZCI6ImsifQ.e30.".to_owned())],
    )
        .prop_map(|(export, jwks, receipt)| Case::Garbage { export, jwks, receipt });
    prop_oneof![6 => export, 1 => garbage]
}

/// Chains the entries the way every store does.
fn chained(pid: &str, specs: &[EntrySpec]) -> Vec<Entry> {
    let mut head = ChainHead {
        sequence: 0,
        chain_hash: genesis_hash(pid),
    };
    let mut timestamp_ms = 1_700_000_000_000;
    let mut entries = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let document_id = format!("doc-{index}");
        let payload_digest = clearinghouse::store::chain::payload_hash(&spec.payload);
        let header = canonical_json(&spec.header);
        let fields = LinkFields {
            pid,
            document_id: &document_id,
            client_id: &spec.client_id,
            payload_type: &spec.payload_type,
            payload_hash: &payload_digest,
            canonical_header: &header,
            commitment_key: None,
        };
        let link = next_link(
            &head,
            timestamp_ms,
            timestamp_ms + spec.timestamp_step,
            fields,
        )
        .expect("sequence numbers left");
        timestamp_ms = link.timestamp_ms;
        head = ChainHead {
            sequence: link.sequence,
            chain_hash: link.chain_hash,
        };
        entries.push(Entry {
            pid: pid.to_owned(),
            sequence: link.sequence,
            document_id,
            timestamp_ms: link.timestamp_ms,
            client_id: spec.client_id.clone(),
            header: spec.header.clone(),
            payload: Bytes::from(spec.payload.clone()),
            payload_type: spec.payload_type.clone(),
            entry_hash: link.entry_hash,
            chain_hash: link.chain_hash,
            protection: Protection::Plaintext,
        });
    }
    entries
}

/// The claims the clearing house signs for an entry (`clearing/log.rs`).
fn claims_of(entry: &Entry) -> ReceiptClaims {
    ReceiptClaims {
        iss: "clearing-house".into(),
        iat: 1_700_000_000,
        process_id: entry.pid.clone(),
        document_id: entry.document_id.clone(),
        sequence: entry.sequence,
        timestamp: entry.timestamp_ms.div_euclid(1000),
        timestamp_ms: entry.timestamp_ms,
        client_id: entry.client_id.clone(),
        payload_hash: payload_hash(&entry.payload),
        entry_hash: hex::encode(entry.entry_hash),
        chain_hash: hex::encode(entry.chain_hash),
        clearing_house_version: "fuzz".into(),
    }
}

fn head_of(pid: &str, entries: &[Entry]) -> ChainHead {
    entries.last().map_or(
        ChainHead {
            sequence: 0,
            chain_hash: genesis_hash(pid),
        },
        |last| ChainHead {
            sequence: last.sequence,
            chain_hash: last.chain_hash,
        },
    )
}

fn damaged(lines: &[String], damage: &[Damage]) -> Vec<u8> {
    let mut lines = lines.to_vec();
    let mut text: Option<Vec<u8>> = None;
    for step in damage {
        // After byte damage the lines are no longer lines: later damage works on bytes too.
        if let Some(bytes) = &mut text {
            if let Damage::Bytes(mutations) = step {
                *bytes = mutated(std::mem::take(bytes), mutations);
            }
            continue;
        }
        match step {
            Damage::Bytes(mutations) => {
                text = Some(mutated(lines.join("\n").into_bytes(), mutations))
            }
            _ if lines.is_empty() => {}
            Damage::Field(line, field, replacement) => {
                let at = line.index(lines.len());
                let mut object: Value = serde_json::from_str(&lines[at]).expect("an export line");
                let current = object[*field].clone();
                object[*field] = match replacement {
                    Replacement::Value(value) => value.clone(),
                    Replacement::Upper => match current {
                        Value::String(text) => Value::String(text.to_uppercase()),
                        other => other,
                    },
                    Replacement::FromLine(other) => {
                        let other: Value = serde_json::from_str(&lines[other.index(lines.len())])
                            .expect("an export line");
                        other[*field].clone()
                    }
                    Replacement::Mutated(mutations) => {
                        let text = mutated(current.to_string().into_bytes(), mutations);
                        serde_json::from_slice(&text)
                            .unwrap_or(Value::String(String::from_utf8_lossy(&text).into_owned()))
                    }
                };
                lines[at] = object.to_string();
            }
            Damage::DropLine(line) => {
                lines.remove(line.index(lines.len()));
            }
            Damage::SwapLines(a, b) => {
                let (a, b) = (a.index(lines.len()), b.index(lines.len()));
                lines.swap(a, b);
            }
            Damage::DoubleLine(line) => {
                let at = line.index(lines.len());
                lines.insert(at, lines[at].clone());
            }
        }
    }
    text.unwrap_or_else(|| lines.join("\n").into_bytes())
}

fn run(budget: &Budget) -> Outcome {
    let keys = Arc::new(Keys::generate(budget.run_seed));
    fuzz(TARGET.name, budget, case(), move |case| check(&keys, case))
}

fn check(keys: &Keys, case: Case) -> Result<(), TestCaseError> {
    let (pid, specs, damage, receipt_damage) = match case {
        Case::Garbage {
            export,
            jwks,
            receipt,
        } => return check_garbage(keys, &export, &jwks, &receipt),
        Case::Export {
            pid,
            entries,
            damage,
            receipt_damage,
        } => (pid, entries, damage, receipt_damage),
    };
    let entries = chained(&pid, &specs);
    let lines: Vec<String> = entries
        .iter()
        .map(|entry| serde_json::to_string(&ExportedEntry::from(entry)).expect("an export line"))
        .collect();
    let receipts: Vec<String> = entries
        .iter()
        .map(|entry| keys.signer.sign(&claims_of(entry)).expect("a receipt"))
        .collect();

    // The genuine export and receipts verify.
    let genuine = lines
        .iter()
        .map(|line| format!("{line}\n"))
        .collect::<String>();
    let head = verify_export(&pid, Cursor::new(genuine.as_bytes()))
        .map_err(|e| TestCaseError::fail(format!("the genuine export does not verify: {e}")))?;
    prop_assert_eq!(head.head, head_of(&pid, &entries));
    for (receipt, entry) in receipts.iter().zip(&entries) {
        let claims = verify_receipt(&keys.jwks, receipt, Some(entry))
            .map_err(|e| TestCaseError::fail(format!("a genuine receipt does not verify: {e}")))?;
        prop_assert_eq!(claims, claims_of(entry));
    }

    // A damaged export verifies only as a prefix of the genuine one.
    let export = damaged(&lines, &damage);
    if let Ok(head) = verify_export(&pid, Cursor::new(&export)) {
        let read: Vec<Entry> = read_export(Cursor::new(&export))
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(format!("verified but does not read: {e}")))?;
        let verified = head.head.sequence as usize;
        prop_assert!(
            verified <= entries.len(),
            "verified {verified} entries of {}",
            entries.len()
        );
        prop_assert_eq!(
            &read[..],
            &entries[..verified],
            "a damaged export verified with other content"
        );
        prop_assert_eq!(head.head, head_of(&pid, &entries[..verified]));
    }

    // As `verify receipt --export` does: each receipt against the entry with its document id.
    if let Ok(read) = read_export(Cursor::new(&export)).collect::<Result<Vec<Entry>, _>>() {
        for (receipt, original) in receipts.iter().zip(&entries) {
            let Some(entry) = read.iter().find(|e| e.document_id == original.document_id) else {
                continue;
            };
            if verify_receipt(&keys.jwks, receipt, Some(entry)).is_ok() {
                let vouched = |e: &Entry| {
                    (
                        e.pid.clone(),
                        e.sequence,
                        e.document_id.clone(),
                        e.timestamp_ms,
                        e.client_id.clone(),
                        e.payload.clone(),
                        e.entry_hash,
                        e.chain_hash,
                    )
                };
                prop_assert_eq!(
                    vouched(entry),
                    vouched(original),
                    "a receipt verified against an entry it does not describe"
                );
            }
        }
    }

    if let Some((which, mutations)) = receipt_damage {
        if !receipts.is_empty() {
            let at = which.index(receipts.len());
            let altered = mutated(receipts[at].clone().into_bytes(), &mutations);
            let altered = String::from_utf8_lossy(&altered);
            let result = verify_receipt(&keys.jwks, &altered, Some(&entries[at]));
            if result.is_ok() {
                prop_assert_eq!(
                    altered.as_ref(),
                    receipts[at].as_str(),
                    "an altered receipt verified"
                );
            }
        }
    }
    Ok(())
}

fn check_garbage(
    keys: &Keys,
    export: &[u8],
    jwks: &[u8],
    receipt: &str,
) -> Result<(), TestCaseError> {
    let blank = String::from_utf8(export.to_vec())
        .is_ok_and(|text| text.lines().all(|l| l.trim().is_empty()));
    if let Ok(head) = verify_export("p", Cursor::new(export)) {
        prop_assert!(blank, "garbage verified as an export");
        prop_assert_eq!(head.head.sequence, 0);
    }
    prop_assert!(
        keys.jwks.verify(receipt).is_err(),
        "a garbage receipt verified"
    );
    if let Ok(parsed) = Jwks::parse(jwks) {
        prop_assert!(
            parsed.verify(receipt).is_err(),
            "a garbage receipt verified against a garbage JWKS"
        );
    }
    Ok(())
}
