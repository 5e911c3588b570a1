//! `ids:RequestMessage`: create a process, a log with a fixed set of owners.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::Value;

use super::request::{Outcome, ReplyKind, Request};
use super::{store_rejection, ClearingHouse};
use crate::ids::params::too_large;
use crate::ids::{reply_extra_headers, Rejection, RejectionReason};
use crate::store::CreateOutcome;

impl ClearingHouse {
    pub(super) async fn create(&self, request: &Request<'_>) -> Result<Outcome, Rejection> {
        let pid = request.params.pid()?;
        let max_payload = self.limits.max_create_payload;
        if request.payload.len() > max_payload {
            return Err(too_large(
                "limits.max_create_payload",
                max_payload,
                format!(
                    "the create payload of {} bytes exceeds the limit of {max_payload} bytes (limits.max_create_payload)",
                    request.payload.len()
                ),
            ));
        }
        let reservation = self.quotas.reserve_process(request.client_id)?;
        let mut owners = requested_owners(request)?;
        // The caller always owns what it creates.
        owners.insert(request.client_id.to_owned());
        let max_owners = self.limits.max_owners;
        if owners.len() > max_owners {
            return Err(too_large(
                "limits.max_owners",
                max_owners,
                format!(
                    "{} owners (the caller included) exceed the limit of {max_owners} per process (limits.max_owners)",
                    owners.len()
                ),
            ));
        }
        match self.store.create_process(pid, &owners).await {
            Ok(CreateOutcome::Created(_)) => {
                reservation.keep();
                Ok(Outcome {
                    kind: ReplyKind::Processed,
                    payload: Bytes::from(Value::String(pid.to_owned()).to_string()),
                    extra_headers: reply_extra_headers(pid),
                })
            }
            Ok(CreateOutcome::Exists(process)) if process.owners.contains(request.client_id) => {
                Err(Rejection::new(
                    RejectionReason::BadParameters,
                    409,
                    format!("process {pid:?} already exists"),
                ))
            }
            Ok(CreateOutcome::Exists(_)) => Err(not_authorized(pid)),
            Err(e) => Err(store_rejection(e)),
        }
    }
}

pub(super) fn not_authorized(pid: &str) -> Rejection {
    Rejection::with_default_status(
        RejectionReason::NotAuthorized,
        format!("the caller is not an owner of process {pid:?}"),
    )
}

/// The owners named in the payload `{"owners": [...]}`; an empty payload names none.
fn requested_owners(request: &Request<'_>) -> Result<BTreeSet<String>, Rejection> {
    if request.payload.is_empty() {
        return Ok(BTreeSet::new());
    }
    let bad =
        |message: &str| Rejection::with_default_status(RejectionReason::BadParameters, message);
    let is_json = request.params.content_type.as_deref().is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return Err(bad(
            "a payload needs Content-Type: application/json with {\"owners\": [...]}",
        ));
    }
    let body: Value = serde_json::from_slice(&request.payload)
        .map_err(|e| bad(&format!("payload is not JSON: {e}")))?;
    let Value::Object(body) = body else {
        return Err(bad("payload must be a JSON object {\"owners\": [...]}"));
    };
    match body.get("owners") {
        None => Ok(BTreeSet::new()),
        Some(Value::Array(owners)) => owners
            .iter()
            .map(|owner| match owner {
                Value::String(id) if !id.is_empty() => Ok(id.clone()),
                _ => Err(bad("owners must be a list of non-empty strings")),
            })
            .collect(),
        Some(_) => Err(bad("owners must be a list of non-empty strings")),
    }
}
