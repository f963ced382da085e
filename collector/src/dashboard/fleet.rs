//! The fleet page (`/`): every instrument's state now, its agents, today's
//! used hours and coverage; counts per state; filtering by unit, state and
//! name and paging on the server ([`filter_page`], pure); the table
//! fragment (`/fleet/table`) is polled by htmx for live updates.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{Html, IntoResponse, Response};
use labhours_shared::state::State as InstrumentState;
use serde::Deserialize;

use super::page::{Page, hours, percent, short_time};
use super::session::{Viewer, url_encode};
use super::{DashState, PageError, blocking};
use crate::verified::{Edge, GroupBy, HoursQuery, HoursRows, InstrumentRow, Range};

/// Rows per page.
pub const PER_PAGE: usize = 50;

/// Seconds between live updates of the table.
pub const POLL_SECONDS: u32 = 10;

/// The states in the order the counts show them.
pub const STATES: [InstrumentState; 5] = [
    InstrumentState::Running,
    InstrumentState::Standby,
    InstrumentState::Off,
    InstrumentState::Fault,
    InstrumentState::Unknown,
];

/// One instrument as the fleet shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRow {
    pub id: String,
    pub name: String,
    pub unit: String,
    /// Its unit and every unit above it (ids): what the unit filter matches.
    pub within: Vec<String>,
    pub state: InstrumentState,
    /// Since when (an API time stamp), when known.
    pub since: Option<String>,
    pub agent_online: bool,
    /// The newest `last_seen` of its agents.
    pub last_seen: Option<String>,
    pub used_today_h: f64,
    pub coverage_today: f64,
}

/// What the visitor asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct FleetFilter {
    /// A unit: it and everything below it.
    #[serde(default)]
    pub unit: Option<String>,
    /// A state name (`running` … `unknown`).
    #[serde(default)]
    pub state: Option<String>,
    /// Part of the name or id, any case.
    #[serde(default)]
    pub q: Option<String>,
    /// From 1.
    #[serde(default)]
    pub page: Option<usize>,
}

impl FleetFilter {
    fn unit(&self) -> Option<&str> {
        self.unit
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
    }

    fn query(&self) -> Option<String> {
        self.q
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_lowercase)
    }

    fn state(&self) -> Option<InstrumentState> {
        let wanted = self.state.as_deref()?.trim();
        STATES.into_iter().find(|s| s.as_str() == wanted)
    }

    /// The query string of this filter with another page or state.
    pub fn href(&self, state: Option<&str>, page: Option<usize>) -> String {
        let mut parts = Vec::new();
        if let Some(u) = self.unit() {
            parts.push(format!("unit={}", url_encode(u)));
        }
        if let Some(s) = state {
            parts.push(format!("state={}", url_encode(s)));
        }
        if let Some(q) = self.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            parts.push(format!("q={}", url_encode(q)));
        }
        if let Some(p) = page.filter(|&p| p > 1) {
            parts.push(format!("page={p}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

/// One page of the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetPage {
    /// Per state, over the instruments that match unit and search (the
    /// state filter aside, so each count says what clicking it shows).
    pub counts: Vec<(InstrumentState, usize)>,
    /// Instruments matching every filter.
    pub matching: usize,
    pub page: usize,
    pub pages: usize,
    pub rows: Vec<FleetRow>,
}

/// Filters, counts and cuts out one page (sorted by unit, then name).
pub fn filter_page(all: &[FleetRow], filter: &FleetFilter, per_page: usize) -> FleetPage {
    let unit = filter.unit();
    let query = filter.query();
    let state = filter.state();
    let base: Vec<&FleetRow> = all
        .iter()
        .filter(|r| unit.is_none_or(|u| r.within.iter().any(|w| w == u)))
        .filter(|r| {
            query.as_deref().is_none_or(|q| {
                r.name.to_lowercase().contains(q) || r.id.to_lowercase().contains(q)
            })
        })
        .collect();
    let counts = STATES
        .iter()
        .map(|s| (*s, base.iter().filter(|r| r.state == *s).count()))
        .collect();
    let mut matching: Vec<&FleetRow> = base
        .into_iter()
        .filter(|r| state.is_none_or(|s| r.state == s))
        .collect();
    matching.sort_by(|a, b| (&a.unit, &a.name, &a.id).cmp(&(&b.unit, &b.name, &b.id)));
    let per_page = per_page.max(1);
    let pages = matching.len().div_ceil(per_page).max(1);
    let page = filter.page.unwrap_or(1).clamp(1, pages);
    let rows = matching
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|r| (*r).clone())
        .collect();
    FleetPage {
        counts,
        matching: matching.len(),
        page,
        pages,
        rows,
    }
}

/// Every unit holding a shown instrument, and every unit above one, sorted
/// (the unit filter's choices: ids).
pub fn units(all: &[FleetRow]) -> Vec<String> {
    let mut out: Vec<String> = all.iter().flat_map(|r| r.within.clone()).collect();
    out.sort();
    out.dedup();
    out
}

/// The unit picker's choices: (id, the names from the top down in `lang`),
/// in the order of those names.
pub fn unit_choices(
    ids: &[String],
    org: &crate::units::Organisation,
    lang: super::i18n::Lang,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = ids
        .iter()
        .map(|id| {
            let mut names: Vec<String> = org
                .ancestors(id)
                .into_iter()
                .map(|a| match org.unit(a) {
                    Some(u) if lang == super::i18n::Lang::Zh => {
                        u.name_zh.clone().unwrap_or_else(|| u.name.clone())
                    }
                    Some(u) => u.name.clone(),
                    None => a.to_owned(),
                })
                .collect();
            names.reverse();
            (id.clone(), names.join(" / "))
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// Joins the instrument list and today's hours.
pub fn rows(
    instruments: Vec<InstrumentRow>,
    today: &HoursRows,
    org: &crate::units::Organisation,
) -> Vec<FleetRow> {
    let mut by_id = std::collections::HashMap::new();
    if let HoursRows::Totals(rows) = today {
        for r in rows {
            if let Some(id) = &r.instrument_id {
                by_id.insert(id.as_str(), (r.used_hours, r.coverage));
            }
        }
    }
    instruments
        .into_iter()
        .map(|i| {
            let (used, coverage) = by_id
                .get(i.instrument_id.as_str())
                .copied()
                .unwrap_or((0.0, 0.0));
            let last_seen = i.agents.iter().filter_map(|a| a.last_seen.clone()).max();
            let within = i
                .unit
                .as_deref()
                .map(|u| org.ancestors(u).into_iter().map(str::to_owned).collect())
                .unwrap_or_default();
            FleetRow {
                within,
                unit: i.unit.unwrap_or_default(),
                state: i.state,
                since: i.since,
                agent_online: i.agent_online,
                last_seen,
                used_today_h: used,
                coverage_today: coverage,
                name: i.name,
                id: i.instrument_id,
            }
        })
        .collect()
}

/// A row as the template shows it.
#[derive(Debug)]
pub struct RowView {
    pub id: String,
    pub href: String,
    pub name: String,
    pub unit: String,
    pub state: &'static str,
    pub since: String,
    pub online: bool,
    pub last_seen: String,
    pub used: String,
    pub coverage: String,
}

/// A hub's site as the fleet page lists it (empty strings: not known).
#[derive(Debug)]
pub struct SiteLine {
    pub id: String,
    pub name: String,
    pub href: String,
    /// "data up to …": the site's figures are final up to then.
    pub up_to: String,
    pub last_batch: String,
    /// Why the hub flags the site's checkpoints (rewritten history, a bad
    /// signature); empty: not flagged.
    pub flagged: String,
}

/// A hub's sites with their freshness (none on a site).
async fn site_lines(state: &DashState, viewer: &Viewer) -> Result<Vec<SiteLine>, PageError> {
    let listed = state.hub_sites();
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let sites = blocking(state, viewer, move |r| r.sites(&listed)).await?;
    Ok(sites
        .into_iter()
        .map(|s| SiteLine {
            href: format!("/?unit={}", url_encode(&s.site_id)),
            name: if s.name.is_empty() {
                s.site_id.clone()
            } else {
                s.name
            },
            up_to: s
                .settled_through
                .as_deref()
                .map(short_time)
                .unwrap_or_default(),
            last_batch: s.last_batch.as_deref().map(short_time).unwrap_or_default(),
            flagged: s.history.unwrap_or_default(),
            id: s.site_id,
        })
        .collect())
}

#[derive(askama::Template)]
#[template(path = "fleet.html")]
struct FleetTemplate {
    page: Page,
    /// A hub's sites and how fresh their figures are.
    sites: Vec<SiteLine>,
    filter: FleetFilter,
    /// (id, label) of each unit the picker offers.
    units: Vec<(String, String)>,
    /// The rendered [`FleetTable`].
    table: String,
}

#[derive(askama::Template)]
#[template(path = "fleet_table.html")]
struct FleetTable {
    page: Page,
    counts: Vec<(&'static str, usize, String, bool)>,
    matching: usize,
    current: usize,
    pages: usize,
    prev: Option<String>,
    next: Option<String>,
    poll: String,
    poll_seconds: u32,
    rows: Vec<RowView>,
}

async fn snapshot(state: &DashState, viewer: &Viewer) -> Result<Vec<FleetRow>, PageError> {
    let now = state.now();
    let today = state.today();
    let query = HoursQuery {
        range: Range {
            from: Edge::Date(today),
            to: Edge::Date(today.tomorrow().map_err(PageError::internal)?),
        },
        instrument: None,
        unit: None,
        period: None,
        group_by: GroupBy::Instrument,
    };
    // Both reads at once (each on its own connection).
    let (instruments, hours_today) = tokio::try_join!(
        blocking(state, viewer, move |r| r.instruments(now)),
        blocking(state, viewer, move |r| r.hours(&query)),
    )?;
    Ok(rows(
        instruments,
        &hours_today.rows,
        state.api.organisation(),
    ))
}

fn table(page: Page, filter: &FleetFilter, all: &[FleetRow]) -> FleetTable {
    let cut = filter_page(all, filter, PER_PAGE);
    let wanted = filter.state.clone().unwrap_or_default();
    let counts = cut
        .counts
        .iter()
        .map(|(s, n)| {
            let name = s.as_str();
            let on = wanted == name;
            let href = format!("/{}", filter.href((!on).then_some(name), None));
            (name, *n, href, on)
        })
        .collect();
    let link = |p: usize| format!("/{}", filter.href(filter.state.as_deref(), Some(p)));
    FleetTable {
        counts,
        matching: cut.matching,
        current: cut.page,
        pages: cut.pages,
        prev: (cut.page > 1).then(|| link(cut.page - 1)),
        next: (cut.page < cut.pages).then(|| link(cut.page + 1)),
        poll: format!(
            "/fleet/table{}",
            filter.href(filter.state.as_deref(), Some(cut.page))
        ),
        poll_seconds: POLL_SECONDS,
        rows: cut
            .rows
            .into_iter()
            .map(|r| RowView {
                href: format!("/instruments/{}", url_encode(&r.id)),
                state: r.state.as_str(),
                since: r.since.as_deref().map(short_time).unwrap_or_default(),
                online: r.agent_online,
                last_seen: r.last_seen.as_deref().map(short_time).unwrap_or_default(),
                used: hours(r.used_today_h),
                coverage: percent(Some(r.coverage_today)),
                id: r.id,
                name: r.name,
                unit: r.unit,
            })
            .collect(),
        page,
    }
}

fn path_of(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned())
}

/// `GET /`.
pub async fn page(
    State(state): State<DashState>,
    viewer: Viewer,
    headers: HeaderMap,
    uri: Uri,
    Query(filter): Query<FleetFilter>,
) -> Result<Response, PageError> {
    let all = snapshot(&state, &viewer).await?;
    let sites = site_lines(&state, &viewer).await?;
    let page = Page::new(&headers, "fleet", &path_of(&uri), viewer, "fleet.title");
    let html = askama::Template::render(&FleetTemplate {
        sites,
        units: unit_choices(&units(&all), state.api.organisation(), page.lang),
        table: askama::Template::render(&table(page.clone(), &filter, &all))?,
        filter,
        page,
    })?;
    Ok(Html(html).into_response())
}

/// `GET /fleet/table`: the counts and the table alone (htmx swaps it in).
pub async fn table_fragment(
    State(state): State<DashState>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(filter): Query<FleetFilter>,
) -> Result<Response, PageError> {
    let all = snapshot(&state, &viewer).await?;
    let back = format!("/{}", filter.href(filter.state.as_deref(), filter.page));
    let page = Page::new(&headers, "fleet", &back, viewer, "fleet.title");
    let html = askama::Template::render(&table(page, &filter, &all))?;
    Ok(Html(html).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, unit: &str, state: InstrumentState) -> FleetRow {
        FleetRow {
            id: id.into(),
            name: format!("Instrument {id}"),
            unit: unit.into(),
            // As a `/` path's units are (without [[units]]).
            within: (1..=unit.split('/').filter(|s| !s.is_empty()).count())
                .rev()
                .map(|n| unit.split('/').take(n).collect::<Vec<_>>().join("/"))
                .collect(),
            state,
            since: None,
            agent_online: true,
            last_seen: None,
            used_today_h: 1.0,
            coverage_today: 1.0,
        }
    }

    fn fleet() -> Vec<FleetRow> {
        (0..3000)
            .map(|i| {
                let state = STATES[i % 5];
                let unit = if i % 2 == 0 { "Chem/NMR" } else { "Physics" };
                row(&format!("i-{i:04}"), unit, state)
            })
            .collect()
    }

    #[test]
    fn counts_cover_the_unit_and_search_but_not_the_state_filter() {
        let all = fleet();
        let filter = FleetFilter {
            unit: Some("Chem".into()),
            state: Some("running".into()),
            ..FleetFilter::default()
        };
        let page = filter_page(&all, &filter, 50);
        let total: usize = page.counts.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 1500, "Chem/NMR is below Chem");
        assert_eq!(page.matching, 300);
        assert!(
            page.rows
                .iter()
                .all(|r| r.state == InstrumentState::Running)
        );
        assert_eq!(page.rows.len(), 50);
        assert_eq!(page.pages, 6);
    }

    #[test]
    fn a_unit_matches_itself_and_below_but_not_a_longer_name() {
        assert!(crate::registry::unit_within("Chem/NMR", "Chem"));
        assert!(crate::registry::unit_within("Chem", "Chem"));
        assert!(!crate::registry::unit_within("Chemistry", "Chem"));
    }

    #[test]
    fn the_search_matches_name_or_id_in_any_case_and_pages_are_clamped() {
        let all = fleet();
        let filter = FleetFilter {
            q: Some("I-0042".into()),
            page: Some(99),
            ..FleetFilter::default()
        };
        let page = filter_page(&all, &filter, 50);
        assert_eq!(page.matching, 1);
        assert_eq!(page.page, 1);
        assert_eq!(page.rows[0].id, "i-0042");
    }

    #[test]
    fn the_last_page_holds_the_remainder() {
        let all = fleet();
        let filter = FleetFilter {
            page: Some(60),
            ..FleetFilter::default()
        };
        let page = filter_page(&all, &filter, 50);
        assert_eq!((page.page, page.pages, page.rows.len()), (60, 60, 50));
        let filter = FleetFilter {
            page: Some(2),
            ..FleetFilter::default()
        };
        assert_eq!(filter_page(&all, &filter, 2999).rows.len(), 1);
    }

    #[test]
    fn units_lists_every_level_once() {
        let all = vec![
            row("a", "Chem/NMR", InstrumentState::Off),
            row("b", "Chem/MS", InstrumentState::Off),
            row("c", "", InstrumentState::Off),
        ];
        assert_eq!(units(&all), vec!["Chem", "Chem/MS", "Chem/NMR"]);
    }

    #[test]
    fn filter_links_keep_the_other_filters_and_encode_them() {
        let filter = FleetFilter {
            unit: Some("Chem/NMR Centre".into()),
            q: Some("600 MHz".into()),
            ..FleetFilter::default()
        };
        assert_eq!(
            filter.href(Some("fault"), Some(2)),
            "?unit=Chem/NMR%20Centre&state=fault&q=600%20MHz&page=2"
        );
        assert_eq!(FleetFilter::default().href(None, Some(1)), "");
    }
}
