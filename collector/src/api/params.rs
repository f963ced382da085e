//! Query parameters: every route lists the ones it accepts, and anything
//! missing, malformed, repeated or unknown is a 400 naming the parameter.

use axum::extract::{FromRequestParts, Query};
use axum::http::header::ACCEPT;
use axum::http::request::Parts;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Unit};

use super::ApiError;
use super::table::Format;
use crate::reconcile::PeriodUnit;
use crate::verified::{Edge, GroupBy, Range};

/// What `from` and `to` accept, for error messages.
pub const EDGE_ACCEPTED: &str = "a local date YYYY-MM-DD (e.g. 2025-03-01) or an RFC 3339 instant with offset (e.g. 2025-03-01T08:00:00%2B08:00 or 2025-03-01T00:00:00Z)";

/// The most periods one hours answer may have (`period` over `[from, to)`):
/// 13 years of days, 416 of months. More would be an answer of hundreds of
/// megabytes that takes minutes to make.
pub const MAX_PERIODS: i64 = 5000;

/// The query string and the `Accept` header of a request.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    accept: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::bad_parameter("query", format!("bad query string: {e}")))?;
        let accept = parts
            .headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Self { pairs, accept })
    }
}

impl Params {
    /// Parameters from pairs (the `report` command, tests).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Self {
            pairs,
            accept: None,
        }
    }

    /// 400 for a parameter not in `accepted` or given twice.
    pub fn only(&self, accepted: &[&str]) -> Result<(), ApiError> {
        for (i, (name, _)) in self.pairs.iter().enumerate() {
            if !accepted.contains(&name.as_str()) {
                let list = if accepted.is_empty() {
                    "this route takes no parameters".to_owned()
                } else {
                    format!("accepted: {}", accepted.join(", "))
                };
                return Err(ApiError::bad_parameter(
                    name.clone(),
                    format!("unknown parameter {name:?}; {list}"),
                ));
            }
            if self.pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(ApiError::bad_parameter(
                    name.clone(),
                    format!("{name} is given twice; give it once"),
                ));
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A non-empty text parameter, if given.
    pub fn text(&self, name: &'static str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Err(ApiError::bad_parameter(
                name,
                format!("{name} is empty; leave it out or give a value"),
            )),
            Some(v) => Ok(Some(v.to_owned())),
        }
    }

    /// The required `from` and `to`; `to` must be after `from` when both are
    /// dates or both instants.
    pub fn range(&self) -> Result<Range, ApiError> {
        let from = self.edge("from")?;
        let to = self.edge("to")?;
        let ordered = match (from, to) {
            (Edge::Date(f), Edge::Date(t)) => t > f,
            (Edge::Instant(f), Edge::Instant(t)) => t > f,
            _ => true,
        };
        if !ordered {
            return Err(ApiError::bad_parameter(
                "to",
                format!(
                    "to ({}) is not after from ({}); the range is [from, to)",
                    edge_text(&to),
                    edge_text(&from)
                ),
            ));
        }
        Ok(Range { from, to })
    }

    fn edge(&self, name: &'static str) -> Result<Edge, ApiError> {
        let text = self.get(name).ok_or_else(|| {
            ApiError::bad_parameter(name, format!("{name} is required: {EDGE_ACCEPTED}"))
        })?;
        parse_edge(text).ok_or_else(|| {
            ApiError::bad_parameter(name, format!("{name}={text:?} is not {EDGE_ACCEPTED}"))
        })
    }

    /// `period`: day, month or year; absent: the whole range.
    pub fn period(&self) -> Result<Option<PeriodUnit>, ApiError> {
        self.get("period")
            .map(|v| {
                parse_period(v).ok_or_else(|| {
                    ApiError::bad_parameter(
                        "period",
                        format!("period={v:?} is not one of: day, month, year"),
                    )
                })
            })
            .transpose()
    }

    /// 400 naming `period` when `period` splits `range` into more than
    /// [`MAX_PERIODS`] periods (counted in UTC, with one to spare at each end
    /// for the instruments' zones).
    pub fn check_period_count(range: &Range, period: Option<PeriodUnit>) -> Result<(), ApiError> {
        let Some(period) = period else { return Ok(()) };
        let date = |edge: &Edge| match edge {
            Edge::Date(d) => *d,
            Edge::Instant(t) => t.to_zoned(TimeZone::UTC).date(),
        };
        let (from, to) = (date(&range.from), date(&range.to));
        let (unit, name) = match period {
            PeriodUnit::Day => (Unit::Day, "day"),
            PeriodUnit::Month => (Unit::Month, "month"),
            PeriodUnit::Year => (Unit::Year, "year"),
        };
        let count = from.until((unit, to)).map_or(i64::MAX, |span| {
            i64::from(match period {
                PeriodUnit::Day => span.get_days(),
                PeriodUnit::Month => span.get_months(),
                PeriodUnit::Year => span.get_years().into(),
            }) + 2
        });
        if count > MAX_PERIODS {
            return Err(ApiError::bad_parameter(
                "period",
                format!(
                    "period={name} splits this range into about {count} periods; at most {MAX_PERIODS} are answered: ask for a longer period or a shorter range"
                ),
            ));
        }
        Ok(())
    }

    /// `group_by`: instrument (default), unit or usage_type.
    pub fn group_by(&self) -> Result<GroupBy, ApiError> {
        match self.get("group_by") {
            None => Ok(GroupBy::default()),
            Some(v) => parse_group_by(v).ok_or_else(|| {
                ApiError::bad_parameter(
                    "group_by",
                    format!("group_by={v:?} is not one of: instrument, unit, usage_type"),
                )
            }),
        }
    }

    /// `true` or `false`; absent: false.
    pub fn flag(&self, name: &'static str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(ApiError::bad_parameter(
                name,
                format!("{name}={v:?} is not true or false"),
            )),
        }
    }

    /// `format=csv|json`, else the `Accept` header ([`negotiate`]).
    pub fn format(&self) -> Result<Format, ApiError> {
        if let Some(v) = self.get("format") {
            return Format::parse(v).ok_or_else(|| {
                ApiError::bad_parameter("format", format!("format={v:?} is not csv or json"))
            });
        }
        negotiate(self.accept.as_deref().unwrap_or("")).map_err(ApiError::not_acceptable)
    }
}

/// The answer's format for an `Accept` header (RFC 9110 §12.5.1): each of
/// `text/csv` and `application/json` takes the `q` of the most specific
/// range naming it (exact, then `text/*` or `application/*`, then `*/*`);
/// the higher `q` wins, a tie goes to the one listed first. `q=0` means
/// "not acceptable": that format is never chosen. A header naming neither
/// (e.g. a browser's `text/html`) gets JSON; one refusing JSON without
/// accepting CSV gets an error saying what this API serves.
pub fn negotiate(accept: &str) -> Result<Format, String> {
    // Per format: (specificity, q, position) of the best range naming it.
    let mut best: [Option<(u8, f32, usize)>; 2] = [None, None];
    for (pos, range) in accept.split(',').enumerate() {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(1.0));
        for (i, (exact, family)) in [
            ("text/csv", "text/*"),
            ("application/json", "application/*"),
        ]
        .into_iter()
        .enumerate()
        {
            let specificity = match media.as_str() {
                m if m == exact => 3,
                m if m == family => 2,
                "*/*" => 1,
                _ => continue,
            };
            if best[i].is_none_or(|(s, _, _)| specificity > s) {
                best[i] = Some((specificity, q, pos));
            }
        }
    }
    let acceptable = |i: usize| best[i].filter(|&(_, q, _)| q > 0.0);
    match (acceptable(0), acceptable(1)) {
        (Some((_, qc, pc)), Some((_, qj, pj))) => Ok(if qc > qj || qc == qj && pc < pj {
            Format::Csv
        } else {
            Format::Json
        }),
        (Some(_), None) => Ok(Format::Csv),
        (None, Some(_)) => Ok(Format::Json),
        (None, None) if best[1].is_none() => Ok(Format::Json),
        (None, None) => Err(format!(
            "Accept {accept:?} refuses application/json and does not accept text/csv; \
             this API answers application/json or text/csv (or pass format=json|csv)"
        )),
    }
}

/// `YYYY-MM-DD` (a local date) or an RFC 3339 instant with an offset. A
/// space where the offset's `+` belongs (an unencoded `+` in a URL) is read
/// as `+`.
pub fn parse_edge(text: &str) -> Option<Edge> {
    let text = text.trim();
    let b = text.as_bytes();
    let date_shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if date_shaped {
        return text.parse::<Date>().ok().map(Edge::Date);
    }
    if b.len() < 20 || b[10] != b'T' && b[10] != b't' {
        return None;
    }
    text.replace(' ', "+")
        .parse::<Timestamp>()
        .ok()
        .map(Edge::Instant)
}

pub fn parse_period(text: &str) -> Option<PeriodUnit> {
    match text {
        "day" => Some(PeriodUnit::Day),
        "month" => Some(PeriodUnit::Month),
        "year" => Some(PeriodUnit::Year),
        _ => None,
    }
}

pub fn parse_group_by(text: &str) -> Option<GroupBy> {
    match text {
        "instrument" => Some(GroupBy::Instrument),
        "unit" => Some(GroupBy::Unit),
        "usage_type" => Some(GroupBy::UsageType),
        _ => None,
    }
}

/// How an edge is echoed in answers: the date, or the instant in UTC.
pub fn edge_text(edge: &Edge) -> String {
    match edge {
        Edge::Date(d) => d.to_string(),
        Edge::Instant(t) => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_dates_or_instants_with_an_offset() {
        assert_eq!(
            parse_edge("2025-03-01"),
            Some(Edge::Date(jiff::civil::date(2025, 3, 1)))
        );
        let eight = "2025-03-01T00:00:00Z".parse::<Timestamp>().unwrap();
        assert_eq!(
            parse_edge("2025-03-01T08:00:00+08:00"),
            Some(Edge::Instant(eight))
        );
        assert_eq!(
            parse_edge("2025-03-01T08:00:00 08:00"),
            Some(Edge::Instant(eight))
        );
        assert_eq!(parse_edge("2025-03-01T08:00:00"), None);
        assert_eq!(parse_edge("2025-02-30"), None);
        assert_eq!(parse_edge("20250301"), None);
        assert_eq!(parse_edge("yesterday"), None);
    }

    #[test]
    fn accept_q_zero_is_never_chosen() {
        let f = |a: &str| negotiate(a);
        assert_eq!(f(""), Ok(Format::Json));
        assert_eq!(f("text/html"), Ok(Format::Json));
        assert_eq!(f("text/csv"), Ok(Format::Csv));
        // Listed first but refused.
        assert_eq!(f("text/csv;q=0, application/json"), Ok(Format::Json));
        assert_eq!(f("application/json; q=0, text/csv;q=0.5"), Ok(Format::Csv));
        assert_eq!(f("application/json;q=0.0, */*"), Ok(Format::Csv));
        // A specific q=0 beats the wildcard that would allow it.
        assert_eq!(f("*/*, text/csv;q=0"), Ok(Format::Json));
        assert_eq!(f("text/*;q=0, */*;q=0.5"), Ok(Format::Json));
        // Higher q wins over order; equal q goes to the one listed first.
        assert_eq!(
            f("text/csv;q=0.2, application/json;q=0.8"),
            Ok(Format::Json)
        );
        assert_eq!(f("application/json;q=0.3, text/csv"), Ok(Format::Csv));
        assert_eq!(f("text/csv, application/json"), Ok(Format::Csv));
        assert_eq!(f("application/json, text/csv"), Ok(Format::Json));
        // Nothing this API serves is acceptable.
        let e = f("application/json;q=0").unwrap_err();
        assert!(e.contains("refuses application/json"), "{e}");
        assert!(f("*/*;q=0").is_err());
        assert!(f("text/csv;q=0, application/json;q=0").is_err());
    }
}
