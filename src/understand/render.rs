//! The view as a query returns it: one page of transfers or contracts as JSON, with client ids
//! and times written out, each finding with a sentence that says what is wrong.
//!
//! Transfers (`"view": "transfers"`), oldest first (by their first message):
//! `{"view", "entries", "page", "size", "total", "pages", "findings", "unplaced", "transfers": [
//!   {"consumer_pid", "provider_pid", "agreement_id", "format", "state", "parties": [{"client_id",
//!   "side", "state"}], "timeline": [{"sequence", "timestamp", "message", "logged_by", "direction",
//!   "code", "reason"}], "omitted_events", "findings": [{"kind", "sequence", "logged_by",
//!   "detail"}]}]}`. `state` is the parties' common state, `null` while their records differ;
//!   `findings` at the top is the number over all transfers, not only this page's.
//!
//! Contracts (`"view": "contracts"`): `{..., "ids_messages": {"<type>": n}, "contracts": [
//!   {"agreement_id", "agreed_at", "messages": [{"sequence", "timestamp", "message", "logged_by",
//!   "direction", "issuer", "requested_artifact"}], "artifact_requests", "omitted_messages",
//!   "transfers"}]}`.

use serde_json::{json, Value};
use time::OffsetDateTime;

use super::dsp::TransferMessageKind;
use super::view::{Contract, Finding, ProcessView, Transfer};
use crate::ids::{rfc3339_ms, ViewKind};

/// One page of a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewPage {
    /// Which view.
    pub kind: ViewKind,
    /// 1-based.
    pub page: u64,
    /// At least 1.
    pub size: u64,
}

impl ProcessView {
    /// The page as JSON.
    pub fn render(&self, page: ViewPage) -> Value {
        let (total, rows, extra) = match page.kind {
            ViewKind::Transfers => {
                let findings: usize = self
                    .transfers
                    .values()
                    .map(|t| self.count_findings(t))
                    .sum();
                let rows = paged(&self.transfer_order, page)
                    .iter()
                    .filter_map(|consumer_pid| {
                        let transfer = self.transfers.get(consumer_pid)?;
                        Some(self.transfer_json(consumer_pid, transfer))
                    })
                    .collect::<Vec<_>>();
                (self.transfers.len(), rows, json!({ "findings": findings }))
            }
            ViewKind::Contracts => {
                let mut contracts: Vec<(&String, &Contract)> = self.contracts.iter().collect();
                contracts.sort_by_key(|(_, c)| c.first);
                let rows = paged(&contracts, page)
                    .iter()
                    .map(|(agreement_id, contract)| self.contract_json(agreement_id, contract))
                    .collect::<Vec<_>>();
                (
                    contracts.len(),
                    rows,
                    json!({ "ids_messages": self.ids_messages }),
                )
            }
        };
        let mut reply = json!({
            "view": page.kind.name(),
            "entries": self.entries_seen,
            "page": page.page,
            "size": page.size,
            "total": total,
            "pages": (total as u64).div_ceil(page.size.max(1)),
            "unplaced": self.unplaced,
            page.kind.name(): rows,
        });
        if let (Some(reply), Value::Object(extra)) = (reply.as_object_mut(), extra) {
            reply.extend(extra);
        }
        reply
    }

    fn client(&self, party: u32) -> &str {
        self.parties.get(party as usize).map_or("", String::as_str)
    }

    fn transfer_json(&self, consumer_pid: &str, transfer: &Transfer) -> Value {
        let first_state = transfer.records.first().and_then(|r| r.state);
        let agreed = transfer.records.iter().all(|r| r.state == first_state);
        let state = first_state.filter(|_| agreed).map(|s| s.name());
        let parties: Vec<Value> = transfer
            .records
            .iter()
            .map(|r| {
                json!({
                    "client_id": self.client(r.party),
                    "side": r.side,
                    "state": r.state.map(|s| s.name()),
                })
            })
            .collect();
        let timeline: Vec<Value> = transfer
            .timeline
            .iter()
            .map(|e| {
                json!({
                    "sequence": e.sequence,
                    "timestamp": timestamp(e.timestamp_ms),
                    "message": e.message.term(),
                    "logged_by": self.client(e.party),
                    "direction": e.direction,
                    "code": e.code,
                    "reason": e.reason,
                })
            })
            .collect();
        json!({
            "consumer_pid": consumer_pid,
            "provider_pid": transfer.provider_pid,
            "agreement_id": transfer.agreement_id,
            "format": transfer.format,
            "state": state,
            "parties": parties,
            "timeline": timeline,
            "omitted_events": transfer.omitted_events,
            "findings": self.findings_of(transfer),
            "omitted_findings": transfer.omitted_findings,
        })
    }

    /// How many findings [`Self::findings_of`] gives, without writing them.
    fn count_findings(&self, transfer: &Transfer) -> usize {
        transfer.findings.len()
            + usize::from(self.has_unmatched_completion(transfer).is_some())
            + usize::from(self.has_unknown_agreement(transfer).is_some())
    }

    /// The one completion of a transfer in which only one party logged one.
    fn has_unmatched_completion(&self, transfer: &Transfer) -> Option<(u64, u32)> {
        let mut completions = transfer
            .records
            .iter()
            .filter_map(|r| Some((r.completion?, r.party)));
        let first = completions.next()?;
        completions.next().is_none().then_some(first)
    }

    /// The agreement a transfer refers to, when no entry recorded it.
    fn has_unknown_agreement<'t>(&self, transfer: &'t Transfer) -> Option<&'t String> {
        let agreement_id = transfer.agreement_id.as_ref()?;
        let recorded = self
            .contracts
            .get(agreement_id)
            .is_some_and(|c| c.agreed.is_some());
        (!recorded).then_some(agreement_id)
    }

    /// The transfer's findings: those found while folding, and those that need the whole
    /// process.
    fn findings_of(&self, transfer: &Transfer) -> Vec<Value> {
        let mut findings: Vec<Value> = transfer
            .findings
            .iter()
            .map(|finding| self.finding_json(finding))
            .collect();
        if let Some((sequence, party)) = self.has_unmatched_completion(transfer) {
            findings.push(json!({
                "kind": "unmatched_completion",
                "sequence": sequence,
                "logged_by": self.client(party),
                "detail": "a completion logged by one party with no matching record from the other",
            }));
        }
        if let Some(agreement_id) = self.has_unknown_agreement(transfer) {
            findings.push(json!({
                "kind": "unknown_agreement",
                "sequence": transfer.first,
                "agreement_id": agreement_id,
                "detail": format!("the transfer refers to agreement {agreement_id}, which no entry of the process recorded"),
            }));
        }
        findings
    }

    fn finding_json(&self, finding: &Finding) -> Value {
        let side = |side: &super::transition::Side| match side {
            super::transition::Side::Consumer => "consumer",
            super::transition::Side::Provider => "provider",
        };
        match finding {
            Finding::IllegalTransition { s, p, m, from } => json!({
                "kind": "illegal_transition",
                "sequence": s,
                "logged_by": self.client(*p),
                "detail": format!(
                    "{} is not allowed in state {}",
                    m.term(),
                    from.map_or("(no request)", |s| s.name())
                ),
            }),
            Finding::WrongSide {
                s,
                p,
                m,
                claimed,
                held,
                held_by,
            } => json!({
                "kind": "wrong_side",
                "sequence": s,
                "logged_by": self.client(*p),
                "detail": match (held, held_by) {
                    (Some(held), _) => format!(
                        "{} claims the {} side, but this identity is the {}",
                        m.term(), side(claimed), side(held)
                    ),
                    (None, Some(other)) => format!(
                        "{} claims the {} side, which {} holds",
                        m.term(), side(claimed), self.client(*other)
                    ),
                    (None, None) => format!("{} claims the {} side", m.term(), side(claimed)),
                },
            }),
            Finding::RepeatedRequest { s, p } => json!({
                "kind": "repeated_request",
                "sequence": s,
                "logged_by": self.client(*p),
                "detail": format!("{} repeated with the same consumerPid", TransferMessageKind::Request.term()),
            }),
        }
    }

    fn contract_json(&self, agreement_id: &str, contract: &Contract) -> Value {
        let messages: Vec<Value> = contract
            .messages
            .iter()
            .map(|m| {
                json!({
                    "sequence": m.sequence,
                    "timestamp": timestamp(m.timestamp_ms),
                    "message": m.message,
                    "logged_by": self.client(m.party),
                    "direction": m.direction,
                    "issuer": m.issuer,
                    "requested_artifact": m.requested_artifact,
                })
            })
            .collect();
        let artifact_requests = contract
            .messages
            .iter()
            .filter(|m| m.message == "ArtifactRequestMessage")
            .count();
        let transfers = self
            .transfers
            .values()
            .filter(|t| t.agreement_id.as_deref() == Some(agreement_id))
            .count();
        json!({
            "agreement_id": agreement_id,
            "agreed_at": contract.agreed,
            "messages": messages,
            "omitted_messages": contract.omitted,
            "artifact_requests": artifact_requests,
            "transfers": transfers,
        })
    }
}

fn paged<T>(rows: &[T], page: ViewPage) -> &[T] {
    let start = usize::try_from((page.page.max(1) - 1).saturating_mul(page.size))
        .unwrap_or(usize::MAX)
        .min(rows.len());
    let end = start
        .saturating_add(usize::try_from(page.size).unwrap_or(usize::MAX))
        .min(rows.len());
    &rows[start..end]
}

fn timestamp(ms: i64) -> Value {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(rfc3339_ms)
        .map_or(Value::Null, Value::from)
}
