//! The transfer-process state machine, as one table: which message moves a party's record of a
//! transfer from which state to which, and which side may send it.
//!
//! | message                    | sent by  | from                          | to         |
//! |----------------------------|----------|-------------------------------|------------|
//! | TransferRequestMessage     | consumer | (none: the first message)     | REQUESTED  |
//! | TransferStartMessage       | provider | REQUESTED, SUSPENDED          | STARTED    |
//! | TransferSuspensionMessage  | either   | STARTED                       | SUSPENDED  |
//! | TransferCompletionMessage  | either   | STARTED                       | COMPLETED  |
//! | TransferTerminationMessage | either   | REQUESTED, STARTED, SUSPENDED | TERMINATED |
//! | TransferProcess (ACK)      | either   | any                           | unchanged  |
//! | TransferError              | either   | any                           | unchanged  |
//!
//! COMPLETED and TERMINATED are final. Anything else is an illegal transition, except a second
//! request for a transfer the party already knows, which is a repeated request.
//!
//! Against the specification text (Dataspace Protocol 2024-1, "Transfer Process Protocol"):
//! - it names the sender of each message as above, and says the ACK (`TransferProcess`) is
//!   returned "by a consumer or provider" (the table had no sender for it) and that a
//!   `TransferError` "does not cause a state transition";
//! - the allowed source states come from its state-machine figure, not its text: the text only
//!   says a termination may be sent "at any point except a terminal state", which the table
//!   follows; a termination before any request is not a transition of a known transfer, so it
//!   counts as illegal here;
//! - it asks providers to treat a repeated `TransferRequestMessage` with the same `consumerPid`
//!   idempotently (and answer it with a start), so a repeated request is legal for a provider
//!   to receive: the view reports it as a finding of its own, not as an illegal transition, and
//!   leaves the state as it was.

use serde::{Deserialize, Serialize};

use super::dsp::TransferMessageKind;

/// A transfer process's state, in one party's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransferState {
    /// After the request.
    Requested,
    /// Data flows (or may be pulled).
    Started,
    /// Paused by either side.
    Suspended,
    /// Final: the transfer is done.
    Completed,
    /// Final: the transfer was stopped.
    Terminated,
}

impl TransferState {
    /// The name the specification gives it.
    pub fn name(self) -> &'static str {
        match self {
            TransferState::Requested => "REQUESTED",
            TransferState::Started => "STARTED",
            TransferState::Suspended => "SUSPENDED",
            TransferState::Completed => "COMPLETED",
            TransferState::Terminated => "TERMINATED",
        }
    }
}

/// A party of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Requests the data.
    Consumer,
    /// Offers the data.
    Provider,
}

impl Side {
    /// The other party.
    pub fn other(self) -> Side {
        match self {
            Side::Consumer => Side::Provider,
            Side::Provider => Side::Consumer,
        }
    }
}

/// Which side may send `kind`; `None`: either.
pub fn sender(kind: TransferMessageKind) -> Option<Side> {
    match kind {
        TransferMessageKind::Request => Some(Side::Consumer),
        TransferMessageKind::Start => Some(Side::Provider),
        TransferMessageKind::Suspension
        | TransferMessageKind::Completion
        | TransferMessageKind::Termination
        | TransferMessageKind::Process
        | TransferMessageKind::Error => None,
    }
}

/// What `kind` does to a party's record that is in `from` (`None`: the party has no record of
/// the transfer yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The record moves to this state.
    To(TransferState),
    /// A response: the record stays as it is.
    Unchanged,
    /// A request for a transfer the party already has a record of.
    RepeatedRequest,
    /// Not allowed from `from`; the record stays as it is.
    Illegal,
}

/// The table in the module documentation.
pub fn transition(from: Option<TransferState>, kind: TransferMessageKind) -> Transition {
    use TransferMessageKind as M;
    use TransferState as S;
    match (kind, from) {
        (M::Process | M::Error, _) => Transition::Unchanged,
        (M::Request, None) => Transition::To(S::Requested),
        (M::Request, Some(_)) => Transition::RepeatedRequest,
        (M::Start, Some(S::Requested | S::Suspended)) => Transition::To(S::Started),
        (M::Suspension, Some(S::Started)) => Transition::To(S::Suspended),
        (M::Completion, Some(S::Started)) => Transition::To(S::Completed),
        (M::Termination, Some(S::Requested | S::Started | S::Suspended)) => {
            Transition::To(S::Terminated)
        }
        (M::Start | M::Suspension | M::Completion | M::Termination, _) => Transition::Illegal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransferMessageKind as M;
    use TransferState as S;

    const STATES: [Option<TransferState>; 6] = [
        None,
        Some(S::Requested),
        Some(S::Started),
        Some(S::Suspended),
        Some(S::Completed),
        Some(S::Terminated),
    ];

    /// Every (state, message) pair, each named, legal or not: the whole table.
    #[test]
    fn the_whole_table() {
        use Transition::{Illegal, RepeatedRequest, To, Unchanged};
        #[rustfmt::skip]
        let table: [(M, [Transition; 6]); 7] = [
            //               none                requested          started             suspended          completed         terminated
            (M::Request,     [To(S::Requested),  RepeatedRequest,   RepeatedRequest,    RepeatedRequest,   RepeatedRequest,  RepeatedRequest]),
            (M::Start,       [Illegal,           To(S::Started),    Illegal,            To(S::Started),    Illegal,          Illegal]),
            (M::Suspension,  [Illegal,           Illegal,           To(S::Suspended),   Illegal,           Illegal,          Illegal]),
            (M::Completion,  [Illegal,           Illegal,           To(S::Completed),   Illegal,           Illegal,          Illegal]),
            (M::Termination, [Illegal,           To(S::Terminated), To(S::Terminated),  To(S::Terminated), Illegal,          Illegal]),
            (M::Process,     [Unchanged,         Unchanged,         Unchanged,          Unchanged,         Unchanged,        Unchanged]),
            (M::Error,       [Unchanged,         Unchanged,         Unchanged,          Unchanged,         Unchanged,        Unchanged]),
        ];
        for (kind, row) in table {
            for (from, expected) in STATES.into_iter().zip(row) {
                assert_eq!(transition(from, kind), expected, "{kind:?} from {from:?}");
            }
        }
    }

    #[test]
    fn started_after_completed_is_illegal() {
        assert_eq!(
            transition(Some(S::Completed), M::Start),
            Transition::Illegal
        );
    }

    #[test]
    fn final_states_accept_no_transition() {
        for from in [S::Completed, S::Terminated] {
            for kind in [M::Start, M::Suspension, M::Completion, M::Termination] {
                assert_eq!(
                    transition(Some(from), kind),
                    Transition::Illegal,
                    "{kind:?} from {from:?}"
                );
            }
        }
    }

    #[test]
    fn senders() {
        assert_eq!(sender(M::Request), Some(Side::Consumer));
        assert_eq!(sender(M::Start), Some(Side::Provider));
        for either in [
            M::Suspension,
            M::Completion,
            M::Termination,
            M::Process,
            M::Error,
        ] {
            assert_eq!(sender(either), None, "{either:?}");
        }
        assert_eq!(Side::Consumer.other(), Side::Provider);
    }
}
