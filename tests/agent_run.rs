//! The whole agent (`Agent::start`) against real peers: a Modbus TCP meter
//! simulator, the instrument's status line on a pty pair, and a real folder
//! of result files. Time is real here (sockets, ptys, files), so the agent is
//! configured with short intervals and every wait is for a condition, bounded.

use std::sync::Arc;
use std::time::Duration;

use labhours_agent::app::Agent;
use labhours_agent::clock::SystemClock;
use labhours_agent::config::{AgentConfig, MeterModel};
use labhours_agent::outbox::{Outbox, OutboxSettings};
use labhours_shared::state::State;
use labhours_shared::wire::{Event, EventKind};
use labhours_tests::modbus_sim::{Sim, SimUnit, TcpSim};
use tokio::io::AsyncWriteExt;
use tokio_serial::SerialPort;

fn config(
    data: &std::path::Path,
    meter: std::net::SocketAddr,
    pty: &str,
    folder: &std::path::Path,
) -> AgentConfig {
    let text = format!(
        r#"
        agent_id = "run-test"
        instrument_id = "nmr-600"
        data_dir = "{data}"
        poll_interval_ms = 200
        [mqtt]
        port = {mqtt}
        [state]
        on_above_w = 10
        running_above_w = 100
        min_dwell_s = 0
        [[meters]]
        name = "mains"
        model = "sdm120"
        timeout_ms = 150
        tcp = {{ host = "{host}", port = {port} }}
        [status]
        serial = {{ serial_port = "{pty}" }}
        [[status.rules]]
        pattern = "^FAULT"
        state = "fault"
        [[results]]
        folder = "{folder}"
        include = ["*.fid"]
        min_age_s = 0
        "#,
        data = data.display(),
        // Nothing listens there: events stay in the outbox for the test to read.
        mqtt = labhours_tests::brokers::free_port(),
        host = meter.ip(),
        port = meter.port(),
        folder = folder.display(),
    );
    AgentConfig::parse(&text).expect("a valid test config")
}

/// Waits (bounded) until the outbox holds an event matching `want`.
async fn wait_for(outbox: &Outbox, what: &str, want: impl Fn(&Event) -> bool) -> Event {
    let found = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let events = outbox.pending(0, usize::MAX, usize::MAX).expect("readable");
            if let Some(e) = events.into_iter().find(|e| want(e)) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        let events = outbox.pending(0, usize::MAX, usize::MAX).expect("readable");
        let kinds: Vec<_> = events
            .iter()
            .filter(|e| !matches!(e.kind, EventKind::Summary(_)))
            .map(|e| &e.kind)
            .collect();
        panic!("no {what} within 15 s; the outbox holds {kinds:#?}")
    })
}

fn is_transition_to(e: &Event, state: State) -> bool {
    matches!(e.kind, EventKind::Transition { to, .. } if to == state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meters_status_line_and_result_files_become_outbox_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = dir.path().join("results");
    std::fs::create_dir(&folder).expect("results folder");
    std::fs::write(folder.join("run-1.fid"), b"spectrum").expect("result file");
    std::fs::write(folder.join("notes.txt"), b"not a result").expect("other file");

    let sim = Sim::new().with_unit(
        1,
        SimUnit::preset(MeterModel::Sdm120).reading(500.0, 230.0, 2.2, 10.0),
    );
    let meter = TcpSim::start(sim.clone()).await.expect("simulator");
    let (mut instrument, port) = tokio_serial::SerialStream::pair().expect("pty pair");
    let pty = port.name().expect("pty path");
    // The agent opens the port by its path, exclusively, as on a real PC.
    drop(port);

    let agent = Agent::start(
        config(&dir.path().join("data"), meter.addr(), &pty, &folder),
        Arc::new(SystemClock),
    )
    .expect("agent starts");

    // Power from the meter: 500 W is running.
    let running = wait_for(agent.outbox(), "transition to running", |e| {
        is_transition_to(e, State::Running)
    })
    .await;
    assert!(
        matches!(&running.kind, EventKind::Transition { reason, .. } if reason.starts_with("power 500.0 W"))
    );

    // The status line wins over power.
    instrument
        .write_all(b"FAULT E-17 vacuum\r\n")
        .await
        .expect("write status");
    wait_for(agent.outbox(), "transition to fault", |e| {
        is_transition_to(e, State::Fault)
    })
    .await;

    // The result file, once, with its hash; the .txt is not included.
    let file = wait_for(agent.outbox(), "result file", |e| {
        matches!(e.kind, EventKind::ResultFile(_))
    })
    .await;
    let EventKind::ResultFile(file) = file.kind else {
        unreachable!()
    };
    assert_eq!(file.path, "run-1.fid");
    assert_eq!(file.size_bytes, 8);

    // The meter stops answering: a fault naming it (the status line still decides the state).
    sim.update(1, |u| {
        u.fault = Some(labhours_tests::modbus_sim::Fault::Silent)
    });
    let fault = wait_for(
        agent.outbox(),
        "meter fault",
        |e| matches!(&e.kind, EventKind::Fault { source, .. } if source == "meter:mains"),
    )
    .await;
    assert!(
        matches!(&fault.kind, EventKind::Fault { message, .. } if message.contains("no answer within 150 ms"))
    );

    agent.stop().await.expect("clean stop");
    drop(meter);

    // After the stop: the state ends unknown, and nothing was reported twice.
    let settings = OutboxSettings {
        max_bytes: 1 << 26,
        summary_flush_ms: 1000,
        cache_bytes: 1 << 20,
        min_free_bytes: 0,
    };
    let (outbox, _) =
        Outbox::open(&dir.path().join("data"), settings, jiff::Timestamp::now()).expect("reopen");
    let events = outbox.pending(0, usize::MAX, usize::MAX).expect("readable");
    let last_transition = events
        .iter()
        .rev()
        .find(|e| matches!(e.kind, EventKind::Transition { .. }))
        .expect("transitions");
    assert!(is_transition_to(last_transition, State::Unknown));
    let files = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ResultFile(_)))
        .count();
    assert_eq!(files, 1);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs are contiguous: {seqs:?}"
    );
}
