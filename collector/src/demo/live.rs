//! The live simulators: per instrument a Modbus TCP power meter on a free
//! loopback port (the agent crate's `modbus_sim`), the NMR's status line on
//! a pty pair, the Q-TOF's result files; one driver task per instrument
//! sets them from the day's plan once a second.
//!
//! Meter drop-outs are simulated in the history only, so that live states
//! are never `unknown` once an agent has settled.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use labhours_agent::config::MeterModel;
use labhours_agent::modbus_sim::{Sim, SimUnit, TcpSim};
use tokio::io::AsyncWriteExt as _;
use tokio_serial::SerialStream;
use tokio_util::sync::CancellationToken;

use super::history::{noise, write_result_file};
use super::profiles::{DayPlan, Signal};
use super::scenario::{DemoInstrument, midnight};

/// The unit id of every simulated meter.
const UNIT: u8 = 1;
const VOLTS: f64 = 230.0;
/// How often the drivers look at the plan.
const TICK: Duration = Duration::from_secs(1);
/// A status line is repeated this often while nothing changes (well inside
/// the agent's `status_stale_after_s`).
const STATUS_REPEAT_S: i64 = 30;

/// One instrument's simulated hardware.
#[derive(Debug)]
pub struct SimInstrument {
    pub meter: TcpSim,
    pub sim: Sim,
    /// The instrument's side of the status pty, and the path the agent opens.
    pub status: Option<(SerialStream, String)>,
}

fn model(name: &str) -> MeterModel {
    match name {
        "sdm630" => MeterModel::Sdm630,
        "ddsu666" => MeterModel::Ddsu666,
        _ => MeterModel::Sdm120,
    }
}

impl SimInstrument {
    pub async fn start(inst: &DemoInstrument) -> anyhow::Result<Self> {
        let standby = inst.profile.watts.standby;
        let sim = Sim::new().with_unit(
            UNIT,
            SimUnit::preset(model(inst.meter)).reading(standby, VOLTS, standby / VOLTS, 0.0),
        );
        let meter = TcpSim::start(sim.clone()).await?;
        let status = if inst.profile.signal == Signal::StatusLine {
            status_pty()?
        } else {
            None
        };
        Ok(Self { meter, sim, status })
    }

    pub fn meter_addr(&self) -> SocketAddr {
        self.meter.addr()
    }

    pub fn status_path(&self) -> Option<&str> {
        self.status.as_ref().map(|(_, p)| p.as_str())
    }
}

/// A pty pair for a status line: the instrument's side, and the path the
/// agent opens.
#[cfg(unix)]
fn status_pty() -> anyhow::Result<Option<(SerialStream, String)>> {
    use tokio_serial::SerialPort as _;
    let (instrument, port) = SerialStream::pair()?;
    let path = port
        .name()
        .ok_or_else(|| anyhow::anyhow!("the status pty has no path"))?;
    // The agent opens the port by its path, exclusively, as on a real PC.
    drop(port);
    Ok(Some((instrument, path)))
}

/// No pty pairs off Unix: the NMR's agent then has no status port, and its
/// history no status lines.
#[cfg(not(unix))]
fn status_pty() -> anyhow::Result<Option<(SerialStream, String)>> {
    Ok(None)
}

/// What a driver needs about its instrument.
#[derive(Debug, Clone)]
pub struct DriverSpec {
    pub inst: DemoInstrument,
    pub number: usize,
    pub seed: u64,
    pub zone: TimeZone,
    pub showcase: Date,
    pub results: PathBuf,
}

/// Follows the plan at real time until `stop`.
pub async fn drive(
    spec: DriverSpec,
    sim: Sim,
    mut status: Option<SerialStream>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut plan: Option<(DayPlan, Timestamp)> = None;
    let mut kwh = 0.0;
    let mut last = Timestamp::now();
    let mut last_status: Option<(String, i64)> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Timestamp::now();
        let date = now.to_zoned(spec.zone.clone()).date();
        if plan.as_ref().is_none_or(|(p, _)| p.date != date) {
            let mut p = spec.inst.plan(spec.seed, spec.number, date, spec.showcase);
            p.outages.clear();
            plan = Some((p, midnight(date, &spec.zone)));
        }
        let Some((today, day_start)) = plan.as_ref() else {
            continue;
        };
        let secs = now.duration_since(*day_start).as_secs().max(0) as u32;
        let reading = today.reading_at(&spec.inst.profile, secs, noise(now, spec.number));
        let watts = reading.watts.unwrap_or(spec.inst.profile.watts.standby);
        kwh += watts * now.duration_since(last).as_secs_f64().max(0.0) / 3.6e6;
        sim.update(UNIT, |u| {
            u.watts = watts;
            u.volts = VOLTS;
            u.amps = watts / VOLTS;
            u.kwh = kwh;
        });
        if let (Some(port), Some(line)) = (status.as_mut(), reading.status) {
            let due = match &last_status {
                Some((previous, at)) => {
                    *previous != line || now.as_second() - at >= STATUS_REPEAT_S
                }
                None => true,
            };
            if due {
                let text = format!("{line}\r\n");
                match tokio::time::timeout(Duration::from_secs(2), port.write_all(text.as_bytes()))
                    .await
                {
                    Ok(Ok(())) => last_status = Some((line, now.as_second())),
                    Ok(Err(error)) => tracing::warn!(%error, "demo: the status pty failed"),
                    Err(_) => tracing::warn!("demo: nobody reads the status pty"),
                }
            }
        }
        if let Some(run_s) = spec.inst.file_run_s {
            let since = last.duration_since(*day_start).as_secs().max(0) as u32;
            for (at, sample, k) in today.result_files(run_s) {
                if at > since.min(secs) && at <= secs {
                    let done = super::scenario::at(*day_start, at);
                    if let Err(error) =
                        write_result_file(&spec.results, done, &spec.zone, &sample, k)
                    {
                        tracing::warn!(%error, "demo: cannot write a result file");
                    }
                }
            }
        }
        last = now;
    }
}
