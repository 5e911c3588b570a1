//! The clearing house itself: what each IDS message asks for, who may ask it, and what it is
//! answered.
//!
//! [`ClearingHouse`] runs `Command`s: a front door reads a request into one (see
//! `crate::ids::command`), has the caller admitted (`ClearingHouse::admit`) and calls
//! `ClearingHouse::execute`, which hands the command to its handler: `create`
//! (RequestMessage), `log` (LogMessage), `query` (QueryMessage), `owners` (a process's owners
//! and head, and owner changes), `view` (a process's transfers and contracts, `ch-ids-view`). What can go wrong there becomes
//! a [`Rejection`] in one place (`error.rs`); the door renders the `Outcome` or the rejection in
//! its own framing.
//!
//! Both doors go through `ClearingHouse::answer` (`door.rs`), which reads the IDS header, asks
//! the door who sent it (a `Door`), admits the caller, reads the `ch-ids-*` parameters and the
//! command, runs it and renders the reply. The first door is IDSCP2: [`ClearingHouse`] is the
//! [`Service`] the IDSCP2 server hands every application message to, and the caller is the
//! identity the transport verified (the DAT `sub`, bound to the TLS certificate). The second is
//! IDS-Multipart over HTTPS (`crate::http`), whose caller is the DAT in the header. Every
//! failure becomes a typed RejectionMessage; nothing a peer sends ends the connection or reaches
//! a panic. `metering` counts every answer and times every store call.
//!
//! Fair use: every size a peer controls is bounded by a `limits.*` setting, checked before the
//! thing it bounds is parsed, and every request counts against its connector's `quota`, checked
//! before the payload is parsed and before the store is asked anything.

mod create;
mod door;
mod erase;
mod error;
mod log;
mod metering;
mod offload;
mod owners;
mod query;
pub(crate) mod quota;
mod request;
mod view;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::config::LimitsConfig;
use crate::ids::params::ParamLimits;
use crate::ids::rejection::too_large;
use crate::ids::{
    self, processed_header, rejection_header, result_header, Command, PayloadLimits, Rejection,
    RejectionReason, ReplyContext, RequestHeader,
};
use crate::idscp2::connection::PeerInfo;
use crate::idscp2::dat::{DatIssuer, DatVerifier};
use crate::idscp2::proto::app::{app_layer_message, AppLayerMessage, GenericMessage, IdsMessage};
use crate::idscp2::server::Service;
use crate::receipt::ReceiptSigner;
use crate::store::ProcessStore;
use door::Idscp2Door;
use error::ClearingError;

pub(crate) use door::{Answer, Answered, Door};

pub use offload::{Offload, OffloadError};
pub use query::entry_document;
pub use quota::{Quotas, Reservation};
pub(crate) use request::{Caller, Outcome, ReplyKind};
pub use view::{current_view, ViewCache};

/// The default upper bound of a logged payload: 4 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// The clearing house behind the transport: turns each IDS request of a connection into a
/// reply, as the [`Service`] the IDSCP2 server runs.
pub struct ClearingHouse {
    store: Arc<dyn ProcessStore>,
    signer: Arc<ReceiptSigner>,
    /// Where large payloads are hashed and RSA receipts signed.
    offload: Offload,
    /// Our connector id: `iss` of receipts, issuer of replies.
    connector_id: String,
    /// Our DAT, sent as `ids:securityToken` in replies; None in development mode.
    own_dat: Option<Arc<dyn DatIssuer>>,
    /// Checks a JWT a client puts into its header against the identity of its connection.
    token_verifier: Arc<dyn DatVerifier>,
    max_reply: usize,
    limits: LimitsConfig,
    /// [`LimitsConfig::params`], computed once.
    param_limits: ParamLimits,
    payload_limits: PayloadLimits,
    quotas: Arc<Quotas>,
    /// `admin.identities`: the connectors that may erase processes.
    admins: BTreeSet<String>,
    /// The process views folded last (`view`).
    views: view::ViewCache,
}

/// What a [`ClearingHouse`] is made of.
pub struct ClearingHouseConfig {
    /// Where processes and their entries are kept.
    pub store: Arc<dyn ProcessStore>,
    /// Signs the receipts of logged entries.
    pub signer: Arc<ReceiptSigner>,
    /// Our connector id: `iss` of receipts, issuer of replies.
    pub connector_id: String,
    /// Our DAT, sent as `ids:securityToken` in replies; None in development mode.
    pub own_dat: Option<Arc<dyn DatIssuer>>,
    /// Checks a JWT a client puts into its header against the identity of its connection.
    pub token_verifier: Arc<dyn DatVerifier>,
    /// The largest payload a LogMessage may have (see [`DEFAULT_MAX_PAYLOAD`]).
    pub max_payload: usize,
    /// The largest payload a reply may have, e.g. a page of big entries; must leave room for the
    /// reply header below the transport's message limit (see [`reply_limit`]).
    pub max_reply: usize,
    /// Bounds on the sizes a request may have (`[limits]`).
    pub limits: LimitsConfig,
    /// Per-connector quotas; shared with their store sync and `/metrics`.
    pub quotas: Arc<Quotas>,
    /// The connector ids that may erase processes (`admin.identities`).
    pub admins: BTreeSet<String>,
}

/// Room kept for a reply's header and extra headers next to its payload.
const REPLY_HEADER_ROOM: usize = 64 * 1024;

/// The reply payload limit that fits the transport's frame limit `max_frame`.
pub fn reply_limit(max_frame: usize) -> usize {
    crate::idscp2::connection::max_message_size(max_frame).saturating_sub(REPLY_HEADER_ROOM)
}

impl ClearingHouse {
    /// A clearing house over `config`'s store and keys, with its own offload threads.
    pub fn new(config: ClearingHouseConfig) -> Self {
        ClearingHouse {
            store: Arc::new(metering::MeteredStore(config.store)),
            signer: config.signer,
            offload: Offload::per_core(),
            connector_id: config.connector_id,
            own_dat: config.own_dat,
            token_verifier: config.token_verifier,
            max_reply: config.max_reply,
            param_limits: config.limits.params(),
            payload_limits: PayloadLimits {
                max_create_payload: config.limits.max_create_payload,
                max_log_payload: config.max_payload,
            },
            limits: config.limits,
            quotas: config.quotas,
            admins: config.admins,
            views: view::ViewCache::default(),
        }
    }

    /// The bounds a door reads a request's `ch-ids-*` parameters with ([`ChParams::parse`]).
    pub(crate) fn param_limits(&self) -> &ParamLimits {
        &self.param_limits
    }

    /// The largest reply to a query, header included: what a door reserves in the memory
    /// budget before it asks for one.
    pub(crate) fn query_reply_reservation(&self) -> usize {
        self.max_reply + REPLY_HEADER_ROOM
    }

    /// The bounds a door reads a request's payload with ([`Command::parse`]).
    pub(crate) fn payload_limits(&self) -> &PayloadLimits {
        &self.payload_limits
    }

    /// Counts one request of `client_id` against its request quota: every door calls this for
    /// every request, before it reads the request's parameters, and only then may run it.
    pub(crate) fn admit<'a>(&self, client_id: &'a str) -> Result<Caller<'a>, Rejection> {
        self.quotas.admit(client_id)?;
        Ok(Caller::admitted(client_id))
    }

    /// Runs `command` for `caller`: the entry point of every front door.
    ///
    /// A door authenticates the caller its own way (IDSCP2: the verified DAT, plus the
    /// header's token), gets a [`Caller`] from [`admit`](Self::admit), reads the request with
    /// [`ChParams::parse`] and [`Command::parse`] (bounded by [`param_limits`](Self::param_limits)
    /// and [`payload_limits`](Self::payload_limits)), and renders what this returns: the
    /// [`Outcome`]'s reply kind, payload and extra headers, or the [`Rejection`]. A rejection
    /// over a quota asks to be held back first ([`Quotas::hold`]).
    pub(crate) async fn execute(
        &self,
        caller: &Caller<'_>,
        command: Command,
    ) -> Result<Outcome, Rejection> {
        let outcome = match command {
            Command::Create { pid, owners } => self.create(caller, pid, owners).await,
            Command::Log {
                pid,
                payload_type,
                payload,
                stored_header,
            } => {
                self.log(caller, pid, payload_type, payload, stored_header)
                    .await
            }
            Command::QueryPage { pid, spec } => self.query_page(caller, pid, spec).await,
            Command::QueryOne { pid, id } => self.query_one(caller, pid, id).await,
            Command::ProcessInfo { pid } => self.process_info(caller, pid).await,
            Command::QueryView { pid, view, spec } => {
                self.query_view(caller, pid, view, spec).await
            }
            Command::SetOwners {
                pid,
                owners,
                stored_header,
            } => self.set_owners(caller, pid, owners, stored_header).await,
            Command::Erase { pid } => self.erase(caller, pid).await,
        }?;
        if outcome.payload.len() > self.max_reply {
            return Err(ClearingError::ReplyTooLarge {
                bytes: outcome.payload.len(),
                max_reply: self.max_reply,
            }
            .into());
        }
        Ok(outcome)
    }

    /// The request header, if it is within `limits.max_header_bytes` and readable.
    fn read_header(&self, header: &str) -> Result<RequestHeader, Rejection> {
        let max = self.limits.max_header_bytes;
        if header.len() > max {
            return Err(too_large(
                "limits.max_header_bytes",
                max,
                format!(
                    "the IDS header of {} bytes exceeds the limit of {max} bytes (limits.max_header_bytes)",
                    header.len()
                ),
            ));
        }
        Ok(RequestHeader::parse(header)?)
    }

    async fn context_dat(&self) -> Option<String> {
        let issuer = self.own_dat.as_ref()?;
        let token = issuer.token().await.ok()?;
        String::from_utf8(token.to_vec()).ok()
    }

    async fn reply(&self, request: &RequestHeader, outcome: Outcome) -> IdsMessage {
        let dat = self.context_dat().await;
        let ctx = ReplyContext {
            connector_id: &self.connector_id,
            own_dat: dat.as_deref(),
        };
        let header = match outcome.kind {
            ReplyKind::Processed => processed_header(&ctx, Some(request)),
            ReplyKind::Result => result_header(&ctx, Some(request)),
        };
        IdsMessage {
            header,
            payload: outcome.payload,
            extra_headers: outcome.extra_headers,
        }
    }

    async fn rejection(
        &self,
        request: Option<&RequestHeader>,
        rejection: Rejection,
        pid: Option<String>,
    ) -> IdsMessage {
        // At info, so that an operator sees why a connector's requests fail; a request over its
        // quota stays at debug, since a flooding peer would otherwise flood the log.
        if rejection.status == 429 {
            tracing::debug!(reason = rejection.reason.code(), detail = %rejection.message, "request rejected");
        } else {
            tracing::info!(reason = rejection.reason.code(), detail = %rejection.message, "request rejected");
        }
        let dat = self.context_dat().await;
        let ctx = ReplyContext {
            connector_id: &self.connector_id,
            own_dat: dat.as_deref(),
        };
        IdsMessage {
            header: rejection_header(&ctx, request, rejection.reason),
            payload: Bytes::from(rejection.payload()),
            extra_headers: pid
                .map(|pid| ids::reply_extra_headers(&pid))
                .unwrap_or_default(),
        }
    }
}

impl Service for ClearingHouse {
    type Message = AppLayerMessage;

    /// A query's page may be as large as the reply limit, so that much is reserved before the
    /// store is read. Told apart by a look at the header text, not a parse: a header that merely
    /// mentions the word over-reserves until its (small) reply is built, which is harmless.
    fn reply_reservation(&self, message: &Result<AppLayerMessage, prost::DecodeError>) -> usize {
        match message.as_ref().map(|m| &m.message) {
            Ok(Some(app_layer_message::Message::IdsMessage(ids)))
                if ids.header.contains("QueryMessage") =>
            {
                self.query_reply_reservation()
            }
            _ => 0,
        }
    }

    async fn handle(
        &self,
        peer: Arc<PeerInfo>,
        message: Result<AppLayerMessage, prost::DecodeError>,
    ) -> Option<AppLayerMessage> {
        let reply = match message.map(|m| m.message) {
            Ok(Some(app_layer_message::Message::IdsMessage(message))) => {
                let answer = self.answer(&Idscp2Door(&peer), message).await;
                app_layer_message::Message::IdsMessage(answer.message)
            }
            // Without an IDS header there is nothing to correlate with: answer in kind.
            Ok(Some(app_layer_message::Message::GenericMessage(_))) => {
                metering::message(
                    door::IDSCP2_METRIC_LABEL,
                    "generic",
                    RejectionReason::MessageTypeNotSupported.code(),
                    Instant::now(),
                );
                let rejection = Rejection::with_default_status(
                    RejectionReason::MessageTypeNotSupported,
                    "GenericMessage is not supported; send an IdsMessage",
                );
                let reply = self.rejection(None, rejection, None).await;
                app_layer_message::Message::GenericMessage(GenericMessage {
                    header: reply.header,
                    payload: reply.payload,
                    extra_headers: reply.extra_headers,
                })
            }
            Ok(None) | Err(_) => {
                metering::message(
                    door::IDSCP2_METRIC_LABEL,
                    "malformed",
                    RejectionReason::MalformedMessage.code(),
                    Instant::now(),
                );
                let rejection = Rejection::with_default_status(
                    RejectionReason::MalformedMessage,
                    "the data is not an AppLayerMessage with an IdsMessage",
                );
                app_layer_message::Message::IdsMessage(self.rejection(None, rejection, None).await)
            }
        };
        Some(AppLayerMessage {
            message: Some(reply),
        })
    }
}
