//! Real-peer check: the agent reads an Eastron SDM120 served by pymodbus, an
//! independent Modbus implementation, over TCP and over RTU.
//!
//! Ignored in `cargo test`; `tests/interop/run.sh` starts
//! `tests/interop/pymodbus_sdm120.py` twice (TCP on a free loopback port, RTU
//! on one end of a socat pty pair), sets `LABHOURS_PYMODBUS_TCP=host:port`
//! and `LABHOURS_PYMODBUS_RTU=/path/to/pty` and runs these with `--ignored`.

use labhours_agent::config::{MeterConfig, MeterModel, Parity, SerialLink, TcpLink};
use labhours_agent::meter::{Bus, MeterValues, ReadError};

/// What pymodbus_sdm120.py serves, as big-endian float32 input registers.
const EXPECTED: MeterValues = MeterValues {
    watts: 1150.0,
    volts: Some(230.0),
    amps: Some(5.0),
    energy_kwh: Some(42.5),
};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} must name a running pymodbus SDM120 simulator (tests/interop/run.sh sets it)"
        )
    })
}

fn sdm120() -> MeterConfig {
    MeterConfig {
        name: "bench".into(),
        model: MeterModel::Sdm120,
        unit_id: 1,
        // pymodbus answers from Python; leave room on a busy machine.
        timeout_ms: 1000,
        tcp: None,
        rtu: None,
        registers: None,
    }
}

async fn read_twice(meter: MeterConfig) -> Vec<Result<MeterValues, ReadError>> {
    let mut buses = Bus::plan(std::slice::from_ref(&meter));
    assert_eq!(buses.len(), 1);
    let mut results = Vec::new();
    for _ in 0..2 {
        let (name, result) = buses[0].read_all().await.remove(0);
        assert_eq!(name, meter.name);
        eprintln!("{}", labhours_agent::meter::describe(&meter, &result));
        results.push(result);
    }
    results
}

#[tokio::test]
#[ignore = "needs pymodbus: run tests/interop/run.sh"]
async fn pymodbus_serves_an_sdm120_over_tcp() {
    let addr = env("LABHOURS_PYMODBUS_TCP");
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut meter = sdm120();
    meter.tcp = Some(TcpLink {
        host: host.into(),
        port: port.parse().expect("numeric port"),
    });
    for result in read_twice(meter).await {
        assert_eq!(result, Ok(EXPECTED));
    }
}

#[tokio::test]
#[ignore = "needs pymodbus: run tests/interop/run.sh"]
async fn pymodbus_serves_an_sdm120_over_rtu() {
    let mut meter = sdm120();
    meter.rtu = Some(SerialLink {
        serial_port: env("LABHOURS_PYMODBUS_RTU"),
        baud_rate: 9600,
        parity: Parity::None,
        stop_bits: 1,
        data_bits: 8,
    });
    for result in read_twice(meter).await {
        assert_eq!(result, Ok(EXPECTED));
    }
}
