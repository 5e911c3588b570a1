//! The top-level members of a JSON object, read without building their values.
//!
//! A header is about 2 KiB of JSON, most of it a DAT that nobody on the reading side needs as a
//! `serde_json::Value`: building the whole tree (a `String` per key and string, a map per node)
//! and dropping it again cost a client a quarter of its work per request (BENCHMARKS.md, issue
//! 14, "Seventh session: header work"). Here the object is checked as JSON by serde_json as
//! usual, but each member's value stays the text it was ([`RawValue`]), and keys without
//! escapes borrow from the input; a reader then parses only the members it needs.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The members of an object as they appear in the text, duplicates included (JSON readers take
/// the last one: see [`Members::get`]).
pub(crate) struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The members of the JSON object `text`; an error for anything that is not one, which
    /// [`serde_json::from_str`] would tell apart (not JSON at all, or JSON of another kind).
    pub(crate) fn of(text: &'a str) -> Result<Self, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let members = deserializer.deserialize_map(MembersVisitor)?;
        deserializer.end()?;
        Ok(members)
    }

    /// The value of `key`: its last occurrence, as a `serde_json::Map` keeps it.
    pub(crate) fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| *value)
    }

    /// Every member, in the order of the text.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &'a RawValue)> {
        self.0.iter().map(|(name, value)| (name.as_ref(), *value))
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(Key(key)) = map.next_key()? {
            members.push((key, map.next_value::<&RawValue>()?));
        }
        Ok(Members(members))
    }
}

/// A key, borrowed from the text unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(key)))
            }

            fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_keep_their_text_and_the_last_duplicate_counts() {
        let text = r#" {"a": [1, {"b": "x"}], "k\u00e9y": "v", "a": 2} "#;
        let members = Members::of(text).unwrap();
        let listed: Vec<_> = members.iter().map(|(k, v)| (k, v.get())).collect();
        assert_eq!(
            listed,
            [("a", r#"[1, {"b": "x"}]"#), ("kéy", r#""v""#), ("a", "2")]
        );
        assert_eq!(members.get("a").map(RawValue::get), Some("2"));
        assert!(members.get("b").is_none());
    }

    #[test]
    fn anything_but_a_json_object_is_an_error() {
        for text in [
            "",
            "[]",
            "\"a\"",
            "{\"a\":}",
            "{\"a\":1} x",
            "{\"a\":\"\u{1}\"}",
        ] {
            assert!(Members::of(text).is_err(), "{text:?}");
        }
    }
}
