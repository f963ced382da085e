//! The instrument's own status line on a serial port.
//!
//! Lines are framed by `\n` (a trailing `\r` is dropped) with a length bound:
//! a longer line is discarded up to its end and reported as a fault once, so
//! a noisy or mis-set port can never grow memory. Each line that matches a
//! rule becomes a status reading at its arrival time; others are ignored
//! (they do not refresh freshness). For instruments that only answer when
//! asked, the `query` is written every `query_interval_s`. A port that cannot
//! be opened or fails is a fault, and is reopened with backoff.

mod rules;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use labhours_shared::state::Reading;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

pub use rules::{StatusMatch, StatusRules};

use crate::clock::Clock;
use crate::config::StatusConfig;
use crate::events::Events;

/// Reopening a failed port waits this long at first, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Opens the port; a seam so tests can hand in a pty.
pub type PortOpener = Arc<dyn Fn(&StatusConfig) -> std::io::Result<Box<dyn Port>> + Send + Sync>;

/// A byte stream both ways (a serial port, a pty, a socket in tests).
pub trait Port: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Port for T {}

/// The production opener: the serial port named in the config.
pub fn serial_opener() -> PortOpener {
    Arc::new(|cfg: &StatusConfig| {
        let port = crate::meter::open_serial(&cfg.serial)?;
        Ok(Box::new(port) as Box<dyn Port>)
    })
}

/// Reads status lines until `shutdown`, sending matching ones as readings.
pub async fn run(
    cfg: StatusConfig,
    open: PortOpener,
    readings: tokio::sync::mpsc::UnboundedSender<Reading>,
    events: Events,
    clock: Arc<dyn Clock>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let rules = match StatusRules::new(&cfg.rules) {
        Ok(rules) => rules,
        Err(e) => {
            events.fault("status", &format!("status rules do not compile: {e}"));
            return;
        }
    };
    tokio::pin!(shutdown);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let outcome = tokio::select! {
            _ = &mut shutdown => return,
            outcome = session(&cfg, &open, &rules, &readings, &events, clock.as_ref()) => outcome,
        };
        match outcome {
            Ended::ReadingsClosed => return,
            Ended::Failed { after_lines } => {
                if after_lines > 0 {
                    backoff = FIRST_BACKOFF;
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Ended {
    ReadingsClosed,
    Failed { after_lines: u64 },
}

/// One open port, until it fails.
async fn session(
    cfg: &StatusConfig,
    open: &PortOpener,
    rules: &StatusRules,
    readings: &tokio::sync::mpsc::UnboundedSender<Reading>,
    events: &Events,
    clock: &dyn Clock,
) -> Ended {
    let source = format!("status:{}", cfg.serial.serial_port);
    let port = match open(cfg) {
        Ok(port) => port,
        Err(e) => {
            events.fault_once(&source, &format!("cannot open the status port: {e}"));
            return Ended::Failed { after_lines: 0 };
        }
    };
    events.clear(&source);
    tracing::info!(port = %cfg.serial.serial_port, "status port open");
    let (reader, mut writer) = tokio::io::split(port);
    let mut lines = FramedRead::new(reader, LinesCodec::new_with_max_length(cfg.max_line_bytes));
    let mut query = cfg.query.as_ref().map(|q| {
        let mut every = tokio::time::interval(Duration::from_secs(cfg.query_interval_s.max(1)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        (q.as_bytes().to_vec(), every)
    });
    let mut count = 0u64;
    loop {
        let next = tokio::select! {
            line = lines.next() => line,
            _ = tick(&mut query) => {
                let Some((bytes, _)) = &query else { continue };
                if let Err(e) = writer.write_all(bytes).await {
                    events.fault_once(&source, &format!("cannot send the status query: {e}"));
                    return Ended::Failed { after_lines: count };
                }
                continue;
            }
        };
        match next {
            Some(Ok(line)) => {
                count += 1;
                if let Some(m) = rules.classify(&line) {
                    let reading = Reading::Status {
                        at: clock.now(),
                        state: m.state,
                        sample: m.sample,
                    };
                    if readings.send(reading).is_err() {
                        return Ended::ReadingsClosed;
                    }
                }
            }
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                events.fault_once(
                    &format!("{source}:length"),
                    &format!(
                        "a status line was longer than max_line_bytes ({}) and was dropped: check the baud rate or raise the limit",
                        cfg.max_line_bytes
                    ),
                );
            }
            Some(Err(LinesCodecError::Io(e))) => {
                events.fault_once(&source, &format!("the status port failed: {e}"));
                return Ended::Failed { after_lines: count };
            }
            None => {
                events.fault_once(&source, "the status port closed");
                return Ended::Failed { after_lines: count };
            }
        }
    }
}

async fn tick(query: &mut Option<(Vec<u8>, tokio::time::Interval)>) {
    match query {
        Some((_, every)) => {
            every.tick().await;
        }
        None => std::future::pending().await,
    }
}
