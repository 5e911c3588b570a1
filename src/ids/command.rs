//! Commands: what a request asks the clearing house to do, read once from its IDS header, its
//! `ch-ids-*` parameters and its payload.
//!
//! Every front door (IDSCP2 now, IDS-Multipart over HTTPS later) carries the same three parts,
//! so each turns them into the same [`Command`] with [`Command::parse`] and hands it to the
//! clearing house; the handlers never see a header, a parameter or a door. Whatever is wrong
//! with a request that can be told without the store or the caller's quotas is refused here,
//! with the same rejection whichever door it came through.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::Value;

use super::header::{MessageType, RequestHeader};
use super::params::{ChParams, QueryParams};
use super::pid::Pid;
use super::rejection::{bad_parameter, too_large, Rejection, RejectionReason};

/// One request, validated: each variant holds exactly what its handler needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// `ids:RequestMessage`: create a process owned by the caller and `owners`.
    Create { pid: Pid, owners: BTreeSet<String> },
    /// `ids:LogMessage`: append `payload` (never empty) to the process.
    Log {
        pid: Pid,
        /// The payload's media type as sent (`Content-Type`); empty when none was.
        payload_type: String,
        payload: Bytes,
        /// The request header as it is stored with the entry: without tokens
        /// (see [`RequestHeader::stored_form`]).
        stored_header: Value,
    },
    /// `ids:QueryMessage` without `ch-ids-id`: a page of the process's entries.
    QueryPage { pid: Pid, spec: QueryParams },
    /// `ids:QueryMessage` with `ch-ids-id`: one entry by its document id.
    QueryOne { pid: Pid, id: String },
}

/// Bounds on a command's payload, checked before the payload is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PayloadLimits {
    /// `limits.max_create_payload`: the `{"owners": [...]}` of a create.
    pub(crate) max_create_payload: usize,
    /// `server.max_payload`: one logged payload.
    pub(crate) max_log_payload: usize,
}

impl Command {
    /// The command `header`, `params` and `payload` make. `params` were read with the request's
    /// [`ParamLimits`](super::params::ParamLimits), which also bound the pid.
    pub(crate) fn parse(
        header: &RequestHeader,
        params: &ChParams,
        payload: Bytes,
        limits: &PayloadLimits,
    ) -> Result<Command, Rejection> {
        match &header.message_type {
            MessageType::Request => create(params, payload, limits),
            MessageType::Log => log(header, params, payload, limits),
            MessageType::Query => query(params),
            MessageType::Other(other) => Err(Rejection::with_default_status(
                RejectionReason::MessageTypeNotSupported,
                format!("{other} is not supported; send ids:RequestMessage, ids:LogMessage or ids:QueryMessage"),
            )),
        }
    }
}

fn create(params: &ChParams, payload: Bytes, limits: &PayloadLimits) -> Result<Command, Rejection> {
    let pid = params.pid()?;
    let max_payload = limits.max_create_payload;
    if payload.len() > max_payload {
        return Err(too_large(
            "limits.max_create_payload",
            max_payload,
            format!(
                "the create payload of {} bytes exceeds the limit of {max_payload} bytes (limits.max_create_payload)",
                payload.len()
            ),
        ));
    }
    let owners = requested_owners(params, &payload)?;
    Ok(Command::Create { pid, owners })
}

fn log(
    header: &RequestHeader,
    params: &ChParams,
    payload: Bytes,
    limits: &PayloadLimits,
) -> Result<Command, Rejection> {
    let pid = params.pid()?;
    let size = payload.len();
    if size == 0 {
        return Err(bad_parameter("the payload to log is empty"));
    }
    if size > limits.max_log_payload {
        return Err(Rejection::new(
            RejectionReason::BadParameters,
            413,
            format!(
                "the payload of {size} bytes exceeds the limit of {} bytes",
                limits.max_log_payload
            ),
        ));
    }
    Ok(Command::Log {
        pid,
        payload_type: params.content_type.clone().unwrap_or_default(),
        payload,
        stored_header: header.stored_form(),
    })
}

/// With `ch-ids-id` the paging parameters are not read: one entry has no page.
fn query(params: &ChParams) -> Result<Command, Rejection> {
    let pid = params.pid()?;
    Ok(match &params.id {
        Some(id) => Command::QueryOne {
            pid,
            id: id.clone(),
        },
        None => Command::QueryPage {
            pid,
            spec: params.query()?,
        },
    })
}

/// The owners named in the payload `{"owners": [...]}`; an empty payload names none.
fn requested_owners(params: &ChParams, payload: &[u8]) -> Result<BTreeSet<String>, Rejection> {
    if payload.is_empty() {
        return Ok(BTreeSet::new());
    }
    let is_json = params.content_type.as_deref().is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return Err(bad_parameter(
            "a payload needs Content-Type: application/json with {\"owners\": [...]}",
        ));
    }
    let body: Value = serde_json::from_slice(payload)
        .map_err(|e| bad_parameter(format!("payload is not JSON: {e}")))?;
    let Value::Object(body) = body else {
        return Err(bad_parameter(
            "payload must be a JSON object {\"owners\": [...]}",
        ));
    };
    let not_a_list = || bad_parameter("owners must be a list of non-empty strings");
    match body.get("owners") {
        None => Ok(BTreeSet::new()),
        Some(Value::Array(owners)) => owners
            .iter()
            .map(|owner| match owner {
                Value::String(id) if !id.is_empty() => Ok(id.clone()),
                _ => Err(not_a_list()),
            })
            .collect(),
        Some(_) => Err(not_a_list()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ids::params::ParamLimits;
    use crate::ids::SortOrder;
    use crate::idscp2::proto::app::HeaderEntry;

    const LIMITS: PayloadLimits = PayloadLimits {
        max_create_payload: 64,
        max_log_payload: 16,
    };

    fn header(type_name: &str) -> RequestHeader {
        RequestHeader::parse(
            &json!({
                "@type": type_name,
                "@id": "urn:m:1",
                "ids:securityToken": {"ids:tokenValue": "eyJ.dat"},
                "ids:contentVersion": "1",
            })
            .to_string(),
        )
        .unwrap()
    }

    /// A request as a door receives it: the header's type, extra headers, payload.
    fn parse(
        type_name: &str,
        pairs: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<Command, Rejection> {
        let extra: Vec<HeaderEntry> = pairs
            .iter()
            .map(|(name, value)| HeaderEntry {
                name: (*name).to_owned(),
                value: (*value).to_owned(),
            })
            .collect();
        let params = ChParams::parse(&extra, &ParamLimits::default())?;
        Command::parse(
            &header(type_name),
            &params,
            Bytes::copy_from_slice(payload),
            &LIMITS,
        )
    }

    fn pid(text: &str) -> Pid {
        Pid::parse(text, 255).unwrap()
    }

    fn assert_rejected(
        result: Result<Command, Rejection>,
        reason: RejectionReason,
        status: u16,
        message: &str,
    ) {
        let rejection = result.unwrap_err();
        assert_eq!(
            (
                rejection.reason,
                rejection.status,
                rejection.message.as_str()
            ),
            (reason, status, message)
        );
    }

    const BAD: RejectionReason = RejectionReason::BadParameters;

    #[test]
    fn a_request_message_is_a_create_with_the_named_owners() {
        let owners = br#"{"owners": ["urn:b", "urn:a", "urn:b"]}"#;
        let command = parse(
            "ids:RequestMessage",
            &[
                ("ch-ids-pid", "p-1"),
                ("Content-Type", "Application/JSON; charset=utf-8"),
            ],
            owners,
        )
        .unwrap();
        assert_eq!(
            command,
            Command::Create {
                pid: pid("p-1"),
                owners: BTreeSet::from(["urn:a".to_owned(), "urn:b".to_owned()]),
            }
        );
        let bare = parse("ids:RequestMessage", &[("ch-ids-pid", "p-1")], b"").unwrap();
        assert_eq!(
            bare,
            Command::Create {
                pid: pid("p-1"),
                owners: BTreeSet::new()
            }
        );
        let no_owners_key = parse(
            "ids:RequestMessage",
            &[("ch-ids-pid", "p-1"), ("content-type", "application/json")],
            b"{}",
        )
        .unwrap();
        assert_eq!(no_owners_key, bare);
    }

    #[test]
    fn a_create_payload_is_bounded_before_it_is_read() {
        let over = [b'x'; 65];
        let rejection = parse("ids:RequestMessage", &[("ch-ids-pid", "p-1")], &over).unwrap_err();
        assert_eq!((rejection.reason, rejection.status), (BAD, 413));
        assert_eq!(
            rejection.message,
            "the create payload of 65 bytes exceeds the limit of 64 bytes (limits.max_create_payload)"
        );
        assert_eq!(
            rejection.limit.map(|limit| (limit.setting, limit.value)),
            Some(("limits.max_create_payload", 64))
        );
    }

    #[test]
    fn create_payloads_that_name_no_owner_list_are_refused() {
        let json = [("ch-ids-pid", "p-1"), ("content-type", "application/json")];
        assert_rejected(
            parse(
                "ids:RequestMessage",
                &[("ch-ids-pid", "p-1")],
                b"{\"owners\":[]}",
            ),
            BAD,
            400,
            "a payload needs Content-Type: application/json with {\"owners\": [...]}",
        );
        let not_json = parse("ids:RequestMessage", &json, b"{owners").unwrap_err();
        assert!(
            not_json.message.starts_with("payload is not JSON: "),
            "{}",
            not_json.message
        );
        assert_rejected(
            parse("ids:RequestMessage", &json, b"[\"urn:a\"]"),
            BAD,
            400,
            "payload must be a JSON object {\"owners\": [...]}",
        );
        for owners in [
            &br#"{"owners": "urn:a"}"#[..],
            br#"{"owners": [""]}"#,
            br#"{"owners": [1]}"#,
        ] {
            assert_rejected(
                parse("ids:RequestMessage", &json, owners),
                BAD,
                400,
                "owners must be a list of non-empty strings",
            );
        }
    }

    #[test]
    fn a_log_message_is_a_log_with_the_stored_header() {
        let command = parse(
            "ids:LogMessage",
            &[("ch-ids-pid", "p-1"), ("Content-Type", "text/plain")],
            b"hello",
        )
        .unwrap();
        let Command::Log {
            pid: logged_pid,
            payload_type,
            payload,
            stored_header,
        } = command
        else {
            panic!("not a log: {command:?}");
        };
        assert_eq!(logged_pid, pid("p-1"));
        assert_eq!(payload_type, "text/plain");
        assert_eq!(payload, Bytes::from_static(b"hello"));
        assert_eq!(
            stored_header,
            json!({"@type": "ids:LogMessage", "@id": "urn:m:1", "ids:contentVersion": "1"})
        );
        let untyped = parse("ids:LogMessage", &[("ch-ids-pid", "p-1")], b"x").unwrap();
        assert!(matches!(untyped, Command::Log { payload_type, .. } if payload_type.is_empty()));
    }

    #[test]
    fn a_log_payload_is_neither_empty_nor_over_the_limit() {
        let pid = [("ch-ids-pid", "p-1")];
        assert_rejected(
            parse("ids:LogMessage", &pid, b""),
            BAD,
            400,
            "the payload to log is empty",
        );
        assert!(parse("ids:LogMessage", &pid, &[b'x'; 16]).is_ok());
        assert_rejected(
            parse("ids:LogMessage", &pid, &[b'x'; 17]),
            BAD,
            413,
            "the payload of 17 bytes exceeds the limit of 16 bytes",
        );
    }

    #[test]
    fn a_query_message_is_a_page_query_or_with_an_id_a_single_one() {
        let page = parse(
            "ids:QueryMessage",
            &[
                ("ch-ids-pid", "p-1"),
                ("ch-ids-page", "2"),
                ("ch-ids-sort", "asc"),
            ],
            b"",
        )
        .unwrap();
        let Command::QueryPage {
            pid: query_pid,
            spec,
        } = page
        else {
            panic!("not a page query: {page:?}");
        };
        assert_eq!(query_pid, pid("p-1"));
        assert_eq!((spec.page, spec.size, spec.order), (2, 100, SortOrder::Asc));
        // With an id the paging parameters are not read, as the page is not asked for.
        let one = parse(
            "ids:QueryMessage",
            &[
                ("ch-ids-pid", "p-1"),
                ("ch-ids-id", "doc-1"),
                ("ch-ids-page", "0"),
            ],
            b"",
        )
        .unwrap();
        assert_eq!(
            one,
            Command::QueryOne {
                pid: pid("p-1"),
                id: "doc-1".into()
            }
        );
        assert_rejected(
            parse(
                "ids:QueryMessage",
                &[("ch-ids-pid", "p-1"), ("ch-ids-page", "0")],
                b"",
            ),
            BAD,
            400,
            "ch-ids-page must be an integer >= 1",
        );
    }

    #[test]
    fn every_message_type_needs_a_valid_pid() {
        for type_name in ["ids:RequestMessage", "ids:LogMessage", "ids:QueryMessage"] {
            assert_rejected(
                parse(type_name, &[], b"x"),
                BAD,
                400,
                "ch-ids-pid is required",
            );
            assert_rejected(
                parse(type_name, &[("ch-ids-pid", "default")], b"x"),
                BAD,
                400,
                "ch-ids-pid \"default\" is reserved",
            );
            let malformed = parse(type_name, &[("ch-ids-pid", "a/b")], b"x").unwrap_err();
            assert_eq!(
                malformed.limit.map(|limit| limit.setting),
                Some("limits.max_pid_length")
            );
        }
        for (type_name, payload) in [
            ("ids:RequestMessage", &b""[..]),
            ("ids:LogMessage", b"x"),
            ("ids:QueryMessage", b""),
        ] {
            let command = parse(type_name, &[("ch-ids-pid", " p-1 ")], payload).unwrap();
            let (Command::Create { pid: read, .. }
            | Command::Log { pid: read, .. }
            | Command::QueryPage { pid: read, .. }
            | Command::QueryOne { pid: read, .. }) = command;
            assert_eq!(read, pid("p-1"), "{type_name}");
        }
    }

    #[test]
    fn contradictory_parameters_are_refused_before_any_command() {
        assert_rejected(
            parse(
                "ids:LogMessage",
                &[("ch-ids-pid", "p-1"), ("CH-IDS-PID", "p-2")],
                b"x",
            ),
            BAD,
            400,
            "ch-ids-pid was sent twice with different values",
        );
        assert!(parse(
            "ids:LogMessage",
            &[("ch-ids-pid", "p-1"), ("CH-IDS-PID", " p-1")],
            b"x"
        )
        .is_ok());
    }

    #[test]
    fn other_message_types_are_not_supported_whatever_they_carry() {
        assert_rejected(
            parse("ids:ArtifactRequestMessage", &[], b""),
            RejectionReason::MessageTypeNotSupported,
            400,
            "ids:ArtifactRequestMessage is not supported; send ids:RequestMessage, ids:LogMessage or ids:QueryMessage",
        );
    }
}
