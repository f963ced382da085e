//! The two answer formats: JSON, and CSV made from the same rows by one
//! generic flattening (docs/api.md, "CSV columns"):
//!
//! - columns follow the row type's field order, taken from its default value,
//!   so they are the same whatever the data (and a header is written for no rows);
//! - a nested object becomes `parent.child` columns;
//! - a `by_usage_type` map becomes one column per usage type in the fixed
//!   order [`USAGE_TYPE_COLUMNS`] (other keys, should any appear, are appended);
//! - a list is joined with `;` (an object in a list is written as compact JSON);
//! - `null` is empty.

use std::collections::HashMap;
use std::fmt;

use jiff::Timestamp;
use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;

use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::params::edge_text;
use crate::reconcile::PeriodUnit;
use crate::verified::{GroupBy, HoursQuery, HoursRow, HoursRows, UsageTypeRow};

/// The `by_usage_type` columns, in this order.
pub const USAGE_TYPE_COLUMNS: [&str; 6] = [
    "teaching",
    "research",
    "external",
    "training",
    "maintenance",
    "unassigned",
];

pub const CSV_CONTENT_TYPE: &str = "text/csv; charset=utf-8";
pub const JSON_CONTENT_TYPE: &str = "application/json";
pub const XLSX_CONTENT_TYPE: &str =
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// An answer's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "json" => Some(Self::Json),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => JSON_CONTENT_TYPE,
            Self::Csv => CSV_CONTENT_TYPE,
        }
    }
}

/// `GET /api/v1/hours` (and `report --format json`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HoursResponse {
    /// The range's start as asked: a date, or an instant in UTC.
    pub from: String,
    /// The range's end (exclusive).
    pub to: String,
    /// `null`: the whole range is one period.
    pub period: Option<PeriodUnit>,
    pub group_by: GroupBy,
    /// The figures of the selected instruments are final before this
    /// instant (UTC); a row whose period ends later is `provisional`.
    /// `null`: some instrument has settled nothing yet (docs/verified.md).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub settled_through: Option<Timestamp>,
    /// `HoursRow`s, or `UsageTypeRow`s when grouped by usage type.
    pub rows: HoursRowsBody,
}

/// The rows of an hours answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum HoursRowsBody {
    Totals(Vec<HoursRow>),
    UsageTypes(Vec<UsageTypeRow>),
}

/// `anyOf` the two lists, not the `oneOf` utoipa derives for an untagged
/// enum: no rows (`[]`) is a list of either, which `oneOf` forbids.
impl utoipa::PartialSchema for HoursRowsBody {
    fn schema() -> RefOr<Schema> {
        let list = |name: &str| ArrayBuilder::new().items(Ref::from_schema_name(name));
        AnyOfBuilder::new()
            .item(list("HoursRow"))
            .item(list("UsageTypeRow"))
            .description(Some("The rows of an hours answer."))
            .into()
    }
}

impl ToSchema for HoursRowsBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("HoursRowsBody")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((HoursRow::name().into_owned(), HoursRow::schema()));
        <HoursRow as ToSchema>::schemas(schemas);
        schemas.push((UsageTypeRow::name().into_owned(), UsageTypeRow::schema()));
        <UsageTypeRow as ToSchema>::schemas(schemas);
    }
}

impl HoursResponse {
    pub fn new(query: &HoursQuery, rows: HoursRows, settled_through: Option<Timestamp>) -> Self {
        Self {
            settled_through,
            from: edge_text(&query.range.from),
            to: edge_text(&query.range.to),
            period: query.period,
            group_by: query.group_by,
            rows: match rows {
                HoursRows::Totals(r) => HoursRowsBody::Totals(r),
                HoursRows::UsageTypes(r) => HoursRowsBody::UsageTypes(r),
            },
        }
    }
}

/// The body of an hours answer in `format`: what the API sends and what
/// `labhours-collector report` prints.
pub fn hours_body(
    query: &HoursQuery,
    rows: HoursRows,
    settled_through: Option<Timestamp>,
    format: Format,
) -> anyhow::Result<Vec<u8>> {
    Ok(match format {
        Format::Json => serde_json::to_vec(&HoursResponse::new(query, rows, settled_through))?,
        Format::Csv => match rows {
            HoursRows::Totals(r) => to_csv(&r)?,
            HoursRows::UsageTypes(r) => to_csv(&r)?,
        },
    })
}

/// A CSV answer as an Excel workbook (`format=xlsx` of `GET /hours`): one
/// sheet with the same columns, a bold frozen header, and every cell that
/// reads as a number written as a number.
pub fn csv_to_xlsx(csv_bytes: &[u8], sheet_name: &str) -> anyhow::Result<Vec<u8>> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet().set_name(sheet_name)?;
    let bold = rust_xlsxwriter::Format::new().set_bold();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv_bytes);
    for (r, record) in reader.records().enumerate() {
        let record = record?;
        let row = u32::try_from(r)?;
        for (c, cell) in record.iter().enumerate() {
            let col = u16::try_from(c)?;
            if r == 0 {
                sheet.write_string_with_format(row, col, cell, &bold)?;
            } else if let Some(n) = cell.parse::<f64>().ok().filter(|n| n.is_finite()) {
                sheet.write_number(row, col, n)?;
            } else if !cell.is_empty() {
                sheet.write_string(row, col, cell)?;
            }
        }
    }
    sheet.set_freeze_panes(1, 0)?;
    Ok(book.save_to_buffer()?)
}

/// Rows as CSV: a header, then one line per row (see the module doc).
pub fn to_csv<T: Serialize + Default>(rows: &[T]) -> anyhow::Result<Vec<u8>> {
    let mut columns: Vec<String> = flatten_value(&T::default())?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut lines = Vec::with_capacity(rows.len());
    for row in rows {
        let cells = flatten_value(row)?;
        for (key, _) in &cells {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
        lines.push(cells.into_iter().collect::<HashMap<_, _>>());
    }
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(&columns)?;
    for line in &lines {
        out.write_record(
            columns
                .iter()
                .map(|c| line.get(c).map_or("", String::as_str)),
        )?;
    }
    out.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

/// `(column, cell)` pairs of one row, in field order.
fn flatten_value<T: Serialize>(row: &T) -> anyhow::Result<Vec<(String, String)>> {
    // Through JSON text, read back keeping the key order (serde_json's own
    // map type may sort keys).
    let bytes = serde_json::to_vec(row)?;
    let node: Node = serde_json::from_slice(&bytes)?;
    let mut out = Vec::new();
    flatten(&node, "", "", &mut out);
    Ok(out)
}

fn flatten(node: &Node, column: &str, key: &str, out: &mut Vec<(String, String)>) {
    let join = |k: &str| {
        if column.is_empty() {
            k.to_owned()
        } else {
            format!("{column}.{k}")
        }
    };
    match node {
        Node::Map(entries) if key == "by_usage_type" => {
            for usage in USAGE_TYPE_COLUMNS {
                let cell = entries
                    .iter()
                    .find(|(k, _)| k == usage)
                    .map_or_else(String::new, |(_, v)| v.cell());
                out.push((join(usage), cell));
            }
            for (k, v) in entries {
                if !USAGE_TYPE_COLUMNS.contains(&k.as_str()) {
                    out.push((join(k), v.cell()));
                }
            }
        }
        Node::Map(entries) => {
            for (k, v) in entries {
                flatten(v, &join(k), k, out);
            }
        }
        other => out.push((column.to_owned(), other.cell())),
    }
}

/// A JSON value that keeps its keys in order.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    /// A number as JSON writes it.
    Number(String),
    Str(String),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    /// The CSV cell of a value.
    fn cell(&self) -> String {
        match self {
            Node::Null => String::new(),
            Node::Str(s) => s.clone(),
            Node::List(items) => items
                .iter()
                .map(|i| match i {
                    Node::Map(_) | Node::List(_) => i.json(),
                    scalar => scalar.cell(),
                })
                .collect::<Vec<_>>()
                .join(";"),
            other => other.json(),
        }
    }

    /// Compact JSON text.
    fn json(&self) -> String {
        match self {
            Node::Null => "null".into(),
            Node::Bool(b) => b.to_string(),
            Node::Number(n) => n.clone(),
            Node::Str(s) => serde_json::to_string(s).unwrap_or_default(),
            Node::List(items) => format!(
                "[{}]",
                items.iter().map(Node::json).collect::<Vec<_>>().join(",")
            ),
            Node::Map(entries) => format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|(k, v)| format!(
                        "{}:{}",
                        serde_json::to_string(k).unwrap_or_default(),
                        v.json()
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Node::Null, |n| Node::Number(n.to_string())))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Node>()? {
            entries.push((k, v));
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verified::{OutcomeRow, SegmentRow, SessionRow};

    #[test]
    fn an_empty_list_still_has_its_header() {
        let csv = String::from_utf8(to_csv::<SessionRow>(&[]).unwrap()).unwrap();
        assert_eq!(
            csv,
            "session_id,instrument_id,start,end,duration_s,dropped,result_files,segments\n"
        );
    }

    #[test]
    fn lists_are_joined_objects_in_lists_are_json_and_nulls_are_empty() {
        let row = SessionRow {
            session_id: "s1".into(),
            instrument_id: "nmr-600".into(),
            start: "a".into(),
            end: "b".into(),
            duration_s: 60.5,
            dropped: false,
            result_files: vec!["x:1".into(), "x:2".into()],
            segments: vec![SegmentRow {
                start: "a".into(),
                end: "b".into(),
                booking_id: None,
            }],
        };
        let csv = String::from_utf8(to_csv(&[row]).unwrap()).unwrap();
        let line = csv.lines().nth(1).unwrap();
        assert_eq!(
            line,
            r#"s1,nmr-600,a,b,60.5,false,x:1;x:2,"{""start"":""a"",""end"":""b"",""booking_id"":null}""#
        );
        let outcome = OutcomeRow {
            first_use: None,
            flags: vec!["late_start".into(), "overrun".into()],
            ..OutcomeRow::default()
        };
        let csv = String::from_utf8(to_csv(&[outcome]).unwrap()).unwrap();
        assert!(csv.contains(",late_start;overrun,"), "{csv}");
    }
}
