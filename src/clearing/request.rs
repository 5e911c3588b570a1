//! A request as the handlers see it, and what they answer.

use bytes::Bytes;

use crate::ids::{ChParams, RequestHeader};
use crate::idscp2::proto::app::HeaderEntry;

/// An authenticated IDS request.
pub struct Request<'a> {
    /// The caller, as the transport verified it.
    pub client_id: &'a str,
    pub header: &'a RequestHeader,
    pub params: &'a ChParams,
    pub payload: Bytes,
}

pub enum ReplyKind {
    /// `ids:MessageProcessedNotificationMessage`
    Processed,
    /// `ids:ResultMessage`
    Result,
}

/// A successful answer: the reply type, its payload and its extra headers.
pub struct Outcome {
    pub kind: ReplyKind,
    pub payload: Bytes,
    pub extra_headers: Vec<HeaderEntry>,
}
