//! `ids:RequestMessage`: create a process, a log with a set of owners (changed later only by an
//! owner, see `owners`).

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::Value;

use super::error::ClearingError;
use super::request::{Caller, Outcome, ReplyKind};
use super::ClearingHouse;
use crate::ids::{reply_extra_headers, Pid};
use crate::store::CreateOutcome;

impl ClearingHouse {
    pub(super) async fn create(
        &self,
        caller: &Caller<'_>,
        pid: Pid,
        mut owners: BTreeSet<String>,
    ) -> Result<Outcome, ClearingError> {
        let reservation = self.quotas.reserve_process(caller.client_id())?;
        // The caller always owns what it creates.
        owners.insert(caller.client_id().to_owned());
        let max_owners = self.limits.max_owners;
        if owners.len() > max_owners {
            return Err(ClearingError::TooManyOwners {
                count: owners.len(),
                max: max_owners,
            });
        }
        match self.store.create_process(pid.as_str(), &owners).await? {
            CreateOutcome::Created(_) => {
                reservation.keep();
                Ok(Outcome {
                    kind: ReplyKind::Processed,
                    payload: Bytes::from(Value::String(pid.to_string()).to_string()),
                    extra_headers: reply_extra_headers(pid.as_str()),
                })
            }
            CreateOutcome::Exists(process) if process.owners.contains(caller.client_id()) => {
                Err(ClearingError::ProcessExists(pid))
            }
            CreateOutcome::Exists(_) => Err(ClearingError::NotAnOwner(pid)),
        }
    }
}
