//! What can go wrong once a command runs, and the one place it becomes a [`Rejection`].
//!
//! Handlers say what happened in their own terms (the caller does not own the process, the
//! store is down); [`From<ClearingError> for Rejection`](ClearingError) decides what a client is
//! told, which status it gets and what the operator's log says, the same for every door.

use super::offload::OffloadError;
use crate::ids::rejection::too_large;
use crate::ids::{Pid, Rejection, RejectionReason};
use crate::store::{StoreError, UnfitEntry};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClearingError {
    /// Already a rejection: a quota the caller ran into, or a stored entry the ids layer
    /// cannot render.
    #[error(transparent)]
    Refused(#[from] Rejection),
    #[error("the caller is not an owner of process {0:?}")]
    NotAnOwner(Pid),
    #[error("only connectors listed in admin.identities may erase processes")]
    NotAnAdmin,
    #[error("process {0:?} already exists")]
    ProcessExists(Pid),
    #[error("process {0:?} does not exist")]
    NoSuchProcess(Pid),
    #[error("process {pid:?} has no document {id:?}")]
    NoSuchDocument { pid: Pid, id: String },
    /// The caller included.
    #[error("{count} owners (the caller included) exceed the limit of {max} per process (limits.max_owners)")]
    TooManyOwners { count: usize, max: usize },
    #[error("the answer of {bytes} bytes")]
    ReplyTooLarge { bytes: usize, max_reply: usize },
    /// One entry that no reply can carry: asking for fewer entries does not help.
    #[error("entry {} (document {}) alone exceeds the reply limit of {max_reply} bytes; it can only be read with `clearinghouse export` or a larger idscp2.max_frame", .entry.sequence, .entry.document_id)]
    EntryTooLarge { entry: UnfitEntry, max_reply: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Work lost on its way (see [`super::offload`]).
    #[error(transparent)]
    NotCompleted(OffloadError),
    /// The entry is durable; only its receipt is missing.
    #[error("cannot sign a receipt: {0}")]
    ReceiptNotSigned(OffloadError),
}

impl From<ClearingError> for Rejection {
    fn from(error: ClearingError) -> Self {
        let message = error.to_string();
        match error {
            ClearingError::Refused(rejection) => rejection,
            ClearingError::NotAnOwner(_) | ClearingError::NotAnAdmin => {
                Rejection::with_default_status(RejectionReason::NotAuthorized, message)
            }
            // 410 Gone: the process is there, but takes nothing any more.
            ClearingError::Store(StoreError::Erased { .. }) => {
                Rejection::new(RejectionReason::BadParameters, 410, message)
            }
            ClearingError::Store(StoreError::NotErasable(_)) => {
                Rejection::new(RejectionReason::BadParameters, 409, message)
            }
            ClearingError::Store(StoreError::UnknownProcess(_)) => {
                Rejection::with_default_status(RejectionReason::NotFound, message)
            }
            ClearingError::ProcessExists(_) => {
                Rejection::new(RejectionReason::BadParameters, 409, message)
            }
            ClearingError::NoSuchProcess(_) | ClearingError::NoSuchDocument { .. } => {
                Rejection::with_default_status(RejectionReason::NotFound, message)
            }
            ClearingError::TooManyOwners { max, .. } => {
                too_large("limits.max_owners", max, message)
            }
            ClearingError::ReplyTooLarge { max_reply, .. } => too_many_results(message, max_reply),
            ClearingError::EntryTooLarge { .. } => {
                Rejection::with_default_status(RejectionReason::TooManyResults, message)
            }
            ClearingError::Store(StoreError::PageTooLarge {
                first_unfit,
                fitting: 0,
                limit,
            }) => ClearingError::EntryTooLarge {
                entry: first_unfit,
                max_reply: limit,
            }
            .into(),
            ClearingError::Store(StoreError::PageTooLarge { limit, fitting, .. }) => {
                Rejection::with_default_status(
                    RejectionReason::TooManyResults,
                    format!(
                        "the requested page exceeds the reply limit of {limit} bytes; its first {fitting} entries fit: ask for at most {fitting} with ch-ids-size"
                    ),
                )
            }
            ClearingError::Store(StoreError::OwnersChanged(_)) => Rejection::new(
                RejectionReason::BadParameters,
                409,
                format!("{message}; read them again (ch-ids-operation: info) and decide anew"),
            ),
            ClearingError::Store(StoreError::Unavailable(reason)) => {
                tracing::warn!(%reason, "store unavailable");
                Rejection::with_default_status(
                    RejectionReason::TemporarilyNotAvailable,
                    "the store is not available; retry later",
                )
            }
            ClearingError::Store(error) => {
                tracing::error!(%error, "store failed");
                not_completed()
            }
            ClearingError::NotCompleted(error) => {
                tracing::error!(%error, "request not completed");
                not_completed()
            }
            ClearingError::ReceiptNotSigned(error) => {
                tracing::error!(%error, "cannot sign a receipt");
                Rejection::with_default_status(
                    RejectionReason::InternalRecipientError,
                    "the entry was stored but its receipt could not be signed",
                )
            }
        }
    }
}

/// A reply that would not fit: the client should ask for fewer entries.
fn too_many_results(what: String, max_reply: usize) -> Rejection {
    Rejection::with_default_status(
        RejectionReason::TooManyResults,
        format!(
            "{what} exceeds the reply limit of {max_reply} bytes; ask for fewer entries with ch-ids-size"
        ),
    )
}

/// Our fault, and the client may retry.
fn not_completed() -> Rejection {
    Rejection::with_default_status(
        RejectionReason::InternalRecipientError,
        "the clearing house could not complete the request",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid() -> Pid {
        Pid::parse("p-1", 255).unwrap()
    }

    fn unfit() -> UnfitEntry {
        UnfitEntry {
            sequence: 3,
            document_id: "d-3".into(),
        }
    }

    fn rejection(error: ClearingError) -> (RejectionReason, u16, String) {
        let rejection = Rejection::from(error);
        (rejection.reason, rejection.status, rejection.message)
    }

    #[test]
    fn each_error_gets_the_reason_status_and_message_clients_know() {
        use RejectionReason::*;
        let cases = [
            (
                ClearingError::NotAnOwner(pid()),
                (NotAuthorized, 403, "the caller is not an owner of process \"p-1\""),
            ),
            (
                ClearingError::ProcessExists(pid()),
                (BadParameters, 409, "process \"p-1\" already exists"),
            ),
            (
                ClearingError::NoSuchProcess(pid()),
                (NotFound, 404, "process \"p-1\" does not exist"),
            ),
            (
                ClearingError::NoSuchDocument {
                    pid: pid(),
                    id: "d".into(),
                },
                (NotFound, 404, "process \"p-1\" has no document \"d\""),
            ),
            (
                ClearingError::TooManyOwners { count: 3, max: 2 },
                (
                    BadParameters,
                    413,
                    "3 owners (the caller included) exceed the limit of 2 per process (limits.max_owners)",
                ),
            ),
            (
                ClearingError::ReplyTooLarge {
                    bytes: 10,
                    max_reply: 5,
                },
                (
                    TooManyResults,
                    400,
                    "the answer of 10 bytes exceeds the reply limit of 5 bytes; ask for fewer entries with ch-ids-size",
                ),
            ),
            (
                ClearingError::Store(StoreError::PageTooLarge {
                    limit: 7,
                    fitting: 2,
                    first_unfit: unfit(),
                }),
                (
                    TooManyResults,
                    400,
                    "the requested page exceeds the reply limit of 7 bytes; its first 2 entries fit: ask for at most 2 with ch-ids-size",
                ),
            ),
            (
                ClearingError::Store(StoreError::PageTooLarge {
                    limit: 7,
                    fitting: 0,
                    first_unfit: unfit(),
                }),
                (
                    TooManyResults,
                    400,
                    "entry 3 (document d-3) alone exceeds the reply limit of 7 bytes; it can only be read with `clearinghouse export` or a larger idscp2.max_frame",
                ),
            ),
            (
                ClearingError::Store(StoreError::OwnersChanged("p-1".into())),
                (
                    BadParameters,
                    409,
                    "the owners of process \"p-1\" changed meanwhile; read them again (ch-ids-operation: info) and decide anew",
                ),
            ),
            (
                ClearingError::Store(StoreError::Unavailable("down".into())),
                (
                    TemporarilyNotAvailable,
                    503,
                    "the store is not available; retry later",
                ),
            ),
            (
                ClearingError::NotCompleted(OffloadError::Lost("payload_hash")),
                (
                    InternalRecipientError,
                    500,
                    "the clearing house could not complete the request",
                ),
            ),
            (
                ClearingError::ReceiptNotSigned(OffloadError::Lost("receipt_signature")),
                (
                    InternalRecipientError,
                    500,
                    "the entry was stored but its receipt could not be signed",
                ),
            ),
        ];
        for (error, (reason, status, message)) in cases {
            assert_eq!(rejection(error), (reason, status, message.to_owned()));
        }
    }

    #[test]
    fn a_rejection_passes_through_unchanged() {
        let quota = Rejection::new(RejectionReason::TemporarilyNotAvailable, 429, "slow down");
        assert_eq!(Rejection::from(ClearingError::from(quota.clone())), quota);
    }
}
