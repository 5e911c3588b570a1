//! The clearing-house client: IDS requests over an IDSCP2 connection (or over IDS-Multipart on
//! HTTPS, `multipart`), one at a time.
//!
//! Connectors, auditors (through the CLI), the tests and the load generator all talk to the
//! clearing house through this, so they all send the same requests a Trusted Connector sends.
//!
//! A reply is matched to its request: the clearing house echoes a readable request's `@id` as
//! `ids:correlationMessage`, so after a request timed out, its late reply is recognised as stale
//! and dropped (with a warning) instead of being taken for the answer to the next request. A
//! request whose header the clearing house did not read (unreadable, or refused unread because it is
//! too large) gets an uncorrelated reply; since the clearing house answers a connection's requests
//! in order, once each, the client counts the requests that timed out and takes an uncorrelated
//! reply only when every earlier request has had its reply.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use tracing::warn;

mod multipart;

pub use multipart::{MultipartConfig, MultipartTransport};

use crate::ids::{MessageType, Reply, ReplyError, RequestHeader, RequestTemplate, ViewKind};
use crate::idscp2::client::ClientError;
use crate::idscp2::connection::Connection;
use crate::idscp2::dat::DatIssuer;
use crate::idscp2::proto::app::{app_layer_message, AppLayerMessage, HeaderEntry, IdsMessage};

/// Why a request got no reply that could be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The connection failed, closed, or the reply did not come in time.
    #[error(transparent)]
    Transport(#[from] ClientError),
    /// The reply's IDS header cannot be read.
    #[error(transparent)]
    Reply(#[from] ReplyError),
    /// The reply is an application message of another kind (or, over HTTPS, the request was:
    /// only IdsMessages travel there).
    #[error("the reply is not an IdsMessage")]
    NotIdsMessage,
    /// The HTTPS request failed, or its reply is not IDS-Multipart.
    #[error("HTTPS: {0}")]
    Https(String),
}

/// Paging and filtering of a page query; `None` leaves the server's default.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// The page to read, from 1 (`ch-ids-page`).
    pub page: Option<u64>,
    /// Entries per page (`ch-ids-size`).
    pub size: Option<u64>,
    /// `asc` or `desc`.
    pub sort: Option<String>,
    /// The earliest entries to include, as the server reads a date (`ch-ids-date_from`).
    pub date_from: Option<String>,
    /// The latest entries to include (`ch-ids-date_to`).
    pub date_to: Option<String>,
}

/// A connector's side of a clearing-house connection: one request at a time, each reply matched
/// to its request.
pub struct ClearingHouseClient {
    transport: Transport,
    connector_id: String,
    /// Our DAT, for `ids:securityToken` in request headers, as connectors send it.
    dat: Option<Arc<dyn DatIssuer>>,
    reply_timeout: Duration,
    /// The header of the latest request's type and token, for the next such request.
    template: Option<RequestTemplate>,
}

enum Transport {
    Idscp2 {
        connection: Connection,
        /// Requests that timed out and whose replies have not arrived yet.
        timed_out_unanswered: usize,
    },
    /// Every reply comes on its own HTTP response: nothing to match up.
    Multipart(MultipartTransport),
}

impl ClearingHouseClient {
    /// A client over an established `connection`, sending requests as `connector_id` (with `dat`
    /// as their security token, if any) and waiting `reply_timeout` for each reply.
    pub fn new(
        connection: Connection,
        connector_id: String,
        dat: Option<Arc<dyn DatIssuer>>,
        reply_timeout: Duration,
    ) -> Self {
        ClearingHouseClient {
            transport: Transport::Idscp2 {
                connection,
                timed_out_unanswered: 0,
            },
            connector_id,
            dat,
            reply_timeout,
            template: None,
        }
    }

    /// A client of the IDS-Multipart door over HTTPS, otherwise as [`new`](Self::new).
    pub fn over_https(
        transport: MultipartTransport,
        connector_id: String,
        dat: Option<Arc<dyn DatIssuer>>,
        reply_timeout: Duration,
    ) -> Self {
        ClearingHouseClient {
            transport: Transport::Multipart(transport),
            connector_id,
            dat,
            reply_timeout,
            template: None,
        }
    }

    /// The IDSCP2 connection, for its statistics or a message of another kind; `None` over
    /// HTTPS.
    pub fn connection_mut(&mut self) -> Option<&mut Connection> {
        match &mut self.transport {
            Transport::Idscp2 { connection, .. } => Some(connection),
            Transport::Multipart(_) => None,
        }
    }

    /// `ids:RequestMessage`: creates `pid` with the given co-owners (we are always one).
    pub async fn create(&mut self, pid: &str, owners: &[String]) -> Result<Reply, RequestError> {
        let (payload, headers) = if owners.is_empty() {
            (Bytes::new(), vec![pid_header(pid)])
        } else {
            (
                Bytes::from(json!({ "owners": owners }).to_string()),
                vec![pid_header(pid), header("Content-Type", "application/json")],
            )
        };
        self.request(MessageType::Request, headers, payload).await
    }

    /// `ids:LogMessage`: appends `payload`; the reply carries the receipt.
    pub async fn log(
        &mut self,
        pid: &str,
        payload: Bytes,
        content_type: Option<&str>,
    ) -> Result<Reply, RequestError> {
        self.log_message(pid, payload, content_type, false).await
    }

    /// `ids:LogMessage` for a message we `received` (`ch-ids-direction: received`) or sent.
    pub async fn log_message(
        &mut self,
        pid: &str,
        payload: Bytes,
        content_type: Option<&str>,
        received: bool,
    ) -> Result<Reply, RequestError> {
        let mut headers = vec![pid_header(pid)];
        if let Some(content_type) = content_type {
            headers.push(header("Content-Type", content_type));
        }
        if received {
            headers.push(header("ch-ids-direction", "received"));
        }
        self.request(MessageType::Log, headers, payload).await
    }

    /// `ids:QueryMessage` with `ch-ids-view`: a page of `pid`'s transfers or contracts.
    pub async fn view(
        &mut self,
        pid: &str,
        view: ViewKind,
        page: Option<u64>,
        size: Option<u64>,
    ) -> Result<Reply, RequestError> {
        let mut headers = vec![pid_header(pid), header("ch-ids-view", view.name())];
        if let Some(page) = page {
            headers.push(header("ch-ids-page", &page.to_string()));
        }
        if let Some(size) = size {
            headers.push(header("ch-ids-size", &size.to_string()));
        }
        self.request(MessageType::Query, headers, Bytes::new())
            .await
    }

    /// `ids:QueryMessage` for a page of `pid`.
    pub async fn query(
        &mut self,
        pid: &str,
        options: &QueryOptions,
    ) -> Result<Reply, RequestError> {
        let mut headers = vec![pid_header(pid)];
        let optional = [
            ("ch-ids-page", options.page.map(|p| p.to_string())),
            ("ch-ids-size", options.size.map(|s| s.to_string())),
            ("ch-ids-sort", options.sort.clone()),
            ("ch-ids-date_from", options.date_from.clone()),
            ("ch-ids-date_to", options.date_to.clone()),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                headers.push(header(name, &value));
            }
        }
        self.request(MessageType::Query, headers, Bytes::new())
            .await
    }

    /// `ids:QueryMessage` with `ch-ids-operation: info`: owners, creation time, entries and
    /// head of `pid`.
    pub(crate) async fn info(&mut self, pid: &str) -> Result<Reply, RequestError> {
        let headers = vec![pid_header(pid), header("ch-ids-operation", "info")];
        self.request(MessageType::Query, headers, Bytes::new())
            .await
    }

    /// `ids:RequestMessage` with `ch-ids-operation: set-owners`: replaces the owners of `pid`
    /// with `owners`; the reply carries the receipt of the entry that records the change.
    pub(crate) async fn set_owners(
        &mut self,
        pid: &str,
        owners: &[String],
    ) -> Result<Reply, RequestError> {
        let headers = vec![
            pid_header(pid),
            header("ch-ids-operation", "set-owners"),
            header("Content-Type", "application/json"),
        ];
        let payload = Bytes::from(json!({ "owners": owners }).to_string());
        self.request(MessageType::Request, headers, payload).await
    }

    /// `ids:RequestMessage` with `ch-ids-operation: erase`: an admin erases the content of
    /// `pid` for good; the reply names who erased it and when.
    pub async fn erase(&mut self, pid: &str) -> Result<Reply, RequestError> {
        let headers = vec![pid_header(pid), header("ch-ids-operation", "erase")];
        self.request(MessageType::Request, headers, Bytes::new())
            .await
    }

    /// `ids:QueryMessage` for the one entry `id` of `pid`.
    pub async fn get(&mut self, pid: &str, id: &str) -> Result<Reply, RequestError> {
        let headers = vec![pid_header(pid), header("ch-ids-id", id)];
        self.request(MessageType::Query, headers, Bytes::new())
            .await
    }

    /// Any IDS request: for message types and parameters the helpers above do not cover.
    pub async fn request(
        &mut self,
        message_type: MessageType,
        extra_headers: Vec<HeaderEntry>,
        payload: Bytes,
    ) -> Result<Reply, RequestError> {
        let token = match &self.dat {
            Some(dat) => dat.token().await.ok(),
            None => None,
        };
        if !self
            .template
            .as_ref()
            .is_some_and(|template| template.fits(&message_type, token.as_ref()))
        {
            self.template = None;
        }
        let template = self
            .template
            .get_or_insert_with(|| RequestTemplate::new(&self.connector_id, message_type, token));
        let (header, id) = template.next_header();
        let message = IdsMessage {
            header,
            payload,
            extra_headers,
        };
        let message = AppLayerMessage {
            message: Some(app_layer_message::Message::IdsMessage(message)),
        };
        self.correlated_exchange(message, Some(id)).await
    }

    /// Sends a prepared application message and reads the IDS reply to it. Over HTTPS, the
    /// reply carries the HTTP status ([`Reply::http_status`]).
    pub async fn exchange(&mut self, message: AppLayerMessage) -> Result<Reply, RequestError> {
        let id = match &self.transport {
            Transport::Idscp2 { .. } => correlation_id(&message),
            // Every HTTP response answers its own request: nothing to correlate.
            Transport::Multipart(_) => None,
        };
        self.correlated_exchange(message, id).await
    }

    /// [`Self::exchange`] for a message whose header has the `@id` `id`.
    async fn correlated_exchange(
        &mut self,
        message: AppLayerMessage,
        id: Option<String>,
    ) -> Result<Reply, RequestError> {
        let (connection, timed_out_unanswered) = match &mut self.transport {
            Transport::Idscp2 {
                connection,
                timed_out_unanswered,
            } => (connection, timed_out_unanswered),
            Transport::Multipart(transport) => {
                let Some(app_layer_message::Message::IdsMessage(message)) = message.message else {
                    return Err(RequestError::NotIdsMessage);
                };
                let (status, reply) = transport.send(message, self.reply_timeout).await?;
                let mut reply = Reply::from_ids(reply)?;
                reply.http_status = Some(status);
                return Ok(reply);
            }
        };
        let result = connection
            .request(&message, self.reply_timeout, |reply| {
                take_reply(id.as_deref(), timed_out_unanswered, reply)
            })
            .await;
        match result {
            Err(ClientError::Timeout(_)) => *timed_out_unanswered += 1,
            // Replies come in order: whatever was still owed to earlier requests came before.
            Ok(_) => *timed_out_unanswered = 0,
            Err(_) => {}
        }
        result?
    }

    /// Closes the connection, telling the clearing house (IDSCP2; HTTPS has nothing to say).
    pub async fn close(self) {
        if let Transport::Idscp2 { connection, .. } = self.transport {
            connection.close().await;
        }
    }
}

fn pid_header(pid: &str) -> HeaderEntry {
    header("ch-ids-pid", pid)
}

fn header(name: &str, value: &str) -> HeaderEntry {
    HeaderEntry {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

/// The `@id` the clearing house will echo in its reply; `None` when it cannot read the header.
fn correlation_id(message: &AppLayerMessage) -> Option<String> {
    match &message.message {
        Some(app_layer_message::Message::IdsMessage(ids)) => RequestHeader::parse(&ids.header)
            .ok()
            .map(|header| header.id),
        _ => None,
    }
}

/// Whether `reply` answers the request with correlation id `expected`: `Some` with what to return
/// if it does, `None` (and a warning) if it answers an earlier request.
fn take_reply(
    expected: Option<&str>,
    timed_out_unanswered: &mut usize,
    reply: AppLayerMessage,
) -> Option<Result<Reply, RequestError>> {
    let reply = match reply.message {
        Some(app_layer_message::Message::IdsMessage(ids)) => {
            Reply::from_ids(ids).map_err(RequestError::from)
        }
        _ => Err(RequestError::NotIdsMessage),
    };
    let correlation = reply.as_ref().ok().and_then(|r| r.correlation.as_deref());
    match (expected, correlation) {
        (Some(expected), Some(correlation)) if expected == correlation => Some(reply),
        (_, None) if *timed_out_unanswered == 0 => Some(reply),
        (_, Some(correlation)) => {
            *timed_out_unanswered = timed_out_unanswered.saturating_sub(1);
            warn!(
                expected,
                correlation, "dropped a reply to an earlier request that timed out"
            );
            None
        }
        (_, None) => {
            *timed_out_unanswered = timed_out_unanswered.saturating_sub(1);
            warn!(
                expected,
                "dropped an uncorrelated reply, taken to answer an earlier request that timed out"
            );
            None
        }
    }
}
