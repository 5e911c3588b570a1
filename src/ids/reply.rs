//! Writing replies: the Information Model header of every answer, its extra headers, and the
//! rejection a failed request gets.
//!
//! A JVM peer silently drops a reply whose header does not deserialize as an Infomodel message
//! and then waits out its timeout, so every header written here carries all the fields the Java
//! serializer requires, in the shapes it writes itself (`{"@id": ...}` references, a typed
//! `xsd:dateTimeStamp` literal for `ids:issued`).

use serde_json::{json, Map, Value};
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

use super::header::RequestHeader;
use super::params::QueryParams;
use crate::idscp2::proto::app::HeaderEntry;

pub(crate) const IDS_NAMESPACE: &str = "https://w3id.org/idsa/core/";
pub(crate) const IDS_CODE_NAMESPACE: &str = "https://w3id.org/idsa/code/";
pub(crate) const MODEL_VERSION: &str = "4.2.7";
const AUTOGEN: &str = "https://w3id.org/idsa/autogen/";
const XSD_DATE_TIME_STAMP: &str = "http://www.w3.org/2001/XMLSchema#dateTimeStamp";

/// The Infomodel rejection reasons the clearing house uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionReason {
    BadParameters,
    MalformedMessage,
    MessageTypeNotSupported,
    NotAuthenticated,
    NotAuthorized,
    NotFound,
    TooManyResults,
    TemporarilyNotAvailable,
    InternalRecipientError,
}

impl RejectionReason {
    /// The code as it appears in `https://w3id.org/idsa/code/<CODE>`.
    pub fn code(&self) -> &'static str {
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
    pub fn default_status(&self) -> u16 {
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

    pub fn uri(&self) -> String {
        format!("{IDS_CODE_NAMESPACE}{}", self.code())
    }
}

/// A request that fails: what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} ({status}): {message}", code = .reason.code())]
pub struct Rejection {
    pub reason: RejectionReason,
    pub status: u16,
    pub message: String,
    /// The configured bound or quota the request ran into, for clients that back off by it.
    pub limit: Option<Box<ExceededLimit>>,
}

/// A bound (`limits.*`) or quota (`quotas.*`) a request exceeded, as the rejection payload's
/// `limit` object: `{"setting": .., "value": .., "resets_at": .., "retry_after_ms": ..}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceededLimit {
    /// The setting that holds the limit, e.g. `limits.max_owners` or `quotas.bytes_per_window`.
    pub setting: &'static str,
    /// The limit in force for this caller (a per-connector override where there is one).
    pub value: u64,
    /// Quotas only: when the quota has room again, unix milliseconds (UTC).
    pub resets_at_ms: Option<i64>,
}

impl Rejection {
    pub fn new(reason: RejectionReason, status: u16, message: impl Into<String>) -> Self {
        Self {
            reason,
            status,
            message: message.into(),
            limit: None,
        }
    }

    /// Names the bound or quota that caused the rejection in its payload.
    pub fn exceeding(mut self, limit: ExceededLimit) -> Self {
        self.limit = Some(Box::new(limit));
        self
    }

    pub fn with_default_status(reason: RejectionReason, message: impl Into<String>) -> Self {
        Self::new(reason, reason.default_status(), message)
    }

    /// The RejectionMessage payload: `{"status": .., "error": "<reason phrase>", "message": ..}`.
    pub fn payload(&self) -> Vec<u8> {
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

/// What the clearing house says about itself in every reply.
#[derive(Debug, Clone, Copy)]
pub struct ReplyContext<'a> {
    /// The configured connector id (an IRI): issuer and sender of every reply.
    pub connector_id: &'a str,
    /// The clearing house's own DAT, when it has a DAPS.
    pub own_dat: Option<&'a str>,
}

/// The compact JSON text of `value`: the same bytes as `value.to_string()`, written straight
/// into one buffer. `Display` passes every fragment through `fmt::Formatter`, which made the JSON
/// headers and payloads of each request and reply cost about twice what they need (see
/// BENCHMARKS.md). Serializing a `Value` into memory cannot fail (its keys are strings); if it
/// ever did, the empty text would make the peer drop the message, not the server panic.
pub fn compact_json(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// `ids:MessageProcessedNotificationMessage`: create and log succeeded.
pub fn processed_header(ctx: &ReplyContext, request: Option<&RequestHeader>) -> String {
    compact_json(&Value::Object(reply_header(
        ctx,
        request,
        "ids:MessageProcessedNotificationMessage",
        "messageProcessedNotificationMessage",
    )))
}

/// `ids:ResultMessage`: the answer to a query.
pub fn result_header(ctx: &ReplyContext, request: Option<&RequestHeader>) -> String {
    compact_json(&Value::Object(reply_header(
        ctx,
        request,
        "ids:ResultMessage",
        "resultMessage",
    )))
}

/// `ids:RejectionMessage`. `request` is `None` when the request header itself was unreadable;
/// the reply then cannot correlate.
pub fn rejection_header(
    ctx: &ReplyContext,
    request: Option<&RequestHeader>,
    reason: RejectionReason,
) -> String {
    let mut header = reply_header(ctx, request, "ids:RejectionMessage", "rejectionMessage");
    header.insert("ids:rejectionReason".into(), json!({"@id": reason.uri()}));
    compact_json(&Value::Object(header))
}

fn reply_header(
    ctx: &ReplyContext,
    request: Option<&RequestHeader>,
    type_name: &str,
    autogen_name: &str,
) -> Map<String, Value> {
    let mut header = message_header(
        type_name,
        autogen_name,
        ctx.connector_id,
        ctx.connector_id,
        ctx.own_dat,
    );
    let issuer = request.and_then(|r| r.issuer_connector.as_deref());
    let agent = request.and_then(|r| r.sender_agent.as_deref());
    // The Java serializer writes unknown recipients as empty lists rather than leaving them out.
    header.insert("ids:recipientConnector".into(), references(issuer));
    header.insert("ids:recipientAgent".into(), references(agent));
    if let Some(request) = request {
        header.insert("ids:correlationMessage".into(), json!({"@id": request.id}));
    }
    header
}

/// The fields every Infomodel message carries, requests and replies alike.
pub(crate) fn message_header(
    type_name: &str,
    autogen_name: &str,
    connector_id: &str,
    sender_agent: &str,
    security_token: Option<&str>,
) -> Map<String, Value> {
    let mut header = Map::new();
    header.insert("@context".into(), ids_context());
    header.insert("@type".into(), type_name.into());
    header.insert("@id".into(), autogen_id(autogen_name).into());
    header.insert("ids:modelVersion".into(), MODEL_VERSION.into());
    header.insert(
        "ids:issued".into(),
        xsd_date_time_stamp(OffsetDateTime::now_utc()),
    );
    header.insert("ids:issuerConnector".into(), json!({"@id": connector_id}));
    header.insert("ids:senderAgent".into(), json!({"@id": sender_agent}));
    if let Some(token) = security_token {
        header.insert(
            "ids:securityToken".into(),
            json!({
                "@type": "ids:DynamicAttributeToken",
                "@id": autogen_id("dynamicAttributeToken"),
                "ids:tokenValue": token,
                "ids:tokenFormat": {"@id": format!("{IDS_CODE_NAMESPACE}JWT")},
            }),
        );
    }
    header
}

fn references(iri: Option<&str>) -> Value {
    Value::Array(iri.map(|iri| json!({"@id": iri})).into_iter().collect())
}

pub(crate) fn ids_context() -> Value {
    json!({"ids": IDS_NAMESPACE, "idsc": IDS_CODE_NAMESPACE})
}

/// A fresh instance IRI in the form the Java builders generate.
fn autogen_id(autogen_name: &str) -> String {
    format!("{AUTOGEN}{autogen_name}/{}", Uuid::new_v4())
}

/// RFC 3339 in UTC with exactly three fractional digits, the precision entries are stored with.
pub(crate) fn rfc3339_ms(instant: OffsetDateTime) -> String {
    let utc = instant.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.millisecond()
    )
}

/// A typed `xsd:dateTimeStamp` literal, the shape Infomodel uses for `ids:issued`.
pub(crate) fn xsd_date_time_stamp(instant: OffsetDateTime) -> Value {
    json!({"@value": rfc3339_ms(instant), "@type": XSD_DATE_TIME_STAMP})
}

/// Extra headers of every reply about a process.
pub fn reply_extra_headers(pid: &str) -> Vec<HeaderEntry> {
    vec![entry("ch-ids-pid", pid.to_owned())]
}

/// Extra headers of a page reply: the effective paging (`ch-ids-size` shows a lowered size) and
/// the total number of entries in the window.
pub fn page_extra_headers(pid: &str, query: &QueryParams, total: u64) -> Vec<HeaderEntry> {
    vec![
        entry("ch-ids-pid", pid.to_owned()),
        entry("ch-ids-page", query.page.to_string()),
        entry("ch-ids-size", query.size.to_string()),
        entry("ch-ids-sort", query.order.as_str().to_owned()),
        entry("ch-ids-total", total.to_string()),
    ]
}

fn entry(name: &str, value: String) -> HeaderEntry {
    HeaderEntry {
        name: name.to_owned(),
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::params::ChParams;
    use crate::idscp2::proto::app::HeaderEntry;

    const CH: &str = "https://clearinghouse.example/connector";

    fn request() -> RequestHeader {
        RequestHeader::parse(
            &json!({
                "@type": "ids:LogMessage",
                "@id": "https://w3id.org/idsa/autogen/logMessage/req-1",
                "ids:issuerConnector": {"@id": "https://client.example/connector"},
                "ids:senderAgent": {"@id": "https://client.example/agent"},
            })
            .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn compact_json_writes_what_to_string_writes() {
        let value = json!({
            "documents": [{"payload": "line\n\"quoted\" \u{7f} \u{1F600}", "sequence": 1}],
            "total": 1_000_000u64,
            "date_from": null,
            "ratio": 0.5,
        });
        assert_eq!(compact_json(&value), value.to_string());
    }

    fn parse(header: &str) -> Map<String, Value> {
        match serde_json::from_str(header).unwrap() {
            Value::Object(object) => object,
            other => panic!("header is not an object: {other}"),
        }
    }

    fn assert_common(header: &Map<String, Value>, type_name: &str, autogen_name: &str) {
        assert_eq!(
            header["@context"],
            json!({"ids": "https://w3id.org/idsa/core/", "idsc": "https://w3id.org/idsa/code/"})
        );
        assert_eq!(header["@type"], json!(type_name));
        let id = header["@id"].as_str().unwrap();
        let uuid = id
            .strip_prefix(&format!("https://w3id.org/idsa/autogen/{autogen_name}/"))
            .unwrap_or_else(|| panic!("@id {id}"));
        assert_eq!(Uuid::parse_str(uuid).unwrap().get_version_num(), 4);
        assert_eq!(header["ids:modelVersion"], json!("4.2.7"));
        assert_eq!(header["ids:issuerConnector"], json!({"@id": CH}));
        assert_eq!(header["ids:senderAgent"], json!({"@id": CH}));

        let issued = &header["ids:issued"];
        assert_eq!(
            issued["@type"],
            json!("http://www.w3.org/2001/XMLSchema#dateTimeStamp")
        );
        let issued = issued["@value"].as_str().unwrap();
        let parsed =
            OffsetDateTime::parse(issued, &time::format_description::well_known::Rfc3339).unwrap();
        let age = OffsetDateTime::now_utc() - parsed;
        assert!(age.whole_seconds().abs() < 60, "issued {issued} is not now");
    }

    fn assert_correlated(header: &Map<String, Value>) {
        assert_eq!(
            header["ids:correlationMessage"],
            json!({"@id": "https://w3id.org/idsa/autogen/logMessage/req-1"})
        );
        assert_eq!(
            header["ids:recipientConnector"],
            json!([{"@id": "https://client.example/connector"}])
        );
        assert_eq!(
            header["ids:recipientAgent"],
            json!([{"@id": "https://client.example/agent"}])
        );
    }

    #[test]
    fn processed_header_has_every_required_field() {
        let ctx = ReplyContext {
            connector_id: CH,
            own_dat: None,
        };
        let header = parse(&processed_header(&ctx, Some(&request())));
        assert_common(
            &header,
            "ids:MessageProcessedNotificationMessage",
            "messageProcessedNotificationMessage",
        );
        assert_correlated(&header);
        assert!(!header.contains_key("ids:securityToken"));
        assert!(!header.contains_key("ids:rejectionReason"));
    }

    #[test]
    fn result_header_carries_our_dat_as_a_dynamic_attribute_token() {
        let ctx = ReplyContext {
            connector_id: CH,
            own_dat: Some("eyJ.our.dat"),
        };
        let header = parse(&result_header(&ctx, Some(&request())));
        assert_common(&header, "ids:ResultMessage", "resultMessage");
        assert_correlated(&header);
        let token = &header["ids:securityToken"];
        assert_eq!(token["@type"], json!("ids:DynamicAttributeToken"));
        assert!(token["@id"]
            .as_str()
            .unwrap()
            .starts_with("https://w3id.org/idsa/autogen/dynamicAttributeToken/"));
        assert_eq!(token["ids:tokenValue"], json!("eyJ.our.dat"));
        assert_eq!(
            token["ids:tokenFormat"],
            json!({"@id": "https://w3id.org/idsa/code/JWT"})
        );
    }

    #[test]
    fn rejection_header_names_the_reason_uri() {
        let ctx = ReplyContext {
            connector_id: CH,
            own_dat: None,
        };
        let header = parse(&rejection_header(
            &ctx,
            Some(&request()),
            RejectionReason::NotAuthorized,
        ));
        assert_common(&header, "ids:RejectionMessage", "rejectionMessage");
        assert_correlated(&header);
        assert_eq!(
            header["ids:rejectionReason"],
            json!({"@id": "https://w3id.org/idsa/code/NOT_AUTHORIZED"})
        );
    }

    #[test]
    fn rejection_without_request_has_no_correlation() {
        let ctx = ReplyContext {
            connector_id: CH,
            own_dat: None,
        };
        let header = parse(&rejection_header(
            &ctx,
            None,
            RejectionReason::MalformedMessage,
        ));
        assert_common(&header, "ids:RejectionMessage", "rejectionMessage");
        assert!(!header.contains_key("ids:correlationMessage"));
        assert_eq!(header["ids:recipientConnector"], json!([]));
        assert_eq!(header["ids:recipientAgent"], json!([]));
        assert_eq!(
            header["ids:rejectionReason"],
            json!({"@id": "https://w3id.org/idsa/code/MALFORMED_MESSAGE"})
        );
    }

    #[test]
    fn each_reply_gets_a_fresh_id() {
        let ctx = ReplyContext {
            connector_id: CH,
            own_dat: None,
        };
        let first = parse(&processed_header(&ctx, None));
        let second = parse(&processed_header(&ctx, None));
        assert_ne!(first["@id"], second["@id"]);
    }

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

    fn pairs(entries: &[HeaderEntry]) -> Vec<(&str, &str)> {
        entries
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect()
    }

    #[test]
    fn extra_headers_name_the_pid() {
        assert_eq!(pairs(&reply_extra_headers("p-1")), [("ch-ids-pid", "p-1")]);
    }

    #[test]
    fn page_extra_headers_show_the_effective_paging() {
        let query = ChParams::parse(
            &[
                HeaderEntry {
                    name: "ch-ids-size".into(),
                    value: "5000".into(),
                },
                HeaderEntry {
                    name: "ch-ids-sort".into(),
                    value: "ASC".into(),
                },
            ],
            &crate::ids::params::ParamLimits::default(),
        )
        .unwrap()
        .query()
        .unwrap();
        assert_eq!(
            pairs(&page_extra_headers("p-1", &query, 42)),
            [
                ("ch-ids-pid", "p-1"),
                ("ch-ids-page", "1"),
                ("ch-ids-size", "1000"),
                ("ch-ids-sort", "asc"),
                ("ch-ids-total", "42"),
            ]
        );
    }

    #[test]
    fn rfc3339_ms_is_utc_with_three_digits() {
        let instant = OffsetDateTime::from_unix_timestamp_nanos(1_710_028_800_007_900_000)
            .unwrap()
            .to_offset(UtcOffset::from_hms(2, 0, 0).unwrap());
        assert_eq!(rfc3339_ms(instant), "2024-03-10T00:00:00.007Z");
    }
}
