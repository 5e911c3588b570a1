//! The JSON-LD spellings of IDS names (and of the other vocabularies the clearing house reads,
//! such as the Dataspace Protocol's): what lets the clearing house read a header or a logged
//! message whatever equivalent form its sender chose, without a JSON-LD processor.
//!
//! Everything below is said of the IDS vocabulary; a [`Vocabulary`] names another namespace,
//! its usual prefix and its published context documents, and [`Names`] reads it the same way.
//!
//! The Java Infomodel serializer writes `ids:LogMessage` under `{"ids": "https://w3id.org/idsa/core/"}`,
//! but the same message may be written with full IRIs, with bare terms under the IDS context, or
//! with a single value wrapped in a list; to a JSON-LD processor they are all one message. Expanding
//! whole documents would be a large, slow dependency for the handful of names read here, so this
//! room only recognises the spellings of an IDS name, and the value shapes of the fields read.
//!
//! Understood, for `@type` values and property keys alike (`X` an IDS term such as `LogMessage`):
//! - `ids:X`, always (even without a `@context`, as connectors have always sent it);
//! - `https://w3id.org/idsa/core/X`, the full IRI;
//! - `p:X` where the node's inline `@context` binds `p` to `https://w3id.org/idsa/core/`
//!   (as a string or as `{"@id": ...}`);
//! - bare `X` when the node's `@context` is, or is a list containing, an IDS context document
//!   (`https://w3id.org/idsa/contexts/…context.jsonld`), or an object with `@vocab` set to the
//!   IDS namespace, or an object binding the `ids` prefix. The last is more lenient than JSON-LD
//!   (a prefix alone does not make bare terms IRIs) but there is no other meaning such a sender
//!   could have had.
//!
//! Values: a string, a one-element list of one, `{"@id": ...}` for references and
//! `{"@value": ...}` for literals.
//!
//! Not understood: contexts fetched from anywhere else or declared on nested nodes, term
//! definitions other than prefixes, keyword aliases, `@base`/relative IRIs, and lists of more than
//! one value. Such headers read as they did before: another namespace's type is not supported, a
//! value in a shape not understood is absent.

use serde_json::{Map, Value};

use super::infomodel::IDS_NAMESPACE;

/// The prefix this clearing house writes and always reads.
const IDS_PREFIX: &str = "ids";
const IDS_CONTEXT_DOCUMENTS: &str = "https://w3id.org/idsa/contexts/";

/// A namespace whose names [`Names`] reads in every spelling.
#[derive(Debug)]
pub(crate) struct Vocabulary {
    /// The namespace IRI, ending in `/` or `#`.
    pub(crate) namespace: &'static str,
    /// The prefix its senders use, always read even without a `@context` binding it.
    pub(crate) prefix: &'static str,
    /// Whether a `@context` URL is one of its published context documents, which make bare
    /// terms its terms.
    pub(crate) is_context_document: fn(&str) -> bool,
}

/// A namespace is its IRI.
impl PartialEq for Vocabulary {
    fn eq(&self, other: &Self) -> bool {
        self.namespace == other.namespace
    }
}

impl Eq for Vocabulary {}

/// The IDS Information Model.
pub(crate) static IDS: Vocabulary = Vocabulary {
    namespace: IDS_NAMESPACE,
    prefix: IDS_PREFIX,
    is_context_document: is_ids_context_document,
};

/// How a node's `@context` lets the names of one vocabulary be spelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    vocabulary: &'static Vocabulary,
    /// Prefixes besides the usual one bound to the namespace by the inline context.
    prefixes: Vec<String>,
    /// Whether a bare term is a term of the vocabulary.
    bare_terms: bool,
}

/// An IDS property given under two spellings in one node: which of them to read is anyone's
/// guess, so the node is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ids:{name} is given twice, as \"{first}\" and \"{second}\"")]
pub struct DuplicateProperty {
    /// The property's IDS term, e.g. `issuerConnector`.
    pub name: String,
    /// The spelling met first.
    pub first: String,
    /// The other spelling.
    pub second: String,
}

impl Names {
    /// The spellings of IDS names the `@context` of `node` allows.
    pub(crate) fn of(node: &Map<String, Value>) -> Self {
        Self::of_vocabulary(&IDS, node)
    }

    /// The spellings of `vocabulary`'s names the `@context` of `node` allows.
    pub(crate) fn of_vocabulary(
        vocabulary: &'static Vocabulary,
        node: &Map<String, Value>,
    ) -> Self {
        Self::of_context(vocabulary, node.get("@context"))
    }

    /// The spellings a `@context` value (`None`: no context) allows.
    pub(crate) fn of_context(vocabulary: &'static Vocabulary, context: Option<&Value>) -> Self {
        let mut names = Self::none(vocabulary);
        match context {
            Some(Value::Array(contexts)) => contexts.iter().for_each(|c| names.add_context(c)),
            Some(context) => names.add_context(context),
            None => {}
        }
        names
    }

    fn add_context(&mut self, context: &Value) {
        match context {
            Value::String(url) if (self.vocabulary.is_context_document)(url) => {
                self.bare_terms = true
            }
            Value::Object(definitions) => {
                for (term, definition) in definitions {
                    let iri = match definition {
                        Value::String(iri) => Some(iri.as_str()),
                        Value::Object(expanded) => expanded.get("@id").and_then(Value::as_str),
                        _ => None,
                    };
                    if iri != Some(self.vocabulary.namespace) {
                        continue;
                    }
                    if term == "@vocab" || term == self.vocabulary.prefix {
                        self.bare_terms = true;
                    } else if !term.starts_with('@') && !term.contains(':') {
                        self.prefixes.push(term.clone());
                    }
                }
            }
            _ => {}
        }
    }

    /// No spellings but the usual prefix and the full IRI: a node without a `@context`.
    pub(crate) fn none(vocabulary: &'static Vocabulary) -> Self {
        Self {
            vocabulary,
            prefixes: Vec::new(),
            bare_terms: false,
        }
    }

    /// The term `name` spells (`LogMessage` for `ids:LogMessage` and its equivalents), or
    /// `None` when it names something outside the vocabulary's namespace.
    pub(crate) fn term<'a>(&self, name: &'a str) -> Option<&'a str> {
        let term = if let Some(term) = name.strip_prefix(self.vocabulary.namespace) {
            term
        } else if let Some((prefix, term)) = name.split_once(':') {
            if prefix != self.vocabulary.prefix && !self.prefixes.iter().any(|p| p == prefix) {
                return None;
            }
            term
        } else if self.bare_terms && !name.starts_with('@') {
            name
        } else {
            return None;
        };
        // A byte test: a `char` pattern cost a request header a tenth of its parse.
        let is_term = !term.is_empty()
            && !term
                .bytes()
                .any(|byte| matches!(byte, b'/' | b'#' | b':' | b'?'));
        is_term.then_some(term)
    }

    /// The value of the property `term` of `node`, whichever spelling its key uses.
    pub(crate) fn property<'v>(
        &self,
        node: &'v Map<String, Value>,
        term: &str,
    ) -> Result<Option<&'v Value>, DuplicateProperty> {
        let mut found = Property::new(term);
        for (key, value) in self.keys_of(node, term) {
            found.offer(key, value);
        }
        found.value()
    }

    /// Whether `node` has the property `term` in any spelling.
    pub(crate) fn has(&self, node: &Map<String, Value>, term: &str) -> bool {
        self.keys_of(node, term).next().is_some()
    }

    fn keys_of<'n, 't>(
        &'t self,
        node: &'n Map<String, Value>,
        term: &'t str,
    ) -> impl Iterator<Item = (&'n String, &'n Value)> + 't
    where
        'n: 't,
    {
        node.iter()
            .filter(move |(key, _)| self.term(key) == Some(term))
    }
}

/// The value of a property met while going through a node's keys: what [`Names::property`]
/// finds, for a reader that looks for several properties in one pass over the keys (each key's
/// term computed once).
#[derive(Debug)]
pub(crate) struct Property<'t, 'v> {
    term: &'t str,
    found: Option<(&'v String, &'v Value)>,
    /// The first other spelling met after `found`.
    duplicate: Option<&'v String>,
}

impl<'t, 'v> Property<'t, 'v> {
    /// The property `term`, not met yet.
    pub(crate) fn new(term: &'t str) -> Self {
        Property {
            term,
            found: None,
            duplicate: None,
        }
    }

    /// The node has `key`, a spelling of this property, with `value`.
    pub(crate) fn offer(&mut self, key: &'v String, value: &'v Value) {
        match self.found {
            None => self.found = Some((key, value)),
            Some(_) => {
                self.duplicate.get_or_insert(key);
            }
        }
    }

    /// The property's value, if the node has it; refused if the node gives it under two
    /// spellings.
    pub(crate) fn value(&self) -> Result<Option<&'v Value>, DuplicateProperty> {
        match (self.found, self.duplicate) {
            (Some((first, _)), Some(second)) => Err(DuplicateProperty {
                name: self.term.to_owned(),
                first: first.clone(),
                second: second.clone(),
            }),
            (found, _) => Ok(found.map(|(_, value)| value)),
        }
    }
}

/// Whether `url` is one of the published IDS context documents, versioned or not.
fn is_ids_context_document(url: &str) -> bool {
    url.strip_prefix(IDS_CONTEXT_DOCUMENTS)
        .is_some_and(|rest| rest.ends_with("context.jsonld"))
}

/// Whether a node with this `@context` reads `ids:X` as the IDS namespace by JSON-LD's own rules
/// (not only by this room's): no context at all leaves it to the reader's convention.
pub(crate) fn context_declares_ids_prefix(context: &Value) -> bool {
    let declares = |context: &Value| match context {
        Value::String(url) => is_ids_context_document(url),
        Value::Object(definitions) => definitions
            .get(IDS_PREFIX)
            .is_some_and(|iri| iri.as_str() == Some(IDS_NAMESPACE)),
        _ => false,
    };
    match context {
        Value::Array(contexts) => contexts.iter().any(declares),
        context => declares(context),
    }
}

/// `value` itself, or the only member of a one-element list: JSON-LD makes no difference.
pub(crate) fn single(value: &Value) -> Option<&Value> {
    match value {
        Value::Array(values) => match values.as_slice() {
            [only] => Some(only),
            _ => None,
        },
        value => Some(value),
    }
}

/// An IRI-valued field: compacted JSON-LD may write it as a bare string, the Java serializer
/// writes `{"@id": ...}`; both occur in the wild. An empty IRI names nothing.
pub(crate) fn reference(value: &Value) -> Option<String> {
    let iri = match single(value)? {
        Value::String(iri) => iri,
        Value::Object(node) => node.get("@id")?.as_str()?,
        _ => return None,
    };
    (!iri.is_empty()).then(|| iri.to_owned())
}

/// A literal-valued field: a bare string or a typed literal `{"@value": ...}`.
pub(crate) fn literal(value: &Value) -> Option<String> {
    match single(value)? {
        Value::String(text) => Some(text.clone()),
        Value::Object(node) => node.get("@value")?.as_str().map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(context: Value) -> Names {
        let node = json!({ "@context": context });
        Names::of(node.as_object().unwrap())
    }

    #[test]
    fn the_prefix_and_the_full_iri_are_always_ids_terms() {
        let none = Names::none(&IDS);
        assert_eq!(none.term("ids:LogMessage"), Some("LogMessage"));
        assert_eq!(
            none.term("https://w3id.org/idsa/core/LogMessage"),
            Some("LogMessage")
        );
        assert_eq!(none.term("LogMessage"), None, "no context, no bare terms");
    }

    #[test]
    fn contexts_that_make_bare_terms_ids_terms() {
        for context in [
            json!("https://w3id.org/idsa/contexts/context.jsonld"),
            json!("https://w3id.org/idsa/contexts/4.2.7/context.jsonld"),
            json!({"ids": "https://w3id.org/idsa/core/"}),
            json!({"@vocab": "https://w3id.org/idsa/core/"}),
            json!({"@vocab": {"@id": "https://w3id.org/idsa/core/"}}),
            json!([
                "https://example.org/other.jsonld",
                "https://w3id.org/idsa/contexts/context.jsonld"
            ]),
            json!([{"xsd": "http://www.w3.org/2001/XMLSchema#"}, {"@vocab": "https://w3id.org/idsa/core/"}]),
        ] {
            assert_eq!(
                names(context.clone()).term("LogMessage"),
                Some("LogMessage"),
                "{context}"
            );
        }
    }

    #[test]
    fn contexts_that_do_not() {
        for context in [
            json!("https://example.org/context.jsonld"),
            json!("https://w3id.org/idsa/contexts/other.json"),
            json!({"@vocab": "https://example.org/"}),
            json!({"ids": "http://w3id.org/idsa/core/"}),
            json!({"idsc": "https://w3id.org/idsa/code/"}),
            json!(42),
            json!([{"@vocab": "https://example.org/"}]),
        ] {
            assert_eq!(names(context.clone()).term("LogMessage"), None, "{context}");
        }
    }

    #[test]
    fn other_prefixes_bound_to_the_ids_namespace_are_read() {
        let names = names(
            json!({"core": "https://w3id.org/idsa/core/", "x": {"@id": "https://w3id.org/idsa/core/"}}),
        );
        assert_eq!(names.term("core:LogMessage"), Some("LogMessage"));
        assert_eq!(names.term("x:LogMessage"), Some("LogMessage"));
        assert_eq!(names.term("y:LogMessage"), None);
        assert_eq!(names.term("LogMessage"), None);
    }

    #[test]
    fn keywords_and_iris_that_are_not_terms_are_not_ids_terms() {
        let names = names(json!("https://w3id.org/idsa/contexts/context.jsonld"));
        for name in [
            "@id",
            "@type",
            "ids:",
            "https://w3id.org/idsa/core/",
            "https://w3id.org/idsa/core/a/b",
            "https://w3id.org/idsa/code/JWT",
            "http://w3id.org/idsa/core/LogMessage",
            "other:LogMessage",
            "urn:LogMessage",
        ] {
            assert_eq!(names.term(name), None, "{name}");
        }
    }

    #[test]
    fn a_property_is_found_in_any_spelling_but_only_once() {
        let names = names(json!({"@vocab": "https://w3id.org/idsa/core/"}));
        for key in [
            "ids:senderAgent",
            "https://w3id.org/idsa/core/senderAgent",
            "senderAgent",
        ] {
            let node = json!({ key: "urn:a", "ids:other": 1 });
            let value = names.property(node.as_object().unwrap(), "senderAgent");
            assert_eq!(value, Ok(Some(&json!("urn:a"))), "{key}");
        }
        let twice = json!({"ids:senderAgent": "urn:a", "senderAgent": "urn:b"});
        let error = names
            .property(twice.as_object().unwrap(), "senderAgent")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "ids:senderAgent is given twice, as \"ids:senderAgent\" and \"senderAgent\""
        );
    }

    #[test]
    fn values_are_read_bare_wrapped_or_as_nodes() {
        assert_eq!(reference(&json!("urn:a")).as_deref(), Some("urn:a"));
        assert_eq!(
            reference(&json!({"@id": "urn:a"})).as_deref(),
            Some("urn:a")
        );
        assert_eq!(
            reference(&json!([{"@id": "urn:a"}])).as_deref(),
            Some("urn:a")
        );
        assert_eq!(reference(&json!(["urn:a"])).as_deref(), Some("urn:a"));
        assert_eq!(reference(&json!(["urn:a", "urn:b"])), None);
        assert_eq!(reference(&json!([])), None);
        assert_eq!(reference(&json!({"@id": ""})), None);
        assert_eq!(literal(&json!("t")).as_deref(), Some("t"));
        assert_eq!(literal(&json!({"@value": "t"})).as_deref(), Some("t"));
        assert_eq!(literal(&json!([{"@value": "t"}])).as_deref(), Some("t"));
        assert_eq!(literal(&json!([7])), None);
    }

    #[test]
    fn the_ids_prefix_is_declared_by_the_context_document_or_a_binding() {
        for (context, declared) in [
            (json!("https://w3id.org/idsa/contexts/context.jsonld"), true),
            (json!({"ids": "https://w3id.org/idsa/core/"}), true),
            (
                json!(["urn:x", {"ids": "https://w3id.org/idsa/core/"}]),
                true,
            ),
            (json!({"@vocab": "https://w3id.org/idsa/core/"}), false),
            (json!({"ids": "https://example.org/"}), false),
            (json!("https://example.org/context.jsonld"), false),
        ] {
            assert_eq!(context_declares_ids_prefix(&context), declared, "{context}");
        }
    }
}
