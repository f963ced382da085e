//! `labhours-agent probe`: one look at every configured source, for the
//! technician wiring an instrument PC. Each line says what came back or, in
//! words a technician can act on, why nothing did.

use std::fmt::Write as _;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::FramedRead;

use crate::config::{AgentConfig, StatusConfig};
use crate::meter::Bus;
use crate::status::{self, BoundedLines, Line, StatusRules};

/// How long `probe` listens to a status port.
const LISTEN: Duration = Duration::from_secs(5);

/// The report, and whether every source answered.
pub async fn probe(config: &AgentConfig) -> (String, bool) {
    let mut report = String::new();
    let mut all_ok = true;
    if !config.meters.is_empty() {
        report.push_str("Meters:\n");
        for mut bus in Bus::plan(&config.meters) {
            for (name, result) in bus.read_all().await {
                all_ok &= result.is_ok();
                let _ = writeln!(report, "  {}", bus.describe(&name, &result));
            }
        }
    }
    if let Some(status_cfg) = &config.status {
        let (text, ok) = probe_status(status_cfg).await;
        all_ok &= ok;
        report.push_str(&text);
    }
    if !config.results.is_empty() {
        report.push_str("Result folders:\n");
        for r in &config.results {
            let line = match std::fs::read_dir(&r.folder) {
                Ok(entries) => format!(
                    "  {}: readable, {} entries at the top level",
                    r.folder.display(),
                    entries.count()
                ),
                Err(e) => {
                    all_ok = false;
                    format!("  {}: cannot be read: {e}", r.folder.display())
                }
            };
            report.push_str(&line);
            report.push('\n');
        }
    }
    (report, all_ok)
}

async fn probe_status(cfg: &StatusConfig) -> (String, bool) {
    let mut out = format!("Status port {}:\n", cfg.port_name());
    let rules = match StatusRules::new(&cfg.rules) {
        Ok(r) => r,
        Err(e) => return (format!("{out}  the rules do not compile: {e}\n"), false),
    };
    let port = match (status::serial_opener())(cfg) {
        Ok(p) => p,
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (is the agent allowed to use serial ports? on Linux, add its user to the dialout group)"
            } else if e.to_string().to_lowercase().contains("busy") {
                " (another program holds the port: stop it, or the agent service)"
            } else {
                ""
            };
            return (format!("{out}  cannot open: {e}{hint}\n"), false);
        }
    };
    let (reader, mut writer) = tokio::io::split(port);
    if let Some(query) = &cfg.query
        && let Err(e) = writer.write_all(query.as_bytes()).await
    {
        return (format!("{out}  cannot send the query: {e}\n"), false);
    }
    let mut lines = FramedRead::new(reader, BoundedLines::new(cfg.max_line_bytes));
    let mut seen = 0;
    let deadline = tokio::time::sleep(LISTEN);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            line = lines.next() => match line {
                Some(Ok(Line::TooLong)) => { let _ = writeln!(out, "  a line longer than max_line_bytes ({}) — check the baud rate", cfg.max_line_bytes); }
                Some(Ok(Line::Text(line))) => {
                    seen += 1;
                    let verdict = match rules.classify(&line) {
                        Some(m) => format!("rule {} → {}{}", m.rule + 1, m.state,
                            m.sample.map(|s| format!(", sample {s}")).unwrap_or_default()),
                        None => "no rule matches (ignored)".into(),
                    };
                    let _ = writeln!(out, "  {line:?}: {verdict}");
                }
                Some(Err(e)) => { let _ = writeln!(out, "  read error: {e}"); }
                None => break,
            }
        }
    }
    if seen == 0 {
        let _ = writeln!(
            out,
            "  no line within {} s — check the cable, baud rate and parity{}",
            LISTEN.as_secs(),
            if cfg.query.is_none() {
                ", and whether the instrument must be asked (set `query`)"
            } else {
                ""
            }
        );
    }
    (out, seen > 0)
}
