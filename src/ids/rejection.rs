//! Rejections: why a request fails, in the Infomodel's reason codes, and what the client is told.
//!
//! Every room that refuses something (the header and parameter readers, the pid check, the
//! quotas, the clearing house's handlers) says so with a [`Rejection`]; replies only render
//! one. It lives apart from those rooms so that each can use it without importing another.

use serde_json::json;
use time::OffsetDateTime;

use super::infomodel::{compact_json, rfc3339_ms, IDS_CODE_NAMESPACE};

/// The Infomodel rejection reasons the clearing house uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionReason {
    /// `BAD_PARAMETERS`: the request's parameters or payload cannot be accepted.
    BadParameters,
    /// `MALFORMED_MESSAGE`: the message or its header cannot be read.
    MalformedMessage,
    /// `MESSAGE_TYPE_NOT_SUPPORTED`: the clearing house does not handle this message type.
    MessageTypeNotSupported,
    /// `NOT_AUTHENTICATED`: the token in the header does not identify the connection's peer.
    NotAuthenticated,
    /// `NOT_AUTHORIZED`: the caller is not an owner of the process.
    NotAuthorized,
    /// `NOT_FOUND`: no such process or entry.
    NotFound,
    /// `TOO_MANY_RESULTS`: the reply would be larger than a reply may be.
    TooManyResults,
    /// `TEMPORARILY_NOT_AVAILABLE`: try again later (a quota, or the store is unavailable).
    TemporarilyNotAvailable,
    /// `INTERNAL_RECIPIENT_ERROR`: the clearing house failed to complete the request.
    InternalRecipientError,
}

impl RejectionReason {
    /// The code as it appears in `https://w3id.org/idsa/code/<CODE>`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::BadParameters => "BAD_PARAMETERS",
            Self::MalformedMessage => "MALFORMED_MESSAGE",
            Self::MessageTypeNotSupported => "MESSAGE_TYPE_NOT_SUPPORTED",
            Self::NotAuthenticated => "NOT_AUTHENTICATED",
            Self::NotAuthorized => "NOT_AUTHORIZED",
            Self::NotFound => "NOT_FOUND",
            Self::TooManyResults => "TOO_MANY_RESULTS",
            Self::TemporarilyNotAvailable => "TEMPORARILY_NOT_AVAILABLE",
            Self::InternalRecipientError => "INTERNAL_RECIPIENT_ERROR",
        }
    }

    /// The HTTP-style status the payload carries unless the handler knows better (e.g. 409 for
    /// an existing process).
    pub(crate) fn default_status(&self) -> u16 {
        match self {
            Self::BadParameters
            | Self::MalformedMessage
            | Self::MessageTypeNotSupported
            | Self::TooManyResults => 400,
            Self::NotAuthenticated => 401,
            Self::NotAuthorized => 403,
            Self::NotFound => 404,
            Self::InternalRecipientError => 500,
            Self::TemporarilyNotAvailable => 503,
        }
    }

    pub(crate) fn uri(&self) -> String {
        format!("{IDS_CODE_NAMESPACE}{}", self.code())
    }
}

/// A request that fails: what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} ({status}): {message}", code = .reason.code())]
pub struct Rejection {
    /// The Infomodel rejection reason.
    pub reason: RejectionReason,
    pub(crate) status: u16,
    /// What was wrong, for the person reading it.
    pub message: String,
    /// The configured bound or quota the request ran into, for clients that back off by it.
    pub(crate) limit: Option<Box<ExceededLimit>>,
}

/// A bound (`limits.*`) or quota (`quotas.*`) a request exceeded, as the rejection payload's
/// `limit` object: `{"setting": .., "value": .., "resets_at": .., "retry_after_ms": ..}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExceededLimit {
    /// The setting that holds the limit, e.g. `limits.max_owners` or `quotas.bytes_per_window`.
    pub(crate) setting: &'static str,
    /// The limit in force for this caller (a per-connector override where there is one).
    pub(crate) value: u64,
    /// Quotas only: when the quota has room again, unix milliseconds (UTC).
    pub(crate) resets_at_ms: Option<i64>,
}

impl Rejection {
    pub(crate) fn new(reason: RejectionReason, status: u16, message: impl Into<String>) -> Self {
        Self {
            reason,
            status,
            message: message.into(),
            limit: None,
        }
    }

    /// Names the bound or quota that caused the rejection in its payload.
    pub(crate) fn exceeding(mut self, limit: ExceededLimit) -> Self {
        self.limit = Some(Box::new(limit));
        self
    }

    pub(crate) fn with_default_status(reason: RejectionReason, message: impl Into<String>) -> Self {
        Self::new(reason, reason.default_status(), message)
    }

    /// The RejectionMessage payload: `{"status": .., "error": "<reason phrase>", "message": ..}`.
    pub(crate) fn payload(&self) -> Vec<u8> {
        let mut payload = json!({
            "status": self.status,
            "error": reason_phrase(self.status),
            "message": self.message,
        });
        if let Some(limit) = &self.limit {
            let mut detail = json!({"setting": limit.setting, "value": limit.value});
            if let Some(resets_at_ms) = limit.resets_at_ms {
                let now_ms = crate::store::now_ms();
                let resets_at =
                    OffsetDateTime::from_unix_timestamp_nanos(i128::from(resets_at_ms) * 1_000_000);
                detail["resets_at"] = resets_at.map(rfc3339_ms).unwrap_or_default().into();
                detail["retry_after_ms"] = resets_at_ms.saturating_sub(now_ms).max(0).into();
            }
            payload["limit"] = detail;
        }
        compact_json(&payload).into_bytes()
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => match status / 100 {
            4 => "Client Error",
            5 => "Server Error",
            _ => "Error",
        },
    }
}

/// A parameter that cannot be used as sent: BAD_PARAMETERS naming it.
pub(crate) fn bad_parameter(message: impl Into<String>) -> Rejection {
    Rejection::with_default_status(RejectionReason::BadParameters, message)
}

/// A request larger than a `limits.*` setting allows: BAD_PARAMETERS with status 413 and the
/// setting named in the payload.
pub(crate) fn too_large(
    setting: &'static str,
    value: usize,
    message: impl Into<String>,
) -> Rejection {
    Rejection::new(RejectionReason::BadParameters, 413, message).exceeding(ExceededLimit {
        setting,
        value: value as u64,
        resets_at_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn reason_codes_uris_and_default_statuses() {
        use RejectionReason::*;
        let cases = [
            (BadParameters, "BAD_PARAMETERS", 400),
            (MalformedMessage, "MALFORMED_MESSAGE", 400),
            (MessageTypeNotSupported, "MESSAGE_TYPE_NOT_SUPPORTED", 400),
            (NotAuthenticated, "NOT_AUTHENTICATED", 401),
            (NotAuthorized, "NOT_AUTHORIZED", 403),
            (NotFound, "NOT_FOUND", 404),
            (TooManyResults, "TOO_MANY_RESULTS", 400),
            (TemporarilyNotAvailable, "TEMPORARILY_NOT_AVAILABLE", 503),
            (InternalRecipientError, "INTERNAL_RECIPIENT_ERROR", 500),
        ];
        for (reason, code, status) in cases {
            assert_eq!(reason.code(), code);
            assert_eq!(reason.uri(), format!("https://w3id.org/idsa/code/{code}"));
            assert_eq!(reason.default_status(), status, "{code}");
        }
    }

    #[test]
    fn rejection_payload_shape() {
        let rejection = Rejection::new(
            RejectionReason::BadParameters,
            409,
            "process already exists",
        );
        let payload: Value = serde_json::from_slice(&rejection.payload()).unwrap();
        assert_eq!(
            payload,
            json!({"status": 409, "error": "Conflict", "message": "process already exists"})
        );
        assert_eq!(
            rejection.to_string(),
            "BAD_PARAMETERS (409): process already exists"
        );
    }

    #[test]
    fn reason_phrases_follow_the_status() {
        let phrase = |status| {
            let payload = Rejection::new(RejectionReason::NotFound, status, "m").payload();
            serde_json::from_slice::<Value>(&payload).unwrap()["error"].clone()
        };
        assert_eq!(phrase(404), json!("Not Found"));
        assert_eq!(phrase(403), json!("Forbidden"));
        assert_eq!(phrase(500), json!("Internal Server Error"));
        assert_eq!(phrase(503), json!("Service Unavailable"));
        assert_eq!(phrase(418), json!("Client Error"));
        assert_eq!(phrase(599), json!("Server Error"));
        assert_eq!(phrase(200), json!("Error"));
    }

    #[test]
    fn with_default_status_uses_the_reason_status() {
        let rejection = Rejection::with_default_status(RejectionReason::NotFound, "no such pid");
        assert_eq!(rejection.status, 404);
        assert_eq!(rejection.message, "no such pid");
    }

    #[test]
    fn too_large_is_a_413_naming_the_setting() {
        let rejection = too_large("limits.max_owners", 64, "65 owners");
        assert_eq!(rejection.reason, RejectionReason::BadParameters);
        assert_eq!(rejection.status, 413);
        assert_eq!(
            rejection.limit.map(|limit| (limit.setting, limit.value)),
            Some(("limits.max_owners", 64))
        );
    }
}
