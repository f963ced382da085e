//! The evaluation report (`/report?year=&period=year|month&unit=`):
//! verified hours per instrument and month or year under the names Chinese
//! evaluations use (有效工作机时, 对外服务机时, 共享率, 开放机时), corrected
//! figures beside uncorrected ones, totals per unit; the same table as CSV
//! (`/report.csv`) and as an Excel workbook (`/report.xlsx`).
//!
//! [`Table`] is the one description of the columns all three use.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use jiff::civil::date;
use serde::Deserialize;

use super::i18n::Lang;
use super::page::{Page, hours, percent};
use super::session::{Viewer, url_encode};
use super::{DashState, PageError, blocking};
use crate::reconcile::PeriodUnit;
use crate::verified::{Edge, GroupBy, HoursQuery, HoursRow, HoursRows, Range};

/// Instrument rows per page on screen (downloads hold every row).
pub const PER_PAGE: usize = 100;

/// A cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    /// Hours (two decimals on screen).
    Hours(f64),
    Count(u64),
    /// A ratio (a percentage on screen); `None`: unknown.
    Ratio(Option<f64>),
}

impl Cell {
    /// As the page and the CSV show it.
    pub fn text(&self) -> String {
        match self {
            Cell::Text(t) => t.clone(),
            Cell::Hours(h) => hours(*h),
            Cell::Count(n) => n.to_string(),
            Cell::Ratio(r) => percent(*r),
        }
    }

    pub fn numeric(&self) -> bool {
        !matches!(self, Cell::Text(_))
    }
}

/// A period by its edges: `2025` for a whole year, `2025-03` for a whole
/// month, else its first date.
pub fn period_label(start: &str, end: &str) -> String {
    let (s, e) = (
        start.get(0..10).unwrap_or(start),
        end.get(0..10).unwrap_or(end),
    );
    let year = |d: &str| d.get(0..4).and_then(|y| y.parse::<i32>().ok());
    let first_of_month = |d: &str| d.get(7..) == Some("-01");
    if s.get(4..) == Some("-01-01")
        && e.get(4..) == Some("-01-01")
        && year(s).zip(year(e)).is_some_and(|(a, b)| b == a + 1)
    {
        s[..4].to_owned()
    } else if first_of_month(s) && first_of_month(e) && s != e {
        s[..7].to_owned()
    } else {
        s.to_owned()
    }
}

/// How a row fills a column.
pub type Fill = fn(&HoursRow) -> Cell;

/// The report's columns: label key and how a row fills it.
pub const COLUMNS: &[(&str, Fill)] = &[
    ("report.col.instrument", |r| {
        Cell::Text(r.instrument_id.clone().unwrap_or_default())
    }),
    ("report.col.name", |r| {
        Cell::Text(r.name.clone().unwrap_or_default())
    }),
    ("report.col.unit", |r| {
        Cell::Text(r.unit.clone().unwrap_or_default())
    }),
    ("report.col.period", |r| {
        Cell::Text(period_label(&r.period_start, &r.period_end))
    }),
    ("report.col.effective", |r| Cell::Hours(r.used_hours)),
    ("report.col.external", |r| Cell::Hours(r.external_hours)),
    ("report.col.external_corrected", |r| {
        Cell::Hours(r.corrected.external_hours)
    }),
    ("report.col.share_rate", |r| Cell::Ratio(r.share_rate)),
    ("report.col.share_rate_corrected", |r| {
        Cell::Ratio(r.corrected.share_rate)
    }),
    ("report.col.open_hours", |r| {
        r.open_hours.map_or(Cell::Text(String::new()), Cell::Hours)
    }),
    ("report.col.utilization", |r| Cell::Ratio(r.utilization)),
    ("report.col.booked", |r| Cell::Hours(r.booked_hours)),
    ("report.col.unbooked", |r| Cell::Hours(r.unbooked_hours)),
    ("report.col.unassigned_corrected", |r| {
        Cell::Hours(r.corrected.unbooked_hours)
    }),
    ("report.col.no_shows", |r| Cell::Count(r.no_show_count)),
    ("report.coverage", |r| Cell::Ratio(Some(r.coverage))),
    // Evidence: events in the row that came without an agent's signature
    // (0 = every figure rests on signed, chained events).
    ("report.col.unsigned_events", |r| {
        Cell::Count(r.unsigned_events)
    }),
];

/// Rows and their cells, with translated headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// Instrument rows (or unit rows: the instrument and name columns then
    /// stay empty).
    pub fn new(rows: &[HoursRow], lang: Lang) -> Self {
        Self {
            headers: COLUMNS.iter().map(|(k, _)| lang.t(k)).collect(),
            rows: rows
                .iter()
                .map(|r| COLUMNS.iter().map(|(_, f)| f(r)).collect())
                .collect(),
        }
    }

    /// CSV: a header line, then the rows as the page shows them, except
    /// that numbers are plain (hours as given, ratios as fractions).
    pub fn to_csv(&self, out: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        out.write_record(&self.headers)?;
        for row in &self.rows {
            out.write_record(row.iter().map(|c| match c {
                Cell::Text(t) => t.clone(),
                Cell::Hours(h) => format!("{h}"),
                Cell::Count(n) => n.to_string(),
                Cell::Ratio(r) => r.map(|r| format!("{r}")).unwrap_or_default(),
            }))?;
        }
        Ok(())
    }

    /// Writes the table into a worksheet: bold header, numbers as numbers
    /// (hours `0.00`, ratios `0.0%`).
    pub fn to_sheet(
        &self,
        sheet: &mut rust_xlsxwriter::Worksheet,
    ) -> Result<(), rust_xlsxwriter::XlsxError> {
        use rust_xlsxwriter::Format;
        let bold = Format::new().set_bold();
        let hours = Format::new().set_num_format("0.00");
        let pct = Format::new().set_num_format("0.0%");
        for (c, h) in self.headers.iter().enumerate() {
            sheet.write_string_with_format(0, c as u16, *h, &bold)?;
        }
        for (r, row) in self.rows.iter().enumerate() {
            let r = r as u32 + 1;
            for (c, cell) in row.iter().enumerate() {
                let c = c as u16;
                match cell {
                    Cell::Text(t) => {
                        sheet.write_string(r, c, t)?;
                    }
                    Cell::Hours(h) => {
                        sheet.write_number_with_format(r, c, *h, &hours)?;
                    }
                    Cell::Count(n) => {
                        sheet.write_number(r, c, *n as f64)?;
                    }
                    Cell::Ratio(Some(x)) => {
                        sheet.write_number_with_format(r, c, *x, &pct)?;
                    }
                    Cell::Ratio(None) => {}
                }
            }
        }
        sheet.set_freeze_panes(1, 0)?;
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReportParams {
    pub year: Option<i16>,
    /// `year` (default) or `month`.
    pub period: Option<String>,
    pub unit: Option<String>,
    pub page: Option<usize>,
}

impl ReportParams {
    fn unit(&self) -> Option<String> {
        self.unit
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
    }

    fn monthly(&self) -> bool {
        self.period.as_deref() == Some("month")
    }

    fn query_string(&self, year: i16) -> String {
        let mut q = format!("year={year}");
        if self.monthly() {
            q.push_str("&period=month");
        }
        if let Some(u) = self.unit() {
            q.push_str(&format!("&unit={}", url_encode(&u)));
        }
        q
    }
}

/// The instrument rows and the unit rows of a year.
async fn load(
    state: &DashState,
    viewer: &Viewer,
    params: &ReportParams,
) -> Result<(i16, Vec<HoursRow>, Vec<HoursRow>), PageError> {
    let year = params.year.unwrap_or_else(|| state.today().year());
    if !(1970..=9998).contains(&year) {
        return Err(PageError::new(StatusCode::BAD_REQUEST, "year out of range"));
    }
    let query = |group_by| HoursQuery {
        range: Range {
            from: Edge::Date(date(year, 1, 1)),
            to: Edge::Date(date(year + 1, 1, 1)),
        },
        instrument: None,
        unit: params.unit(),
        period: Some(if params.monthly() {
            PeriodUnit::Month
        } else {
            PeriodUnit::Year
        }),
        group_by,
    };
    let totals = |rows: HoursRows| match rows {
        HoursRows::Totals(r) => r,
        HoursRows::UsageTypes(_) => Vec::new(),
    };
    let by_instrument = query(GroupBy::Instrument);
    let by_unit = query(GroupBy::Unit);
    // The two queries in parallel (each reads its own connection).
    let (instruments, units) = tokio::try_join!(
        blocking(state, viewer, move |r| r.hours(&by_instrument)),
        blocking(state, viewer, move |r| r.hours(&by_unit)),
    )?;
    Ok((year, totals(instruments.rows), totals(units.rows)))
}

#[derive(askama::Template)]
#[template(path = "report.html")]
struct ReportTemplate {
    page: Page,
    year: i16,
    monthly: bool,
    unit: String,
    /// (id, label) of the units the viewer may pick (theirs and below).
    unit_choices: Vec<(String, String)>,
    instruments: Table,
    units: Table,
    total_rows: usize,
    /// Rows whose figures may still change (their period is not settled).
    provisional_rows: usize,
    current: usize,
    pages: usize,
    prev: Option<String>,
    next: Option<String>,
    csv_href: String,
    xlsx_href: String,
}

/// `GET /report`.
pub async fn page(
    State(state): State<DashState>,
    viewer: Viewer,
    headers: HeaderMap,
    uri: Uri,
    Query(params): Query<ReportParams>,
) -> Result<Response, PageError> {
    let (year, rows, unit_rows) = load(&state, &viewer, &params).await?;
    let path = uri
        .path_and_query()
        .map_or("/report".to_owned(), |p| p.as_str().to_owned());
    let page = Page::new(&headers, "report", &path, viewer, "report.title");
    let pages = rows.len().div_ceil(PER_PAGE).max(1);
    let current = params.page.unwrap_or(1).clamp(1, pages);
    let shown: Vec<HoursRow> = rows
        .iter()
        .skip((current - 1) * PER_PAGE)
        .take(PER_PAGE)
        .cloned()
        .collect();
    let qs = params.query_string(year);
    let link = |p: usize| format!("/report?{qs}&page={p}");
    let org = state.api.organisation();
    let scope = org.scope(page.viewer.unit.as_deref());
    let allowed: Vec<String> = org
        .units()
        .filter(|u| scope.allows_unit(&u.id))
        .map(|u| u.id.clone())
        .collect();
    let html = askama::Template::render(&ReportTemplate {
        unit_choices: super::fleet::unit_choices(&allowed, org, page.lang),
        year,
        monthly: params.monthly(),
        unit: params.unit().unwrap_or_default(),
        instruments: Table::new(&shown, page.lang),
        units: Table::new(&unit_rows, page.lang),
        total_rows: rows.len(),
        provisional_rows: rows.iter().filter(|r| r.provisional).count(),
        current,
        pages,
        prev: (current > 1).then(|| link(current - 1)),
        next: (current < pages).then(|| link(current + 1)),
        csv_href: format!("/report.csv?{qs}"),
        xlsx_href: format!("/report.xlsx?{qs}"),
        page,
    })?;
    Ok(Html(html).into_response())
}

fn download(content_type: &str, name: &str, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// The report's two tables (instruments, unit totals) in the request's language.
async fn tables(
    state: &DashState,
    viewer: &Viewer,
    headers: &HeaderMap,
    params: &ReportParams,
) -> Result<(i16, Lang, Table, Table), PageError> {
    let (year, rows, unit_rows) = load(state, viewer, params).await?;
    let lang = super::i18n::negotiate(headers);
    Ok((
        year,
        lang,
        Table::new(&rows, lang),
        Table::new(&unit_rows, lang),
    ))
}

/// `GET /report.csv`: the instrument rows, then the unit totals.
pub async fn csv(
    State(state): State<DashState>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(params): Query<ReportParams>,
) -> Result<Response, PageError> {
    let (year, _, instruments, units) = tables(&state, &viewer, &headers, &params).await?;
    // Flexible: a blank line separates the two tables.
    let mut out = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(Vec::new());
    instruments.to_csv(&mut out).map_err(PageError::internal)?;
    out.write_record([""]).map_err(PageError::internal)?;
    units.to_csv(&mut out).map_err(PageError::internal)?;
    let mut body = vec![0xEF, 0xBB, 0xBF]; // BOM: Excel reads the Chinese headers as UTF-8.
    body.extend(out.into_inner().map_err(PageError::internal)?);
    Ok(download(
        crate::api::table::CSV_CONTENT_TYPE,
        &format!("labhours-report-{year}.csv"),
        body,
    ))
}

/// The workbook: one sheet of instruments, one of unit totals.
pub fn workbook(
    instruments: &Table,
    units: &Table,
    lang: Lang,
) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    let mut book = rust_xlsxwriter::Workbook::new();
    instruments.to_sheet(
        book.add_worksheet()
            .set_name(lang.t("report.sheet_instruments"))?,
    )?;
    units.to_sheet(
        book.add_worksheet()
            .set_name(lang.t("report.sheet_units"))?,
    )?;
    book.save_to_buffer()
}

/// `GET /report.xlsx`.
pub async fn xlsx(
    State(state): State<DashState>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(params): Query<ReportParams>,
) -> Result<Response, PageError> {
    let (year, lang, instruments, units) = tables(&state, &viewer, &headers, &params).await?;
    let body = workbook(&instruments, &units, lang).map_err(PageError::internal)?;
    Ok(download(
        crate::api::table::XLSX_CONTENT_TYPE,
        &format!("labhours-report-{year}.xlsx"),
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> HoursRow {
        HoursRow {
            instrument_id: Some("nmr-600".into()),
            name: Some("NMR 600 MHz".into()),
            unit: Some("Chemistry/NMR Centre".into()),
            period_start: "2025-01-01".into(),
            period_end: "2026-01-01".into(),
            used_hours: 10.5,
            external_hours: 2.0,
            share_rate: Some(0.25),
            open_hours: Some(100.0),
            utilization: Some(0.105),
            no_show_count: 3,
            coverage: 0.98,
            ..HoursRow::default()
        }
    }

    #[test]
    fn the_table_uses_the_official_chinese_names_in_chinese() {
        let table = Table::new(&[row()], Lang::Zh);
        for name in ["有效工作机时", "对外服务机时", "共享率", "开放机时"] {
            assert!(
                table.headers.iter().any(|h| h.contains(name)),
                "{name} missing from {:?}",
                table.headers
            );
        }
        assert_eq!(table.rows[0][4], Cell::Hours(10.5));
        assert_eq!(table.rows[0][7].text(), "25.0%");
    }

    #[test]
    fn periods_are_named_by_year_or_month() {
        assert_eq!(
            period_label("2025-01-01T00:00:00+08:00", "2026-01-01T00:00:00+08:00"),
            "2025"
        );
        assert_eq!(period_label("2025-01-01", "2025-02-01"), "2025-01");
        assert_eq!(period_label("2025-12-01", "2026-01-01"), "2025-12");
        assert_eq!(period_label("2025-03-04", "2025-03-05"), "2025-03-04");
    }

    #[test]
    fn the_csv_has_plain_numbers_and_empty_unknowns() {
        let mut r = row();
        r.share_rate = None;
        let mut out = csv::Writer::from_writer(Vec::new());
        Table::new(&[r], Lang::En).to_csv(&mut out).expect("csv");
        let text = String::from_utf8(out.into_inner().expect("bytes")).expect("utf-8");
        let line = text.lines().nth(1).expect("a row");
        assert!(line.starts_with("nmr-600,NMR 600 MHz,Chemistry/NMR Centre,2025,10.5,2,"));
        assert!(line.contains(",,"), "unknown share rate is empty: {line}");
    }

    #[test]
    fn the_workbook_is_a_zip_with_both_sheets() {
        let table = Table::new(&[row()], Lang::Zh);
        let bytes = workbook(&table, &table, Lang::Zh).expect("xlsx");
        assert_eq!(&bytes[..2], b"PK");
        assert!(bytes.len() > 1000);
    }
}
