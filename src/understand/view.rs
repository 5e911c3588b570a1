//! A process's view: its entries folded, in sequence order, into transfer processes (keyed by
//! `consumerPid`) and contracts (keyed by agreement id), with what each party recorded.
//!
//! The fold is incremental: [`ProcessView::apply`] takes the next entry and nothing else, and
//! [`ProcessView::entries_seen`] is the sequence it has reached, so a view saved after entry
//! `n` continues with entry `n + 1`. The same entries give the same view, live or offline.
//!
//! Both parties' stories: each identity that logs a transfer message has its own record of the
//! transfer (side and state). Logging a message claims to have *sent* it, unless the entry says
//! it records a message *received* ([`DIRECTION_PROPERTY`] in the stored header). A message only
//! one side sends (a request: the consumer; a start: the provider) fixes the logger's side the
//! first time; a later claim of the other side, or of a side another identity holds, is a
//! wrong-side finding and does not move the record. See [`super::transition`] for the states.
//!
//! Bounded: at most [`MAX_TRANSFERS`] transfers and [`MAX_CONTRACTS`] contracts per process,
//! [`MAX_PARTIES`] identities, [`MAX_EVENTS`] timeline events and [`MAX_FINDINGS`] findings per
//! transfer or contract; what does not fit is counted, never stored. Stored field names are
//! short, because the view is saved whole after it advances ([`ProcessView::encode`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dsp::{TransferMessage, TransferMessageKind};
use super::ids_message::IdsMessage;
use super::transition::{sender, transition, Side, TransferState, Transition};
use super::{recognize, Recognized};
use crate::ids::DIRECTION_PROPERTY;
use crate::store::Entry;

/// Transfers one process's view keeps.
pub const MAX_TRANSFERS: usize = 20_000;
/// Contracts one process's view keeps.
pub const MAX_CONTRACTS: usize = 10_000;
/// Identities whose messages one process's view follows.
pub const MAX_PARTIES: usize = 256;
/// Timeline events kept per transfer or contract.
pub const MAX_EVENTS: usize = 32;
/// Findings kept per transfer.
pub const MAX_FINDINGS: usize = 16;
/// IDS message types counted per process.
const MAX_COUNTED_TYPES: usize = 64;

/// Whether the logger sent or received the logged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The logger sent it (the default).
    Sent,
    /// The logger received it.
    Received,
}

impl Direction {
    /// The direction an entry's stored header declares.
    pub fn of_header(header: &serde_json::Value) -> Self {
        match header
            .get(DIRECTION_PROPERTY)
            .and_then(serde_json::Value::as_str)
        {
            Some("received") => Direction::Received,
            _ => Direction::Sent,
        }
    }
}

/// Index into [`ProcessView::parties`].
type Party = u32;

/// A process's entries, understood.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessView {
    /// The last sequence folded in.
    #[serde(rename = "n")]
    pub(crate) entries_seen: u64,
    /// The identities (client ids) that logged recognised messages.
    #[serde(rename = "p")]
    pub(crate) parties: Vec<String>,
    #[serde(rename = "t")]
    pub(crate) transfers: BTreeMap<String, Transfer>,
    /// The transfers' consumerPids in the order they first appeared: the view's order, kept
    /// so that a page is read without sorting every transfer.
    #[serde(rename = "to")]
    pub(crate) transfer_order: Vec<String>,
    #[serde(rename = "c")]
    pub(crate) contracts: BTreeMap<String, Contract>,
    /// Recognised messages the view could not place: no `consumerPid`, or over a bound.
    #[serde(rename = "u")]
    pub(crate) unplaced: u64,
    /// IDS messages per type.
    #[serde(rename = "i")]
    pub(crate) ids_messages: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Transfer {
    /// The sequence of its first message: the view's order.
    #[serde(rename = "f")]
    pub(crate) first: u64,
    #[serde(rename = "pp", skip_serializing_if = "Option::is_none", default)]
    pub(crate) provider_pid: Option<String>,
    #[serde(rename = "a", skip_serializing_if = "Option::is_none", default)]
    pub(crate) agreement_id: Option<String>,
    #[serde(rename = "fm", skip_serializing_if = "Option::is_none", default)]
    pub(crate) format: Option<String>,
    #[serde(rename = "r")]
    pub(crate) records: Vec<PartyRecord>,
    #[serde(rename = "e")]
    pub(crate) timeline: Vec<Event>,
    #[serde(rename = "eo", skip_serializing_if = "is_zero", default)]
    pub(crate) omitted_events: u64,
    #[serde(rename = "x", skip_serializing_if = "Vec::is_empty", default)]
    pub(crate) findings: Vec<Finding>,
    #[serde(rename = "xo", skip_serializing_if = "is_zero", default)]
    pub(crate) omitted_findings: u64,
}

/// One identity's record of a transfer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PartyRecord {
    #[serde(rename = "p")]
    pub(crate) party: Party,
    #[serde(rename = "d", skip_serializing_if = "Option::is_none", default)]
    pub(crate) side: Option<Side>,
    #[serde(rename = "s", skip_serializing_if = "Option::is_none", default)]
    pub(crate) state: Option<TransferState>,
    /// The first completion message it logged, legal or not.
    #[serde(rename = "c", skip_serializing_if = "Option::is_none", default)]
    pub(crate) completion: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Event {
    #[serde(rename = "s")]
    pub(crate) sequence: u64,
    #[serde(rename = "t")]
    pub(crate) timestamp_ms: i64,
    #[serde(rename = "m")]
    pub(crate) message: TransferMessageKind,
    #[serde(rename = "p")]
    pub(crate) party: Party,
    #[serde(rename = "d")]
    pub(crate) direction: Direction,
    #[serde(rename = "c", skip_serializing_if = "Option::is_none", default)]
    pub(crate) code: Option<String>,
    #[serde(rename = "r", skip_serializing_if = "Option::is_none", default)]
    pub(crate) reason: Option<String>,
}

/// Something wrong with a transfer's story, found as its messages were folded in. (Findings
/// that depend on the whole process, an unmatched completion or an unknown agreement, are
/// derived when the view is read: see `render`.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub(crate) enum Finding {
    /// The message is not allowed in the logger's recorded state (`None`: no record yet).
    IllegalTransition {
        s: u64,
        p: Party,
        m: TransferMessageKind,
        from: Option<TransferState>,
    },
    /// The logger claims a side it does not have: `claimed` (sent a message only that side
    /// sends, or received one only the other sends), while it holds `held`, or `held_by`
    /// another identity holds that side.
    WrongSide {
        s: u64,
        p: Party,
        m: TransferMessageKind,
        claimed: Side,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        held: Option<Side>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        held_by: Option<Party>,
    },
    /// A second request for a consumerPid the logger already has a record of.
    RepeatedRequest { s: u64, p: Party },
}

/// What was logged under one agreement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Contract {
    #[serde(rename = "f")]
    pub(crate) first: u64,
    /// The entry that recorded the agreement itself, if one did.
    #[serde(rename = "a", skip_serializing_if = "Option::is_none", default)]
    pub(crate) agreed: Option<u64>,
    #[serde(rename = "e")]
    pub(crate) messages: Vec<ContractEvent>,
    #[serde(rename = "eo", skip_serializing_if = "is_zero", default)]
    pub(crate) omitted: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ContractEvent {
    #[serde(rename = "s")]
    pub(crate) sequence: u64,
    #[serde(rename = "t")]
    pub(crate) timestamp_ms: i64,
    /// The IDS message type, or `dspace:ContractAgreementMessage`.
    #[serde(rename = "m")]
    pub(crate) message: String,
    #[serde(rename = "p")]
    pub(crate) party: Party,
    #[serde(rename = "d")]
    pub(crate) direction: Direction,
    #[serde(rename = "i", skip_serializing_if = "Option::is_none", default)]
    pub(crate) issuer: Option<String>,
    #[serde(rename = "ra", skip_serializing_if = "Option::is_none", default)]
    pub(crate) requested_artifact: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The facts of one entry the fold takes besides its recognised message.
struct Logged {
    sequence: u64,
    timestamp_ms: i64,
    party: Party,
    direction: Direction,
}

impl ProcessView {
    /// The last sequence folded in (0: none).
    pub fn entries_seen(&self) -> u64 {
        self.entries_seen
    }

    /// How many records the view holds (transfers, contracts and their events): a measure of
    /// its memory, about 100 bytes each.
    pub fn records(&self) -> usize {
        let transfers: usize = self.transfers.values().map(|t| 1 + t.timeline.len()).sum();
        let contracts: usize = self.contracts.values().map(|c| 1 + c.messages.len()).sum();
        transfers + contracts
    }

    /// Folds in `entry`, which must be the entry after [`Self::entries_seen`] (others are
    /// ignored, so that folding a batch twice changes nothing).
    pub fn apply(&mut self, entry: &Entry) {
        if entry.sequence != self.entries_seen + 1 {
            return;
        }
        self.entries_seen = entry.sequence;
        let Some(recognized) = recognize(&entry.payload) else {
            return;
        };
        let Some(party) = self.party(&entry.client_id) else {
            self.unplaced += 1;
            return;
        };
        let logged = Logged {
            sequence: entry.sequence,
            timestamp_ms: entry.timestamp_ms,
            party,
            direction: Direction::of_header(&entry.header),
        };
        match recognized {
            Recognized::Transfer(message) => self.apply_transfer(&logged, message),
            Recognized::Agreement { agreement_id } => {
                let event = ContractEvent {
                    sequence: logged.sequence,
                    timestamp_ms: logged.timestamp_ms,
                    message: "dspace:ContractAgreementMessage".to_owned(),
                    party,
                    direction: logged.direction,
                    issuer: None,
                    requested_artifact: None,
                };
                self.apply_contract(&logged, agreement_id, true, event);
            }
            Recognized::Ids(message) => self.apply_ids(&logged, message),
        }
    }

    fn party(&mut self, client_id: &str) -> Option<Party> {
        if let Some(index) = self.parties.iter().position(|p| p == client_id) {
            return Party::try_from(index).ok();
        }
        if self.parties.len() >= MAX_PARTIES {
            return None;
        }
        self.parties.push(client_id.to_owned());
        Party::try_from(self.parties.len() - 1).ok()
    }

    fn apply_transfer(&mut self, logged: &Logged, message: TransferMessage) {
        let Some(consumer_pid) = message.consumer_pid else {
            self.unplaced += 1;
            return;
        };
        if !self.transfers.contains_key(&consumer_pid) && self.transfers.len() >= MAX_TRANSFERS {
            self.unplaced += 1;
            return;
        }
        if !self.transfers.contains_key(&consumer_pid) {
            self.transfer_order.push(consumer_pid.clone());
        }
        let transfer = self
            .transfers
            .entry(consumer_pid)
            .or_insert_with(|| Transfer {
                first: logged.sequence,
                provider_pid: None,
                agreement_id: None,
                format: None,
                records: Vec::new(),
                timeline: Vec::new(),
                omitted_events: 0,
                findings: Vec::new(),
                omitted_findings: 0,
            });
        transfer.provider_pid = transfer.provider_pid.take().or(message.provider_pid);
        if message.kind == TransferMessageKind::Request {
            transfer.agreement_id = transfer.agreement_id.take().or(message.agreement_id);
            transfer.format = transfer.format.take().or(message.format);
        }
        if transfer.timeline.len() < MAX_EVENTS {
            transfer.timeline.push(Event {
                sequence: logged.sequence,
                timestamp_ms: logged.timestamp_ms,
                message: message.kind,
                party: logged.party,
                direction: logged.direction,
                code: message.code,
                reason: message.reason,
            });
        } else {
            transfer.omitted_events += 1;
        }
        if let Some(finding) = transfer.record(logged, message.kind) {
            if transfer.findings.len() < MAX_FINDINGS {
                transfer.findings.push(finding);
            } else {
                transfer.omitted_findings += 1;
            }
        }
    }

    fn apply_ids(&mut self, logged: &Logged, message: IdsMessage) {
        let counted = self.ids_messages.len() < MAX_COUNTED_TYPES
            || self.ids_messages.contains_key(&message.message_type);
        if counted {
            *self
                .ids_messages
                .entry(message.message_type.clone())
                .or_default() += 1;
        }
        let Some(agreement_id) = message.transfer_contract else {
            return;
        };
        let is_agreement = message.message_type == "ContractAgreementMessage";
        let event = ContractEvent {
            sequence: logged.sequence,
            timestamp_ms: logged.timestamp_ms,
            message: message.message_type,
            party: logged.party,
            direction: logged.direction,
            issuer: message.issuer_connector,
            requested_artifact: message.requested_artifact,
        };
        self.apply_contract(logged, agreement_id, is_agreement, event);
    }

    fn apply_contract(
        &mut self,
        logged: &Logged,
        agreement_id: String,
        is_agreement: bool,
        event: ContractEvent,
    ) {
        if !self.contracts.contains_key(&agreement_id) && self.contracts.len() >= MAX_CONTRACTS {
            self.unplaced += 1;
            return;
        }
        let contract = self
            .contracts
            .entry(agreement_id)
            .or_insert_with(|| Contract {
                first: logged.sequence,
                agreed: None,
                messages: Vec::new(),
                omitted: 0,
            });
        if is_agreement {
            contract.agreed = contract.agreed.or(Some(logged.sequence));
        }
        if contract.messages.len() < MAX_EVENTS {
            contract.messages.push(event);
        } else {
            contract.omitted += 1;
        }
    }

    /// The view as stored: the one place it becomes bytes, so that it can be sealed like the
    /// entries it is derived from.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A stored view; `None` when it does not decode (it is then rebuilt from the entries).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

impl Transfer {
    /// Moves the logger's record by `kind`; what is wrong with it, if anything.
    fn record(&mut self, logged: &Logged, kind: TransferMessageKind) -> Option<Finding> {
        let claimed = sender(kind).map(|side| match logged.direction {
            Direction::Sent => side,
            Direction::Received => side.other(),
        });
        let held_by_other = |records: &[PartyRecord], side: Side| {
            records
                .iter()
                .find(|r| r.party != logged.party && r.side == Some(side))
                .map(|r| r.party)
        };
        let index = match self.records.iter().position(|r| r.party == logged.party) {
            Some(index) => index,
            None => {
                self.records.push(PartyRecord {
                    party: logged.party,
                    side: None,
                    state: None,
                    completion: None,
                });
                self.records.len() - 1
            }
        };
        if kind == TransferMessageKind::Completion {
            let record = &mut self.records[index];
            record.completion = record.completion.or(Some(logged.sequence));
        }
        if let Some(claimed) = claimed {
            let wrong_side = |held, held_by| Finding::WrongSide {
                s: logged.sequence,
                p: logged.party,
                m: kind,
                claimed,
                held,
                held_by,
            };
            match self.records[index].side {
                Some(held) if held != claimed => return Some(wrong_side(Some(held), None)),
                Some(_) => {}
                None => {
                    if let Some(other) = held_by_other(&self.records, claimed) {
                        return Some(wrong_side(None, Some(other)));
                    }
                    self.records[index].side = Some(claimed);
                }
            }
        }
        let record = &mut self.records[index];
        match transition(record.state, kind) {
            Transition::To(state) => {
                record.state = Some(state);
                None
            }
            Transition::Unchanged => None,
            Transition::RepeatedRequest => Some(Finding::RepeatedRequest {
                s: logged.sequence,
                p: logged.party,
            }),
            Transition::Illegal => Some(Finding::IllegalTransition {
                s: logged.sequence,
                p: logged.party,
                m: kind,
                from: record.state,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::{json, Value};

    use super::*;
    use crate::ids::ViewKind;
    use crate::store::Protection;
    use crate::understand::ViewPage;

    const CONSUMER: &str = "consumer-id";
    const PROVIDER: &str = "provider-id";

    /// Folds messages logged as `(logger, received, payload)`, in order.
    fn fold(messages: &[(&str, bool, Value)]) -> ProcessView {
        let mut view = ProcessView::default();
        for (index, (client_id, received, payload)) in messages.iter().enumerate() {
            let mut header = json!({"@type": "ids:LogMessage"});
            if *received {
                header[DIRECTION_PROPERTY] = Value::from("received");
            }
            view.apply(&Entry {
                pid: "p".into(),
                sequence: index as u64 + 1,
                document_id: format!("d{index}"),
                timestamp_ms: 1_000 + index as i64,
                client_id: (*client_id).into(),
                header,
                payload: Bytes::from(payload.to_string()),
                payload_type: "application/json".into(),
                entry_hash: [0; 32],
                chain_hash: [0; 32],
                protection: Protection::Plaintext,
            });
        }
        view
    }

    fn message(kind: &str, consumer_pid: &str) -> Value {
        json!({"@type": format!("dspace:{kind}"), "dspace:consumerPid": consumer_pid,
               "dspace:providerPid": "urn:p"})
    }

    fn transfers(view: &ProcessView) -> Value {
        view.render(ViewPage {
            kind: ViewKind::Transfers,
            page: 1,
            size: 100,
        })
    }

    #[test]
    fn each_party_keeps_its_own_record() {
        let view = fold(&[
            (CONSUMER, false, message("TransferRequestMessage", "c1")),
            (PROVIDER, true, message("TransferRequestMessage", "c1")),
            (PROVIDER, false, message("TransferStartMessage", "c1")),
        ]);
        let transfer = &transfers(&view)["transfers"][0];
        // The consumer has not logged the start yet: the records differ.
        assert_eq!(transfer["state"], Value::Null);
        assert_eq!(transfer["parties"][0]["state"], "REQUESTED");
        assert_eq!(transfer["parties"][1]["state"], "STARTED");
        assert_eq!(transfer["parties"][1]["side"], "provider");
        assert_eq!(transfer["findings"], json!([]));
    }

    #[test]
    fn two_identities_claiming_one_side_is_a_wrong_side() {
        let view = fold(&[
            (CONSUMER, false, message("TransferRequestMessage", "c1")),
            (PROVIDER, false, message("TransferRequestMessage", "c1")),
        ]);
        let transfer = &transfers(&view)["transfers"][0];
        assert_eq!(transfer["findings"][0]["kind"], "wrong_side");
        let detail = transfer["findings"][0]["detail"].as_str().unwrap();
        assert!(detail.contains(CONSUMER), "{detail}");
    }

    #[test]
    fn a_transition_without_a_request_is_illegal() {
        let view = fold(&[(PROVIDER, false, message("TransferStartMessage", "c1"))]);
        let finding = &transfers(&view)["transfers"][0]["findings"][0];
        assert_eq!(finding["kind"], "illegal_transition");
        assert_eq!(
            finding["detail"],
            "TransferStartMessage is not allowed in state (no request)"
        );
    }

    #[test]
    fn entries_out_of_order_are_not_folded() {
        let mut view = fold(&[(CONSUMER, false, message("TransferRequestMessage", "c1"))]);
        let before = view.clone();
        let mut again = Entry {
            pid: "p".into(),
            sequence: 1,
            document_id: "d".into(),
            timestamp_ms: 0,
            client_id: CONSUMER.into(),
            header: json!({}),
            payload: Bytes::from(message("TransferRequestMessage", "c1").to_string()),
            payload_type: String::new(),
            entry_hash: [0; 32],
            chain_hash: [0; 32],
            protection: Protection::Plaintext,
        };
        view.apply(&again);
        again.sequence = 3;
        view.apply(&again);
        assert_eq!(view, before);
    }

    #[test]
    fn bounds_count_what_does_not_fit() {
        let mut messages = vec![(CONSUMER, false, message("TransferRequestMessage", "c1"))];
        messages.extend((0..MAX_EVENTS + 3).map(|_| {
            (
                CONSUMER,
                false,
                json!({"@type": "dspace:TransferError", "dspace:consumerPid": "c1"}),
            )
        }));
        messages.push((CONSUMER, false, json!({"@type": "dspace:TransferError"})));
        let view = fold(&messages);
        let transfer = &view.transfers["c1"];
        assert_eq!(transfer.timeline.len(), MAX_EVENTS);
        assert_eq!(transfer.omitted_events, 4);
        assert_eq!(view.unplaced, 1, "no consumerPid");

        let mut view = ProcessView::default();
        for n in 0..=MAX_TRANSFERS {
            view.entries_seen = n as u64;
            view.apply(&Entry {
                pid: "p".into(),
                sequence: n as u64 + 1,
                document_id: String::new(),
                timestamp_ms: 0,
                client_id: CONSUMER.into(),
                header: json!({}),
                payload: Bytes::from(
                    message("TransferRequestMessage", &format!("c{n}")).to_string(),
                ),
                payload_type: String::new(),
                entry_hash: [0; 32],
                chain_hash: [0; 32],
                protection: Protection::Plaintext,
            });
        }
        assert_eq!(view.transfers.len(), MAX_TRANSFERS);
        assert_eq!(view.unplaced, 1);
    }

    #[test]
    fn a_view_decodes_to_itself() {
        let view = fold(&[
            (CONSUMER, false, message("TransferRequestMessage", "c1")),
            (PROVIDER, false, message("TransferStartMessage", "c1")),
            (
                CONSUMER,
                false,
                json!({"@type": "ids:ArtifactRequestMessage", "ids:transferContract": "urn:a"}),
            ),
        ]);
        assert_eq!(ProcessView::decode(&view.encode()), Some(view));
        assert_eq!(ProcessView::decode(b"not a view"), None);
    }
}
