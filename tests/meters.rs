//! The agent's meter buses against the Modbus simulator, over TCP and over RTU
//! on a pty pair: presets, exceptions, silent and late units, a server that
//! goes away.
//!
//! Time is real here (sockets and ptys), so timeouts are short and every
//! bound is checked with a margin.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use labhours_agent::config::{
    DataType, MeterConfig, MeterModel, Parity, Register, RegisterKind, RegisterMap, SerialLink,
    TcpLink, WordOrder,
};
use labhours_agent::meter::{Bus, MeterValues, ReadError, describe};
use labhours_tests::modbus_sim::{Fault, RtuSim, Sim, SimUnit, TcpSim, layout_of};

const TIMEOUT_MS: u64 = 200;

fn meter(name: &str, model: MeterModel, unit_id: u8) -> MeterConfig {
    MeterConfig {
        name: name.into(),
        model,
        unit_id,
        timeout_ms: TIMEOUT_MS,
        tcp: None,
        rtu: None,
        registers: None,
    }
}

fn over_tcp(mut m: MeterConfig, addr: SocketAddr) -> MeterConfig {
    m.tcp = Some(TcpLink {
        host: addr.ip().to_string(),
        port: addr.port(),
    });
    m
}

fn over_rtu(mut m: MeterConfig, path: &str) -> MeterConfig {
    m.rtu = Some(SerialLink {
        serial_port: path.into(),
        baud_rate: 9600,
        parity: Parity::None,
        stop_bits: 1,
        data_bits: 8,
    });
    m
}

/// The one bus these meters form (RTU ports opened shared, see [`RtuSim::opener`]).
fn one_bus(meters: &[MeterConfig]) -> Bus {
    let mut buses = Bus::plan_with(meters, RtuSim::opener());
    assert_eq!(buses.len(), 1, "expected one bus: {buses:?}");
    buses.remove(0)
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    watts: f64,
    volts: f64,
    amps: f64,
    kwh: f64,
}

impl Reading {
    fn unit(self, model: MeterModel) -> SimUnit {
        SimUnit::preset(model).reading(self.watts, self.volts, self.amps, self.kwh)
    }
}

// Different numbers for every quantity and meter, so a swapped register shows.
const SDM120: Reading = Reading {
    watts: 1150.25,
    volts: 230.5,
    amps: 5.0625,
    kwh: 42.5,
};
const SDM630: Reading = Reading {
    watts: 4520.5,
    volts: 231.25,
    amps: 19.5,
    kwh: 12345.5,
};
const DDSU666: Reading = Reading {
    watts: 1520.0,
    volts: 229.75,
    amps: 6.625,
    kwh: 987.25,
};

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 1e-6 * expected.abs().max(1.0)
}

#[track_caller]
fn assert_reading(result: &Result<MeterValues, ReadError>, expected: Reading) {
    let v = result
        .as_ref()
        .unwrap_or_else(|e| panic!("expected {expected:?}, got error: {e}"));
    let all = [
        (v.watts, expected.watts),
        (v.volts.expect("volts"), expected.volts),
        (v.amps.expect("amps"), expected.amps),
        (v.energy_kwh.expect("energy"), expected.kwh),
    ];
    assert!(
        all.iter().all(|&(a, e)| close(a, e)),
        "expected {expected:?}, got {v:?}"
    );
}

fn three_presets() -> Sim {
    Sim::new()
        .with_unit(1, SDM120.unit(MeterModel::Sdm120))
        .with_unit(2, SDM630.unit(MeterModel::Sdm630))
        .with_unit(3, DDSU666.unit(MeterModel::Ddsu666))
}

fn three_meters() -> [MeterConfig; 3] {
    [
        meter("bench", MeterModel::Sdm120, 1),
        meter("mains", MeterModel::Sdm630, 2),
        meter("console", MeterModel::Ddsu666, 3),
    ]
}

fn assert_three_presets(results: &[(String, Result<MeterValues, ReadError>)]) {
    let names: Vec<_> = results.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["bench", "mains", "console"]);
    assert_reading(&results[0].1, SDM120);
    assert_reading(&results[1].1, SDM630);
    assert_reading(&results[2].1, DDSU666);
}

#[tokio::test]
async fn every_preset_is_read_over_tcp_through_one_gateway() {
    let server = TcpSim::start(three_presets()).await.expect("sim");
    let meters = three_meters().map(|m| over_tcp(m, server.addr()));
    let mut bus = one_bus(&meters);
    assert_three_presets(&bus.read_all().await);
    // And again on the same connection.
    assert_three_presets(&bus.read_all().await);
}

#[tokio::test]
async fn every_preset_is_read_over_rtu_with_three_units_on_one_bus() {
    let line = RtuSim::start(three_presets()).expect("pty");
    let meters = three_meters().map(|m| over_rtu(m, line.path()));
    let mut bus = one_bus(&meters);
    assert_eq!(bus.meter_names(), ["bench", "mains", "console"]);
    assert_three_presets(&bus.read_all().await);
    assert_three_presets(&bus.read_all().await);
}

#[tokio::test]
async fn a_reading_follows_the_meter() {
    let sim = Sim::new().with_unit(1, SDM120.unit(MeterModel::Sdm120));
    let server = TcpSim::start(sim.clone()).await.expect("sim");
    let mut bus = one_bus(&[over_tcp(meter("m", MeterModel::Sdm120, 1), server.addr())]);
    assert_reading(&bus.read_all().await[0].1, SDM120);
    sim.update(1, |u| u.watts = 3.5);
    let after = bus.read_all().await;
    assert_eq!(after[0].1.as_ref().map(|v| v.watts), Ok(3.5));
}

#[tokio::test]
async fn an_exception_is_reported_with_its_code_and_never_as_zero_watts() {
    let sim = || {
        Sim::new()
            .with_unit(1, SDM120.unit(MeterModel::Sdm120))
            .with_unit(2, SDM120.unit(MeterModel::Sdm120))
    };
    let meters = [
        meter("broken", MeterModel::Sdm120, 1),
        meter("fine", MeterModel::Sdm120, 2),
    ];

    let tcp_sim = sim();
    let server = TcpSim::start(tcp_sim.clone()).await.expect("sim");
    let rtu_sim = sim();
    let line = RtuSim::start(rtu_sim.clone()).expect("pty");
    let mut buses = [
        (
            tcp_sim,
            one_bus(&meters.clone().map(|m| over_tcp(m, server.addr()))),
        ),
        (
            rtu_sim,
            one_bus(&meters.clone().map(|m| over_rtu(m, line.path()))),
        ),
    ];
    for (sim, bus) in &mut buses {
        sim.update(1, |u| u.fault = Some(Fault::Exception(0x04)));
        let results = bus.read_all().await;
        assert_eq!(
            results[0].1,
            Err(ReadError::Exception {
                code: 0x04,
                name: "server device failure".into()
            })
        );
        // Power failed, so its other registers were not even asked for.
        assert_eq!(sim.requests(1), 1);
        // An exception is an answer: the link stays up and the next unit is read.
        assert_reading(&results[1].1, SDM120);
    }
}

#[tokio::test]
async fn an_exception_on_an_optional_register_leaves_out_only_that_quantity() {
    let sim = Sim::new().with_unit(1, SDM120.unit(MeterModel::Sdm120));
    // Voltage sits at input address 0 on an SDM120.
    sim.update(1, |u| {
        u.fault = Some(Fault::ExceptionAt {
            address: 0,
            code: 0x02,
        })
    });
    let server = TcpSim::start(sim).await.expect("sim");
    let mut bus = one_bus(&[over_tcp(meter("m", MeterModel::Sdm120, 1), server.addr())]);
    let results = bus.read_all().await;
    let v = results[0].1.as_ref().expect("power was read");
    assert!(close(v.watts, SDM120.watts), "{v:?}");
    assert_eq!(v.volts, None);
    assert!(close(v.amps.expect("amps"), SDM120.amps), "{v:?}");
    assert!(close(v.energy_kwh.expect("energy"), SDM120.kwh), "{v:?}");
}

#[tokio::test]
async fn the_wrong_model_is_explained_in_the_probe_line() {
    // An SDM120 serves input registers only; a DDSU666 map asks for holding ones.
    let sim = Sim::new().with_unit(1, SDM120.unit(MeterModel::Sdm120));
    let server = TcpSim::start(sim).await.expect("sim");
    let config = over_tcp(meter("console", MeterModel::Ddsu666, 1), server.addr());
    let mut bus = one_bus(std::slice::from_ref(&config));
    let results = bus.read_all().await;
    assert!(
        matches!(results[0].1, Err(ReadError::Exception { code: 0x01, .. })),
        "{results:?}"
    );
    assert_eq!(
        describe(&config, &results[0].1),
        format!(
            "console (ddsu666 unit 1 @ {}): the meter answered with Modbus exception 0x01 (illegal function) — the meter does not serve this read: wrong register kind (holding/input)?",
            server.addr()
        )
    );
}

#[tokio::test]
async fn a_non_finite_power_reading_is_an_error_not_zero() {
    let sim = Sim::new().with_unit(1, SDM120.unit(MeterModel::Sdm120));
    sim.update(1, |u| u.watts = f64::NAN);
    let server = TcpSim::start(sim).await.expect("sim");
    let mut bus = one_bus(&[over_tcp(meter("m", MeterModel::Sdm120, 1), server.addr())]);
    let results = bus.read_all().await;
    assert!(
        matches!(&results[0].1, Err(ReadError::Decode(msg)) if msg.contains("input register 12")),
        "{results:?}"
    );
}

#[tokio::test]
async fn a_configured_register_map_overrides_the_preset() {
    let map = RegisterMap {
        power_w: Register {
            kind: RegisterKind::Holding,
            address: 100,
            data_type: DataType::I32,
            word_order: WordOrder::Cdab,
            scale: 0.1,
        },
        voltage_v: Some(Register {
            kind: RegisterKind::Holding,
            address: 110,
            data_type: DataType::U16,
            word_order: WordOrder::Abcd,
            scale: 0.1,
        }),
        current_a: None,
        energy_kwh: Some(Register {
            kind: RegisterKind::Input,
            address: 7,
            data_type: DataType::U32,
            word_order: WordOrder::Dcba,
            scale: 0.01,
        }),
    };
    let sim = Sim::new().with_unit(
        9,
        SimUnit::new(layout_of(&map)).reading(-1520.3, 230.1, 0.0, 12345.67),
    );
    let server = TcpSim::start(sim).await.expect("sim");
    let mut config = over_tcp(meter("pump", MeterModel::Sdm120, 9), server.addr());
    config.registers = Some(map);
    let mut bus = one_bus(&[config]);
    let results = bus.read_all().await;
    let v = results[0].1.as_ref().expect("read");
    assert!(close(v.watts, -1520.3), "{v:?}");
    assert!(close(v.volts.expect("volts"), 230.1), "{v:?}");
    assert_eq!(v.amps, None);
    assert!(close(v.energy_kwh.expect("energy"), 12345.67), "{v:?}");
}

#[tokio::test]
async fn a_silent_unit_costs_one_timeout_and_the_other_unit_is_read_in_the_same_cycle() {
    let sim = Sim::new()
        .with_unit(1, SDM120.unit(MeterModel::Sdm120))
        .with_unit(2, DDSU666.unit(MeterModel::Ddsu666));
    sim.update(1, |u| u.fault = Some(Fault::Silent));
    let line = RtuSim::start(sim.clone()).expect("pty");
    // The dead unit first, so the live one is read right after the timeout.
    let mut bus = one_bus(&[
        over_rtu(meter("dead", MeterModel::Sdm120, 1), line.path()),
        over_rtu(meter("alive", MeterModel::Ddsu666, 2), line.path()),
        // Nobody answers to unit 7 (misaddressed): not in this cycle's budget,
        // so it is checked on its own below.
    ]);
    for cycle in 1..=3 {
        let started = Instant::now();
        let results = bus.read_all().await;
        let took = started.elapsed();
        assert_eq!(
            results[0].1,
            Err(ReadError::Timeout {
                after_ms: TIMEOUT_MS
            }),
            "cycle {cycle}"
        );
        assert_reading(&results[1].1, DDSU666);
        assert!(
            took < Duration::from_millis(2 * TIMEOUT_MS),
            "cycle {cycle} took {took:?}, more than two timeouts"
        );
    }
    // One request per cycle: after the timeout its other registers were skipped.
    assert_eq!(sim.requests(1), 3);
    drop(bus);

    let mut misaddressed = one_bus(&[
        over_rtu(meter("nobody", MeterModel::Sdm120, 7), line.path()),
        over_rtu(meter("alive", MeterModel::Ddsu666, 2), line.path()),
    ]);
    let results = misaddressed.read_all().await;
    assert!(
        matches!(results[0].1, Err(ReadError::Timeout { .. })),
        "{results:?}"
    );
    assert_reading(&results[1].1, DDSU666);
}

#[tokio::test]
async fn a_late_reply_does_not_corrupt_the_next_read() {
    const SLOW_TIMEOUT_MS: u64 = 300;
    let after = Reading {
        watts: 2.5,
        volts: 200.5,
        amps: 0.25,
        kwh: 43.5,
    };
    let sim = || Sim::new().with_unit(1, SDM120.unit(MeterModel::Sdm120));
    let tcp_sim = sim();
    let server = TcpSim::start(tcp_sim.clone()).await.expect("sim");
    let rtu_sim = sim();
    let line = RtuSim::start(rtu_sim.clone()).expect("pty");
    let slow = |mut m: MeterConfig| {
        m.timeout_ms = SLOW_TIMEOUT_MS;
        m
    };
    let mut buses = [
        (
            "tcp",
            tcp_sim,
            one_bus(&[slow(over_tcp(
                meter("m", MeterModel::Sdm120, 1),
                server.addr(),
            ))]),
        ),
        (
            "rtu",
            rtu_sim,
            one_bus(&[slow(over_rtu(
                meter("m", MeterModel::Sdm120, 1),
                line.path(),
            ))]),
        ),
    ];
    for (transport, sim, bus) in &mut buses {
        // The power reply (with the old values) comes 40 ms after the timeout.
        sim.update(1, |u| {
            u.fault = Some(Fault::Late(Duration::from_millis(SLOW_TIMEOUT_MS + 40)));
        });
        let results = bus.read_all().await;
        assert_eq!(
            results[0].1,
            Err(ReadError::Timeout {
                after_ms: SLOW_TIMEOUT_MS
            }),
            "{transport}"
        );
        // New values at once: taking the late reply for the next request
        // would show the old power, and shift every later register by one.
        sim.update(1, |u| {
            u.fault = None;
            (u.watts, u.volts, u.amps, u.kwh) = (after.watts, after.volts, after.amps, after.kwh);
        });
        for _ in 0..2 {
            let results = bus.read_all().await;
            assert_reading(&results[0].1, after);
        }
    }
}

#[tokio::test]
async fn a_server_that_goes_away_gives_errors_and_is_read_again_when_back() {
    let sim = Sim::new()
        .with_unit(1, SDM120.unit(MeterModel::Sdm120))
        .with_unit(2, SDM630.unit(MeterModel::Sdm630));
    let mut server = TcpSim::start(sim).await.expect("sim");
    let mut bus = one_bus(&[
        over_tcp(meter("a", MeterModel::Sdm120, 1), server.addr()),
        over_tcp(meter("b", MeterModel::Sdm630, 2), server.addr()),
    ]);
    let results = bus.read_all().await;
    assert_reading(&results[0].1, SDM120);
    assert_reading(&results[1].1, SDM630);

    server.stop().await;
    let results = bus.read_all().await;
    assert!(
        matches!(
            results[0].1,
            Err(ReadError::Transport(_) | ReadError::Connect(_))
        ),
        "{results:?}"
    );
    assert!(
        matches!(results[1].1, Err(ReadError::Connect(_))),
        "{results:?}"
    );
    let results = bus.read_all().await;
    for (name, result) in &results {
        assert!(
            matches!(result, Err(ReadError::Connect(m)) if m.contains(&server.addr().to_string())),
            "{name}: {result:?}"
        );
    }

    server.restart().await.expect("same port again");
    let results = bus.read_all().await;
    assert_reading(&results[0].1, SDM120);
    assert_reading(&results[1].1, SDM630);
}

#[tokio::test]
async fn a_port_that_cannot_be_opened_fails_every_meter_on_the_bus() {
    let path = "/dev/labhours-test-no-such-port";
    // The production opener: exclusive, with the configured settings.
    let mut buses = Bus::plan(&[
        over_rtu(meter("a", MeterModel::Sdm120, 1), path),
        over_rtu(meter("b", MeterModel::Ddsu666, 2), path),
    ]);
    assert_eq!(buses.len(), 1);
    let results = buses[0].read_all().await;
    assert_eq!(results.len(), 2);
    for (name, result) in &results {
        assert!(
            matches!(result, Err(ReadError::Connect(m)) if m.contains(path)),
            "{name}: {result:?}"
        );
    }
}

#[tokio::test]
async fn the_production_opener_reads_a_pty() {
    // Bus::plan opens ports exclusively, with the configured settings.
    let line = RtuSim::start_for_one_exclusive_open(
        Sim::new().with_unit(5, SDM630.unit(MeterModel::Sdm630)),
    )
    .expect("pty");
    let mut buses = Bus::plan(&[over_rtu(meter("mains", MeterModel::Sdm630, 5), line.path())]);
    for _ in 0..2 {
        assert_reading(&buses[0].read_all().await[0].1, SDM630);
    }
}

#[tokio::test]
async fn a_port_another_program_holds_is_a_connect_error() {
    // The shared simulator holds a lock on its pty, as another program would.
    let line =
        RtuSim::start(Sim::new().with_unit(1, SDM120.unit(MeterModel::Sdm120))).expect("pty");
    let started = Instant::now();
    let mut buses = Bus::plan(&[over_rtu(meter("m", MeterModel::Sdm120, 1), line.path())]);
    let results = buses[0].read_all().await;
    assert!(
        matches!(&results[0].1, Err(ReadError::Connect(m)) if m.contains(line.path()) && m.contains("lock")),
        "{results:?}"
    );
    // Refused at once, not after a timeout.
    assert!(
        started.elapsed() < Duration::from_millis(TIMEOUT_MS),
        "{:?}",
        started.elapsed()
    );
}
