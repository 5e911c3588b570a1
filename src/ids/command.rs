//! Commands: what a request asks the clearing house to do, read once from its IDS header, its
//! `ch-ids-*` parameters and its payload.
//!
//! Every front door (IDSCP2 now, IDS-Multipart over HTTPS later) carries the same three parts,
//! so each turns them into the same [`Command`] with [`Command::parse`] and hands it to the
//! clearing house; the handlers never see a header, a parameter or a door. Whatever is wrong
//! with a request that can be told without the store or the caller's quotas is refused here,
//! with the same rejection whichever door it came through.
//!
//! Besides its default, a message type can ask for one more thing with `ch-ids-operation`
//! (clients that do not send it get what they always got):
//! - `ids:QueryMessage` + `ch-ids-operation: info` ([`Command::ProcessInfo`]): the process's
//!   owners, creation time, number of entries and head (sequence and chain hash), as a
//!   ResultMessage with `{"pid", "owners", "created_at", "entries", "head": {"sequence",
//!   "chain_hash", "timestamp"}}`; for owners only, refused as a query is.
//! - `ids:RequestMessage` + `ch-ids-operation: set-owners` with `Content-Type: application/json`
//!   and `{"owners": [...]}` ([`Command::SetOwners`]): an owner replaces the owners of an
//!   existing process. The change is an entry of the process's chain (payload type
//!   `application/vnd.clearinghouse.owners+json`, see `store::owners`) and is answered with
//!   its receipt, like a log. That payload type is reserved: a LogMessage cannot carry it.
//! - `ids:RequestMessage` + `ch-ids-operation: erase` ([`Command::Erase`]): an admin
//!   (`admin.identities`) erases the content of a process for good by destroying its data key
//!   (see `store::sealing`); answered with a ResultMessage `{"pid", "erasure": {"by", "at"}}`.
//!
//! Any other operation, or one on a LogMessage, is refused with BAD_PARAMETERS.
//!
//! Two more parameters let connectors use what the clearing house understands of their
//! messages (see `understand`):
//! - `ids:QueryMessage` + `ch-ids-view: transfers | contracts` ([`Command::QueryView`]): one
//!   page (`ch-ids-page`, `ch-ids-size`) of the process's Dataspace Protocol transfers or of its
//!   contracts, as a ResultMessage with the JSON `understand::render` describes; for owners
//!   only, refused as a query is.
//! - `ids:LogMessage` + `ch-ids-direction: sent | received`: whether the caller sent the logged
//!   message (the default) or received it. `received` is recorded in the stored header as the
//!   property `"ch-ids-direction": "received"`, so that the entry says it and the view can be
//!   rebuilt from the entries alone; any other value is BAD_PARAMETERS.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::Value;

use super::header::{MessageType, RequestHeader};
use super::owner::{check_owner_id, OwnerIdError};
use super::params::{ChParams, QueryParams, ViewKind, DIRECTION_PROPERTY};
use super::pid::Pid;
use super::rejection::{bad_parameter, too_large, Rejection, RejectionReason};
use crate::store::OWNER_CHANGE_PAYLOAD_TYPE;

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
        /// (see [`RequestHeader::stored`]).
        stored_header: Value,
    },
    /// `ids:QueryMessage` without `ch-ids-id`: a page of the process's entries.
    QueryPage { pid: Pid, spec: QueryParams },
    /// `ids:QueryMessage` with `ch-ids-id`: one entry by its document id.
    QueryOne { pid: Pid, id: String },
    /// `ids:QueryMessage` with `ch-ids-view`: one page of a view of the process.
    QueryView {
        pid: Pid,
        view: ViewKind,
        spec: QueryParams,
    },
    /// `ids:QueryMessage` with `ch-ids-operation: info`: the process itself.
    ProcessInfo { pid: Pid },
    /// `ids:RequestMessage` with `ch-ids-operation: set-owners`: replace the owners (never
    /// empty) of an existing process, recorded in its chain.
    SetOwners {
        pid: Pid,
        owners: BTreeSet<String>,
        /// The request header as it is stored with the entry that records the change.
        stored_header: Value,
    },
    /// `ids:RequestMessage` with `ch-ids-operation: erase`: destroy the process's data key.
    Erase { pid: Pid },
}

/// `ch-ids-operation` values.
const INFO: &str = "info";
const SET_OWNERS: &str = "set-owners";
const ERASE: &str = "erase";

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
    ///
    /// A command that stores the header (a log, an owner change) takes its stored form out of
    /// `header` rather than copying it; what is left is what the reply needs.
    pub(crate) fn parse(
        header: &mut RequestHeader,
        params: &ChParams,
        payload: Bytes,
        limits: &PayloadLimits,
    ) -> Result<Command, Rejection> {
        let operation = params.operation.as_deref();
        let is = |name: &str| operation.is_some_and(|op| op.eq_ignore_ascii_case(name));
        match &header.message_type {
            MessageType::Request if operation.is_none() => create(params, payload, limits),
            MessageType::Request if is(SET_OWNERS) => set_owners(header, params, payload, limits),
            MessageType::Request if is(ERASE) => Ok(Command::Erase { pid: params.pid()? }),
            MessageType::Log if operation.is_none() => log(header, params, payload, limits),
            MessageType::Query if operation.is_none() => query(params),
            MessageType::Query if is(INFO) => Ok(Command::ProcessInfo { pid: params.pid()? }),
            MessageType::Request | MessageType::Log | MessageType::Query => {
                Err(bad_parameter(format!(
                    "ch-ids-operation {:?} is not known for this message type; send {SET_OWNERS:?} or {ERASE:?} with ids:RequestMessage or {INFO:?} with ids:QueryMessage",
                    operation.unwrap_or_default(),
                )))
            }
            MessageType::Other(other) => Err(Rejection::with_default_status(
                RejectionReason::MessageTypeNotSupported,
                format!("{other} is not supported; send ids:RequestMessage, ids:LogMessage or ids:QueryMessage"),
            )),
        }
    }
}

fn create(params: &ChParams, payload: Bytes, limits: &PayloadLimits) -> Result<Command, Rejection> {
    let pid = params.pid()?;
    let owners = owners_payload(params, &payload, limits)?;
    Ok(Command::Create { pid, owners })
}

fn set_owners(
    header: &mut RequestHeader,
    params: &ChParams,
    payload: Bytes,
    limits: &PayloadLimits,
) -> Result<Command, Rejection> {
    let pid = params.pid()?;
    let owners = owners_payload(params, &payload, limits)?;
    if owners.is_empty() {
        return Err(bad_parameter(
            "set-owners needs Content-Type: application/json with a non-empty {\"owners\": [...]}",
        ));
    }
    Ok(Command::SetOwners {
        pid,
        owners,
        stored_header: std::mem::take(&mut header.stored),
    })
}

/// The owners a create or set-owners payload names, once it is known to be within
/// `limits.max_create_payload`.
fn owners_payload(
    params: &ChParams,
    payload: &[u8],
    limits: &PayloadLimits,
) -> Result<BTreeSet<String>, Rejection> {
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
    requested_owners(params, payload)
}

fn log(
    header: &mut RequestHeader,
    params: &ChParams,
    payload: Bytes,
    limits: &PayloadLimits,
) -> Result<Command, Rejection> {
    let pid = params.pid()?;
    let size = payload.len();
    if size == 0 {
        return Err(bad_parameter("the payload to log is empty"));
    }
    let payload_type = params.content_type.clone().unwrap_or_default();
    if media_type_is(&payload_type, OWNER_CHANGE_PAYLOAD_TYPE) {
        return Err(bad_parameter(format!(
            "Content-Type {OWNER_CHANGE_PAYLOAD_TYPE} is reserved for owner changes (ch-ids-operation: set-owners)"
        )));
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
    let mut stored_header = std::mem::take(&mut header.stored);
    match params.direction.as_deref() {
        None | Some("sent") => {}
        Some("received") => {
            if let Some(header) = stored_header.as_object_mut() {
                header.insert(DIRECTION_PROPERTY.to_owned(), Value::from("received"));
            }
        }
        Some(_) => return Err(bad_parameter("ch-ids-direction must be sent or received")),
    }
    Ok(Command::Log {
        pid,
        payload_type,
        payload,
        stored_header,
    })
}

/// With `ch-ids-id` the paging parameters are not read: one entry has no page.
fn query(params: &ChParams) -> Result<Command, Rejection> {
    let pid = params.pid()?;
    if let Some(view) = &params.view {
        if params.id.is_some() {
            return Err(bad_parameter(
                "ch-ids-view and ch-ids-id cannot be sent together",
            ));
        }
        let view = ViewKind::parse(view)
            .ok_or_else(|| bad_parameter("ch-ids-view must be transfers or contracts"))?;
        return Ok(Command::QueryView {
            pid,
            view,
            spec: params.query()?,
        });
    }
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

/// Whether `content_type` (parameters such as `charset` aside) is `media_type`.
fn media_type_is(content_type: &str, media_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(media_type))
}

/// The owners named in the payload `{"owners": [...]}`; an empty payload names none.
fn requested_owners(params: &ChParams, payload: &[u8]) -> Result<BTreeSet<String>, Rejection> {
    if payload.is_empty() {
        return Ok(BTreeSet::new());
    }
    let is_json = params
        .content_type
        .as_deref()
        .is_some_and(|t| media_type_is(t, "application/json"));
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
                Value::String(id) if !id.is_empty() => {
                    check_owner_id(id).map_err(|error| invalid_owner(id, error))?;
                    Ok(id.clone())
                }
                _ => Err(not_a_list()),
            })
            .collect(),
        Some(_) => Err(not_a_list()),
    }
}

/// Names the owner (its start, when it is long), escaped, as the client can find it in its list.
fn invalid_owner(id: &str, error: OwnerIdError) -> Rejection {
    const SHOWN: usize = 48;
    let shown: String = id.chars().take(SHOWN).collect();
    let more = if shown.len() < id.len() { "…" } else { "" };
    bad_parameter(format!(
        "owner {shown:?}{more} is not a connector id: {error}"
    ))
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

    /// The parameters of a request with these extra headers.
    fn params(pairs: &[(&str, &str)]) -> Result<ChParams, Rejection> {
        let extra: Vec<HeaderEntry> = pairs
            .iter()
            .map(|(name, value)| HeaderEntry {
                name: (*name).to_owned(),
                value: (*value).to_owned(),
            })
            .collect();
        ChParams::parse(&extra, &ParamLimits::default())
    }

    /// A request as a door receives it: the header's type, extra headers, payload.
    fn parse(
        type_name: &str,
        pairs: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<Command, Rejection> {
        let params = params(pairs)?;
        Command::parse(
            &mut header(type_name),
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
    fn a_view_query_names_its_view_and_pages() {
        let command = parse(
            "ids:QueryMessage",
            &[
                ("ch-ids-pid", "p-1"),
                ("ch-ids-view", "Transfers"),
                ("ch-ids-size", "5"),
            ],
            b"",
        )
        .unwrap();
        let Command::QueryView {
            pid: read,
            view,
            spec,
        } = command
        else {
            panic!("{command:?}");
        };
        assert_eq!(
            (read, view, spec.size),
            (pid("p-1"), ViewKind::Transfers, 5)
        );
        assert_rejected(
            parse(
                "ids:QueryMessage",
                &[("ch-ids-pid", "p-1"), ("ch-ids-view", "all")],
                b"",
            ),
            BAD,
            400,
            "ch-ids-view must be transfers or contracts",
        );
        assert_rejected(
            parse(
                "ids:QueryMessage",
                &[
                    ("ch-ids-pid", "p-1"),
                    ("ch-ids-view", "contracts"),
                    ("ch-ids-id", "d"),
                ],
                b"",
            ),
            BAD,
            400,
            "ch-ids-view and ch-ids-id cannot be sent together",
        );
    }

    #[test]
    fn a_received_message_is_recorded_in_the_stored_header() {
        let stored = |direction: &[(&str, &str)]| {
            let mut pairs = vec![("ch-ids-pid", "p-1")];
            pairs.extend_from_slice(direction);
            match parse("ids:LogMessage", &pairs, b"x") {
                Ok(Command::Log { stored_header, .. }) => Ok(stored_header),
                Ok(other) => panic!("{other:?}"),
                Err(rejection) => Err(rejection),
            }
        };
        let received = stored(&[("ch-ids-direction", "received")]).unwrap();
        assert_eq!(received[DIRECTION_PROPERTY], "received");
        let sent = stored(&[("ch-ids-direction", "sent")]).unwrap();
        assert_eq!(sent, stored(&[]).unwrap());
        assert!(sent.get(DIRECTION_PROPERTY).is_none());
        assert_rejected(
            stored(&[("ch-ids-direction", "both")]).map(|_| Command::ProcessInfo { pid: pid("p") }),
            BAD,
            400,
            "ch-ids-direction must be sent or received",
        );
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
    fn owners_that_no_connector_can_be_are_named_and_refused() {
        let json = [("ch-ids-pid", "p-1"), ("content-type", "application/json")];
        let payload = |owners: Value| json!({ "owners": owners }).to_string();
        assert!(parse(
            "ids:RequestMessage",
            &json,
            payload(json!(["D2:70:1A:keyid:CB:8C:0E", "urn:a"])).as_bytes()
        )
        .is_ok());
        assert_rejected(
            parse(
                "ids:RequestMessage",
                &json,
                payload(json!(["urn:a", "d2:70:keyid:cb:8c"])).as_bytes(),
            ),
            BAD,
            400,
            "owner \"d2:70:keyid:cb:8c\" is not a connector id: an SKI:keyid:AKI id is uppercase hex bytes separated by colons, e.g. D2:70:1A:keyid:CB:8C:0E",
        );
        assert_rejected(
            parse(
                "ids:RequestMessage",
                &json,
                payload(json!(["D2:70:keyid:CB:8C\n"])).as_bytes(),
            ),
            BAD,
            400,
            "owner \"D2:70:keyid:CB:8C\\n\" is not a connector id: it contains '\\n'; connector ids are printable ASCII without blanks",
        );
        // Too long for LIMITS' create payload: parsed with a larger bound.
        let long = "x".repeat(300);
        let limits = PayloadLimits {
            max_create_payload: 1024,
            ..LIMITS
        };
        let params = params(&json).unwrap();
        let body = Bytes::from(payload(json!([long])));
        let rejection =
            Command::parse(&mut header("ids:RequestMessage"), &params, body, &limits).unwrap_err();
        assert_eq!(
            rejection.message,
            format!(
                "owner \"{}\"… is not a connector id: it is longer than 256 characters",
                "x".repeat(48)
            )
        );
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
            | Command::QueryOne { pid: read, .. }
            | Command::QueryView { pid: read, .. }
            | Command::ProcessInfo { pid: read }
            | Command::SetOwners { pid: read, .. }
            | Command::Erase { pid: read }) = command;
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

    /// A request header with every field read, its names written by `name` (`name("LogMessage")`
    /// is that spelling of `ids:LogMessage`) under `context`.
    fn spelled(context: Option<Value>, name: &dyn Fn(&str) -> String, term: &str) -> Value {
        let mut header = json!({
            "@type": name(term),
            "@id": "urn:m:1",
            (name("issuerConnector")): {"@id": "https://connector.example/"},
            (name("senderAgent")): "https://agent.example/",
            (name("securityToken")): {
                "@type": name("DynamicAttributeToken"),
                (name("tokenValue")): "eyJ.dat",
            },
            (name("authorizationToken")): {(name("tokenValue")): "eyJ.auth"},
            (name("contentVersion")): "1",
        });
        if let Some(context) = context {
            header["@context"] = context;
        }
        header
    }

    /// The command of `header` with the parameters and payload its type needs.
    fn command_of(header: &Value, kind: &str) -> Result<(RequestHeader, Command), Rejection> {
        let mut header = RequestHeader::parse(&header.to_string()).map_err(Rejection::from)?;
        let (pairs, payload): (&[(&str, &str)], &[u8]) = match kind {
            "RequestMessage" => (
                &[("ch-ids-pid", "p-1"), ("content-type", "application/json")],
                br#"{"owners": ["urn:b"]}"#,
            ),
            "LogMessage" => (&[("ch-ids-pid", "p-1")], b"x"),
            _ => (&[("ch-ids-pid", "p-1"), ("ch-ids-page", "2")], b""),
        };
        let params = params(pairs)?;
        let command = Command::parse(
            &mut header,
            &params,
            Bytes::copy_from_slice(payload),
            &LIMITS,
        )?;
        Ok((header, command))
    }

    /// What a request header says, without the JSON it said it in.
    fn fields(h: &RequestHeader) -> impl PartialEq + std::fmt::Debug + '_ {
        let fields = (&h.message_type, &h.id, &h.issuer_connector, &h.sender_agent);
        (fields, &h.security_token)
    }

    /// A spelling's name, the header's `@context`, and how it writes an IDS term.
    type Spelling<'a> = (&'a str, Option<Value>, &'a dyn Fn(&str) -> String);

    const KINDS: [&str; 3] = ["RequestMessage", "LogMessage", "QueryMessage"];
    const IDS: &str = "https://w3id.org/idsa/core/";
    const IDS_CONTEXT: &str = "https://w3id.org/idsa/contexts/context.jsonld";

    #[test]
    fn every_json_ld_spelling_makes_the_same_command() {
        let prefixed = |t: &str| format!("ids:{t}");
        let full = |t: &str| format!("{IDS}{t}");
        let bare = |t: &str| t.to_owned();
        let own_prefix = |t: &str| format!("idsc:{t}");
        let spellings: [Spelling; 9] = [
            ("prefix, no context", None, &prefixed),
            ("full IRI", None, &full),
            ("full IRI, IDS context", Some(json!(IDS_CONTEXT)), &full),
            ("term, context document", Some(json!(IDS_CONTEXT)), &bare),
            ("term, @vocab", Some(json!({"@vocab": IDS})), &bare),
            ("term, ids prefix", Some(json!({"ids": IDS})), &bare),
            (
                "term, context list",
                Some(json!([{"xsd": "http://www.w3.org/2001/XMLSchema#"}, IDS_CONTEXT])),
                &bare,
            ),
            ("own prefix", Some(json!({"idsc": IDS})), &own_prefix),
            ("prefix, IDS context", Some(json!(IDS_CONTEXT)), &prefixed),
        ];
        for kind in KINDS {
            let reference = spelled(Some(json!({"ids": IDS})), &prefixed, kind);
            let (reference_header, reference_command) = command_of(&reference, kind).unwrap();
            for (spelling, context, name) in &spellings {
                let header = spelled(context.clone(), name, kind);
                let (read, command) = command_of(&header, kind)
                    .unwrap_or_else(|r| panic!("{kind}, {spelling}: {}", r.message));
                assert_eq!(
                    fields(&read),
                    fields(&reference_header),
                    "{kind}, {spelling}"
                );
                // The stored header is the header as sent, without both tokens in any spelling.
                let mut stored = header.clone();
                let stored_map = stored.as_object_mut().unwrap();
                stored_map.remove(&name("securityToken"));
                stored_map.remove(&name("authorizationToken"));
                // A log took it out of the header (and is compared below); others left it there.
                if !matches!(command, Command::Log { .. }) {
                    assert_eq!(read.stored, stored, "{kind}, {spelling}");
                }
                let expected = match &reference_command {
                    Command::Log {
                        pid,
                        payload_type,
                        payload,
                        ..
                    } => Command::Log {
                        pid: pid.clone(),
                        payload_type: payload_type.clone(),
                        payload: payload.clone(),
                        stored_header: stored,
                    },
                    other => other.clone(),
                };
                assert_eq!(command, expected, "{kind}, {spelling}");
            }
        }
    }

    #[test]
    fn values_in_one_element_lists_and_nodes_read_as_bare_values() {
        let wrapped = json!({
            "@context": {"ids": IDS},
            "@type": ["ids:LogMessage"],
            "@id": "urn:m:1",
            "ids:issuerConnector": ["https://connector.example/"],
            "ids:senderAgent": [{"@id": "https://agent.example/"}],
            "ids:securityToken": [{"ids:tokenValue": [{"@value": "eyJ.dat"}]}],
        });
        let unwrapped = json!({
            "@type": "ids:LogMessage",
            "@id": "urn:m:1",
            "ids:issuerConnector": "https://connector.example/",
            "ids:senderAgent": {"@id": "https://agent.example/"},
            "ids:securityToken": {"ids:tokenValue": "eyJ.dat"},
        });
        let (header, command) = command_of(&wrapped, "LogMessage").unwrap();
        let (expected, _) = command_of(&unwrapped, "LogMessage").unwrap();
        assert_eq!(fields(&header), fields(&expected));
        assert_eq!(header.security_token.as_deref(), Some("eyJ.dat"));
        let Command::Log { stored_header, .. } = command else {
            panic!("not a log: {command:?}");
        };
        assert!(stored_header.get("ids:securityToken").is_none());
    }

    #[test]
    fn spellings_outside_the_ids_namespace_are_refused_as_before() {
        let unsupported = RejectionReason::MessageTypeNotSupported;
        let malformed = RejectionReason::MalformedMessage;
        let cases = [
            (None, json!("LogMessage"), unsupported),
            (
                None,
                json!("http://w3id.org/idsa/core/LogMessage"),
                unsupported,
            ),
            (
                None,
                json!("https://w3id.org/idsa/code/LogMessage"),
                unsupported,
            ),
            (
                Some(json!({"@vocab": "https://example.org/"})),
                json!("LogMessage"),
                unsupported,
            ),
            (
                Some(json!("https://example.org/context.jsonld")),
                json!("LogMessage"),
                unsupported,
            ),
            (
                Some(json!({"o": "https://example.org/"})),
                json!("o:LogMessage"),
                unsupported,
            ),
            (
                Some(json!({"ids": IDS})),
                json!("idsc:LogMessage"),
                unsupported,
            ),
            (None, json!(["ids:LogMessage", "ids:Message"]), malformed),
            (None, json!([]), malformed),
            (None, json!({"@id": "ids:LogMessage"}), malformed),
        ];
        for (context, type_value, reason) in cases {
            let mut header = json!({"@type": type_value, "@id": "urn:m:1"});
            if let Some(context) = context {
                header["@context"] = context;
            }
            let rejection = command_of(&header, "LogMessage").unwrap_err();
            assert_eq!(rejection.reason, reason, "{header}");
        }
    }

    #[test]
    fn a_field_given_in_two_spellings_is_malformed() {
        let twice = json!({
            "@type": "ids:LogMessage",
            "@id": "urn:m:1",
            "ids:securityToken": {"ids:tokenValue": "eyJ.verified"},
            "https://w3id.org/idsa/core/securityToken": {"ids:tokenValue": "eyJ.other"},
        });
        let rejection = command_of(&twice, "LogMessage").unwrap_err();
        assert_eq!(rejection.reason, RejectionReason::MalformedMessage);
        assert_eq!(
            rejection.message,
            "the IDS header is ambiguous: ids:securityToken is given twice, as \"https://w3id.org/idsa/core/securityToken\" and \"ids:securityToken\""
        );
    }

    #[test]
    fn an_erase_operation_on_a_request_names_the_process() {
        let erase = parse(
            "ids:RequestMessage",
            &[("ch-ids-pid", "p-1"), ("ch-ids-operation", "erase")],
            b"",
        )
        .unwrap();
        assert_eq!(erase, Command::Erase { pid: pid("p-1") });
        assert!(parse("ids:RequestMessage", &[("ch-ids-operation", "erase")], b"").is_err());
    }

    #[test]
    fn an_info_operation_on_a_query_asks_for_the_process() {
        let info = parse(
            "ids:QueryMessage",
            &[("ch-ids-pid", "p-1"), ("ch-ids-operation", "Info")],
            b"",
        )
        .unwrap();
        assert_eq!(info, Command::ProcessInfo { pid: pid("p-1") });
        // Without the operation a query is what it always was.
        let page = parse("ids:QueryMessage", &[("ch-ids-pid", "p-1")], b"").unwrap();
        assert!(matches!(page, Command::QueryPage { .. }), "{page:?}");
    }

    #[test]
    fn a_set_owners_operation_names_a_non_empty_set_of_owners() {
        let json = [
            ("ch-ids-pid", "p-1"),
            ("ch-ids-operation", "set-owners"),
            ("content-type", "application/json"),
        ];
        let command = parse(
            "ids:RequestMessage",
            &json,
            br#"{"owners": ["urn:b", "urn:a"]}"#,
        )
        .unwrap();
        let Command::SetOwners {
            pid: changed,
            owners,
            stored_header,
        } = command
        else {
            panic!("not an owner change: {command:?}");
        };
        assert_eq!(changed, pid("p-1"));
        assert_eq!(owners, BTreeSet::from(["urn:a".into(), "urn:b".into()]));
        assert_eq!(stored_header["@type"], "ids:RequestMessage");
        assert!(stored_header.get("ids:securityToken").is_none());

        let empty =
            "set-owners needs Content-Type: application/json with a non-empty {\"owners\": [...]}";
        for payload in [&br#"{"owners": []}"#[..], b"{}"] {
            assert_rejected(parse("ids:RequestMessage", &json, payload), BAD, 400, empty);
        }
        assert_rejected(
            parse("ids:RequestMessage", &json[..2], b""),
            BAD,
            400,
            empty,
        );
        let over = [b' '; 65];
        let rejection = parse("ids:RequestMessage", &json, &over).unwrap_err();
        assert_eq!((rejection.reason, rejection.status), (BAD, 413));
    }

    #[test]
    fn unknown_operations_and_operations_on_logs_are_refused() {
        let message = |operation: &str| {
            format!("ch-ids-operation \"{operation}\" is not known for this message type; send \"set-owners\" or \"erase\" with ids:RequestMessage or \"info\" with ids:QueryMessage")
        };
        for (type_name, operation) in [
            ("ids:RequestMessage", "info"),
            ("ids:QueryMessage", "set-owners"),
            ("ids:LogMessage", "info"),
            ("ids:QueryMessage", "delete"),
        ] {
            assert_rejected(
                parse(
                    type_name,
                    &[("ch-ids-pid", "p-1"), ("ch-ids-operation", operation)],
                    b"x",
                ),
                BAD,
                400,
                &message(operation),
            );
        }
    }

    #[test]
    fn the_payload_type_of_owner_changes_cannot_be_logged() {
        for content_type in [
            "application/vnd.clearinghouse.owners+json",
            "Application/Vnd.Clearinghouse.Owners+JSON; charset=utf-8",
        ] {
            assert_rejected(
                parse(
                    "ids:LogMessage",
                    &[("ch-ids-pid", "p-1"), ("Content-Type", content_type)],
                    b"{}",
                ),
                BAD,
                400,
                "Content-Type application/vnd.clearinghouse.owners+json is reserved for owner changes (ch-ids-operation: set-owners)",
            );
        }
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
