//! Front doors: what every transport shares when it hands a request to the clearing house, and
//! the one thing each does its own way, establishing who sent it ([`Door`]).
//!
//! A request is the same three parts whichever door it came through: the IDS header, the
//! `ch-ids-*` parameters, the payload (an [`IdsMessage`]). [`ClearingHouse::answer`] reads the
//! header, asks the door who sent it, admits that caller against its quotas, reads the
//! parameters and the command, runs it, and renders the reply or the rejection, so one request
//! gets the same entry, receipt and rejection over IDSCP2 and over IDS-Multipart.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use super::{metering, ClearingHouse, Outcome, ReplyKind};
use crate::ids::{ChParams, Command, Rejection, RejectionReason, RequestHeader};
use crate::idscp2::connection::PeerInfo;
use crate::idscp2::proto::app::IdsMessage;

/// How a transport establishes who sent a request.
pub(crate) trait Door: Sync {
    /// The `door` label of the metrics of the requests that come through it.
    const METRIC_LABEL: &'static str;

    /// The identity `header` is sent under, once this door has checked that the request may
    /// come through it; a rejection here is answered correlated with the header, before the
    /// caller is admitted or any parameter is read.
    fn identify(
        &self,
        house: &ClearingHouse,
        header: &RequestHeader,
    ) -> impl Future<Output = Result<String, Rejection>> + Send;
}

/// How a request was answered, for doors that say so outside the IDS header (an HTTP status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answered {
    /// A create, log or owner change: `ids:MessageProcessedNotificationMessage`.
    Processed,
    /// A query: `ids:ResultMessage`.
    Result,
    /// A RejectionMessage, with the status its payload names.
    Rejected(u16),
}

/// The reply to one request.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) message: IdsMessage,
    pub(crate) answered: Answered,
}

impl ClearingHouse {
    /// Answers one request that came through `door`: parses it, identifies and admits the
    /// caller, runs the command and writes the reply. Every failure becomes a RejectionMessage.
    pub(crate) async fn answer<D: Door>(&self, door: &D, message: IdsMessage) -> Answer {
        let started = Instant::now();
        let mut header = match self.read_header(&message.header) {
            Ok(header) => header,
            Err(rejection) => return self.refuse(D::METRIC_LABEL, rejection).await,
        };
        let kind = metering::message_type(&header.message_type);
        let (outcome, pid) = match door.identify(self, &header).await {
            Ok(identity) => self.run(&identity, &mut header, message).await,
            Err(rejection) => (Err(rejection), None),
        };
        match outcome {
            Ok(outcome) => {
                metering::message(D::METRIC_LABEL, kind, "ok", started);
                let answered = match outcome.kind {
                    ReplyKind::Processed => Answered::Processed,
                    ReplyKind::Result => Answered::Result,
                };
                Answer {
                    message: self.reply(&header, outcome).await,
                    answered,
                }
            }
            Err(rejection) => {
                metering::message(D::METRIC_LABEL, kind, rejection.reason.code(), started);
                if let Some(hold) = self.quotas.hold(&rejection) {
                    tokio::time::sleep(hold).await;
                }
                let status = rejection.status;
                Answer {
                    message: self.rejection(Some(&header), rejection, pid).await,
                    answered: Answered::Rejected(status),
                }
            }
        }
    }

    /// What the request of an identified caller gets, and its pid as sent (when it named one,
    /// valid or not) for the reply's extra headers. A command that stores the header takes its
    /// stored form out of `header` (see [`Command::parse`]); the reply needs only the rest.
    async fn run(
        &self,
        identity: &str,
        header: &mut RequestHeader,
        message: IdsMessage,
    ) -> (Result<Outcome, Rejection>, Option<String>) {
        let caller = match self.admit(identity) {
            Ok(caller) => caller,
            Err(rejection) => return (Err(rejection), None),
        };
        let params = match ChParams::parse(&message.extra_headers, self.param_limits()) {
            Ok(params) => params,
            Err(rejection) => return (Err(rejection), None),
        };
        let outcome = match Command::parse(header, &params, message.payload, self.payload_limits())
        {
            Ok(command) => self.execute(&caller, command).await,
            Err(rejection) => Err(rejection),
        };
        (outcome, params.pid)
    }

    /// The uncorrelated RejectionMessage for a request that never got as far as a readable IDS
    /// header (a body that is not a message at all, say), counted for `door` (its metric label).
    pub(crate) async fn refuse(&self, door: &'static str, rejection: Rejection) -> Answer {
        metering::message(door, "malformed", rejection.reason.code(), Instant::now());
        let status = rejection.status;
        Answer {
            message: self.rejection(None, rejection, None).await,
            answered: Answered::Rejected(status),
        }
    }
}

/// The `door` label of the IDSCP2 door's metrics.
pub(super) const IDSCP2_METRIC_LABEL: &str = "idscp2";

/// The IDSCP2 door: the transport verified the peer's DAT in its handshake, bound to its TLS
/// certificate, and named the peer by it.
pub(super) struct Idscp2Door<'a>(pub(super) &'a Arc<PeerInfo>);

impl Door for Idscp2Door<'_> {
    const METRIC_LABEL: &'static str = IDSCP2_METRIC_LABEL;

    /// A JWT in the header must be a valid DAT of the same party as the connection. The
    /// reference took identities from this token unchecked, so any peer could act as anyone.
    async fn identify(
        &self,
        house: &ClearingHouse,
        header: &RequestHeader,
    ) -> Result<String, Rejection> {
        let peer = self.0;
        let Some(token) = header.security_token.as_deref() else {
            return Ok(peer.identity.clone());
        };
        // Only JWTs name a subject; placeholder tokens (NullDAPS, INVALID_DAT) claim nothing.
        // The token the transport verified needs no second look: connectors usually send it.
        if token.split('.').count() != 3 || token.as_bytes() == peer.dat_token {
            return Ok(peer.identity.clone());
        }
        let not_authenticated = |message: String| {
            Rejection::with_default_status(RejectionReason::NotAuthenticated, message)
        };
        let verified = house
            .token_verifier
            .verify(token.as_bytes(), &peer.certificate)
            .await
            .map_err(|e| not_authenticated(format!("ids:securityToken does not verify: {e}")))?;
        if verified.subject != peer.identity {
            return Err(not_authenticated(
                "ids:securityToken names another party than the connection's DAT".into(),
            ));
        }
        Ok(peer.identity.clone())
    }
}
