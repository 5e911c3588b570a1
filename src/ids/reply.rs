//! Writing replies: the Information Model header of every answer (a rejection's among them) and
//! its extra headers.
//!
//! A JVM peer silently drops a reply whose header does not deserialize as an Infomodel message
//! and then waits out its timeout, so every header written here carries all the fields the Java
//! serializer requires, in the shapes it writes itself (`{"@id": ...}` references, a typed
//! `xsd:dateTimeStamp` literal for `ids:issued`).

use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::header::RequestHeader;
use super::infomodel::{
    compact_json, ids_context, xsd_date_time_stamp, IDS_CODE_NAMESPACE, MODEL_VERSION,
};
use super::params::QueryParams;
use super::rejection::RejectionReason;
use crate::idscp2::proto::app::HeaderEntry;

const AUTOGEN: &str = "https://w3id.org/idsa/autogen/";

/// What the clearing house says about itself in every reply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplyContext<'a> {
    /// The configured connector id (an IRI): issuer and sender of every reply.
    pub(crate) connector_id: &'a str,
    /// The clearing house's own DAT, when it has a DAPS.
    pub(crate) own_dat: Option<&'a str>,
}

/// `ids:MessageProcessedNotificationMessage`: create and log succeeded.
pub(crate) fn processed_header(ctx: &ReplyContext, request: Option<&RequestHeader>) -> String {
    compact_json(&Value::Object(reply_header(
        ctx,
        request,
        "ids:MessageProcessedNotificationMessage",
        "messageProcessedNotificationMessage",
    )))
}

/// `ids:ResultMessage`: the answer to a query.
pub(crate) fn result_header(ctx: &ReplyContext, request: Option<&RequestHeader>) -> String {
    compact_json(&Value::Object(reply_header(
        ctx,
        request,
        "ids:ResultMessage",
        "resultMessage",
    )))
}

/// `ids:RejectionMessage`. `request` is `None` when the request header itself was unreadable;
/// the reply then cannot correlate.
pub(crate) fn rejection_header(
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

/// A fresh instance IRI in the form the Java builders generate.
fn autogen_id(autogen_name: &str) -> String {
    format!("{AUTOGEN}{autogen_name}/{}", Uuid::new_v4())
}

/// Extra headers of every reply about a process.
pub(crate) fn reply_extra_headers(pid: &str) -> Vec<HeaderEntry> {
    vec![header_entry("ch-ids-pid", pid.to_owned())]
}

/// Extra headers of a page reply: the effective paging (`ch-ids-size` shows a lowered size) and
/// the total number of entries in the window.
pub(crate) fn page_extra_headers(pid: &str, query: &QueryParams, total: u64) -> Vec<HeaderEntry> {
    vec![
        header_entry("ch-ids-pid", pid.to_owned()),
        header_entry("ch-ids-page", query.page.to_string()),
        header_entry("ch-ids-size", query.size.to_string()),
        header_entry("ch-ids-sort", query.order.as_str().to_owned()),
        header_entry("ch-ids-total", total.to_string()),
    ]
}

/// One extra header of a reply or request.
pub(crate) fn header_entry(name: &str, value: String) -> HeaderEntry {
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
}
