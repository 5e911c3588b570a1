//! The client side of IDS-Multipart over HTTPS: an IDS request as a `multipart/form-data` POST
//! to the route its message type takes, and the multipart reply read back into the same
//! [`IdsMessage`] an IDSCP2 reply is (see `crate::http` for the protocol).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::RequestError;
use crate::http::multipart;
use crate::ids::{MessageType, RequestHeader};
use crate::idscp2::proto::app::{HeaderEntry, IdsMessage};

/// An HTTPS client of one clearing house's IDS-Multipart door (keep-alive, HTTP/1.1).
#[derive(Debug, Clone)]
pub struct MultipartTransport {
    http: reqwest::Client,
    base_url: String,
}

/// Where the door is and how to trust it.
pub struct MultipartConfig<'a> {
    /// The name the server certificate must carry (e.g. `localhost`).
    pub server_name: &'a str,
    /// The address that name is reached at.
    pub addr: SocketAddr,
    /// The CA certificates (PEM) the server certificate must chain to.
    pub ca_pem: &'a [u8],
    /// Our client certificate and key (PEM, one after the other); `None` sends none.
    pub identity_pem: Option<&'a [u8]>,
}

impl MultipartTransport {
    /// A client for `https://{server_name}:{port}`, connecting to `addr`.
    pub fn new(config: &MultipartConfig) -> Result<Self, RequestError> {
        let https = |e: reqwest::Error| RequestError::Https(e.to_string());
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .http1_only()
            .tls_built_in_root_certs(false)
            .resolve(config.server_name, config.addr);
        for ca in reqwest::Certificate::from_pem_bundle(config.ca_pem).map_err(https)? {
            builder = builder.add_root_certificate(ca);
        }
        if let Some(identity) = config.identity_pem {
            builder = builder.identity(reqwest::Identity::from_pem(identity).map_err(https)?);
        }
        Ok(MultipartTransport {
            http: builder.build().map_err(https)?,
            base_url: format!("https://{}:{}", config.server_name, config.addr.port()),
        })
    }

    /// Sends `message` to the route of its header's message type (the path takes `ch-ids-pid`
    /// and `ch-ids-id`, the payload part `Content-Type`, the other extra headers travel as HTTP
    /// headers) and reads the reply, with its `ch-ids-*` HTTP headers as extra headers.
    pub(super) async fn send(
        &self,
        message: IdsMessage,
        timeout: Duration,
    ) -> Result<(u16, IdsMessage), RequestError> {
        let value = |name: &str| {
            message
                .extra_headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value.as_str())
        };
        let segment = |text: &str| utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
        let pid = segment(value("ch-ids-pid").unwrap_or_default());
        // A header the server cannot read goes to the log route; it is refused unread anyway.
        let message_type = RequestHeader::parse(&message.header)
            .map(|header| header.message_type)
            .unwrap_or(MessageType::Log);
        let path = match (message_type, value("ch-ids-id")) {
            (MessageType::Request, _) => format!("/process/{pid}"),
            (MessageType::Query, Some(id)) => format!("/messages/query/{pid}/{}", segment(id)),
            (MessageType::Query, None) => format!("/messages/query/{pid}"),
            (MessageType::Log | MessageType::Other(_), _) => format!("/messages/log/{pid}"),
        };
        let https = |e: reqwest::Error| RequestError::Https(e.to_string());
        // One contiguous body with its length: the request goes out in one write.
        let mut parts = vec![multipart::FormPart {
            name: "header",
            content_type: Some("application/ld+json"),
            content: message.header.as_bytes(),
        }];
        if !message.payload.is_empty() {
            let content_type = value("Content-Type");
            // It becomes a line of the body: a line break in it would add lines of its own.
            if content_type.is_some_and(|text| text.chars().any(char::is_control)) {
                return Err(RequestError::Https(
                    "the payload's Content-Type is not a media type".into(),
                ));
            }
            parts.push(multipart::FormPart {
                name: "payload",
                content_type,
                content: &message.payload,
            });
        }
        let (content_type, body) = multipart::form(&parts);
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        for extra in &message.extra_headers {
            let name = extra.name.to_ascii_lowercase();
            if name.starts_with("ch-ids-") && name != "ch-ids-pid" && name != "ch-ids-id" {
                request = request.header(name, &extra.value);
            }
        }
        let response = request.send().await.map_err(https)?;
        let status = response.status().as_u16();
        let extra_headers = response
            .headers()
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("ch-ids-"))
            .filter_map(|(name, value)| {
                Some(HeaderEntry {
                    name: name.as_str().to_owned(),
                    value: value.to_str().ok()?.to_owned(),
                })
            })
            .collect();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body: Bytes = response.bytes().await.map_err(https)?;
        let unreadable = |e: crate::ids::Rejection| {
            RequestError::Https(format!(
                "the {status} reply is not IDS-Multipart: {}",
                e.message
            ))
        };
        let boundary = multipart::boundary(content_type.as_deref()).map_err(unreadable)?;
        let parts = multipart::read(vec![body], boundary)
            .await
            .map_err(unreadable)?;
        Ok((
            status,
            IdsMessage {
                header: parts.header,
                payload: parts.payload,
                extra_headers,
            },
        ))
    }
}
