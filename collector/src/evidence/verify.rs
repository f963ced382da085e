//! `labhours-verify <bundle>`: checks an evidence bundle without a
//! collector, a database file or a network (docs/evidence.md):
//!
//! 1. the manifest's SHA-256 of every file;
//! 2. each envelope's signature under its agent's enrolled key;
//! 3. each agent's hash chain through every event, and that the store's
//!    event rows are exactly the signed events;
//! 4. each checkpoint's signature under the collector's key, the chain
//!    heads it names against the events, and the newest checkpoint's
//!    digest of the bookings and corrections against the bundle's;
//! 5. the figures, recomputed with the collector's own ingest derivation
//!    and reconciliation code in a scratch in-memory store, against the
//!    reported ones.
//!
//! Every mismatch is one line naming what differs; none means verified.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use labhours_shared::trust::{ChainHash, PublicKey, hex};
use labhours_shared::wire::{EventKind, decode_envelope};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::bundle::{self, EnvelopeLine, Manifest, Reported, Table};
use super::checkpoint::{Body, Checkpoint, CollectorKey, digest};
use super::note;

/// What a verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Each mismatch, one line; empty: verified.
    pub problems: Vec<String>,
    /// Facts worth knowing that are not mismatches (unsigned events).
    pub notes: Vec<String>,
    pub events: usize,
    pub envelopes: usize,
    pub checkpoints: usize,
}

impl Findings {
    pub fn verified(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Deserialize)]
struct KeyLine {
    agent_id: String,
    key_id: String,
    public_key: String,
    revoked_at: Option<Timestamp>,
}

/// One signed event as its envelope carried it.
struct Signed {
    hash: ChainHash,
    prev: ChainHash,
    instrument_id: String,
    /// A stored event row matched it.
    stored: bool,
}

/// A row of `events.jsonl` (the columns the recomputation needs).
#[derive(Deserialize)]
struct EventRow {
    agent_id: String,
    seq: u64,
    instrument_id: String,
    at_ms: i64,
    #[serde(rename = "type")]
    kind: String,
    payload: String,
    received_at_ms: i64,
    chain_hash: Option<HexBlob>,
    signed: i64,
}

#[derive(Deserialize)]
struct HexBlob {
    hex: String,
}

/// The scratch in-memory store, with the collector's schema.
struct Scratch {
    conn: rusqlite::Connection,
}

impl Scratch {
    fn new() -> Result<Self, String> {
        let mut conn =
            rusqlite::Connection::open_in_memory().map_err(|e| format!("recomputing: {e}"))?;
        crate::store::migrations::apply(&mut conn, Path::new(":memory:"))
            .map_err(|e| format!("recomputing: {e}"))?;
        Ok(Self { conn })
    }
}

fn insert_event(conn: &rusqlite::Connection, row: &EventRow) -> Result<(), String> {
    let hash = match &row.chain_hash {
        Some(h) => Some(
            labhours_shared::trust::from_hex::<32>(&h.hex)
                .ok_or("chain_hash is not 64 hex digits")?
                .to_vec(),
        ),
        None => None,
    };
    conn.prepare_cached(
        "INSERT INTO events (agent_id, seq, instrument_id, at_ms, type, payload,
                             received_at_ms, chain_hash, signed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut stmt| {
        stmt.execute(rusqlite::params![
            row.agent_id,
            row.seq as i64,
            row.instrument_id,
            row.at_ms,
            row.kind,
            row.payload,
            row.received_at_ms,
            hash,
            row.signed
        ])
    })
    .map(drop)
    .map_err(|e| e.to_string())
}

/// Checks the bundle in `dir`; `pinned` is the collector's key as the
/// caller obtained it independently (else the bundle's own is used).
pub fn verify(dir: &Path, pinned: Option<&PublicKey>) -> Findings {
    let mut f = Findings::default();
    let manifest = match read_manifest(dir, &mut f) {
        Some(m) => m,
        None => return f,
    };
    let read = |name: &str, f: &mut Findings| -> Option<String> {
        match std::fs::read(dir.join(name)) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Some(text),
                Err(_) => {
                    f.problems.push(format!("{name}: not UTF-8 text"));
                    None
                }
            },
            Err(e) => {
                f.problems.push(format!("{name}: {e}"));
                None
            }
        }
    };
    let instrument = manifest.instrument_id.clone();

    // 2-3. The envelopes (signatures, chains) on a thread of their own:
    // they need nothing from the store's rows, and the rows need nothing
    // from them until the cross-check, so the two use both cores; the
    // rows go straight into the scratch store the figures are recomputed
    // in (a year is half a million rows: nothing is kept twice).
    let bookings = read(bundle::BOOKINGS, &mut f).unwrap_or_default();
    let corrections = read(bundle::CORRECTIONS, &mut f).unwrap_or_default();
    let (envelope_side, scratch) = std::thread::scope(|s| {
        let envelope_side = s.spawn(|| check_envelopes(dir));
        let scratch = store_events(dir, &instrument, &mut f).map(|mut scratch| {
            if let Err(why) = recompute(
                dir,
                &manifest,
                &mut scratch,
                &bookings,
                &corrections,
                &mut f,
            ) {
                f.problems.push(why);
            }
            scratch
        });
        let envelope_side = envelope_side.join().unwrap_or_else(|_| EnvelopeSide {
            problems: vec!["checking the envelopes failed (a panic; see stderr)".into()],
            ..EnvelopeSide::default()
        });
        (envelope_side, scratch)
    });
    let EnvelopeSide {
        mut signed,
        problems,
        envelopes,
    } = envelope_side;
    f.envelopes = envelopes;
    // The envelopes' problems first, as a reader goes through the bundle.
    f.problems.splice(0..0, problems);
    match scratch {
        Some(scratch) => {
            if let Err(e) = cross_check(&scratch.conn, &mut signed, &instrument, &mut f) {
                f.problems
                    .push(format!("reading the stored events back: {e}"));
            }
        }
        None => f
            .problems
            .push("the stored events could not be checked against the signed ones".into()),
    }

    // 4. Checkpoints.
    let key = read(bundle::COLLECTOR_KEY, &mut f).and_then(|text| {
        match serde_json::from_str::<CollectorKey>(&text) {
            Ok(k) => Some(k),
            Err(e) => {
                f.problems.push(format!("{}: {e}", bundle::COLLECTOR_KEY));
                None
            }
        }
    });
    if let Some(key) = key {
        let checkpoints = read(bundle::CHECKPOINTS, &mut f).unwrap_or_default();
        check_checkpoints(
            &key,
            pinned,
            &checkpoints,
            &signed,
            (&instrument, &bookings, &corrections),
            &mut f,
        );
    }

    f
}

/// What the envelope thread found.
#[derive(Default)]
struct EnvelopeSide {
    /// Per agent, per seq: the signed event.
    signed: HashMap<String, BTreeMap<u64, Signed>>,
    problems: Vec<String>,
    envelopes: usize,
}

/// Reads the keys and the envelopes, checks every signature and every
/// agent's chain.
fn check_envelopes(dir: &Path) -> EnvelopeSide {
    let mut side = EnvelopeSide::default();
    let mut keys: HashMap<String, KeyLine> = HashMap::new();
    each_line(
        dir,
        bundle::KEYS,
        &mut side.problems,
        |n, line, problems| match serde_json::from_str::<KeyLine>(line) {
            Ok(k) => {
                keys.insert(k.key_id.clone(), k);
            }
            Err(e) => problems.push(format!("{} line {n}: {e}", bundle::KEYS)),
        },
    );
    let mut dropped: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    let (signed, envelopes) = (&mut side.signed, &mut side.envelopes);
    each_line(
        dir,
        bundle::ENVELOPES,
        &mut side.problems,
        |n, line, problems| {
            *envelopes += 1;
            let at = format!("{} line {n}", bundle::ENVELOPES);
            let envelope: EnvelopeLine = match serde_json::from_str(line) {
                Ok(e) => e,
                Err(e) => {
                    problems.push(format!("{at}: {e}"));
                    return;
                }
            };
            if let Err(why) = check_envelope(&envelope, &keys, signed, &mut dropped) {
                problems.push(format!("{at} (agent {}): {why}", envelope.agent_id));
            }
        },
    );
    for (agent, events) in &side.signed {
        check_chain(agent, events, dropped.get(agent), &mut side.problems);
    }
    side
}

/// Reads `events.jsonl` into a scratch store; `None` when there is none.
fn store_events(dir: &Path, instrument: &str, f: &mut Findings) -> Option<Scratch> {
    let scratch = match Scratch::new() {
        Ok(s) => s,
        Err(e) => {
            f.problems.push(e);
            return None;
        }
    };
    let conn = &scratch.conn;
    if let Err(e) = conn.execute_batch("BEGIN") {
        f.problems.push(format!("recomputing: {e}"));
    }
    let mut events = 0;
    each_line(dir, bundle::EVENTS, &mut f.problems, |n, line, problems| {
        let row: EventRow = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{} line {n}: {e}", bundle::EVENTS));
                return;
            }
        };
        events += 1;
        if row.instrument_id != instrument {
            problems.push(format!(
                "event seq {} of agent {}: not an event of instrument {instrument}",
                row.seq, row.agent_id
            ));
        }
        if let Err(e) = insert_event(conn, &row) {
            problems.push(format!("{} line {n}: {e}", bundle::EVENTS));
        }
    });
    f.events = events;
    if let Err(e) = conn.execute_batch("COMMIT") {
        f.problems.push(format!("recomputing: {e}"));
    }
    Some(scratch)
}

/// The store's event rows against the signed events: each signed one
/// stored with the same content and chain hash, each stored one signed
/// (or unsigned, and counted).
fn cross_check(
    conn: &rusqlite::Connection,
    signed: &mut HashMap<String, BTreeMap<u64, Signed>>,
    instrument: &str,
    f: &mut Findings,
) -> rusqlite::Result<()> {
    let mut unsigned = 0usize;
    let mut stmt = conn.prepare("SELECT agent_id, seq, payload, chain_hash FROM events")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let agent = row.get_ref(0)?.as_str()?;
        let seq = row.get::<_, i64>(1)? as u64;
        let payload = row.get_ref(2)?.as_str()?;
        let stored = row.get_ref(3)?.as_blob_or_null()?;
        let what = || format!("event seq {seq} of agent {agent}");
        match signed.get_mut(agent).and_then(|m| m.get_mut(&seq)) {
            Some(s) => {
                s.stored = true;
                // The chain hash covers the bytes: equal hashes, equal payloads.
                if labhours_shared::trust::chain_hash(&s.prev, payload.as_bytes()) != s.hash {
                    f.problems.push(format!(
                        "{}: stored content differs from the signed envelope",
                        what()
                    ));
                }
                if stored != Some(s.hash.as_slice()) {
                    f.problems.push(format!(
                        "{}: chain hash mismatch (stored {}, signed chain {})",
                        what(),
                        stored.map_or_else(|| "none".to_owned(), hex),
                        hex(&s.hash)
                    ));
                }
            }
            None if stored.is_some() => f.problems.push(format!(
                "{}: stored as signed, but no signed envelope carries it",
                what()
            )),
            None => unsigned += 1,
        }
    }
    for (agent, events) in signed.iter() {
        for (seq, s) in events {
            if s.instrument_id == instrument && !s.stored {
                f.problems.push(format!(
                    "event seq {seq} of agent {agent}: signed, but missing from the store's events"
                ));
            }
        }
    }
    if unsigned > 0 {
        f.notes.push(format!(
            "{unsigned} event(s) came unsigned (agents without a key): no signature covers them"
        ));
    }
    Ok(())
}

/// Calls `each` with every non-empty line of the bundle's file `name` and
/// its 1-based number, reading one line at a time (a year of events is
/// hundreds of MB). A file that cannot be read, or a line that is not
/// UTF-8, is a problem.
fn each_line(
    dir: &Path,
    name: &str,
    problems: &mut Vec<String>,
    mut each: impl FnMut(usize, &str, &mut Vec<String>),
) {
    use std::io::BufRead as _;
    let file = match std::fs::File::open(dir.join(name)) {
        Ok(file) => file,
        Err(e) => {
            problems.push(format!("{name}: {e}"));
            return;
        }
    };
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    for n in 1.. {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                problems.push(format!("{name} line {n}: {e}"));
                return;
            }
        }
        let text = match std::str::from_utf8(&line) {
            Ok(text) => text.trim_end_matches(['\n', '\r']),
            Err(_) => {
                problems.push(format!("{name} line {n}: not UTF-8 text"));
                continue;
            }
        };
        if !text.is_empty() {
            each(n, text, problems);
        }
    }
}

/// Non-empty lines with their 1-based numbers.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| (i + 1, l))
}

fn read_manifest(dir: &Path, f: &mut Findings) -> Option<Manifest> {
    let path = dir.join(bundle::MANIFEST);
    let manifest: Manifest = match std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        Err(e) => {
            f.problems.push(format!("{}: {e}", path.display()));
            return None;
        }
    };
    if manifest.format != bundle::FORMAT {
        f.problems.push(format!(
            "{}: format {:?}, this verifier reads {:?}",
            bundle::MANIFEST,
            manifest.format,
            bundle::FORMAT
        ));
        return None;
    }
    for name in bundle::FILES {
        match (
            manifest.files.get(name),
            bundle::file_sha256(&dir.join(name)),
        ) {
            (None, _) => f
                .problems
                .push(format!("{name}: not listed in the manifest")),
            (Some(_), Err(e)) => f.problems.push(format!("{name}: {e}")),
            (Some(want), Ok(got)) => {
                if &got != want {
                    f.problems.push(format!(
                        "{name}: SHA-256 {got}, the manifest says {want} (changed after export)"
                    ));
                }
            }
        }
    }
    for name in manifest.files.keys() {
        if !bundle::FILES.contains(&name.as_str()) {
            f.problems.push(format!(
                "{}: lists an unknown file {name}",
                bundle::MANIFEST
            ));
        }
    }
    Some(manifest)
}

fn check_envelope(
    envelope: &EnvelopeLine,
    keys: &HashMap<String, KeyLine>,
    signed: &mut HashMap<String, BTreeMap<u64, Signed>>,
    dropped: &mut HashMap<String, Vec<(u64, u64)>>,
) -> Result<(), String> {
    let incoming = decode_envelope(envelope.payload.as_bytes()).map_err(|e| e.to_string())?;
    let (Some(sig), Some(chain)) = (&incoming.signed, &incoming.chain) else {
        return Err("not a signed version 2 envelope".into());
    };
    let key_id = chain.key_id.ok_or("the envelope names no key_id")?;
    let key = keys
        .get(&key_id.to_string())
        .ok_or_else(|| format!("signed with key {key_id}, which is not in {}", bundle::KEYS))?;
    if key.agent_id != incoming.agent_id || envelope.agent_id != incoming.agent_id {
        return Err(format!(
            "envelope of {} signed with key {key_id} of {}",
            incoming.agent_id, key.agent_id
        ));
    }
    let public: PublicKey = key.public_key.parse().map_err(|e| format!("{e}"))?;
    if !public.verifies(&sig.message, &sig.signature) {
        return Err(format!("the signature does not verify with key {key_id}"));
    }
    if let Some(revoked) = key.revoked_at
        && revoked.as_millisecond() <= envelope.received_at_ms
    {
        return Err(format!(
            "signed with key {key_id}, revoked at {revoked}, before it arrived"
        ));
    }
    let agent = signed.entry(incoming.agent_id.clone()).or_default();
    for (i, event) in incoming.events.iter().enumerate() {
        let prev = chain
            .runs
            .iter()
            .find(|r| r.first == event.seq)
            .map_or_else(|| chain.hashes[i - 1], |r| r.prev);
        if let EventKind::Dropped { ranges, .. } = &event.kind {
            let d = dropped.entry(incoming.agent_id.clone()).or_default();
            d.extend(ranges.iter().map(|r| (r.first, r.last)));
        }
        let entry = Signed {
            hash: chain.hashes[i],
            prev,
            instrument_id: incoming.instrument_id.clone(),
            stored: false,
        };
        match agent.get(&event.seq) {
            Some(before) if before.hash != entry.hash => {
                return Err(format!(
                    "event seq {} of agent {}: two envelopes carry different histories (fork)",
                    event.seq, incoming.agent_id
                ));
            }
            Some(_) => {}
            None => {
                agent.insert(event.seq, entry);
            }
        }
    }
    Ok(())
}

/// Each event's signed `prev` must be the hash of the event before it,
/// unless that seq was declared dropped by the agent.
fn check_chain(
    agent: &str,
    events: &BTreeMap<u64, Signed>,
    dropped: Option<&Vec<(u64, u64)>>,
    problems: &mut Vec<String>,
) {
    let declared = |seq: u64| dropped.is_some_and(|d| d.iter().any(|&(a, b)| a <= seq && seq <= b));
    for (&seq, s) in events {
        let before = seq - 1;
        match events.get(&before) {
            _ if before == 0 => {
                if s.prev != [0; 32] {
                    problems.push(format!(
                        "event seq 1 of agent {agent}: chain hash mismatch (prev is not the zero hash)"
                    ));
                }
            }
            Some(b) if b.hash == s.prev => {}
            Some(_) if declared(before) => {}
            Some(b) => problems.push(format!(
                "event seq {seq} of agent {agent}: chain hash mismatch (signed prev {}, seq {before} hashes to {})",
                hex(&s.prev),
                hex(&b.hash)
            )),
            None if declared(before) => {}
            None => problems.push(format!(
                "event seq {seq} of agent {agent}: seq {before} is in no envelope, so the chain before it is unproven"
            )),
        }
    }
}

fn check_checkpoints(
    key: &CollectorKey,
    pinned: Option<&PublicKey>,
    text: &str,
    signed: &HashMap<String, BTreeMap<u64, Signed>>,
    (instrument, bookings, corrections): (&str, &str, &str),
    f: &mut Findings,
) {
    let public: PublicKey = match key.public_key.parse() {
        Ok(k) => k,
        Err(e) => {
            f.problems.push(format!("{}: {e}", bundle::COLLECTOR_KEY));
            return;
        }
    };
    if let Some(pinned) = pinned
        && *pinned != public
    {
        f.problems.push(format!(
            "{}: the bundle's collector key {public} is not the key given ({pinned})",
            bundle::COLLECTOR_KEY
        ));
        return;
    }
    let mut newest: Option<Body> = None;
    for (n, line) in lines(text) {
        f.checkpoints += 1;
        let at = format!("{} line {n}", bundle::CHECKPOINTS);
        let checkpoint: Checkpoint = match serde_json::from_str(line) {
            Ok(c) => c,
            Err(e) => {
                f.problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        let body = match note::open(&checkpoint.note, &key.key_name, &public)
            .map_err(|e| e.to_string())
            .and_then(Body::parse)
        {
            Ok(b) => b,
            Err(e) => {
                f.problems
                    .push(format!("checkpoint of {}: {e}", checkpoint.signed_at));
                continue;
            }
        };
        for head in &body.heads {
            let Some(events) = signed.get(&head.agent_id) else {
                continue;
            };
            match events.get(&head.last_seq) {
                Some(s) if s.hash == head.head => {}
                Some(s) => f.problems.push(format!(
                    "checkpoint of {}: agent {} seq {} has head {}, but the bundle's event hashes to {}",
                    body.time,
                    head.agent_id,
                    head.last_seq,
                    hex(&head.head),
                    hex(&s.hash)
                )),
                None => f.problems.push(format!(
                    "checkpoint of {}: names seq {} of agent {}, which is in no envelope of the bundle (events removed)",
                    body.time, head.last_seq, head.agent_id
                )),
            }
        }
        if newest.as_ref().is_none_or(|b| b.time <= body.time) {
            newest = Some(body);
        }
    }
    let text_lines = |t: &str| -> Vec<String> { lines(t).map(|(_, l)| l.to_owned()).collect() };
    let (b, c) = (text_lines(bookings), text_lines(corrections));
    let ours = digest(instrument, &b, &c);
    let Some(newest) = newest else {
        if !b.is_empty() || !c.is_empty() {
            f.problems.push(
                "no checkpoint in the bundle: its bookings and corrections are not covered \
                 (sign one with `labhours-collector checkpoint sign`, then export again)"
                    .into(),
            );
        }
        return;
    };
    let theirs = newest
        .inputs_of(instrument)
        .cloned()
        .unwrap_or_else(|| digest(instrument, &[], &[]));
    if theirs == ours {
        return;
    }
    // Rows changed after the checkpoint are not covered yet; any other
    // difference is an edit that bypassed imports and corrections.
    let later = |rows: &[String], field: &str, id: &str| -> Vec<String> {
        rows.iter()
            .filter_map(|l| serde_json::from_str::<Map<String, Value>>(l).ok())
            .filter(|r| {
                r.get(field).and_then(Value::as_i64).unwrap_or(i64::MAX)
                    > newest.time.as_millisecond()
            })
            .map(|r| r.get(id).map(|v| v.to_string()).unwrap_or_default())
            .collect()
    };
    let late_b = later(&b, "imported_at_ms", "booking_id");
    let late_c = later(&c, "created_at_ms", "id");
    if !late_b.is_empty() || !late_c.is_empty() {
        f.problems.push(format!(
            "booking(s) {} and correction(s) {} changed after the newest checkpoint ({}): \
             not covered (sign one with `labhours-collector checkpoint sign`, then export again)",
            if late_b.is_empty() {
                "none".into()
            } else {
                late_b.join(", ")
            },
            if late_c.is_empty() {
                "none".into()
            } else {
                late_c.join(", ")
            },
            newest.time
        ));
    }
    if theirs.bookings_sha256 != ours.bookings_sha256 && late_b.is_empty() {
        f.problems.push(format!(
            "bookings of {instrument}: the checkpoint of {} committed to {} row(s) with SHA-256 {}, \
             the bundle holds {} with {}: a booking was changed, added or removed outside an import",
            newest.time, theirs.bookings, theirs.bookings_sha256, ours.bookings, ours.bookings_sha256
        ));
    }
    if theirs.corrections_sha256 != ours.corrections_sha256 && late_c.is_empty() {
        f.problems.push(format!(
            "corrections of {instrument}: the checkpoint of {} committed to {} row(s) with SHA-256 {}, \
             the bundle holds {} with {}: a correction was changed, added or removed",
            newest.time,
            theirs.corrections,
            theirs.corrections_sha256,
            ours.corrections,
            ours.corrections_sha256
        ));
    }
}

/// Loads the rows into a scratch in-memory store and reconciles them with
/// the collector's own code, then compares the figures.
fn recompute(
    dir: &Path,
    manifest: &Manifest,
    scratch: &mut Scratch,
    bookings: &str,
    corrections: &str,
    f: &mut Findings,
) -> Result<(), String> {
    let config: crate::config::CollectorConfig = std::fs::read(dir.join(bundle::CONFIG))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", bundle::CONFIG))?;
    let reported: Reported = std::fs::read(dir.join(bundle::REPORTED))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", bundle::REPORTED))?;
    let registry = crate::registry::Registry::from_config(&config)
        .map_err(|e| format!("{}: {e}", bundle::CONFIG))?;
    let query = super::export::hours_query(&manifest.instrument_id, &manifest.from, &manifest.to)
        .map_err(|e| format!("{}: {e}", bundle::MANIFEST))?;
    let sql = |e: rusqlite::Error| format!("recomputing: {e}");
    let conn = &mut scratch.conn;
    let parse = |name: &str, text: &str| -> Result<Vec<Map<String, Value>>, String> {
        lines(text)
            .map(|(n, l)| serde_json::from_str(l).map_err(|e| format!("{name} line {n}: {e}")))
            .collect()
    };
    let step = |what: &'static str| move |e: rusqlite::Error| format!("recomputing ({what}): {e}");
    let tx = conn.transaction().map_err(sql)?;
    bundle::insert_lines(&tx, Table::Bookings, &parse(bundle::BOOKINGS, bookings)?)?;
    bundle::insert_lines(
        &tx,
        Table::Corrections,
        &parse(bundle::CORRECTIONS, corrections)?,
    )?;
    tx.commit().map_err(sql)?;
    crate::store::derived::rebuild(conn).map_err(step("derive"))?;
    // The whole instrument from its first event, as `rebuild` does.
    let tx = conn.transaction().map_err(sql)?;
    crate::verified::materialize::reconcile_instrument(
        &tx,
        &registry.instrument(&manifest.instrument_id),
        None,
        manifest.exported_at.as_millisecond(),
    )
    .map_err(step("reconcile"))?;
    tx.execute("DELETE FROM dirty", []).map_err(sql)?;
    tx.commit().map_err(sql)?;
    let hours = match crate::verified::hours::query(conn, &registry, &query)
        .map_err(|e| format!("recomputing: {e}"))?
        .rows
    {
        crate::verified::HoursRows::Totals(rows) => rows,
        crate::verified::HoursRows::UsageTypes(_) => unreachable!("grouped by instrument"),
    };
    let outcomes = crate::verified::views::outcomes(
        conn,
        &registry,
        &query.range,
        Some(&manifest.instrument_id),
    )
    .map_err(|e| format!("recomputing: {e}"))?;
    compare_hours(&reported.hours, &hours, &mut f.problems);
    compare_outcomes(&reported.outcomes, &outcomes, &mut f.problems);
    Ok(())
}

/// `provisional` says whether a figure may still change, from the agents'
/// heartbeats at export: a statement about the future, not a figure.
const NOT_FIGURES: [&str; 1] = ["provisional"];

fn compare_hours(
    reported: &[crate::verified::HoursRow],
    recomputed: &[crate::verified::HoursRow],
    problems: &mut Vec<String>,
) {
    let key = |r: &crate::verified::HoursRow| r.period_start.get(..10).unwrap_or("").to_owned();
    compare(
        reported.iter().map(|r| (key(r), to_value(r))).collect(),
        recomputed.iter().map(|r| (key(r), to_value(r))).collect(),
        "",
        problems,
    );
}

fn compare_outcomes(
    reported: &[crate::verified::OutcomeRow],
    recomputed: &[crate::verified::OutcomeRow],
    problems: &mut Vec<String>,
) {
    let key = |r: &crate::verified::OutcomeRow| r.booking_id.clone();
    compare(
        reported.iter().map(|r| (key(r), to_value(r))).collect(),
        recomputed.iter().map(|r| (key(r), to_value(r))).collect(),
        "booking ",
        problems,
    );
}

fn to_value<T: serde::Serialize>(row: &T) -> Value {
    serde_json::to_value(row).unwrap_or(Value::Null)
}

fn compare(
    reported: BTreeMap<String, Value>,
    recomputed: BTreeMap<String, Value>,
    prefix: &str,
    problems: &mut Vec<String>,
) {
    for (key, theirs) in &reported {
        let Some(ours) = recomputed.get(key) else {
            problems.push(format!("{prefix}{key}: reported, but not recomputed"));
            continue;
        };
        diff(&format!("{prefix}{key}"), "", theirs, ours, problems);
    }
    for key in recomputed.keys() {
        if !reported.contains_key(key) {
            problems.push(format!("{prefix}{key}: recomputed, but not reported"));
        }
    }
}

fn diff(label: &str, path: &str, theirs: &Value, ours: &Value, problems: &mut Vec<String>) {
    match (theirs, ours) {
        (Value::Object(a), Value::Object(b)) => {
            let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
            names.sort();
            names.dedup();
            for name in names {
                if path.is_empty() && NOT_FIGURES.contains(&name.as_str()) {
                    continue;
                }
                let sub = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                diff(
                    label,
                    &sub,
                    a.get(name).unwrap_or(&Value::Null),
                    b.get(name).unwrap_or(&Value::Null),
                    problems,
                );
            }
        }
        _ if theirs != ours => problems.push(format!(
            "{label} {path}: reported {theirs}, recomputed {ours}"
        )),
        _ => {}
    }
}

/// `labhours-verify`'s command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "labhours-verify",
    version,
    about = "Checks a labhours evidence bundle (signatures, chains, checkpoints) and recomputes its figures; needs no collector"
)]
pub struct Args {
    /// The bundle directory written by `labhours-collector evidence export`.
    pub bundle: PathBuf,
    /// The collector's public key (`ed25519:<hex>`) as you obtained it
    /// independently; without it the bundle's own key is used.
    #[arg(long)]
    pub collector_key: Option<String>,
}

/// Runs `labhours-verify`: prints `verified` (exit 0) or each mismatch (exit 1).
pub fn run(args: Args) -> std::process::ExitCode {
    use std::process::ExitCode;
    let pinned = match args.collector_key.as_deref().map(str::parse::<PublicKey>) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            eprintln!("error: --collector-key: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.bundle.is_dir() {
        eprintln!("error: {} is not a bundle directory", args.bundle.display());
        return ExitCode::from(2);
    }
    let findings = verify(&args.bundle, pinned.as_ref());
    for line in &findings.notes {
        println!("note: {line}");
    }
    if findings.verified() {
        println!(
            "verified: {} events in {} signed envelopes, {} checkpoint(s), figures recomputed and equal",
            findings.events, findings.envelopes, findings.checkpoints
        );
        ExitCode::SUCCESS
    } else {
        for line in &findings.problems {
            println!("{line}");
        }
        println!("NOT verified: {} mismatch(es)", findings.problems.len());
        ExitCode::from(1)
    }
}
