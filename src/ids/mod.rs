//! The IDS message layer: what a request's Information Model header and `ch-ids-*` parameters
//! say, and how replies, rejections and query results are written back.
//!
//! Handlers decide what happens; this room owns the wire shapes (Infomodel 4.2.7 JSON-LD, the
//! reference clearing house's parameter spellings and result documents), so that every handler
//! reads and answers the same way and a JVM peer never drops a reply it cannot deserialize.
//!
//! - [`header`]: reading a request header, and the token-free form that is stored.
//! - [`params`]: the `ch-ids-*` parameters and their validation.
//! - [`reply`]: reply headers and extra headers, rejection reasons and payloads.
//! - [`document`]: stored entries as `ids:LogMessage` documents, and the page payload.
//! - [`request`]: the client side: request headers, and reading replies.

pub mod document;
pub mod header;
pub mod params;
pub mod reply;
pub mod request;

pub use document::{log_document, page_payload, LogDocument};
pub use header::{HeaderError, MessageType, RequestHeader};
pub use params::{ChParams, DateBound, QueryParams, SortOrder};
pub use reply::{
    compact_json, page_extra_headers, processed_header, rejection_header, reply_extra_headers,
    result_header, Rejection, RejectionReason, ReplyContext,
};
pub use request::{request_header, Reply, ReplyError, RequestContext};
