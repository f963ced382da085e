//! `labhours-collector evidence export`: writes one instrument's evidence
//! for a range as a bundle directory ([`super::bundle`]). The directory is
//! written under a temporary name and renamed when complete, so a failed
//! export leaves nothing that looks like a bundle.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use jiff::Timestamp;

use super::bundle::{self, EnvelopeLine, Manifest, Reported, Table};
use super::checkpoint::{self, CollectorKey};
use crate::config::CollectorConfig;
use crate::verified::{HoursQuery, HoursRows};

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub dir: PathBuf,
    pub events: usize,
    pub envelopes: usize,
    pub bookings: usize,
    pub checkpoints: usize,
}

/// The hours query a bundle reports and the verifier repeats: local days
/// of one instrument over `[from, to)`.
pub fn hours_query(instrument_id: &str, from: &str, to: &str) -> anyhow::Result<HoursQuery> {
    use crate::api::params::Params;
    let pairs = [
        ("from", from),
        ("to", to),
        ("instrument", instrument_id),
        ("period", "day"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    crate::api::hours_query(&Params::from_pairs(pairs)).map_err(|e| {
        let flag = e.body.parameter.as_deref().unwrap_or("").replace('_', "-");
        anyhow::anyhow!("--{flag}: {}", e.body.error)
    })
}

/// The config a bundle carries: the site, the site-wide rules and open
/// hours, and this instrument only (no tokens, brokers or paths).
pub fn bundle_config(config: &CollectorConfig, instrument_id: &str) -> CollectorConfig {
    CollectorConfig {
        site: config.site.clone(),
        reconciliation: config.reconciliation.clone(),
        open_hours: config.open_hours.clone(),
        instruments: config
            .instruments
            .iter()
            .filter(|i| i.id == instrument_id)
            .cloned()
            .collect(),
        ..CollectorConfig::default()
    }
}

/// Writes the bundle of `instrument_id` over `[from, to)` to `out`, which
/// must not exist yet.
pub fn export(
    config: &CollectorConfig,
    instrument_id: &str,
    from: &str,
    to: &str,
    out: &Path,
    now: Timestamp,
) -> anyhow::Result<Exported> {
    if out.exists() {
        anyhow::bail!(
            "{} already exists; an export never overwrites (choose another directory)",
            out.display()
        );
    }
    let query = hours_query(instrument_id, from, to)?;
    let key = checkpoint::load_key(config)?;
    drop(crate::store::Store::open(
        &config.data_dir,
        crate::store::Durability::Full,
    )?);
    let registry = crate::registry::Registry::from_config(config)
        .map_err(|errors| anyhow::anyhow!("invalid config: {errors}"))?;
    let reports = crate::verified::store_reports(config)?;
    let conn = crate::store::open_read_only(&config.data_dir)?;
    // Figures and rows from one read transaction, after a reconciliation
    // pass: a running collector may store events meanwhile, and figures
    // that lag the exported events would not recompute the same.
    let mut attempts = 0;
    let read = loop {
        reports.catch_up(Timestamp::now())?;
        conn.execute_batch("BEGIN")?;
        let dirty: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM dirty WHERE instrument_id = ?1)",
            [instrument_id],
            |r| r.get(0),
        )?;
        if dirty && attempts < 10 {
            conn.execute_batch("COMMIT")?;
            attempts += 1;
            continue;
        }
        let read = read_all(&conn, &registry, &query, instrument_id);
        conn.execute_batch("COMMIT")?;
        break read?;
    };
    let Read {
        hours,
        outcomes,
        events,
        bookings,
        corrections,
        keys,
        envelopes,
        checkpoints,
    } = read;

    let collector_key = CollectorKey::new(&config.site.name, &key.public_key());
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            bundle::CONFIG,
            serde_json::to_vec_pretty(&bundle_config(config, instrument_id))?,
        ),
        (
            bundle::COLLECTOR_KEY,
            serde_json::to_vec_pretty(&collector_key)?,
        ),
        (bundle::KEYS, bundle::join_lines(&keys)),
        (bundle::ENVELOPES, bundle::join_lines(&envelopes)),
        (bundle::EVENTS, bundle::join_lines(&events)),
        (bundle::BOOKINGS, bundle::join_lines(&bookings)),
        (bundle::CORRECTIONS, bundle::join_lines(&corrections)),
        (bundle::CHECKPOINTS, bundle::join_lines(&checkpoints)),
        (
            bundle::REPORTED,
            serde_json::to_vec_pretty(&Reported { hours, outcomes })?,
        ),
        ("README.txt", readme(instrument_id, from, to).into_bytes()),
    ];
    let manifest = Manifest {
        format: bundle::FORMAT.to_owned(),
        instrument_id: instrument_id.to_owned(),
        from: from.to_owned(),
        to: to.to_owned(),
        exported_at: now,
        files: files
            .iter()
            .map(|(name, bytes)| ((*name).to_owned(), bundle::sha256(bytes)))
            .collect(),
    };

    let partial = out.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("cannot remove the leftover {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    for (name, bytes) in &files {
        let path = partial.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    std::fs::write(
        partial.join(bundle::MANIFEST),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    std::fs::rename(&partial, out)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))?;
    Ok(Exported {
        dir: out.to_owned(),
        events: events.len(),
        envelopes: envelopes.len(),
        bookings: bookings.len(),
        checkpoints: checkpoints.len(),
    })
}

/// Everything a bundle holds that comes from the store.
struct Read {
    hours: Vec<crate::verified::HoursRow>,
    outcomes: Vec<crate::verified::OutcomeRow>,
    events: Vec<String>,
    bookings: Vec<String>,
    corrections: Vec<String>,
    keys: Vec<String>,
    envelopes: Vec<String>,
    checkpoints: Vec<String>,
}

/// The figures exactly as `GET /api/v1/hours` and `/outcomes` compute them,
/// and the rows they were computed from.
fn read_all(
    conn: &rusqlite::Connection,
    registry: &crate::registry::Registry,
    query: &HoursQuery,
    instrument_id: &str,
) -> anyhow::Result<Read> {
    let hours = match crate::verified::hours::query(conn, registry, query)?.rows {
        HoursRows::Totals(rows) => rows,
        HoursRows::UsageTypes(_) => unreachable!("grouped by instrument"),
    };
    let outcomes =
        crate::verified::views::outcomes(conn, registry, &query.range, Some(instrument_id))?;
    let events = bundle::table_lines(conn, Table::Events, instrument_id)?;
    let bookings = bundle::table_lines(conn, Table::Bookings, instrument_id)?;
    let corrections = bundle::table_lines(conn, Table::Corrections, instrument_id)?;
    let agents: Vec<String> = conn
        .prepare("SELECT DISTINCT agent_id FROM events WHERE instrument_id = ?1 ORDER BY 1")?
        .query_map([instrument_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut keys = Vec::new();
    for row in crate::trust::keys(conn)? {
        if agents.contains(&row.agent_id) {
            keys.push(serde_json::to_string(&row)?);
        }
    }
    let mut envelopes = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT agent_id, key_id, received_at_ms, payload FROM signed_envelopes
         WHERE agent_id = ?1 ORDER BY id",
    )?;
    for agent in &agents {
        let rows = stmt.query_map([agent], |r| {
            Ok(EnvelopeLine {
                agent_id: r.get(0)?,
                key_id: r.get(1)?,
                received_at_ms: r.get(2)?,
                payload: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(3)?).into_owned(),
            })
        })?;
        for row in rows {
            envelopes.push(serde_json::to_string(&row?)?);
        }
    }
    let checkpoints = checkpoint::list(conn, false)?
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()?;
    Ok(Read {
        hours,
        outcomes,
        events,
        bookings,
        corrections,
        keys,
        envelopes,
        checkpoints,
    })
}

fn readme(instrument_id: &str, from: &str, to: &str) -> String {
    format!(
        "labhours evidence bundle ({})\n\
         Instrument {instrument_id}, from {from} to {to} (exclusive).\n\n\
         Check it with: labhours-verify <this directory>\n\
         (optionally --collector-key <ed25519:...> to pin the collector's key\n\
         obtained independently, e.g. from GET /api/v1/checkpoints/key).\n\
         The format is described in docs/evidence.md of labhours.\n",
        bundle::FORMAT
    )
}
