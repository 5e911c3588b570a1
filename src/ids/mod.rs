//! The IDS message layer: what a request's Information Model header and `ch-ids-*` parameters
//! say, the command they make, and how replies, rejections and query results are written back.
//!
//! Handlers decide what happens; this room owns the wire shapes (Infomodel 4.2.7 JSON-LD, the
//! reference clearing house's parameter spellings and result documents), so that every handler
//! reads and answers the same way, every front door makes the same `Command` of the same
//! request, and a JVM peer never drops a reply it cannot deserialize.
//!
//! - `header`: reading a request header, and the token-free form that is stored.
//! - [`params`]: the `ch-ids-*` parameters and their validation.
//! - `pid`: the process id, valid by construction.
//! - `owner`: which strings can name a connector as an owner.
//! - `command`: a request read once into what it asks for.
//! - `rejection`: why a request fails, and what the client is told.
//! - `reply`: reply headers and extra headers.
//! - `document`: stored entries as `ids:LogMessage` documents, and the page payload.
//! - `request`: the client side: request headers, and reading replies.
//! - `jsonld`: the JSON-LD spellings of IDS names (and of other vocabularies: `understand` reads
//!   the Dataspace Protocol's with it), read without a JSON-LD processor.
//! - `members`: the top-level members of a JSON object, read without building their values.
//! - `infomodel`: the vocabulary all of them share: namespaces, date literals, JSON text.

pub(crate) mod command;
pub(crate) mod document;
pub(crate) mod header;
mod infomodel;
pub(crate) mod jsonld;
mod members;
pub(crate) mod owner;
pub mod params;
pub(crate) mod pid;
pub(crate) mod rejection;
pub(crate) mod reply;
pub(crate) mod request;

pub(crate) use command::{Command, PayloadLimits};
pub use document::page_payload;
pub(crate) use document::{
    log_document, process_info_payload, rfc3339_of_ms, LogDocument, ProcessInfoDocument,
};
pub use header::{HeaderError, MessageType, RequestHeader};
pub(crate) use infomodel::{compact_json, push_json_string, rfc3339_ms};
pub use jsonld::DuplicateProperty;
pub(crate) use owner::check_owner_id;
pub use params::{ChParams, QueryParams, SortOrder, ViewKind, DIRECTION_PROPERTY};
pub use pid::Pid;
pub use rejection::{Rejection, RejectionReason};
pub(crate) use reply::{
    page_extra_headers, processed_header, rejection_header, reply_extra_headers, result_header,
    ReplyContext,
};
pub(crate) use request::RequestTemplate;
pub use request::{request_header, Reply, ReplyError, RequestContext};
