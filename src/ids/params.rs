//! The clearing-house parameters a request carries as IDSCP2 extra headers (`ch-ids-*`, `Content-Type`).
//!
//! Reading is lenient where deployed clients differ (header case, `date_from` vs `date-from`,
//! surrounding blanks) and strict where the reference went wrong: an unusable value is a
//! BAD_PARAMETERS naming the parameter, never silently replaced by a default, because a query
//! that quietly answers a different question than was asked is worse than an error.

use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime};

use super::pid::{Pid, MAX_PID_LEN};
use super::rejection::{bad_parameter, too_large, Rejection};
use crate::idscp2::proto::app::HeaderEntry;

pub(crate) const DEFAULT_PAGE_SIZE: u64 = 100;
/// Larger requested pages are lowered to this by default (`limits.max_page_size`), so one query
/// cannot make the clearing house assemble an unbounded reply.
pub(crate) const MAX_PAGE_SIZE: u64 = 1000;
const MS_PER_DAY: i64 = 86_400_000;
/// How much of an over-long header name a rejection quotes.
const QUOTED_NAME_LEN: usize = 64;

/// Bounds on the extra headers of one request: each is a documented `limits.*` setting.
///
/// Every extra header is read and compared, and `Content-Type` is stored with each entry and
/// the date parameters echoed in replies, so their number and size are bounded like any
/// other peer-controlled size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamLimits {
    /// `limits.max_parameters`: extra headers per request, known or not.
    pub(crate) max_parameters: usize,
    /// `limits.max_parameter_bytes`: bytes of one extra header's name plus value.
    pub(crate) max_parameter_bytes: usize,
    /// `limits.max_pid_length`: at most [`MAX_PID_LEN`].
    pub(crate) max_pid_length: usize,
    /// `limits.max_page_size`: larger requested pages are lowered to this.
    pub(crate) max_page_size: u64,
}

impl Default for ParamLimits {
    fn default() -> Self {
        ParamLimits {
            max_parameters: 64,
            max_parameter_bytes: 1024,
            max_pid_length: MAX_PID_LEN,
            max_page_size: MAX_PAGE_SIZE,
        }
    }
}

/// The parameters as sent (trimmed); validation happens when the command is read
/// (`Command::parse`), because which parameters matter depends on the message type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChParams {
    /// `ch-ids-pid`: the process.
    pub pid: Option<String>,
    /// `ch-ids-id`: one entry's document id.
    pub id: Option<String>,
    /// From `Content-Type`: the media type of the payload.
    pub content_type: Option<String>,
    /// `ch-ids-page`: the page to read, from 1.
    pub page: Option<String>,
    /// `ch-ids-size`: entries per page.
    pub size: Option<String>,
    /// `ch-ids-sort`: `asc` or `desc`.
    pub sort: Option<String>,
    /// `ch-ids-date_from`: the earliest entries to include.
    pub date_from: Option<String>,
    /// `ch-ids-date_to`: the latest entries to include.
    pub date_to: Option<String>,
    /// `ch-ids-operation`: what a RequestMessage or QueryMessage asks for besides its default
    /// (`set-owners`, `info`; see [`Command`](super::Command)).
    pub(crate) operation: Option<String>,
    /// `ch-ids-view`: a QueryMessage asks for a view of the process instead of its entries.
    pub(crate) view: Option<String>,
    /// `ch-ids-direction`: a LogMessage records a message the caller `sent` (the default) or
    /// `received`.
    pub(crate) direction: Option<String>,
    /// The bounds `pid()` and `query()` check against: those the parameters were parsed with.
    limits: ParamLimits,
}

#[derive(Debug, Clone, Copy)]
enum Param {
    Pid,
    Id,
    ContentType,
    Page,
    Size,
    Sort,
    DateFrom,
    DateTo,
    Operation,
    View,
    Direction,
}

impl Param {
    fn from_header_name(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase();
        if name == "content-type" {
            return Some(Self::ContentType);
        }
        // The reference's IDSCP2 route turned `_` into `-` in header names, so clients built
        // against it send `date-from`; both spellings mean the same parameter.
        match name.strip_prefix("ch-ids-")?.replace('_', "-").as_str() {
            "pid" => Some(Self::Pid),
            "id" => Some(Self::Id),
            "page" => Some(Self::Page),
            "size" => Some(Self::Size),
            "sort" => Some(Self::Sort),
            "date-from" => Some(Self::DateFrom),
            "date-to" => Some(Self::DateTo),
            "operation" => Some(Self::Operation),
            "view" => Some(Self::View),
            "direction" => Some(Self::Direction),
            _ => None,
        }
    }

    fn header_name(self) -> &'static str {
        match self {
            Self::Pid => "ch-ids-pid",
            Self::Id => "ch-ids-id",
            Self::ContentType => "Content-Type",
            Self::Page => "ch-ids-page",
            Self::Size => "ch-ids-size",
            Self::Sort => "ch-ids-sort",
            Self::DateFrom => "ch-ids-date_from",
            Self::DateTo => "ch-ids-date_to",
            Self::Operation => "ch-ids-operation",
            Self::View => "ch-ids-view",
            Self::Direction => "ch-ids-direction",
        }
    }
}

impl ChParams {
    /// Unknown headers are ignored so that newer clients can send more than this version reads,
    /// but they count against `limits`. A parameter sent twice with different values is refused,
    /// since either choice would be a guess.
    pub fn parse(headers: &[HeaderEntry], limits: &ParamLimits) -> Result<ChParams, Rejection> {
        if headers.len() > limits.max_parameters {
            return Err(too_large(
                "limits.max_parameters",
                limits.max_parameters,
                format!(
                    "{} extra headers exceed the limit of {} (limits.max_parameters)",
                    headers.len(),
                    limits.max_parameters
                ),
            ));
        }
        let mut params = ChParams {
            limits: *limits,
            ..ChParams::default()
        };
        for header in headers {
            let bytes = header.name.len() + header.value.len();
            if bytes > limits.max_parameter_bytes {
                let name: String = header.name.chars().take(QUOTED_NAME_LEN).collect();
                return Err(too_large(
                    "limits.max_parameter_bytes",
                    limits.max_parameter_bytes,
                    format!(
                        "extra header {name:?} has {bytes} bytes, above the limit of {} (limits.max_parameter_bytes)",
                        limits.max_parameter_bytes
                    ),
                ));
            }
            let Some(param) = Param::from_header_name(&header.name) else {
                continue;
            };
            let value = header.value.trim();
            let slot = params.slot(param);
            if slot.as_deref().is_some_and(|existing| existing != value) {
                return Err(bad_parameter(format!(
                    "{} was sent twice with different values",
                    param.header_name()
                )));
            }
            *slot = Some(value.to_owned());
        }
        Ok(params)
    }

    fn slot(&mut self, param: Param) -> &mut Option<String> {
        match param {
            Param::Pid => &mut self.pid,
            Param::Id => &mut self.id,
            Param::ContentType => &mut self.content_type,
            Param::Page => &mut self.page,
            Param::Size => &mut self.size,
            Param::Sort => &mut self.sort,
            Param::DateFrom => &mut self.date_from,
            Param::DateTo => &mut self.date_to,
            Param::Operation => &mut self.operation,
            Param::View => &mut self.view,
            Param::Direction => &mut self.direction,
        }
    }

    /// The process id, which every clearing-house message needs.
    pub fn pid(&self) -> Result<Pid, Rejection> {
        let pid = self
            .pid
            .as_deref()
            .ok_or_else(|| bad_parameter("ch-ids-pid is required"))?;
        Ok(Pid::parse(pid, self.limits.max_pid_length)?)
    }

    /// The paging, order and date window of a page query.
    pub fn query(&self) -> Result<QueryParams, Rejection> {
        let page = positive(self.page.as_deref(), Param::Page)?.unwrap_or(1);
        let requested_size =
            positive(self.size.as_deref(), Param::Size)?.unwrap_or(DEFAULT_PAGE_SIZE);
        let order = match self.sort.as_deref() {
            None => SortOrder::Desc,
            Some(text) => SortOrder::parse(text)
                .ok_or_else(|| bad_parameter("ch-ids-sort must be asc or desc"))?,
        };
        let from_ms =
            date_bound(self.date_from.as_deref(), Param::DateFrom)?.map(|bound| bound.first_ms());
        let to_ms =
            date_bound(self.date_to.as_deref(), Param::DateTo)?.map(|bound| bound.last_ms());
        if let (Some(from), Some(to)) = (from_ms, to_ms) {
            if from > to {
                return Err(bad_parameter(
                    "ch-ids-date_from is after ch-ids-date_to: the range is empty",
                ));
            }
        }
        Ok(QueryParams {
            page,
            size: requested_size.min(self.limits.max_page_size),
            size_lowered: requested_size > self.limits.max_page_size,
            order,
            from_ms,
            to_ms,
            date_from_text: self.date_from.clone(),
            date_to_text: self.date_to.clone(),
        })
    }
}

fn positive(text: Option<&str>, param: Param) -> Result<Option<u64>, Rejection> {
    let Some(text) = text else {
        return Ok(None);
    };
    match text.parse::<u64>() {
        Ok(value) if value >= 1 => Ok(Some(value)),
        _ => Err(bad_parameter(format!(
            "{} must be an integer >= 1",
            param.header_name()
        ))),
    }
}

fn date_bound(text: Option<&str>, param: Param) -> Result<Option<DateBound>, Rejection> {
    text.map(|text| {
        DateBound::parse(text).ok_or_else(|| {
            bad_parameter(format!(
                "{} must be a date (YYYY-MM-DD) or an RFC 3339 instant",
                param.header_name()
            ))
        })
    })
    .transpose()
}

/// Which view of a process a query asks for with `ch-ids-view` (see `understand`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    /// `transfers`: the Dataspace Protocol transfer processes.
    Transfers,
    /// `contracts`: the agreements and what was requested under them.
    Contracts,
}

impl ViewKind {
    /// The `ch-ids-view` value.
    pub fn name(self) -> &'static str {
        match self {
            ViewKind::Transfers => "transfers",
            ViewKind::Contracts => "contracts",
        }
    }

    /// The view a `ch-ids-view` value names.
    pub fn parse(name: &str) -> Option<Self> {
        [ViewKind::Transfers, ViewKind::Contracts]
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
    }
}

/// The stored header's property that records a LogMessage's `ch-ids-direction: received`, so
/// that the entry itself says it (and a view rebuilt from an export reads it too).
pub const DIRECTION_PROPERTY: &str = "ch-ids-direction";

/// Entry order by sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

impl SortOrder {
    fn parse(text: &str) -> Option<Self> {
        if text.eq_ignore_ascii_case("asc") {
            Some(Self::Asc)
        } else if text.eq_ignore_ascii_case("desc") {
            Some(Self::Desc)
        } else {
            None
        }
    }

    /// The spelling used in `ch-ids-sort` and in the page payload's `order`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// One end of a date window. A calendar day is a span, an instant a point: `date_from` takes
/// the first millisecond of it and `date_to` the last, which makes whole days inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DateBound {
    /// `YYYY-MM-DD`, a whole UTC day.
    Day(Date),
    /// An RFC 3339 date-time with any offset.
    Instant(OffsetDateTime),
}

impl DateBound {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        if let Some(day) = parse_day(text) {
            return Some(Self::Day(day));
        }
        OffsetDateTime::parse(text, &Rfc3339)
            .ok()
            .map(Self::Instant)
    }

    /// Unix milliseconds of the earliest instant in the bound.
    pub(crate) fn first_ms(&self) -> i64 {
        match self {
            Self::Day(day) => unix_ms(day.midnight().assume_utc()),
            Self::Instant(instant) => unix_ms(*instant),
        }
    }

    /// Unix milliseconds of the latest instant in the bound.
    pub(crate) fn last_ms(&self) -> i64 {
        match self {
            Self::Day(_) => self.first_ms() + MS_PER_DAY - 1,
            Self::Instant(instant) => unix_ms(*instant),
        }
    }
}

/// Entries carry millisecond timestamps, so a sub-millisecond bound rounds down: the entry
/// stamped in that millisecond counts as inside it.
fn unix_ms(instant: OffsetDateTime) -> i64 {
    instant.unix_timestamp() * 1000 + i64::from(instant.millisecond())
}

/// Exactly `YYYY-MM-DD`: the time crate's own parser would also accept signs and longer years.
fn parse_day(text: &str) -> Option<Date> {
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shape_ok {
        return None;
    }
    let year: i32 = text[0..4].parse().ok()?;
    let month: u8 = text[5..7].parse().ok()?;
    let day: u8 = text[8..10].parse().ok()?;
    Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()
}

/// A validated page query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParams {
    /// The page, from 1.
    pub page: u64,
    /// Entries per page, at most `limits.max_page_size`.
    pub size: u64,
    /// The client asked for more than `limits.max_page_size` and gets that many instead.
    pub size_lowered: bool,
    /// The order of the entries.
    pub order: SortOrder,
    /// Inclusive lower bound on the entry timestamp, unix ms.
    pub from_ms: Option<i64>,
    /// Inclusive upper bound on the entry timestamp, unix ms.
    pub to_ms: Option<i64>,
    /// The parameters as sent, echoed in the page payload: `ch-ids-date_from`.
    pub date_from_text: Option<String>,
    /// `ch-ids-date_to` as sent.
    pub date_to_text: Option<String>,
}

impl QueryParams {
    /// How many entries precede this page. Saturates, so an absurd page number reads past the
    /// end (an empty page) instead of overflowing.
    pub fn offset(&self) -> u64 {
        (self.page - 1).saturating_mul(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RejectionReason;

    fn headers(pairs: &[(&str, &str)]) -> Vec<HeaderEntry> {
        pairs
            .iter()
            .map(|(name, value)| HeaderEntry {
                name: (*name).to_owned(),
                value: (*value).to_owned(),
            })
            .collect()
    }

    fn params(pairs: &[(&str, &str)]) -> ChParams {
        ChParams::parse(&headers(pairs), &ParamLimits::default()).unwrap()
    }

    fn query(pairs: &[(&str, &str)]) -> Result<QueryParams, Rejection> {
        params(pairs).query()
    }

    fn assert_bad(result: Result<impl std::fmt::Debug, Rejection>, naming: &str) {
        let rejection = result.unwrap_err();
        assert_eq!(rejection.reason, RejectionReason::BadParameters);
        assert_eq!(rejection.status, 400);
        assert!(
            rejection.message.contains(naming),
            "message {:?} should name {naming}",
            rejection.message
        );
    }

    /// 2024-03-10T00:00:00Z in unix ms.
    const MARCH_10_MS: i64 = 1_710_028_800_000;

    #[test]
    fn names_are_case_insensitive_and_unknown_headers_ignored() {
        let parsed = params(&[
            ("CH-IDS-PID", "p-1"),
            ("Ch-Ids-Id", "doc-1"),
            ("content-type", "text/plain"),
            ("ch-ids-future", "x"),
            ("X-Other", "y"),
        ]);
        assert_eq!(
            parsed,
            ChParams {
                pid: Some("p-1".into()),
                id: Some("doc-1".into()),
                content_type: Some("text/plain".into()),
                ..ChParams::default()
            }
        );
    }

    #[test]
    fn both_date_spellings_are_accepted() {
        let underscore = params(&[
            ("ch-ids-date_from", "2024-03-10"),
            ("ch-ids-date_to", "2024-03-11"),
        ]);
        let hyphen = params(&[
            ("ch-ids-date-from", "2024-03-10"),
            ("ch-ids-date-to", "2024-03-11"),
        ]);
        assert_eq!(underscore, hyphen);
        assert_eq!(underscore.date_from.as_deref(), Some("2024-03-10"));
        assert_eq!(underscore.date_to.as_deref(), Some("2024-03-11"));
    }

    #[test]
    fn repeated_parameter_must_agree() {
        let same = params(&[
            ("ch-ids-date_from", "2024-03-10"),
            ("ch-ids-date-from", "2024-03-10"),
        ]);
        assert_eq!(same.date_from.as_deref(), Some("2024-03-10"));
        assert_bad(
            ChParams::parse(
                &headers(&[
                    ("ch-ids-date_from", "2024-03-10"),
                    ("ch-ids-date-from", "2024-03-11"),
                ]),
                &ParamLimits::default(),
            ),
            "ch-ids-date_from",
        );
    }

    #[test]
    fn values_are_trimmed() {
        let parsed = params(&[("ch-ids-pid", " p-1 "), ("ch-ids-page", " 2\t")]);
        assert_eq!(parsed.pid().unwrap().as_str(), "p-1");
        assert_eq!(parsed.query().unwrap().page, 2);
    }

    #[test]
    fn pid_is_required() {
        assert_bad(params(&[]).pid(), "ch-ids-pid");
    }

    #[test]
    fn pid_accepts_every_allowed_character_and_255_chars() {
        let all = "AZaz09._:~-";
        assert_eq!(params(&[("ch-ids-pid", all)]).pid().unwrap().as_str(), all);
        let longest = "p".repeat(255);
        assert_eq!(
            params(&[("ch-ids-pid", &longest)]).pid().unwrap().as_str(),
            longest
        );
    }

    #[test]
    fn pid_rejects_bad_length_characters_and_reserved() {
        for bad in ["", &"p".repeat(256), "a b", "a/b", "ä", "a#b", "a%2F"] {
            assert_bad(params(&[("ch-ids-pid", bad)]).pid(), "ch-ids-pid");
        }
        assert_bad(params(&[("ch-ids-pid", "default")]).pid(), "reserved");
        assert_eq!(
            params(&[("ch-ids-pid", "Default")]).pid().unwrap().as_str(),
            "Default"
        );
    }

    #[test]
    fn query_defaults() {
        let q = query(&[]).unwrap();
        assert_eq!(
            q,
            QueryParams {
                page: 1,
                size: 100,
                size_lowered: false,
                order: SortOrder::Desc,
                from_ms: None,
                to_ms: None,
                date_from_text: None,
                date_to_text: None,
            }
        );
        assert_eq!(q.offset(), 0);
    }

    #[test]
    fn page_and_size_must_be_positive_integers() {
        for bad in ["0", "-1", "1.5", "abc", "", "18446744073709551616"] {
            assert_bad(query(&[("ch-ids-page", bad)]), "ch-ids-page");
            assert_bad(query(&[("ch-ids-size", bad)]), "ch-ids-size");
        }
        let q = query(&[("ch-ids-page", "3"), ("ch-ids-size", "7")]).unwrap();
        assert_eq!((q.page, q.size, q.size_lowered), (3, 7, false));
        assert_eq!(q.offset(), 14);
    }

    #[test]
    fn size_above_the_maximum_is_lowered_and_flagged() {
        let at_max = query(&[("ch-ids-size", "1000")]).unwrap();
        assert_eq!((at_max.size, at_max.size_lowered), (1000, false));
        let above = query(&[("ch-ids-size", "1001")]).unwrap();
        assert_eq!((above.size, above.size_lowered), (1000, true));
    }

    #[test]
    fn offset_saturates_on_huge_pages() {
        let q = query(&[("ch-ids-page", &u64::MAX.to_string())]).unwrap();
        assert_eq!(q.offset(), u64::MAX);
    }

    #[test]
    fn sort_is_asc_or_desc_in_any_case() {
        assert_eq!(
            query(&[("ch-ids-sort", "asc")]).unwrap().order,
            SortOrder::Asc
        );
        assert_eq!(
            query(&[("ch-ids-sort", "DESC")]).unwrap().order,
            SortOrder::Desc
        );
        for bad in ["ascending", "", "up"] {
            assert_bad(query(&[("ch-ids-sort", bad)]), "ch-ids-sort");
        }
    }

    #[test]
    fn whole_days_are_inclusive_to_the_millisecond() {
        let q = query(&[
            ("ch-ids-date_from", "2024-03-10"),
            ("ch-ids-date_to", "2024-03-10"),
        ])
        .unwrap();
        assert_eq!(q.from_ms, Some(MARCH_10_MS));
        assert_eq!(q.to_ms, Some(MARCH_10_MS + 86_400_000 - 1));
        assert_eq!(q.date_from_text.as_deref(), Some("2024-03-10"));
        assert_eq!(q.date_to_text.as_deref(), Some("2024-03-10"));
    }

    #[test]
    fn rfc3339_instants_with_offsets_are_exact() {
        let q = query(&[
            ("ch-ids-date_from", "2024-03-10T01:30:00.250+01:30"),
            ("ch-ids-date_to", "2024-03-10T00:00:01Z"),
        ])
        .unwrap();
        assert_eq!(q.from_ms, Some(MARCH_10_MS + 250));
        assert_eq!(q.to_ms, Some(MARCH_10_MS + 1000));
    }

    #[test]
    fn sub_millisecond_instants_round_down() {
        let q = query(&[("ch-ids-date_to", "2024-03-10T00:00:00.0009Z")]).unwrap();
        assert_eq!(q.to_ms, Some(MARCH_10_MS));
    }

    #[test]
    fn one_sided_windows_are_allowed() {
        let from_only = query(&[("ch-ids-date_from", "1969-12-31")]).unwrap();
        assert_eq!(
            (from_only.from_ms, from_only.to_ms),
            (Some(-86_400_000), None)
        );
        let to_only = query(&[("ch-ids-date-to", "1970-01-01")]).unwrap();
        assert_eq!((to_only.from_ms, to_only.to_ms), (None, Some(86_399_999)));
    }

    #[test]
    fn unparseable_dates_name_the_parameter() {
        for bad in [
            "2024-02-30",
            "2024-13-01",
            "2024-3-10",
            "+2024-03-10",
            "20240310",
            "2024-03-10T00:00:00",
            "yesterday",
            "",
        ] {
            assert_bad(query(&[("ch-ids-date_from", bad)]), "ch-ids-date_from");
            assert_bad(query(&[("ch-ids-date-to", bad)]), "ch-ids-date_to");
        }
    }

    #[test]
    fn from_after_to_is_rejected_but_equal_instants_are_not() {
        assert_bad(
            query(&[
                ("ch-ids-date_from", "2024-03-11"),
                ("ch-ids-date_to", "2024-03-10"),
            ]),
            "ch-ids-date_from",
        );
        assert_bad(
            query(&[
                ("ch-ids-date_from", "2024-03-10T00:00:00.001Z"),
                ("ch-ids-date_to", "2024-03-10T00:00:00Z"),
            ]),
            "ch-ids-date_to",
        );
        let point = query(&[
            ("ch-ids-date_from", "2024-03-10T00:00:00Z"),
            ("ch-ids-date_to", "2024-03-10T00:00:00Z"),
        ])
        .unwrap();
        assert_eq!(point.from_ms, point.to_ms);
    }

    fn limited(max_parameters: usize, max_parameter_bytes: usize) -> ParamLimits {
        ParamLimits {
            max_parameters,
            max_parameter_bytes,
            max_pid_length: 8,
            max_page_size: 10,
        }
    }

    fn assert_too_large(result: Result<ChParams, Rejection>, setting: &str) {
        let rejection = result.unwrap_err();
        assert_eq!(rejection.reason, RejectionReason::BadParameters);
        assert_eq!(rejection.status, 413);
        assert!(rejection.message.contains(setting), "{}", rejection.message);
        assert_eq!(rejection.limit.map(|limit| limit.setting), Some(setting));
    }

    #[test]
    fn extra_headers_are_bounded_in_number_and_size_known_or_not() {
        let limits = limited(2, 20);
        let two = headers(&[("ch-ids-pid", "p-1"), ("X-Other", "y")]);
        assert!(ChParams::parse(&two, &limits).is_ok());
        let three = headers(&[("ch-ids-pid", "p-1"), ("X-Other", "y"), ("X-More", "z")]);
        assert_too_large(ChParams::parse(&three, &limits), "limits.max_parameters");
        // 10 + 10 bytes fit, one more does not, in the name as in the value.
        let at_limit = headers(&[("content-type", "text/pla")]);
        assert!(ChParams::parse(&at_limit, &limits).is_ok());
        for long in [
            ("content-type", "text/plain"),
            ("x-unknown-header", "abcde"),
        ] {
            assert_too_large(
                ChParams::parse(&headers(&[long]), &limits),
                "limits.max_parameter_bytes",
            );
        }
    }

    #[test]
    fn pid_length_and_page_size_follow_the_limits() {
        let limits = limited(8, 1024);
        let parse = |pairs: &[(&str, &str)]| ChParams::parse(&headers(pairs), &limits).unwrap();
        assert_eq!(
            parse(&[("ch-ids-pid", "12345678")]).pid().unwrap().as_str(),
            "12345678"
        );
        let rejection = parse(&[("ch-ids-pid", "123456789")]).pid().unwrap_err();
        assert_eq!(rejection.status, 400);
        assert_eq!(
            rejection.limit.map(|limit| (limit.setting, limit.value)),
            Some(("limits.max_pid_length", 8))
        );
        let query = parse(&[("ch-ids-size", "11")]).query().unwrap();
        assert_eq!((query.size, query.size_lowered), (10, true));
    }
}
