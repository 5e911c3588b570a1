//! The IDS message layer: what a request's Information Model header and `ch-ids-*` parameters
//! say, the command they make, and how replies, rejections and query results are written back.
//!
//! Handlers decide what happens; this room owns the wire shapes (Infomodel 4.2.7 JSON-LD, the
//! reference clearing house's parameter spellings and result documents), so that every handler
//! reads and answers the same way, every front door makes the same [`Command`] of the same
//! request, and a JVM peer never drops a reply it cannot deserialize.
//!
//! - [`header`]: reading a request header, and the token-free form that is stored.
//! - [`params`]: the `ch-ids-*` parameters and their validation.
//! - [`pid`]: the process id, valid by construction.
//! - [`owner`]: which strings can name a connector as an owner.
//! - [`command`]: a request read once into what it asks for.
//! - [`rejection`]: why a request fails, and what the client is told.
//! - [`reply`]: reply headers and extra headers.
//! - [`document`]: stored entries as `ids:LogMessage` documents, and the page payload.
//! - [`request`]: the client side: request headers, and reading replies.
//! - `jsonld`: the JSON-LD spellings of IDS names, read without a JSON-LD processor.
//! - `infomodel`: the vocabulary all of them share: namespaces, date literals, JSON text.

pub mod command;
pub mod document;
pub mod header;
mod infomodel;
mod jsonld;
pub mod owner;
pub mod params;
pub mod pid;
pub mod rejection;
pub mod reply;
pub mod request;

pub use command::{Command, PayloadLimits};
pub use document::{
    log_document, page_payload, process_info_payload, LogDocument, ProcessInfoDocument,
};
pub use header::{HeaderError, MessageType, RequestHeader};
pub use infomodel::compact_json;
pub use owner::{check_owner_id, OwnerIdError};
pub use params::{ChParams, DateBound, QueryParams, SortOrder};
pub use pid::{Pid, PidError};
pub use rejection::{ExceededLimit, Rejection, RejectionReason};
pub use reply::{
    page_extra_headers, processed_header, rejection_header, reply_extra_headers, result_header,
    ReplyContext,
};
pub use request::{request_header, Reply, ReplyError, RequestContext};
