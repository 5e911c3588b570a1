//! A logged payload read as one JSON-LD node, within bounds that hold whatever the payload is.
//!
//! Recognition must never cost more than a small, fixed multiple of the payload's size, nor fail
//! in any way but "not recognised". So a payload is never turned into a whole
//! [`serde_json::Value`] (a 4 MiB array of small numbers would take tens of MiB that way):
//! - only payloads of at most [`MAX_RECOGNIZED_BYTES`] are read at all;
//! - the top-level object is read as its member names with each value left as raw text
//!   ([`RawValue`], borrowed from the payload: no copy), at most [`MAX_MEMBERS`] members;
//!   serde_json skips a raw value with a loop and one byte of stack per open bracket, so
//!   10,000 levels of nesting cost 10 KB, not a stack overflow;
//! - a member's value is parsed into a `Value` only when recognition asks for it, and only when
//!   its text is at most [`MAX_MEMBER_BYTES`] (deeper than serde_json's 128 levels, it does not
//!   parse and counts as absent).
//!
//! Time is one pass over the payload plus at most a few members of 64 KiB; memory is the member
//! list and those few members.

use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::ids::jsonld::{single, Names, Vocabulary};

/// Larger payloads are not read; they are logged all the same.
pub const MAX_RECOGNIZED_BYTES: usize = 4 << 20;
/// An object with more members is not a message any protocol here sends.
pub const MAX_MEMBERS: usize = 256;
/// A member whose JSON text is longer is not read (treated as absent).
pub const MAX_MEMBER_BYTES: usize = 64 << 10;
/// Identifiers and literals longer than this are not kept (treated as absent): they are keys
/// of the view, and a peer must not make them large.
pub const MAX_TEXT_CHARS: usize = 512;

/// One JSON object's members, values unparsed.
pub(crate) struct Node<'a> {
    members: Vec<(String, &'a RawValue)>,
}

impl<'a> Node<'a> {
    /// The payload as a JSON object, if it is one within the bounds.
    pub(crate) fn read(payload: &'a [u8]) -> Option<Self> {
        if payload.len() > MAX_RECOGNIZED_BYTES {
            return None;
        }
        serde_json::from_slice(payload).ok()
    }

    /// A member's value, read as an object in turn (for messages wrapped in an envelope).
    pub(crate) fn member_node(&self, name: &str) -> Option<Node<'a>> {
        let raw = self.raw(name)?;
        serde_json::from_str(raw.get()).ok()
    }

    fn raw(&self, name: &str) -> Option<&'a RawValue> {
        let mut found = self.members.iter().filter(|(key, _)| key == name);
        let (_, raw) = found.next()?;
        // A name given twice is anyone's guess: neither is read.
        found.next().is_none().then_some(*raw)
    }

    /// A member's value by its exact name (`@context`, `@type`, `@id`), if small enough.
    pub(crate) fn value(&self, name: &str) -> Option<Value> {
        parse_small(self.raw(name)?)
    }

    /// The spellings of `vocabulary`'s names this node's `@context` allows.
    pub(crate) fn names(&self, vocabulary: &'static Vocabulary) -> Names {
        Names::of_context(vocabulary, self.value("@context").as_ref())
    }

    /// The value of the property `term` in whichever spelling `names` allows; absent when it is
    /// given in two spellings.
    pub(crate) fn property(&self, names: &Names, term: &str) -> Option<Value> {
        let mut found = self
            .members
            .iter()
            .filter(|(key, _)| names.term(key) == Some(term));
        let (_, raw) = found.next()?;
        if found.next().is_some() {
            return None;
        }
        parse_small(raw)
    }

    /// The terms of `names`' vocabulary that `@type` gives (a string or a list of them).
    pub(crate) fn types(&self, names: &Names) -> Vec<String> {
        let strings = match self.value("@type") {
            Some(Value::Array(types)) => types,
            Some(other) => vec![other],
            None => Vec::new(),
        };
        strings
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|name| names.term(name))
            .map(str::to_owned)
            .collect()
    }
}

fn parse_small(raw: &RawValue) -> Option<Value> {
    let text = raw.get();
    if text.len() > MAX_MEMBER_BYTES {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// A short string value (bare, in a one-element list, or `{"@value": ...}`).
pub(crate) fn text(value: &Value) -> Option<String> {
    let text = match single(value)? {
        Value::String(text) => text.as_str(),
        Value::Object(node) => node.get("@value")?.as_str()?,
        _ => return None,
    };
    short(text)
}

/// A short IRI value (bare or `{"@id": ...}`, possibly in a one-element list).
pub(crate) fn iri(value: &Value) -> Option<String> {
    let iri = match single(value)? {
        Value::String(iri) => iri.as_str(),
        Value::Object(node) => node.get("@id")?.as_str()?,
        _ => return None,
    };
    short(iri)
}

fn short(text: &str) -> Option<String> {
    let fits = !text.is_empty() && text.chars().count() <= MAX_TEXT_CHARS;
    fits.then(|| text.to_owned())
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Node<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if members.len() == MAX_MEMBERS {
                        return Err(A::Error::custom("too many members"));
                    }
                    members.push((name, map.next_value::<&'de RawValue>()?));
                }
                Ok(Node { members })
            }
        }
        deserializer.deserialize_map(Members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_objects_within_the_bounds_are_read() {
        assert!(Node::read(br#"{"a": 1}"#).is_some());
        for garbage in [
            &b"[1, 2]"[..],
            b"\"text\"",
            b"{\"a\": ",
            b"\xff\xfe",
            b"",
            b"{\"a\": 1} trailing",
        ] {
            assert!(Node::read(garbage).is_none(), "{garbage:?}");
        }
        let many: String = (0..=MAX_MEMBERS)
            .map(|i| format!("\"m{i}\": {i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(Node::read(format!("{{{many}}}").as_bytes()).is_none());
        let mut large = br#"{"a": ""#.to_vec();
        large.resize(MAX_RECOGNIZED_BYTES, b'x');
        large.extend_from_slice(b"\"}");
        assert!(Node::read(&large).is_none());
    }

    #[test]
    fn deep_nesting_is_skipped_without_recursion_and_read_as_absent() {
        let depth = 10_000;
        let payload = format!(
            r#"{{"@type": "dspace:TransferStartMessage", "deep": {}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let node = Node::read(payload.as_bytes()).expect("an object");
        assert_eq!(
            node.value("@type"),
            Some(Value::from("dspace:TransferStartMessage"))
        );
        assert_eq!(node.value("deep"), None);
    }

    #[test]
    fn a_name_given_twice_is_not_read() {
        let node = Node::read(br#"{"@id": "a", "@id": "b", "@type": "x"}"#).unwrap();
        assert_eq!(node.value("@id"), None);
        assert_eq!(node.value("@type"), Some(Value::from("x")));
    }

    #[test]
    fn long_texts_are_not_kept() {
        assert_eq!(
            text(&Value::from("x".repeat(MAX_TEXT_CHARS))).map(|t| t.len()),
            Some(MAX_TEXT_CHARS)
        );
        assert_eq!(text(&Value::from("x".repeat(MAX_TEXT_CHARS + 1))), None);
        assert_eq!(
            iri(&serde_json::json!({"@id": "urn:a"})).as_deref(),
            Some("urn:a")
        );
        assert_eq!(iri(&Value::from("")), None);
    }
}
