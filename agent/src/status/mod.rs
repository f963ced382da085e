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

use bytes::BytesMut;
use futures_util::StreamExt;
use labhours_shared::state::Reading;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, FramedRead, LinesCodec, LinesCodecError};

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
        let serial = cfg.serial.as_ref().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "[status] names no serial port",
            )
        })?;
        let port = crate::meter::open_serial(serial)?;
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
    let source = format!("status:{}", cfg.port_name());
    let port = match open(cfg) {
        Ok(port) => port,
        Err(e) => {
            events.fault_once(&source, &format!("cannot open the status port: {e}"));
            return Ended::Failed { after_lines: 0 };
        }
    };
    events.clear(&source);
    tracing::info!(port = %cfg.port_name(), "status port open");
    let (reader, mut writer) = tokio::io::split(port);
    let mut lines = FramedRead::new(reader, BoundedLines::new(cfg.max_line_bytes));
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
            Some(Ok(Line::Text(line))) => {
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
            Some(Ok(Line::TooLong)) => {
                events.fault_once(
                    &format!("{source}:length"),
                    &format!(
                        "a status line was longer than max_line_bytes ({}) and was dropped: check the baud rate or raise the limit",
                        cfg.max_line_bytes
                    ),
                );
            }
            Some(Err(e)) => {
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

/// A framed line, or the news that one was too long (and was skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Text(String),
    TooLong,
}

/// `LinesCodec` with its length bound, but an overlong line is an item, not
/// an error: `FramedRead` ends the stream after an error, and one noisy line
/// must not close the port.
#[derive(Debug)]
pub struct BoundedLines(LinesCodec);

impl BoundedLines {
    pub fn new(max_line_bytes: usize) -> Self {
        Self(LinesCodec::new_with_max_length(max_line_bytes))
    }

    fn map(r: Result<Option<String>, LinesCodecError>) -> Result<Option<Line>, std::io::Error> {
        match r {
            Ok(line) => Ok(line.map(Line::Text)),
            Err(LinesCodecError::MaxLineLengthExceeded) => Ok(Some(Line::TooLong)),
            Err(LinesCodecError::Io(e)) => Err(e),
        }
    }
}

impl Decoder for BoundedLines {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        Self::map(self.0.decode(buf))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        Self::map(self.0.decode_eof(buf))
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use jiff::Timestamp;
    use labhours_shared::state::State;
    use labhours_shared::wire::EventKind;
    use tokio::io::{AsyncReadExt, DuplexStream};

    use super::*;
    use crate::clock::SystemClock;
    use crate::config::{SerialLink, StatusRule};
    use crate::outbox::{Outbox, OutboxSettings};

    fn cfg(query: Option<&str>) -> StatusConfig {
        StatusConfig {
            serial: Some(SerialLink {
                serial_port: "test".into(),
                baud_rate: 9600,
                parity: crate::config::Parity::None,
                stop_bits: 1,
                data_bits: 8,
            }),
            max_line_bytes: 32,
            query: query.map(Into::into),
            query_interval_s: 10,
            rules: vec![StatusRule {
                pattern: "^RUN".into(),
                state: State::Running,
            }],
        }
    }

    /// An opener that hands out in-memory ports; the test keeps the other ends.
    fn opener(ends: Arc<Mutex<Vec<DuplexStream>>>) -> PortOpener {
        Arc::new(move |_cfg: &StatusConfig| {
            let (ours, theirs) = tokio::io::duplex(1024);
            ends.lock().expect("lock").push(theirs);
            Ok(Box::new(ours) as Box<dyn Port>)
        })
    }

    fn outbox() -> (tempfile::TempDir, Events) {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = OutboxSettings {
            max_bytes: 1 << 20,
            summary_flush_ms: 1000,
            cache_bytes: 1 << 20,
            min_free_bytes: 0,
        };
        let (outbox, _) = Outbox::open(dir.path(), settings, Timestamp::UNIX_EPOCH).expect("open");
        (dir, Events::new(outbox, Arc::new(SystemClock)))
    }

    fn faults(events: &Events) -> Vec<String> {
        events
            .outbox()
            .pending(0, usize::MAX, usize::MAX)
            .expect("pending")
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Fault { message, .. } => Some(message),
                _ => None,
            })
            .collect()
    }

    /// `run` on an in-memory port; the test holds the instrument's end.
    struct Harness {
        _dir: tempfile::TempDir,
        events: Events,
        ends: Arc<Mutex<Vec<DuplexStream>>>,
        readings: tokio::sync::mpsc::UnboundedReceiver<Reading>,
        stop: tokio_util::sync::CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Harness {
        async fn start(cfg: StatusConfig) -> Self {
            let (_dir, events) = outbox();
            let ends = Arc::new(Mutex::new(Vec::new()));
            let (tx, readings) = tokio::sync::mpsc::unbounded_channel();
            let stop = tokio_util::sync::CancellationToken::new();
            let task = tokio::spawn(run(
                cfg,
                opener(ends.clone()),
                tx,
                events.clone(),
                Arc::new(SystemClock),
                stop.clone().cancelled_owned(),
            ));
            tokio::task::yield_now().await;
            Self {
                _dir,
                events,
                ends,
                readings,
                stop,
                task,
            }
        }

        /// The instrument's end of the port opened last.
        fn port(&self) -> DuplexStream {
            self.ends.lock().expect("lock").pop().expect("opened")
        }

        async fn stop(self) {
            self.stop.cancel();
            self.task.await.expect("ends");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn matching_lines_become_readings_and_others_are_ignored() {
        let mut h = Harness::start(cfg(None)).await;
        let mut port = h.port();
        port.write_all(b"temperature 21 C\r\nRUN 1\r\n")
            .await
            .expect("write");
        let reading = h.readings.recv().await.expect("a reading");
        assert!(matches!(
            reading,
            Reading::Status {
                state: State::Running,
                ..
            }
        ));
        assert!(
            h.readings.try_recv().is_err(),
            "the unmatched line made no reading"
        );
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_overlong_line_is_one_fault_and_reading_goes_on() {
        let mut h = Harness::start(cfg(None)).await;
        let mut port = h.port();
        let noise = vec![b'x'; 100];
        port.write_all(&noise).await.expect("write");
        port.write_all(b"\nRUN after noise\n").await.expect("write");
        port.write_all(&noise).await.expect("write");
        port.write_all(b"\nRUN again\n").await.expect("write");
        assert!(matches!(
            h.readings.recv().await,
            Some(Reading::Status { .. })
        ));
        assert!(matches!(
            h.readings.recv().await,
            Some(Reading::Status { .. })
        ));
        let faults = faults(&h.events);
        assert_eq!(faults.len(), 1, "{faults:?}");
        assert!(faults[0].contains("longer than max_line_bytes (32)"));
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_query_is_sent_every_interval() {
        let h = Harness::start(cfg(Some("STAT?\r\n"))).await;
        let mut port = h.port();
        let mut buf = [0u8; 7];
        port.read_exact(&mut buf)
            .await
            .expect("first query at once");
        assert_eq!(&buf, b"STAT?\r\n");
        let before = tokio::time::Instant::now();
        port.read_exact(&mut buf).await.expect("second query");
        assert_eq!(before.elapsed(), Duration::from_secs(10));
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_port_is_a_fault_and_is_reopened_with_backoff() {
        let mut h = Harness::start(cfg(None)).await;
        let port = h.port();
        drop(port);
        let start = tokio::time::Instant::now();
        // Wait for the reopen, then use the new port.
        let mut port = loop {
            if let Some(p) = h.ends.lock().expect("lock").pop() {
                break p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            start.elapsed() >= FIRST_BACKOFF,
            "reopened after the backoff"
        );
        assert_eq!(faults(&h.events), ["the status port closed"]);
        port.write_all(b"RUN\n").await.expect("write");
        assert!(h.readings.recv().await.is_some());
        h.stop().await;
    }
}
