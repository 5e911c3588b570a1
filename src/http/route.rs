//! The routes of IDS-Multipart, and the `ch-ids-*` parameters a request carries besides its
//! parts: from the path, the URL query and the HTTP headers.
//!
//! All of them become extra headers of one [`IdsMessage`](crate::idscp2::proto::app::IdsMessage),
//! as an IDSCP2 request carries them, so `ChParams::parse` reads them with the same limits and
//! the same rule for a parameter given twice: equal values are one parameter, different values
//! are refused (BAD_PARAMETERS). So neither the path, the query nor a header wins over another;
//! they must agree.

use http::HeaderMap;
use percent_encoding::percent_decode_str;

use crate::ids::params::ParamLimits;
use crate::ids::rejection::too_large;
use crate::ids::reply::header_entry;
use crate::ids::{MessageType, Rejection, RejectionReason};
use crate::idscp2::proto::app::HeaderEntry;

/// A route the door serves, and the parameters its path names.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Route {
    /// The message type the route takes.
    pub(super) message_type: MessageType,
    /// The route's pattern, for messages.
    pub(super) pattern: &'static str,
    pub(super) pid: String,
    /// `/messages/query/{pid}/{id}`: one entry.
    pub(super) id: Option<String>,
}

/// The known routes: `None` for any other path.
pub(super) fn route(path: &str) -> Result<Option<Route>, Rejection> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (message_type, pattern, pid, id) = match segments.as_slice() {
        ["process", pid] => (MessageType::Request, "/process/{pid}", pid, None),
        ["messages", "log", pid] => (MessageType::Log, "/messages/log/{pid}", pid, None),
        ["messages", "query", pid] => (MessageType::Query, "/messages/query/{pid}", pid, None),
        ["messages", "query", pid, id] => (
            MessageType::Query,
            "/messages/query/{pid}/{id}",
            pid,
            Some(*id),
        ),
        _ => return Ok(None),
    };
    let decode = |segment: &str| -> Result<String, Rejection> {
        percent_decode_str(segment)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| bad_parameter(format!("the path segment {segment:?} is not UTF-8")))
    };
    Ok(Some(Route {
        message_type,
        pattern,
        pid: decode(pid)?,
        id: id.map(decode).transpose()?,
    }))
}

fn bad_parameter(message: String) -> Rejection {
    Rejection::with_default_status(RejectionReason::BadParameters, message)
}

/// The URL query names a page query's parameters without their `ch-ids-` prefix.
const QUERY_PARAMETERS: [&str; 6] = ["page", "size", "sort", "date_from", "date_to", "date-from"];

/// The extra headers of a request on `route`: its path's pid (and id), the URL `query`, every
/// `ch-ids-*` HTTP header, and the payload part's `Content-Type`. Bounded by
/// `limits.max_parameters` before they are collected.
pub(super) fn extra_headers(
    route: &Route,
    query: Option<&str>,
    headers: &HeaderMap,
    payload_type: Option<String>,
    limits: &ParamLimits,
) -> Result<Vec<HeaderEntry>, Rejection> {
    let mut entries = vec![header_entry("ch-ids-pid", route.pid.clone())];
    if let Some(id) = &route.id {
        entries.push(header_entry("ch-ids-id", id.clone()));
    }
    if let Some(content_type) = payload_type {
        entries.push(header_entry("Content-Type", content_type));
    }
    let too_many = |count: usize| {
        too_large(
            "limits.max_parameters",
            limits.max_parameters,
            format!(
                "{count} or more parameters exceed the limit of {} (limits.max_parameters)",
                limits.max_parameters
            ),
        )
    };
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !QUERY_PARAMETERS.contains(&name.as_ref()) {
            return Err(bad_parameter(format!(
                "unknown query parameter {:?}; a query takes page, size, sort, date_from and date_to",
                name.chars().take(64).collect::<String>()
            )));
        }
        if entries.len() >= limits.max_parameters {
            return Err(too_many(entries.len() + 1));
        }
        entries.push(header_entry(&format!("ch-ids-{name}"), value.into_owned()));
    }
    for (name, value) in headers {
        if !name.as_str().starts_with("ch-ids-") {
            continue;
        }
        if entries.len() >= limits.max_parameters {
            return Err(too_many(entries.len() + 1));
        }
        let value = value
            .to_str()
            .map_err(|_| bad_parameter(format!("the header {name} is not ASCII text")))?;
        entries.push(header_entry(name.as_str(), value.to_owned()));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChParams;

    fn params(path: &str, query: Option<&str>, headers: &[(&str, &str)]) -> ChParams {
        try_params(path, query, headers).unwrap()
    }

    fn try_params(
        path: &str,
        query: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<ChParams, Rejection> {
        let route = route(path).unwrap().unwrap();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let limits = ParamLimits::default();
        let entries = extra_headers(&route, query, &map, None, &limits)?;
        ChParams::parse(&entries, &limits)
    }

    #[test]
    fn routes_name_their_type_pid_and_id() {
        let one = route("/messages/query/p-1/e%3A7").unwrap().unwrap();
        assert_eq!(one.message_type, MessageType::Query);
        assert_eq!((one.pid.as_str(), one.id.as_deref()), ("p-1", Some("e:7")));
        assert_eq!(
            route("/process/p").unwrap().unwrap().message_type,
            MessageType::Request
        );
        assert_eq!(
            route("/messages/log/p").unwrap().unwrap().message_type,
            MessageType::Log
        );
        assert_eq!(route("/messages/log").unwrap(), None);
        assert_eq!(route("/messages/log/p/x").unwrap(), None);
    }

    #[test]
    fn path_query_and_headers_must_agree() {
        let agreed = params(
            "/messages/query/p",
            Some("page=2&size=5"),
            &[("ch-ids-pid", "p"), ("ch-ids-page", "2")],
        );
        assert_eq!(agreed.pid.as_deref(), Some("p"));
        assert_eq!(agreed.page.as_deref(), Some("2"));
        assert_eq!(agreed.size.as_deref(), Some("5"));

        let pid = try_params("/messages/log/p", None, &[("ch-ids-pid", "q")]).unwrap_err();
        assert_eq!(pid.status, 400);
        assert!(pid.message.contains("ch-ids-pid"), "{}", pid.message);
        let page =
            try_params("/messages/query/p", Some("page=1"), &[("ch-ids-page", "3")]).unwrap_err();
        assert!(page.message.contains("ch-ids-page"), "{}", page.message);
        let unknown = try_params("/messages/query/p", Some("pgae=1"), &[]).unwrap_err();
        assert!(unknown.message.contains("pgae"), "{}", unknown.message);
    }
}
