//! `labhours-collector quarantine list|show|purge`: the quarantine for an
//! operator at the server, without sqlite3.

use std::io::Write;

use anyhow::Context;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use super::{Filter, Kind};
use crate::api::params::parse_edge;
use crate::cli::ConfigArg;

#[derive(Debug, clap::Subcommand)]
pub enum QuarantineCommand {
    /// List refused payloads, newest first.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only from this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Only this kind: bad_topic, oversized, undecodable, agent_mismatch,
        /// unstorable_seq, inconsistent_seqs, seq_conflict, implausible_floor, unsigned,
        /// unknown_key, wrong_agent, revoked_key, bad_signature, broken_chain, fork, other.
        #[arg(long)]
        kind: Option<String>,
        /// Received at or after: YYYY-MM-DD (site zone) or an RFC 3339 instant.
        #[arg(long)]
        from: Option<String>,
        /// Received before, same forms.
        #[arg(long)]
        to: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON (one object per line) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one refused payload: where it came from, why, and its bytes.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// The row's id (first column of `list`).
        id: i64,
    },
    /// Delete refused payloads received more than a given time ago.
    Purge {
        #[command(flatten)]
        config: ConfigArg,
        /// How old, e.g. `90d`, `12 weeks`, `P1Y`.
        #[arg(long)]
        older_than: String,
        /// Say how many would go, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

impl QuarantineCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match self {
            Self::List {
                config,
                agent,
                kind,
                from,
                to,
                limit,
                json,
            } => {
                let kind = kind
                    .map(|k| {
                        Kind::parse(&k).with_context(|| {
                            format!("--kind {k:?} is not one of {}", Kind::names())
                        })
                    })
                    .transpose()?;
                let edge = |flag: &str, text: Option<String>| {
                    text.map(|t| {
                        parse_edge(&t).with_context(|| {
                            format!(
                                "--{flag} {t:?} is not a date (2026-03-01) or an RFC 3339 instant"
                            )
                        })
                    })
                    .transpose()
                };
                let (from, to) = (edge("from", from)?, edge("to", to)?);
                anyhow::ensure!(limit > 0, "--limit must be at least 1");
                let reports = crate::verified::open_reports(&config.load()?)?;
                let filter = Filter {
                    agent_id: agent,
                    kind,
                    limit,
                    ..Filter::default()
                };
                let rows = reports.quarantine_list(&filter, from, to)?;
                if json {
                    for row in &rows {
                        writeln!(out, "{}", serde_json::to_string(row)?)?;
                    }
                } else if rows.is_empty() {
                    writeln!(out, "no quarantined payloads match")?;
                } else {
                    writeln!(
                        out,
                        "{:>8}  {:<24}  {:<20}  {:<17}  {:>8}  reason",
                        "id", "received (UTC)", "agent", "kind", "bytes"
                    )?;
                    for r in &rows {
                        writeln!(
                            out,
                            "{:>8}  {:<24}  {:<20}  {:<17}  {:>8}  {}",
                            r.id,
                            r.received_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                            r.agent_id.as_deref().unwrap_or("-"),
                            r.kind.as_str(),
                            r.payload_len,
                            one_line(&r.reason, 200),
                        )?;
                    }
                }
                Ok(())
            }
            Self::Show { config, id } => {
                let reports = crate::verified::open_reports(&config.load()?)?;
                let detail = reports.quarantine_entry(id)?.with_context(|| {
                    format!("no quarantined payload {id} (purged?); `quarantine list` shows them")
                })?;
                let e = &detail.entry;
                writeln!(out, "id:        {}", e.id)?;
                writeln!(out, "received:  {}", e.received_at)?;
                writeln!(out, "topic:     {}", e.topic)?;
                writeln!(out, "agent:     {}", e.agent_id.as_deref().unwrap_or("-"))?;
                writeln!(out, "kind:      {}", e.kind)?;
                writeln!(out, "reason:    {}", e.reason)?;
                let kept = detail.payload_hex.len() / 2;
                writeln!(
                    out,
                    "payload:   {} bytes{}",
                    e.payload_len,
                    if detail.truncated {
                        format!(" (the first {kept} kept)")
                    } else {
                        String::new()
                    }
                )?;
                writeln!(out)?;
                match &detail.payload_text {
                    Some(text) => writeln!(out, "{text}")?,
                    None => writeln!(out, "(not UTF-8; hex)\n{}", detail.payload_hex)?,
                }
                Ok(())
            }
            Self::Purge {
                config,
                older_than,
                dry_run,
            } => {
                let age = parse_age(&older_than)?;
                let config = config.load()?;
                drop(crate::verified::open_reports(&config)?);
                let cut = Timestamp::now()
                    .to_zoned(TimeZone::UTC)
                    .checked_sub(age)
                    .context("--older-than reaches before year -9999")?
                    .timestamp();
                let conn = crate::verified::store_reports::open_writer(&config.data_dir)?;
                let n = if dry_run {
                    conn.query_row(
                        "SELECT COUNT(*) FROM quarantine WHERE received_at_ms < ?1",
                        [cut.as_millisecond()],
                        |r| r.get::<_, i64>(0),
                    )? as usize
                } else {
                    super::purge(&conn, cut)?
                };
                writeln!(
                    out,
                    "{} {n} quarantined payload(s) received before {cut}",
                    if dry_run { "would delete" } else { "deleted" }
                )?;
                Ok(())
            }
        }
    }
}

/// `90d`, `12 weeks`, `P1Y`…: a positive span (jiff's friendly or ISO 8601 form).
fn parse_age(text: &str) -> anyhow::Result<Span> {
    let span: Span = text.trim().parse().with_context(|| {
        format!("--older-than {text:?} is not a duration; e.g. 90d, 12 weeks, P1Y")
    })?;
    anyhow::ensure!(
        span.is_positive(),
        "--older-than {text:?} must be more than nothing"
    );
    Ok(span)
}

/// `text` on one line, cut at `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_friendly_and_iso_forms_and_must_be_positive() {
        assert_eq!(parse_age("90d").unwrap().get_days(), 90);
        assert_eq!(parse_age("12 weeks").unwrap().get_weeks(), 12);
        assert_eq!(parse_age("P1Y").unwrap().get_years(), 1);
        assert!(parse_age("0d").is_err());
        assert!(parse_age("soon").is_err());
    }

    #[test]
    fn reasons_are_cut_to_one_line() {
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
