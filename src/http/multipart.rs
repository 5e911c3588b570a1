//! The `multipart/form-data` of IDS-Multipart: reading a request's `header` and `payload`
//! parts (with `multer`), and writing a reply's. The client reads replies with the same reader.
//!
//! Parsing is multer's; this room only decides which parts count. Writing a body (a reply, or the
//! client's request) is two parts with a boundary found in neither, too little to warrant a crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream;
use memchr::memmem;
use uuid::Uuid;

use crate::ids::{Rejection, RejectionReason};

/// More parts than this (known or not) make a request malformed: IDS-Multipart has two.
pub(super) const MAX_PARTS: usize = 8;

/// What a request body holds: the IDS header, and the payload with its media type.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) header: String,
    pub(crate) payload: Bytes,
    /// The `Content-Type` of the payload part, if it had one.
    pub(crate) payload_type: Option<String>,
}

fn malformed(message: impl Into<String>) -> Rejection {
    Rejection::with_default_status(RejectionReason::MalformedMessage, message)
}

/// The boundary of a `multipart/form-data` body; anything else is refused with 415.
pub(crate) fn boundary(content_type: Option<&str>) -> Result<String, Rejection> {
    let unsupported = |detail: String| {
        Rejection::new(
            RejectionReason::MalformedMessage,
            415,
            format!("the body must be multipart/form-data with a boundary and the parts \"header\" and \"payload\" (IDS-Multipart): {detail}"),
        )
    };
    let content_type =
        content_type.ok_or_else(|| unsupported("the request has no Content-Type".into()))?;
    let is_form_data = content_type
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("multipart/form-data"));
    if !is_form_data {
        return Err(unsupported(format!("Content-Type is {content_type:?}")));
    }
    multer::parse_boundary(content_type).map_err(|e| unsupported(e.to_string()))
}

/// Reads the parts of `body` (already bounded and received in full): exactly one `header`, at
/// most one `payload`, at most [`MAX_PARTS`] parts in all; parts of other names are ignored.
pub(crate) async fn read(body: Vec<Bytes>, boundary: String) -> Result<Parts, Rejection> {
    let chunks = stream::iter(body.into_iter().map(Ok::<_, std::convert::Infallible>));
    let mut multipart = multer::Multipart::new(chunks, boundary);
    let mut header = None;
    let mut payload = None;
    let mut parts = 0;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(malformed(format!("the multipart body cannot be read: {e}"))),
        };
        parts += 1;
        if parts > MAX_PARTS {
            return Err(malformed(format!(
                "the multipart body has more than {MAX_PARTS} parts; IDS-Multipart has \"header\" and \"payload\""
            )));
        }
        let name = field.name().unwrap_or_default().to_owned();
        let content_type = field.content_type().map(ToString::to_string);
        let read = |e: multer::Error| malformed(format!("part {name:?} cannot be read: {e}"));
        match name.as_str() {
            "header" if header.is_some() => {
                return Err(malformed("the part \"header\" was sent twice"))
            }
            "payload" if payload.is_some() => {
                return Err(malformed("the part \"payload\" was sent twice"))
            }
            "header" => {
                let bytes = field.bytes().await.map_err(read)?;
                let text = String::from_utf8(bytes.to_vec())
                    .map_err(|_| malformed("the part \"header\" is not UTF-8 text"))?;
                header = Some(text);
            }
            "payload" => payload = Some((field.bytes().await.map_err(read)?, content_type)),
            _ => {}
        }
    }
    let header = header.ok_or_else(|| {
        malformed("the multipart body has no part \"header\" with the IDS message header")
    })?;
    let (payload, payload_type) = payload.unwrap_or_default();
    Ok(Parts {
        header,
        payload,
        payload_type,
    })
}

/// One part of a body this process writes.
pub(crate) struct FormPart<'a> {
    pub(crate) name: &'static str,
    /// `None`: the part has no `Content-Type` line.
    pub(crate) content_type: Option<&'a str>,
    pub(crate) content: &'a [u8],
}

/// A reply body: the IDS header as `application/ld+json`, the payload as JSON (every payload the
/// clearing house answers with is), and the `Content-Type` that names the boundary.
pub(super) fn reply(header: &str, payload: &[u8]) -> (String, Bytes) {
    form(&[
        FormPart {
            name: "header",
            content_type: Some("application/ld+json"),
            content: header.as_bytes(),
        },
        FormPart {
            name: "payload",
            content_type: Some("application/json"),
            content: payload,
        },
    ])
}

/// A `multipart/form-data` body of `parts`, and the `Content-Type` that names its boundary.
pub(crate) fn form(parts: &[FormPart]) -> (String, Bytes) {
    let boundary = boundary_for(parts);
    let size: usize = parts
        .iter()
        .map(|part| {
            let content_type = part.content_type.map_or(0, str::len);
            part.content.len() + content_type + boundary.len() + 80
        })
        .sum();
    let mut body = BytesMut::with_capacity(size + boundary.len() + 8);
    for part in parts {
        body.put_slice(b"--");
        body.put_slice(boundary.as_bytes());
        body.put_slice(b"\r\nContent-Disposition: form-data; name=\"");
        body.put_slice(part.name.as_bytes());
        body.put_slice(b"\"\r\n");
        if let Some(content_type) = part.content_type {
            body.put_slice(b"Content-Type: ");
            body.put_slice(content_type.as_bytes());
            body.put_slice(b"\r\n");
        }
        body.put_slice(b"\r\n");
        body.put_slice(part.content);
        body.put_slice(b"\r\n");
    }
    body.put_slice(b"--");
    body.put_slice(boundary.as_bytes());
    body.put_slice(b"--\r\n");
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.freeze(),
    )
}

/// The boundaries this process writes: `ids-`, 128 random bits drawn once, and a counter.
struct Boundaries {
    prefix: String,
    /// Finds `prefix`; built once, as building a searcher costs more than a search.
    prefix_finder: memmem::Finder<'static>,
    next: AtomicU64,
}

static BOUNDARIES: OnceLock<Boundaries> = OnceLock::new();

/// A boundary that occurs in no part's content. A boundary drawn afresh per body cost a
/// `getrandom` call and a UUID per reply; a counter behind a random prefix is as unlikely to
/// occur in a content, and the search below makes sure: a content without the prefix contains
/// no boundary that starts with it, and one that contains it (a peer that read an earlier
/// boundary and logged a guess of the next, say) gets a candidate it does not contain. A
/// content of n bytes contains fewer than n candidates, so the loop ends.
fn boundary_for(parts: &[FormPart]) -> String {
    let boundaries = BOUNDARIES.get_or_init(|| {
        let prefix = format!("ids-{}-", Uuid::new_v4().simple());
        Boundaries {
            prefix_finder: memmem::Finder::new(prefix.as_bytes()).into_owned(),
            prefix,
            next: AtomicU64::new(0),
        }
    });
    let absent =
        |finder: &memmem::Finder| parts.iter().all(|part| finder.find(part.content).is_none());
    let prefix_absent = absent(&boundaries.prefix_finder);
    loop {
        let count = boundaries.next.fetch_add(1, Ordering::Relaxed);
        let boundary = format!("{}{count:x}", boundaries.prefix);
        if prefix_absent || absent(&memmem::Finder::new(boundary.as_bytes())) {
            return boundary;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reply_reads_back_with_multer() {
        let (content_type, body) = reply("{\"@type\":\"ids:ResultMessage\"}", b"{\"a\":1}");
        let parts = read(vec![body], boundary(Some(&content_type)).unwrap())
            .await
            .unwrap();
        assert_eq!(parts.header, "{\"@type\":\"ids:ResultMessage\"}");
        assert_eq!(parts.payload, Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(parts.payload_type.as_deref(), Some("application/json"));
    }

    #[tokio::test]
    async fn a_boundary_is_never_one_a_part_contains() {
        let (content_type, _) = reply("{}", b"{}");
        let seen = boundary(Some(&content_type)).unwrap();
        // The next boundaries, as a peer that read this one could guess them.
        let prefix = seen.trim_end_matches(|c: char| c.is_ascii_hexdigit());
        let count = u64::from_str_radix(&seen[prefix.len()..], 16).unwrap();
        let guesses: String = (1..64)
            .map(|step| format!("\r\n--{prefix}{:x}\r\n", count + step))
            .collect();
        let (content_type, body) = reply("{}", guesses.as_bytes());
        let parts = read(vec![body], boundary(Some(&content_type)).unwrap())
            .await
            .unwrap();
        assert_eq!(parts.payload, Bytes::from(guesses));
    }

    #[test]
    fn only_form_data_with_a_boundary_is_taken() {
        for content_type in [None, Some("application/json"), Some("multipart/form-data")] {
            let rejection = boundary(content_type).unwrap_err();
            assert_eq!(rejection.status, 415, "{content_type:?}");
        }
        assert_eq!(
            boundary(Some("Multipart/Form-Data; boundary=abc")).unwrap(),
            "abc"
        );
    }
}
