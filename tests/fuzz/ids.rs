//! Target `ids`: the IDS request header (`RequestHeader::parse`) and the `ch-ids-*` parameters
//! (`ChParams::parse`, `pid`, `query`).
//!
//! Inputs are generated with labels saying what they mean (this `@type` is missing, this pid has
//! a forbidden character, this date is 2024-02-30), and the parser's answer is checked against
//! the label, not against a copy of the parser. Headers spell the IDS names in one of their
//! JSON-LD forms (`ids:X`, the full IRI, `X` under the IDS context), which read the same. Free text and damaged JSON are thrown in too:
//! those must not panic, and whatever parses must read back the same from its own output.

use clearinghouse::ids::params::ParamLimits;
use clearinghouse::ids::{
    ChParams, HeaderError, MessageType, Pid, QueryParams, Rejection, RejectionReason,
    RequestHeader, SortOrder,
};
use clearinghouse::idscp2::proto::app::HeaderEntry;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

use crate::json::json_value;
use crate::mutate::{mutated, Mutation};
use crate::runner::{fuzz, Budget, Outcome, Target};

pub const TARGET: Target = Target { name: "ids", run };

#[derive(Debug, Clone)]
enum Case {
    Header(HeaderCase),
    HeaderText(String),
    DamagedHeader(HeaderCase, Vec<Mutation>),
    Params(Vec<Param>),
}

fn run(budget: &Budget) -> Outcome {
    let case = prop_oneof![
        3 => header_case().prop_map(Case::Header),
        1 => any::<String>().prop_map(Case::HeaderText),
        2 => (header_case(), vec(any::<Mutation>(), 1..4)).prop_map(|(h, m)| Case::DamagedHeader(h, m)),
        6 => vec(param(), 0..10).prop_map(Case::Params),
    ];
    fuzz(TARGET.name, budget, case, |case| match case {
        Case::Header(header) => check_header(&header),
        Case::HeaderText(text) => check_any_header(&text),
        Case::DamagedHeader(header, mutations) => {
            let text = mutated(header.json().to_string().into_bytes(), &mutations);
            check_any_header(&String::from_utf8_lossy(&text))
        }
        Case::Params(params) => check_params(&params),
    })
}

// ---------------------------------------------------------------------------------------------
// The header.

/// How a header spells the IDS names it uses.
#[derive(Debug, Clone, Copy)]
enum Spelling {
    /// `ids:X`.
    Prefix,
    /// `https://w3id.org/idsa/core/X`.
    FullIri,
    /// `X` under the IDS context document.
    Term,
}

impl Spelling {
    fn name(self, term: &str) -> String {
        match self {
            Spelling::Prefix => format!("ids:{term}"),
            Spelling::FullIri => format!("https://w3id.org/idsa/core/{term}"),
            Spelling::Term => term.to_owned(),
        }
    }

    /// A type name as generated (`ids:LogMessage`, or free text) in this spelling.
    fn type_name(self, generated: &str) -> String {
        match generated.strip_prefix("ids:") {
            Some(term) => self.name(term),
            None => generated.to_owned(),
        }
    }

    fn context(self) -> Option<Value> {
        matches!(self, Spelling::Term)
            .then(|| json!("https://w3id.org/idsa/contexts/context.jsonld"))
    }
}

/// A string-valued member as generated.
#[derive(Debug, Clone)]
enum Text {
    Missing,
    Empty,
    Str(String),
    /// A non-empty string as the only member of a list, which JSON-LD reads as the string
    /// itself where a value is meant (not for `@id`, which is always a string).
    Listed(String),
    /// Neither: a number, another list, an object, null.
    NotString(Value),
}

impl Text {
    fn value(&self) -> Option<Value> {
        match self {
            Text::Missing => None,
            Text::Empty => Some(json!("")),
            Text::Str(text) => Some(json!(text)),
            Text::Listed(text) => Some(json!([text])),
            Text::NotString(value) => Some(value.clone()),
        }
    }

    /// The string a value means.
    fn given(&self) -> Option<&str> {
        match self {
            Text::Str(text) | Text::Listed(text) => Some(text),
            _ => None,
        }
    }

    /// The string an `@id` means.
    fn given_bare(&self) -> Option<&str> {
        match self {
            Text::Str(text) => Some(text),
            _ => None,
        }
    }
}

/// An IRI-valued member: a bare string or `{"@id": ...}`.
#[derive(Debug, Clone)]
enum Reference {
    Bare(Text),
    Node(Text),
}

impl Reference {
    fn value(&self) -> Option<Value> {
        match self {
            Reference::Bare(text) => text.value(),
            Reference::Node(Text::Missing) => Some(json!({})),
            Reference::Node(text) => Some(json!({ "@id": text.value() })),
        }
    }

    fn expected(&self) -> Option<String> {
        match self {
            Reference::Bare(text) => text.given().map(str::to_owned),
            Reference::Node(text) => text.given_bare().map(str::to_owned),
        }
    }
}

/// `ids:securityToken`, whose `ids:tokenValue` is a bare or typed literal.
#[derive(Debug, Clone)]
enum Token {
    Missing,
    NoValue,
    Bare(Text),
    Typed(Text),
    NotObject(Value),
}

impl Token {
    fn value(&self, spelling: Spelling) -> Option<Value> {
        let value_key = spelling.name("tokenValue");
        match self {
            Token::Missing => None,
            Token::NoValue => Some(json!({"@type": spelling.name("DynamicAttributeToken")})),
            Token::Bare(text) => Some(json!({ value_key: text.value() })),
            Token::Typed(text) => Some(json!({ value_key: { "@value": text.value() } })),
            Token::NotObject(value) => Some(value.clone()),
        }
    }

    /// A literal may be empty; only its absence or a non-string makes it `None`.
    fn expected(&self) -> Option<String> {
        match self {
            Token::Bare(Text::Empty) | Token::Typed(Text::Empty) => Some(String::new()),
            Token::Bare(text) => text.given().map(str::to_owned),
            Token::Typed(text) => text.given_bare().map(str::to_owned),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct HeaderCase {
    spelling: Spelling,
    message_type: Text,
    id: Text,
    issuer_connector: Reference,
    sender_agent: Reference,
    security_token: Token,
    authorization_token: Option<Value>,
    /// Further members, kept verbatim (the names are chosen not to collide with the above).
    extra: Vec<(String, Value)>,
    /// The header is this array or scalar instead of an object.
    not_an_object: Option<Value>,
}

/// Members read, in every spelling but the full IRI (longer than any extra member's name).
const KNOWN: &[&str] = &[
    "@context",
    "@type",
    "@id",
    "ids:issuerConnector",
    "ids:senderAgent",
    "ids:securityToken",
    "ids:authorizationToken",
    "issuerConnector",
    "senderAgent",
    "securityToken",
    "authorizationToken",
];

impl HeaderCase {
    fn json(&self) -> Value {
        if let Some(other) = &self.not_an_object {
            return other.clone();
        }
        let mut object = Map::new();
        let spelling = self.spelling;
        let message_type = match &self.message_type {
            Text::Str(name) => Some(json!(spelling.type_name(name))),
            Text::Listed(name) => Some(json!([spelling.type_name(name)])),
            other => other.value(),
        };
        let members = [
            ("@context".to_owned(), spelling.context()),
            ("@type".to_owned(), message_type),
            ("@id".to_owned(), self.id.value()),
            (
                spelling.name("issuerConnector"),
                self.issuer_connector.value(),
            ),
            (spelling.name("senderAgent"), self.sender_agent.value()),
            (
                spelling.name("securityToken"),
                self.security_token.value(spelling),
            ),
            (
                spelling.name("authorizationToken"),
                self.authorization_token.clone(),
            ),
        ];
        for (name, value) in members {
            if let Some(value) = value {
                object.insert(name, value);
            }
        }
        for (name, value) in &self.extra {
            object.insert(name.clone(), value.clone());
        }
        Value::Object(object)
    }
}

/// Neither a string nor a list whose only member is a string or a node.
fn non_string() -> impl Strategy<Value = Value> {
    json_value().prop_filter("not a string", |v| match v {
        Value::String(_) => false,
        Value::Array(members) => {
            !matches!(members.as_slice(), [Value::String(_) | Value::Object(_)])
        }
        _ => true,
    })
}

fn text(strings: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = Text> {
    let non_empty = strings.prop_filter("not empty", |s| !s.is_empty());
    prop_oneof![
        1 => Just(Text::Missing),
        1 => Just(Text::Empty),
        7 => non_empty.clone().prop_map(Text::Str),
        1 => non_empty.prop_map(Text::Listed),
        1 => non_string().prop_map(Text::NotString),
    ]
}

fn reference() -> impl Strategy<Value = Reference> {
    let iri = || {
        text(prop_oneof![
            "https://[a-z]{1,8}\\.example/[a-z0-9]{0,6}",
            ".{1,12}"
        ])
    };
    prop_oneof![
        iri().prop_map(Reference::Bare),
        iri().prop_map(Reference::Node)
    ]
}

fn header_case() -> impl Strategy<Value = HeaderCase> {
    let message_type = text(prop_oneof![
        select(vec![
            "ids:RequestMessage",
            "ids:LogMessage",
            "ids:QueryMessage"
        ])
        .prop_map(String::from),
        ".{1,20}",
    ]);
    let token_text = || text(prop_oneof!["[A-Za-z0-9._-]{1,40}", ".{0,12}"]);
    let token = prop_oneof![
        Just(Token::Missing),
        Just(Token::NoValue),
        token_text().prop_map(Token::Bare),
        token_text().prop_map(Token::Typed),
        non_string()
            .prop_filter("not an object", |v| !v.is_object())
            .prop_map(Token::NotObject),
    ];
    let extra = vec(
        (
            ".{0,12}".prop_filter("not a member read", |name: &String| {
                !KNOWN.contains(&name.as_str())
            }),
            json_value(),
        ),
        0..4,
    );
    let not_an_object = prop_oneof![
        9 => Just(None),
        1 => json_value().prop_filter("not an object", |v| !v.is_object()).prop_map(Some),
    ];
    let spelling = select(vec![Spelling::Prefix, Spelling::FullIri, Spelling::Term]);
    (
        (spelling, message_type),
        text(".{1,24}"),
        reference(),
        reference(),
        token,
        proptest::option::of(json_value()),
        extra,
        not_an_object,
    )
        .prop_map(
            |(
                (spelling, message_type),
                id,
                issuer_connector,
                sender_agent,
                security_token,
                authorization_token,
                extra,
                not_an_object,
            )| {
                HeaderCase {
                    spelling,
                    message_type,
                    id,
                    issuer_connector,
                    sender_agent,
                    security_token,
                    authorization_token,
                    extra,
                    not_an_object,
                }
            },
        )
}

fn check_header(case: &HeaderCase) -> Result<(), TestCaseError> {
    let json = case.json();
    let result = RequestHeader::parse(&json.to_string());
    if case.not_an_object.is_some() {
        prop_assert!(
            matches!(result, Err(HeaderError::NotAnObject)),
            "{result:?}"
        );
        return Ok(());
    }
    let Some(type_name) = case.message_type.given() else {
        prop_assert!(
            matches!(result, Err(HeaderError::MissingType)),
            "{result:?}"
        );
        return Ok(());
    };
    let Some(id) = case.id.given_bare() else {
        prop_assert!(matches!(result, Err(HeaderError::MissingId)), "{result:?}");
        return Ok(());
    };
    let header =
        result.map_err(|e| TestCaseError::fail(format!("a valid header was refused: {e}")))?;
    let expected_type = match type_name {
        "ids:RequestMessage" => MessageType::Request,
        "ids:LogMessage" => MessageType::Log,
        "ids:QueryMessage" => MessageType::Query,
        other => MessageType::Other(case.spelling.type_name(other)),
    };
    prop_assert_eq!(&header.message_type, &expected_type);
    prop_assert_eq!(&header.id, id);
    prop_assert_eq!(
        header.issuer_connector.clone(),
        case.issuer_connector.expected()
    );
    prop_assert_eq!(header.sender_agent.clone(), case.sender_agent.expected());
    prop_assert_eq!(
        header.security_token.clone(),
        case.security_token.expected()
    );
    // Stored: everything but the tokens, in the spelling they were sent.
    let mut expected = json.as_object().expect("a header is an object").clone();
    expected.remove(&case.spelling.name("securityToken"));
    expected.remove(&case.spelling.name("authorizationToken"));
    prop_assert_eq!(&header.stored, &Value::Object(expected));
    check_parsed_header(&header, &json)
}

/// Any text: no panic, and a header that parses reads back the same from its own JSON.
fn check_any_header(text: &str) -> Result<(), TestCaseError> {
    match RequestHeader::parse(text) {
        Ok(header) => {
            let json: Value = serde_json::from_str(text).expect("it parsed as a header");
            check_parsed_header(&header, &json)
        }
        Err(HeaderError::NotJson(_)) => {
            prop_assert!(
                serde_json::from_str::<Value>(text).is_err(),
                "JSON refused as not JSON"
            );
            Ok(())
        }
        Err(_) => Ok(()),
    }
}

/// `header` was parsed from `json`.
fn check_parsed_header(header: &RequestHeader, json: &Value) -> Result<(), TestCaseError> {
    let again = RequestHeader::parse(&json.to_string())
        .map_err(|e| TestCaseError::fail(format!("a parsed header does not parse again: {e}")))?;
    prop_assert_eq!(&again, header);
    prop_assert!(!header.id.is_empty());
    // What is stored keeps everything but the tokens; whether a bare name is a token depends on
    // the context, but the prefixed and full IRI forms always are.
    let stored = header
        .stored
        .as_object()
        .expect("a stored header is an object");
    let raw = json.as_object().expect("a header is an object");
    let token_names: Vec<String> = ["securityToken", "authorizationToken"]
        .into_iter()
        .flat_map(|term| {
            [Spelling::Prefix, Spelling::FullIri, Spelling::Term].map(|s| s.name(term))
        })
        .collect();
    for (key, value) in raw {
        if token_names.contains(key) {
            let always_a_token = key.contains(':');
            prop_assert!(
                !(always_a_token && stored.contains_key(key)),
                "{key} was stored"
            );
        } else {
            prop_assert_eq!(
                stored.get(key),
                Some(value),
                "{} was not stored as sent",
                key
            );
        }
    }
    prop_assert!(stored.keys().all(|key| raw.contains_key(key)));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The parameters.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Pid,
    Id,
    ContentType,
    Page,
    Size,
    Sort,
    DateFrom,
    DateTo,
}

/// What a parameter value is, as generated.
#[derive(Debug, Clone)]
enum Meaning {
    /// Nothing in particular: any text.
    Free,
    /// A pid that must be accepted.
    GoodPid,
    /// A pid that must be refused.
    BadPid,
    /// A number as text, or `None` when it is no u64 of 1 or more.
    Positive(Option<u64>),
    Sort(Option<SortOrder>),
    /// Unix ms of the first and last millisecond meant, or `None` when it is no date.
    Date(Option<(i64, i64)>),
}

#[derive(Debug, Clone)]
struct Param {
    /// `None`: a header the clearing house does not read.
    name: Option<Name>,
    header_name: String,
    value: String,
    meaning: Meaning,
}

fn spellings(name: Name) -> &'static [&'static str] {
    match name {
        Name::Pid => &["ch-ids-pid"],
        Name::Id => &["ch-ids-id"],
        Name::ContentType => &["content-type"],
        Name::Page => &["ch-ids-page"],
        Name::Size => &["ch-ids-size"],
        Name::Sort => &["ch-ids-sort"],
        Name::DateFrom => &["ch-ids-date_from", "ch-ids-date-from"],
        Name::DateTo => &["ch-ids-date_to", "ch-ids-date-to"],
    }
}

/// A spelling of the parameter's header name in mixed case with blanks around it.
fn header_name(name: Name) -> impl Strategy<Value = String> {
    (
        select(spellings(name)),
        vec(any::<bool>(), 20),
        select(vec!["", " ", "\t"]),
        select(vec!["", " ", "\t "]),
    )
        .prop_map(|(spelling, upper, before, after)| {
            let mixed: String = spelling
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
                .collect();
            format!("{before}{mixed}{after}")
        })
}

/// Blanks around a value, which are not part of it.
fn padded(value: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (
        select(vec!["", " ", "\t", " \n"]),
        value,
        select(vec!["", " ", "\r\n"]),
    )
        .prop_map(|(before, value, after)| format!("{before}{value}{after}"))
}

const PID_CHARS: &str = "A-Za-z0-9._:~-";

fn pid_value() -> impl Strategy<Value = (String, Meaning)> {
    let good = format!("[{PID_CHARS}]{{1,255}}");
    let around = format!("[{PID_CHARS}]{{0,20}}");
    let around = || proptest::string::string_regex(&around).expect("a regex");
    prop_oneof![
        4 => proptest::string::string_regex(&good).expect("a regex").prop_filter("not reserved", |p| p != "default").prop_map(|p| (p, Meaning::GoodPid)),
        1 => Just(("p".repeat(255), Meaning::GoodPid)),
        1 => Just(("p".repeat(256), Meaning::BadPid)),
        1 => Just(("default".to_owned(), Meaning::BadPid)),
        1 => Just((String::new(), Meaning::BadPid)),
        3 => (around(), "[^A-Za-z0-9._:~\\-\\s]", around())
            .prop_map(|(a, bad, b)| (format!("{a}{bad}{b}"), Meaning::BadPid)),
        1 => ".{0,20}".prop_map(|text| (text, Meaning::Free)),
    ]
}

fn positive_value() -> impl Strategy<Value = (String, Meaning)> {
    prop_oneof![
        4 => (1u64..=u64::MAX).prop_map(|n| (n.to_string(), Meaning::Positive(Some(n)))),
        2 => (1u64..2000).prop_map(|n| (n.to_string(), Meaning::Positive(Some(n)))),
        1 => (1u64..100).prop_map(|n| (format!("00{n}"), Meaning::Positive(Some(n)))),
        1 => Just(("0".to_owned(), Meaning::Positive(None))),
        1 => Just(("18446744073709551616".to_owned(), Meaning::Positive(None))),
        1 => (1i64..1000).prop_map(|n| (format!("-{n}"), Meaning::Positive(None))),
        1 => "[0-9]{1,3}[ .,a-z][0-9]{1,3}".prop_map(|text| (text, Meaning::Positive(None))),
        1 => Just((String::new(), Meaning::Positive(None))),
        1 => ".{0,8}".prop_map(|text| (text, Meaning::Free)),
    ]
}

fn sort_value() -> impl Strategy<Value = (String, Meaning)> {
    let cased = |word: &'static str| {
        vec(any::<bool>(), word.len()).prop_map(move |upper| {
            word.chars()
                .zip(upper)
                .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                .collect::<String>()
        })
    };
    prop_oneof![
        cased("asc").prop_map(|s| (s, Meaning::Sort(Some(SortOrder::Asc)))),
        cased("desc").prop_map(|s| (s, Meaning::Sort(Some(SortOrder::Desc)))),
        prop_oneof![
            Just("ascending".to_owned()),
            Just("de sc".to_owned()),
            Just(String::new()),
            "[a-z]{1,2}"
        ]
        .prop_map(|s| (s, Meaning::Sort(None))),
        ".{0,6}".prop_map(|text| (text, Meaning::Free)),
    ]
}

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn date_value() -> impl Strategy<Value = (String, Meaning)> {
    let day = || (0i64..=9999, 1i64..=12, 1i64..=31);
    let instant = (
        (1i64..=9998, 1i64..=12, 1i64..=28),
        (0i64..24, 0i64..60, 0i64..60, 0i64..1000),
        prop_oneof![Just(None), (-1439i64..=1439).prop_map(Some)],
    );
    prop_oneof![
        4 => day().prop_map(|(y, m, d)| {
            let text = format!("{y:04}-{m:02}-{d:02}");
            let meaning = (d <= days_in_month(y, m)).then(|| {
                let first = days_from_civil(y, m, d) * MS_PER_DAY;
                (first, first + MS_PER_DAY - 1)
            });
            (text, Meaning::Date(meaning))
        }),
        4 => instant.prop_map(|((y, mo, d), (h, mi, s, ms), offset_minutes)| {
            let offset = match offset_minutes {
                None => "Z".to_owned(),
                Some(minutes) => {
                    let sign = if minutes < 0 { '-' } else { '+' };
                    format!("{sign}{:02}:{:02}", minutes.abs() / 60, minutes.abs() % 60)
                }
            };
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}{offset}");
            let local = days_from_civil(y, mo, d) * MS_PER_DAY + ((h * 60 + mi) * 60 + s) * 1000 + ms;
            let at = local - offset_minutes.unwrap_or(0) * 60_000;
            (text, Meaning::Date(Some((at, at))))
        }),
        1 => select(vec!["2024-1-05", "20240105", "+2024-01-05", "2024-13-01T00:00:00Z", "2024-01-01T25:00:00Z", "12024-01-01", "2023-02-29"])
            .prop_map(|text| (text.to_owned(), Meaning::Date(None))),
        2 => (day(), vec(any::<Mutation>(), 1..3)).prop_map(|((y, m, d), mutations)| {
            let text = mutated(format!("{y:04}-{m:02}-{d:02}T12:00:00Z").into_bytes(), &mutations);
            (String::from_utf8_lossy(&text).into_owned(), Meaning::Free)
        }),
    ]
}

fn param() -> impl Strategy<Value = Param> {
    let named = |name: Name, value: BoxedStrategy<(String, Meaning)>| {
        (header_name(name), value).prop_map(move |(header_name, (value, meaning))| Param {
            name: Some(name),
            header_name,
            value,
            meaning,
        })
    };
    let free = || ".{0,16}".prop_map(|text| (text, Meaning::Free)).boxed();
    let unknown = prop_oneof![
        "ch-ids-[a-z_]{0,8}".prop_filter("not a parameter", |n| {
            let n = n.replace('_', "-");
            ![
                "ch-ids-pid",
                "ch-ids-id",
                "ch-ids-page",
                "ch-ids-size",
                "ch-ids-sort",
                "ch-ids-date-from",
                "ch-ids-date-to",
            ]
            .contains(&n.as_str())
        }),
        "x-[a-z]{0,8}",
        "content_type",
        "ch-ids pid",
    ];
    prop_oneof![
        4 => named(Name::Pid, pid_value().boxed()),
        1 => named(Name::Id, free()),
        1 => named(Name::ContentType, free()),
        2 => named(Name::Page, positive_value().boxed()),
        2 => named(Name::Size, positive_value().boxed()),
        1 => named(Name::Sort, sort_value().boxed()),
        2 => named(Name::DateFrom, date_value().boxed()),
        2 => named(Name::DateTo, date_value().boxed()),
        1 => (unknown, ".{0,8}").prop_map(|(header_name, value)| Param { name: None, header_name, value, meaning: Meaning::Free }),
    ]
    .prop_flat_map(|param| padded(Just(param.value.clone())).prop_map(move |value| Param { value, ..param.clone() }))
}

fn slot(params: &mut ChParams, name: Name) -> &mut Option<String> {
    match name {
        Name::Pid => &mut params.pid,
        Name::Id => &mut params.id,
        Name::ContentType => &mut params.content_type,
        Name::Page => &mut params.page,
        Name::Size => &mut params.size,
        Name::Sort => &mut params.sort,
        Name::DateFrom => &mut params.date_from,
        Name::DateTo => &mut params.date_to,
    }
}

fn entries(pairs: impl IntoIterator<Item = (String, String)>) -> Vec<HeaderEntry> {
    pairs
        .into_iter()
        .map(|(name, value)| HeaderEntry { name, value })
        .collect()
}

fn check_params(params: &[Param]) -> Result<(), TestCaseError> {
    let headers = entries(
        params
            .iter()
            .map(|p| (p.header_name.clone(), p.value.clone())),
    );
    let result = ChParams::parse(&headers, &ParamLimits::default());

    // What the labels say: the last meaning of each parameter, or a conflict.
    let mut expected = ChParams::default();
    let mut meanings: Vec<(Name, Meaning)> = Vec::new();
    let mut conflict = false;
    for param in params {
        let Some(name) = param.name else { continue };
        let value = param.value.trim().to_owned();
        let slot = slot(&mut expected, name);
        if slot.as_ref().is_some_and(|existing| *existing != value) {
            conflict = true;
            break;
        }
        *slot = Some(value);
        meanings.retain(|(n, _)| *n != name);
        meanings.push((name, param.meaning.clone()));
    }
    let parsed = match result {
        Err(rejection) => {
            prop_assert!(
                conflict,
                "parameters refused without a conflict: {}",
                rejection.message
            );
            prop_assert_eq!(rejection.reason, RejectionReason::BadParameters);
            return Ok(());
        }
        Ok(parsed) => parsed,
    };
    prop_assert!(
        !conflict,
        "a parameter sent twice with different values was taken"
    );
    prop_assert_eq!(&parsed, &expected);

    // Written back with the canonical names, the parameters read the same.
    let canonical = [
        ("ch-ids-pid", &parsed.pid),
        ("ch-ids-id", &parsed.id),
        ("Content-Type", &parsed.content_type),
        ("ch-ids-page", &parsed.page),
        ("ch-ids-size", &parsed.size),
        ("ch-ids-sort", &parsed.sort),
        ("ch-ids-date_from", &parsed.date_from),
        ("ch-ids-date_to", &parsed.date_to),
    ];
    let written = entries(
        canonical
            .iter()
            .filter_map(|(name, value)| Some((name.to_string(), (*value).clone()?))),
    );
    let reread = ChParams::parse(&written, &ParamLimits::default()).ok();
    prop_assert_eq!(reread.as_ref(), Some(&parsed));

    let meaning = |name: Name| {
        meanings
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| m.clone())
    };
    check_pid(&parsed, meaning(Name::Pid))?;
    check_query(&parsed, &meaning)
}

fn check_pid(parsed: &ChParams, meaning: Option<Meaning>) -> Result<(), TestCaseError> {
    let pid = parsed.pid();
    let result = pid.as_ref().map(Pid::as_str).map_err(Rejection::clone);
    // Whatever the label, an accepted pid is well formed: invalid ones are always refused.
    if let Ok(pid) = result {
        let well_formed = (1..=255).contains(&pid.len())
            && pid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:~-".contains(c))
            && pid != "default";
        prop_assert!(well_formed, "accepted the invalid pid {pid:?}");
    }
    match meaning {
        None => prop_assert!(result.is_err(), "a missing pid was accepted"),
        Some(Meaning::GoodPid) => prop_assert_eq!(
            result.as_ref().ok().copied(),
            parsed.pid.as_deref(),
            "a valid pid was refused"
        ),
        Some(Meaning::BadPid) => {
            prop_assert!(result.is_err(), "accepted the invalid pid {:?}", parsed.pid)
        }
        Some(_) => {}
    }
    if let Err(rejection) = result {
        prop_assert_eq!(rejection.reason, RejectionReason::BadParameters);
        prop_assert!(
            rejection.message.contains("ch-ids-pid"),
            "{}",
            rejection.message
        );
    }
    Ok(())
}

fn check_query(
    parsed: &ChParams,
    meaning: &dyn Fn(Name) -> Option<Meaning>,
) -> Result<(), TestCaseError> {
    let result = parsed.query();
    match &result {
        Ok(query) => check_query_consistent(parsed, query)?,
        Err(rejection) => {
            prop_assert_eq!(rejection.reason, RejectionReason::BadParameters);
            prop_assert!(
                rejection.message.contains("ch-ids-"),
                "the refusal names no parameter: {}",
                rejection.message
            );
        }
    }
    // When every query parameter has a known meaning, the answer is fully determined.
    let positive = |name: Name, default: u64| match meaning(name) {
        None => Some(Some(default)),
        Some(Meaning::Positive(n)) => Some(n),
        _ => None,
    };
    let date = |name: Name| match meaning(name) {
        None => Some(Some(None)),
        Some(Meaning::Date(bounds)) => Some(bounds.map(Some)),
        _ => None,
    };
    let sort = match meaning(Name::Sort) {
        None => Some(Some(SortOrder::Desc)),
        Some(Meaning::Sort(order)) => Some(order),
        _ => None,
    };
    let (Some(page), Some(size), Some(order), Some(from), Some(to)) = (
        positive(Name::Page, 1),
        positive(Name::Size, 100),
        sort,
        date(Name::DateFrom),
        date(Name::DateTo),
    ) else {
        return Ok(());
    };
    let expected = (|| {
        let (page, size, order, from, to) = (page?, size?, order?, from?, to?);
        let from_ms = from.map(|(first, _)| first);
        let to_ms = to.map(|(_, last)| last);
        if let (Some(from), Some(to)) = (from_ms, to_ms) {
            if from > to {
                return None;
            }
        }
        Some(QueryParams {
            page,
            size: size.min(1000),
            size_lowered: size > 1000,
            order,
            from_ms,
            to_ms,
            date_from_text: parsed.date_from.clone(),
            date_to_text: parsed.date_to.clone(),
        })
    })();
    prop_assert_eq!(result.ok(), expected);
    Ok(())
}

/// Whatever the input, an accepted query is a sensible one.
fn check_query_consistent(parsed: &ChParams, query: &QueryParams) -> Result<(), TestCaseError> {
    prop_assert!(query.page >= 1);
    prop_assert!((1..=1000).contains(&query.size));
    if let (Some(from), Some(to)) = (query.from_ms, query.to_ms) {
        prop_assert!(from <= to, "an empty date range was accepted");
    }
    prop_assert_eq!(query.from_ms.is_some(), parsed.date_from.is_some());
    prop_assert_eq!(query.to_ms.is_some(), parsed.date_to.is_some());
    prop_assert_eq!(query.offset(), (query.page - 1).saturating_mul(query.size));
    Ok(())
}
