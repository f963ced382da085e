//! The agents page (`/agents`): every agent with its instrument, version,
//! presence, last seen, clock skew, backlog, and the payloads quarantined
//! from it in the last 30 days.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;

use super::i18n::Lang;
use super::page::{Page, short_time};
use super::session::{Viewer, url_encode};
use super::{DashState, PageError, blocking};
use crate::quarantine::{Entry, Filter};
use crate::registry::thresholds_check::ThresholdDifference;
use crate::verified::{AgentView, Edge, InstrumentRow, Range};

/// How far back quarantined payloads are counted.
pub const QUARANTINE_DAYS: i64 = 30;

/// One agent as the page shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AgentLine {
    pub agent_id: String,
    pub instrument_id: String,
    pub instrument_href: String,
    pub instrument_name: String,
    pub version: String,
    pub online: bool,
    pub last_seen: String,
    pub clock_skew: String,
    pub backlog: String,
    pub quarantined: usize,
    /// The agent's thresholds against the registry's, in the page's language.
    pub thresholds: String,
    /// They differ from the registry's.
    pub thresholds_differ: bool,
    /// The enrolled key's id, or "unsigned", in the page's language.
    pub signing: String,
    pub signed: bool,
}

/// `running_above_w registry 800 W, agent 500 W; …` (seconds for the dwell settings).
pub fn mismatch_text(differences: &[ThresholdDifference], lang: Lang) -> String {
    differences
        .iter()
        .map(|d| {
            let unit = if d.field.ends_with("_s") { "s" } else { "W" };
            format!(
                "{} {} {} {unit}, {} {} {unit}",
                d.field,
                lang.t("agents.registry"),
                d.registry,
                lang.t("agents.agent_value"),
                d.agent
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the thresholds column says about one agent.
fn thresholds_text(agent: &AgentView, lang: Lang) -> String {
    match &agent.applied_thresholds {
        None => lang.t("agents.thresholds_unreported").to_owned(),
        Some(_) if !agent.threshold_mismatch.is_empty() => {
            mismatch_text(&agent.threshold_mismatch, lang)
        }
        Some(t) => format!(
            "{} / {} W{}",
            t.on_above_w,
            t.running_above_w,
            if agent.registry_thresholds.is_some() {
                format!(" · {}", lang.t("agents.thresholds_agree"))
            } else {
                String::new()
            }
        ),
    }
}

/// Agents sorted by id, with their quarantine counts; agents known only
/// from quarantined payloads are listed too.
pub fn lines(instruments: &[InstrumentRow], quarantine: &[Entry], lang: Lang) -> Vec<AgentLine> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for q in quarantine {
        if let Some(a) = q.agent_id.as_deref() {
            *counts.entry(a).or_default() += 1;
        }
    }
    let mut out: Vec<AgentLine> = Vec::new();
    for i in instruments {
        for a in &i.agents {
            out.push(AgentLine {
                agent_id: a.agent_id.clone(),
                instrument_id: i.instrument_id.clone(),
                instrument_href: format!("/instruments/{}", url_encode(&i.instrument_id)),
                instrument_name: i.name.clone(),
                version: a.version.clone().unwrap_or_default(),
                online: a.online,
                last_seen: a.last_seen.as_deref().map(short_time).unwrap_or_default(),
                clock_skew: a
                    .clock_skew_ms
                    .map(|ms| format!("{:+.1} s", ms as f64 / 1000.0))
                    .unwrap_or_default(),
                backlog: a.backlog.map(|b| b.to_string()).unwrap_or_default(),
                quarantined: counts.remove(a.agent_id.as_str()).unwrap_or(0),
                thresholds: thresholds_text(a, lang),
                thresholds_differ: !a.threshold_mismatch.is_empty(),
                signing: match &a.signing_key {
                    Some(key) => format!("{} · {key}", lang.t("agents.signed")),
                    None => lang.t("agents.unsigned").to_owned(),
                },
                signed: a.signing_key.is_some(),
            });
        }
    }
    for (agent, n) in counts {
        out.push(AgentLine {
            agent_id: agent.to_owned(),
            quarantined: n,
            ..AgentLine::default()
        });
    }
    out.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    out
}

#[derive(askama::Template)]
#[template(path = "agents.html")]
struct AgentsTemplate {
    page: Page,
    agents: Vec<AgentLine>,
    /// Received, agent, kind (translated), reason, bytes.
    quarantine: Vec<(String, String, String, String, String)>,
}

/// `GET /agents`.
pub async fn page(
    State(state): State<DashState>,
    viewer: Viewer,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, PageError> {
    let now = state.now();
    let today = state.today();
    let range = Range {
        from: Edge::Date(
            today
                .checked_sub(jiff::Span::new().days(QUARANTINE_DAYS))
                .unwrap_or(today),
        ),
        to: Edge::Date(today.tomorrow().unwrap_or(today)),
    };
    let (instruments, quarantine) = blocking(&state, &viewer, move |r| {
        let last_30_days = Filter {
            limit: 10_000,
            ..Filter::default()
        };
        Ok((
            r.instruments(now)?,
            r.quarantine_list(&last_30_days, Some(range.from), Some(range.to))?,
        ))
    })
    .await?;
    let path = uri.path().to_owned();
    let page = Page::new(&headers, "agents", &path, viewer, "agents.title");
    let zone = state.site_zone.clone();
    let lang = page.lang;
    let html = askama::Template::render(&AgentsTemplate {
        agents: lines(&instruments, &quarantine, lang),
        quarantine: quarantine
            .iter()
            .take(50)
            .map(|q| {
                (
                    super::page::local_minute(q.received_at.as_millisecond(), &zone),
                    q.agent_id.clone().unwrap_or_default(),
                    lang.t(&format!("quarantine.kind.{}", q.kind)).to_owned(),
                    q.reason.clone(),
                    q.payload_len.to_string(),
                )
            })
            .collect(),
        page,
    })?;
    Ok(Html(html).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verified::AgentView;

    #[test]
    fn quarantined_payloads_are_counted_per_agent_and_strangers_are_listed() {
        let instruments = vec![InstrumentRow {
            instrument_id: "nmr-600".into(),
            name: "NMR".into(),
            agents: vec![AgentView {
                agent_id: "a-1".into(),
                online: true,
                last_seen: Some("2025-03-03T09:00:00+08:00".into()),
                backlog: Some(4),
                clock_skew_ms: Some(-1500),
                version: Some("0.1.0".into()),
                applied_thresholds: None,
                registry_thresholds: None,
                threshold_mismatch: vec![],
                signing_key: None,
            }],
            ..InstrumentRow::default()
        }];
        let q = |agent: &str| Entry {
            id: 1,
            received_at: jiff::Timestamp::UNIX_EPOCH,
            topic: format!("labhours/v1/{agent}/events"),
            agent_id: Some(agent.into()),
            kind: crate::quarantine::Kind::Undecodable,
            reason: "bad".into(),
            payload_len: 3,
        };
        let out = lines(&instruments, &[q("a-1"), q("a-1"), q("ghost")], Lang::En);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].agent_id.as_str(), out[0].quarantined), ("a-1", 2));
        assert_eq!(out[0].clock_skew, "-1.5 s");
        assert_eq!(out[0].backlog, "4");
        assert_eq!((out[1].agent_id.as_str(), out[1].quarantined), ("ghost", 1));
        assert_eq!(out[0].thresholds, "not reported");
        assert_eq!(out[0].signing, "unsigned");
        let mut signed = instruments.clone();
        signed[0].agents[0].signing_key = Some("0123456789abcdef".into());
        let zh = lines(&signed, &[], Lang::Zh);
        assert_eq!(zh[0].signing, "已签名 · 0123456789abcdef");
        assert!(zh[0].signed);
    }

    #[test]
    fn thresholds_show_what_the_agent_applies_and_how_it_differs_in_both_languages() {
        use crate::registry::thresholds_check::AppliedThresholds;
        let applied = AppliedThresholds {
            on_above_w: 5.0,
            running_above_w: 500.0,
            running_exit_below_w: 450.0,
            min_dwell_s: 30,
            status_stale_after_s: 300,
        };
        let agent = |mismatch: Vec<ThresholdDifference>| AgentView {
            agent_id: "a-1".into(),
            online: true,
            last_seen: None,
            backlog: None,
            clock_skew_ms: None,
            version: None,
            applied_thresholds: Some(applied.clone()),
            registry_thresholds: Some(applied.clone()),
            threshold_mismatch: mismatch,
            signing_key: None,
        };
        assert_eq!(
            thresholds_text(&agent(vec![]), Lang::En),
            "5 / 500 W · as registered"
        );
        assert_eq!(
            thresholds_text(&agent(vec![]), Lang::Zh),
            "5 / 500 W · 与登记一致"
        );
        let differ = agent(vec![ThresholdDifference {
            field: "min_dwell_s".into(),
            registry: 30.0,
            agent: 10.0,
        }]);
        assert_eq!(
            thresholds_text(&differ, Lang::En),
            "min_dwell_s registry 30 s, agent 10 s"
        );
        assert_eq!(
            thresholds_text(&differ, Lang::Zh),
            "min_dwell_s 登记 30 s, 代理 10 s"
        );
    }
}
