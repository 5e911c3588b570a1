//! Who sent a request over HTTPS: the connector's DAT in the IDS header, verified as on the
//! IDSCP2 door, and bound to the TLS client certificate when there is one.

use std::sync::Arc;

use crate::clearing::{ClearingHouse, Door};
use crate::ids::{MessageType, Rejection, RejectionReason, RequestHeader};
use crate::idscp2::dat::DatVerifier;
use crate::idscp2::tls::PeerCertificate;

/// The [`Door`] of one HTTPS request: its route's message type, and the connection's identity.
pub(super) struct HttpCaller<'a> {
    /// The message type the route takes (`/process/{pid}`: `ids:RequestMessage`, ...).
    pub(super) route_type: MessageType,
    pub(super) route: &'a str,
    pub(super) certificate: Option<&'a PeerCertificate>,
    pub(super) verifier: &'a Arc<dyn DatVerifier>,
    /// Whether the header must carry a DAT: not in development mode, where the certificate
    /// names the caller (and is then required by TLS).
    pub(super) token_required: bool,
    /// Why the request's parameters cannot be used: answered once the header is read.
    pub(super) refused: Option<&'a Rejection>,
}

impl Door for HttpCaller<'_> {
    const METRIC_LABEL: &'static str = super::METRIC_LABEL;

    async fn identify(
        &self,
        _house: &ClearingHouse,
        header: &RequestHeader,
    ) -> Result<String, Rejection> {
        if let Some(rejection) = self.refused {
            return Err(rejection.clone());
        }
        if header.message_type != self.route_type {
            let sent = match &header.message_type {
                MessageType::Request => "ids:RequestMessage",
                MessageType::Log => "ids:LogMessage",
                MessageType::Query => "ids:QueryMessage",
                MessageType::Other(other) => other.as_str(),
            };
            return Err(Rejection::with_default_status(
                RejectionReason::MessageTypeNotSupported,
                format!("{sent} cannot be sent to {}", self.route),
            ));
        }
        let not_authenticated = |message: String| {
            Rejection::with_default_status(RejectionReason::NotAuthenticated, message)
        };
        let token = header.security_token.as_deref();
        let verified = match (token, self.certificate) {
            (None, _) if self.token_required => {
                return Err(not_authenticated(
                    "ids:securityToken with the connector's DAT (ids:tokenValue) is required"
                        .into(),
                ))
            }
            (token, Some(certificate)) => {
                self.verifier
                    .verify(token.unwrap_or_default().as_bytes(), certificate)
                    .await
            }
            (token, None) => {
                self.verifier
                    .verify_unbound(token.unwrap_or_default().as_bytes())
                    .await
            }
        };
        verified
            .map(|dat| dat.subject)
            .map_err(|e| not_authenticated(format!("ids:securityToken does not verify: {e}")))
    }
}
