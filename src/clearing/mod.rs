//! The clearing house itself: what each IDS message asks for, who may ask it, and what it is
//! answered.
//!
//! [`ClearingHouse`] is the [`Service`] the IDSCP2 server hands every application message to.
//! It reads the IDS header and the `ch-ids-*` parameters, authenticates the caller by the identity
//! the transport verified (the DAT `sub`, bound to the TLS certificate), and dispatches to one
//! handler per message type: `create` (RequestMessage), `log` (LogMessage), `query`
//! (QueryMessage). Every failure becomes a typed RejectionMessage; nothing a peer sends ends
//! the connection or reaches a panic. [`metering`] counts every answer and times every store call.
//!
//! Fair use: every size a peer controls is bounded by a `limits.*` setting, checked before the
//! thing it bounds is parsed, and every request counts against its connector's [`quota`], checked
//! before the payload is parsed and before the store is asked anything.

mod create;
mod log;
mod metering;
mod offload;
mod query;
pub mod quota;
mod request;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::config::LimitsConfig;
use crate::ids::params::{too_large, ParamLimits};
use crate::ids::{
    self, processed_header, rejection_header, result_header, ChParams, MessageType, Rejection,
    RejectionReason, ReplyContext, RequestHeader,
};
use crate::idscp2::connection::PeerInfo;
use crate::idscp2::dat::{DatIssuer, DatVerifier};
use crate::idscp2::proto::app::{app_layer_message, AppLayerMessage, GenericMessage, IdsMessage};
use crate::idscp2::server::Service;
use crate::receipt::ReceiptSigner;
use crate::store::{ProcessStore, StoreError};

pub use offload::{Offload, OffloadError, INLINE_HASH_LIMIT};
pub use query::entry_document;
pub use quota::Quotas;
pub use request::{Outcome, ReplyKind, Request};

/// The default upper bound of a logged payload: 4 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 4 * 1024 * 1024;

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
    max_payload: usize,
    max_reply: usize,
    limits: LimitsConfig,
    /// [`LimitsConfig::params`], computed once.
    param_limits: ParamLimits,
    quotas: Arc<Quotas>,
}

pub struct ClearingHouseConfig {
    pub store: Arc<dyn ProcessStore>,
    pub signer: Arc<ReceiptSigner>,
    pub connector_id: String,
    pub own_dat: Option<Arc<dyn DatIssuer>>,
    pub token_verifier: Arc<dyn DatVerifier>,
    pub max_payload: usize,
    /// The largest payload a reply may have, e.g. a page of big entries; must leave room for the
    /// reply header below the transport's message limit (see [`reply_limit`]).
    pub max_reply: usize,
    /// Bounds on the sizes a request may have (`[limits]`).
    pub limits: LimitsConfig,
    /// Per-connector quotas; shared with their store sync and `/metrics`.
    pub quotas: Arc<Quotas>,
}

/// Room kept for a reply's header and extra headers next to its payload.
const REPLY_HEADER_ROOM: usize = 64 * 1024;

/// The reply payload limit that fits the transport's frame limit `max_frame`.
pub fn reply_limit(max_frame: usize) -> usize {
    crate::idscp2::connection::max_message_size(max_frame).saturating_sub(REPLY_HEADER_ROOM)
}

impl ClearingHouse {
    pub fn new(config: ClearingHouseConfig) -> Self {
        ClearingHouse {
            store: Arc::new(metering::MeteredStore(config.store)),
            signer: config.signer,
            offload: Offload::per_core(),
            connector_id: config.connector_id,
            own_dat: config.own_dat,
            token_verifier: config.token_verifier,
            max_payload: config.max_payload,
            max_reply: config.max_reply,
            param_limits: config.limits.params(),
            limits: config.limits,
            quotas: config.quotas,
        }
    }

    /// Answers one IdsMessage: parses it, authenticates, dispatches, and writes the reply.
    async fn answer(&self, peer: Arc<PeerInfo>, message: IdsMessage) -> IdsMessage {
        let started = Instant::now();
        let header = match self.read_header(&message.header) {
            Ok(header) => header,
            Err(rejection) => {
                metering::message("malformed", rejection.reason.code(), started);
                return self.rejection(None, rejection, None).await;
            }
        };
        let kind = metering::message_type(&header.message_type);
        let (outcome, pid) = match self.quotas.admit(&peer.identity) {
            Ok(()) => self.dispatch(&peer, &header, message).await,
            Err(rejection) => (Err(rejection), None),
        };
        match outcome {
            Ok(outcome) => {
                metering::message(kind, "ok", started);
                self.reply(&header, outcome).await
            }
            Err(rejection) => {
                metering::message(kind, rejection.reason.code(), started);
                if let Some(hold) = self.quotas.hold(&rejection) {
                    tokio::time::sleep(hold).await;
                }
                self.rejection(Some(&header), rejection, pid).await
            }
        }
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

    /// What a readable request gets, and its pid (when it named one) for the reply headers.
    async fn dispatch(
        &self,
        peer: &PeerInfo,
        header: &RequestHeader,
        message: IdsMessage,
    ) -> (Result<Outcome, Rejection>, Option<String>) {
        let params = match ChParams::parse(&message.extra_headers, &self.param_limits) {
            Ok(params) => params,
            Err(rejection) => return (Err(rejection), None),
        };
        let pid = params.pid.clone();
        if let Err(rejection) = self.authenticate(peer, header).await {
            return (Err(rejection), pid);
        }
        let request = Request {
            client_id: &peer.identity,
            header,
            params: &params,
            payload: message.payload,
        };
        let outcome = match &header.message_type {
            MessageType::Request => self.create(&request).await,
            MessageType::Log => self.log(&request).await,
            MessageType::Query => self.query(&request).await,
            MessageType::Other(other) => Err(Rejection::with_default_status(
                RejectionReason::MessageTypeNotSupported,
                format!("{other} is not supported; send ids:RequestMessage, ids:LogMessage or ids:QueryMessage"),
            )),
        };
        let outcome = outcome.and_then(|outcome| {
            if outcome.payload.len() > self.max_reply {
                return Err(too_many_results(
                    format!("the answer of {} bytes", outcome.payload.len()),
                    self.max_reply,
                ));
            }
            Ok(outcome)
        });
        (outcome, pid)
    }

    /// A JWT in the header must be a valid DAT of the same party as the connection. The
    /// reference took identities from this token unchecked, so any peer could act as anyone.
    async fn authenticate(&self, peer: &PeerInfo, header: &RequestHeader) -> Result<(), Rejection> {
        let Some(token) = header.security_token.as_deref() else {
            return Ok(());
        };
        // Only JWTs name a subject; placeholder tokens (NullDAPS, INVALID_DAT) claim nothing.
        // The token the transport verified needs no second look: connectors usually send it.
        if token.split('.').count() != 3 || token.as_bytes() == peer.dat_token {
            return Ok(());
        }
        let not_authenticated = |message: String| {
            Rejection::with_default_status(RejectionReason::NotAuthenticated, message)
        };
        let verified = self
            .token_verifier
            .verify(token.as_bytes(), &peer.certificate)
            .await
            .map_err(|e| not_authenticated(format!("ids:securityToken does not verify: {e}")))?;
        if verified.subject != peer.identity {
            return Err(not_authenticated(
                "ids:securityToken names another party than the connection's DAT".into(),
            ));
        }
        Ok(())
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
        tracing::debug!(reason = rejection.reason.code(), message = %rejection.message, "request rejected");
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
                self.max_reply + REPLY_HEADER_ROOM
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
                app_layer_message::Message::IdsMessage(self.answer(peer, message).await)
            }
            // Without an IDS header there is nothing to correlate with: answer in kind.
            Ok(Some(app_layer_message::Message::GenericMessage(_))) => {
                metering::message(
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

/// What a client is told when the store fails: retry later, or our fault.
/// A reply that would not fit: the client should ask for fewer entries.
fn too_many_results(what: String, max_reply: usize) -> Rejection {
    Rejection::with_default_status(
        RejectionReason::TooManyResults,
        format!(
            "{what} exceeds the reply limit of {max_reply} bytes; ask for fewer entries with ch-ids-size"
        ),
    )
}

/// Work that was lost on its way (see [`offload`]): our fault, and the client may retry.
fn not_completed(error: OffloadError) -> Rejection {
    tracing::error!(%error, "request not completed");
    Rejection::with_default_status(
        RejectionReason::InternalRecipientError,
        "the clearing house could not complete the request",
    )
}

fn store_rejection(error: StoreError) -> Rejection {
    match error {
        StoreError::PageTooLarge { limit } => {
            too_many_results("the requested page".to_owned(), limit)
        }
        StoreError::Unavailable(reason) => {
            tracing::warn!(%reason, "store unavailable");
            Rejection::with_default_status(
                RejectionReason::TemporarilyNotAvailable,
                "the store is not available; retry later",
            )
        }
        other => {
            tracing::error!(error = %other, "store failed");
            Rejection::with_default_status(
                RejectionReason::InternalRecipientError,
                "the clearing house could not complete the request",
            )
        }
    }
}
