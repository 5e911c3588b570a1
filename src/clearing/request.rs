//! The two sides of a command as the handlers see it: who it runs for, and what they answer.

use bytes::Bytes;

use crate::idscp2::proto::app::HeaderEntry;

/// A connector its door authenticated and the request quota admitted: the one a command runs
/// for. Only [`ClearingHouse::admit`](super::ClearingHouse::admit) makes one, so no door can
/// run a command past the quotas.
#[derive(Debug)]
pub(crate) struct Caller<'a> {
    client_id: &'a str,
}

impl<'a> Caller<'a> {
    pub(super) fn admitted(client_id: &'a str) -> Self {
        Caller { client_id }
    }

    /// The caller's identity as its door verified it (for IDSCP2, the DAT `sub` bound to the
    /// TLS certificate): what owners lists and receipts name.
    pub(crate) fn client_id(&self) -> &'a str {
        self.client_id
    }
}

/// Which reply a successful command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyKind {
    /// `ids:MessageProcessedNotificationMessage`
    Processed,
    /// `ids:ResultMessage`
    Result,
}

/// A successful answer: the reply type, its payload and its extra headers, for the door to
/// render in its own framing.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) kind: ReplyKind,
    pub(crate) payload: Bytes,
    pub(crate) extra_headers: Vec<HeaderEntry>,
}
