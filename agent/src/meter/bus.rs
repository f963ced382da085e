//! Polling Modbus meters, one task per bus.
//!
//! A bus is what can carry one conversation at a time: an RS-485 serial port
//! (every meter with the same `rtu.serial_port`) or a TCP endpoint (every
//! meter with the same host and port, e.g. an RTU-to-TCP gateway). A [`Bus`]
//! owns its connection and reads its meters in turn, switching the unit id
//! between them.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::{Instant, timeout};
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::{ExceptionCode, Request, Response, Slave, SlaveContext};
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

use super::decode::{decode, register_count};
use super::presets::effective_map;
use crate::config::{
    MeterConfig, MeterModel, Parity, Register, RegisterKind, RegisterMap, SerialLink,
};

/// One reading of one meter. Power is always there; the rest only when the
/// register map has them and they could be read this time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeterValues {
    pub watts: f64,
    pub volts: Option<f64>,
    pub amps: Option<f64>,
    pub energy_kwh: Option<f64>,
}

/// Why a meter gave no power reading this cycle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// Nothing (usable) came back in time.
    #[error("no answer within {after_ms} ms — check wiring, baud rate, parity and unit id")]
    Timeout { after_ms: u64 },
    /// The device answered, with a Modbus exception instead of data.
    #[error("the meter answered with Modbus exception {code:#04x} ({name}){}", exception_hint(.code))]
    Exception { code: u8, name: String },
    /// The port could not be opened or the TCP connection not made.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The link failed in the middle of an exchange (closed, garbled, out of step).
    #[error("the link failed during the exchange: {0}")]
    Transport(String),
    /// An answer came, but it is not a usable number.
    #[error("the meter's answer is not usable: {0}")]
    Decode(String),
    /// The meter cannot be read as configured.
    #[error("cannot read this meter as configured: {0}")]
    Config(String),
}

impl ReadError {
    /// After these the link may carry stale bytes (or is gone): drop it.
    fn breaks_link(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Transport(_))
    }

    fn exception(code: ExceptionCode) -> Self {
        let code = u8::from(code);
        Self::Exception {
            code,
            name: exception_name(code).to_owned(),
        }
    }
}

/// The Modbus specification's name for an exception code.
pub fn exception_name(code: u8) -> &'static str {
    match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "server device failure",
        0x05 => "acknowledge",
        0x06 => "server device busy",
        0x08 => "memory parity error",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

fn exception_hint(code: &u8) -> &'static str {
    match code {
        0x01 => " — the meter does not serve this read: wrong register kind (holding/input)?",
        0x02 => " — no such register on this meter: wrong model or register map?",
        0x03 => " — the meter refused the register count: wrong data type (16/32 bit)?",
        0x04 => " — the meter reports an internal fault",
        0x05 | 0x06 => " — the meter is busy: poll less often",
        0x0A => " — the gateway has no path to this unit: check the gateway's serial settings",
        0x0B => {
            " — the gateway got no answer from the unit: check wiring, baud rate, parity and unit id"
        }
        _ => "",
    }
}

/// Opens a serial port for an RTU bus. The seam lets tests hand in a pty.
pub type SerialOpener = Arc<dyn Fn(&SerialLink) -> io::Result<SerialStream> + Send + Sync>;

/// The port settings of `link`, ready to open (exclusively, the default).
pub fn serial_builder(link: &SerialLink) -> tokio_serial::SerialPortBuilder {
    let parity = match link.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let stop_bits = match link.stop_bits {
        2 => tokio_serial::StopBits::Two,
        _ => tokio_serial::StopBits::One,
    };
    let data_bits = match link.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    tokio_serial::new(&link.serial_port, link.baud_rate)
        .parity(parity)
        .stop_bits(stop_bits)
        .data_bits(data_bits)
}

/// Opens the real port named in `link`.
pub fn open_serial(link: &SerialLink) -> io::Result<SerialStream> {
    Ok(serial_builder(link).open_native_async()?)
}

enum Link {
    Tcp {
        host: String,
        port: u16,
    },
    Rtu {
        serial: SerialLink,
        open: SerialOpener,
    },
}

impl Link {
    fn same_bus(&self, meter: &MeterConfig) -> bool {
        match (self, &meter.tcp, &meter.rtu) {
            (Self::Tcp { host, port }, Some(tcp), _) => *host == tcp.host && *port == tcp.port,
            (Self::Rtu { serial, .. }, None, Some(rtu)) => serial.serial_port == rtu.serial_port,
            _ => false,
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Rtu { serial, .. } => f.write_str(&serial.serial_port),
        }
    }
}

/// Meters that share one connection, read one after the other by one owner.
pub struct Bus {
    link: Link,
    meters: Vec<MeterConfig>,
    maps: Vec<Option<RegisterMap>>,
    conn: Option<Context>,
    /// RTU only: a reply may still be on its way after a timeout or a garbled
    /// frame, so the next open waits for a quiet line before sending.
    line_unsettled: bool,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("link", &self.link.to_string())
            .field("meters", &self.meter_names())
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Bus {
    /// Groups meters into buses (order of first appearance).
    pub fn plan(meters: &[MeterConfig]) -> Vec<Bus> {
        Self::plan_with(meters, Arc::new(open_serial))
    }

    /// Like [`Bus::plan`], opening serial ports with `open` (tests hand in ptys).
    /// Meters with neither `tcp` nor `rtu` are skipped (config validation rejects them).
    pub fn plan_with(meters: &[MeterConfig], open: SerialOpener) -> Vec<Bus> {
        let mut buses: Vec<Bus> = Vec::new();
        for meter in meters {
            if let Some(bus) = buses.iter_mut().find(|b| b.link.same_bus(meter)) {
                if let (Link::Rtu { serial, .. }, Some(rtu)) = (&bus.link, &meter.rtu)
                    && serial != rtu
                {
                    tracing::warn!(
                        meter = %meter.name,
                        port = %rtu.serial_port,
                        "serial settings differ from the first meter on this port; the first meter's settings are used"
                    );
                }
                bus.push(meter);
                continue;
            }
            let link = match (&meter.tcp, &meter.rtu) {
                (Some(tcp), _) => Link::Tcp {
                    host: tcp.host.clone(),
                    port: tcp.port,
                },
                (None, Some(rtu)) => Link::Rtu {
                    serial: rtu.clone(),
                    open: open.clone(),
                },
                (None, None) => {
                    tracing::warn!(meter = %meter.name, "meter has neither tcp nor rtu; skipped");
                    continue;
                }
            };
            let mut bus = Bus {
                link,
                meters: Vec::new(),
                maps: Vec::new(),
                conn: None,
                line_unsettled: false,
            };
            bus.push(meter);
            buses.push(bus);
        }
        buses
    }

    fn push(&mut self, meter: &MeterConfig) {
        self.maps
            .push(effective_map(meter.model, meter.registers.as_ref()));
        self.meters.push(meter.clone());
    }

    pub fn meter_names(&self) -> Vec<String> {
        self.meters.iter().map(|m| m.name.clone()).collect()
    }

    /// The configs of this bus's meters, in reading order.
    pub fn meters(&self) -> &[MeterConfig] {
        &self.meters
    }

    /// The probe line for one result of [`Bus::read_all`].
    pub fn describe(&self, name: &str, result: &Result<MeterValues, ReadError>) -> String {
        match self.meters.iter().find(|m| m.name == name) {
            Some(meter) => describe(meter, result),
            None => format!("{name}: not on this bus"),
        }
    }

    /// Reads every meter on the bus once, in turn. Every Modbus call is wrapped
    /// in `tokio::time::timeout(timeout_ms)`.
    ///
    /// After a timeout or transport error the connection is dropped and made
    /// again on the next call (TCP: reconnect; RTU: reopen the port and wait
    /// for a quiet line, so late bytes never corrupt the next frame). A dead or
    /// misaddressed unit costs at most one timeout per cycle and the other
    /// units are still read in the same cycle. If the connection cannot be
    /// made, every remaining meter gets that error for this cycle. A failure is
    /// never reported as 0 W.
    pub async fn read_all(&mut self) -> Vec<(String, Result<MeterValues, ReadError>)> {
        let mut results = Vec::with_capacity(self.meters.len());
        let mut connect_error: Option<ReadError> = None;
        for i in 0..self.meters.len() {
            let name = self.meters[i].name.clone();
            if let Some(e) = &connect_error {
                results.push((name, Err(e.clone())));
                continue;
            }
            let Some(map) = self.maps[i].clone() else {
                let e = ReadError::Config(format!(
                    "model {} has no built-in register map: add [meters.registers]",
                    model_name(self.meters[i].model)
                ));
                results.push((name, Err(e)));
                continue;
            };
            let timeout_ms = self.meters[i].timeout_ms;
            let unit = Slave(self.meters[i].unit_id);
            let conn = match self.connection(timeout_ms).await {
                Ok(conn) => conn,
                Err(e) => {
                    connect_error = Some(e.clone());
                    results.push((name, Err(e)));
                    continue;
                }
            };
            conn.set_slave(unit);
            let (result, broken) = read_meter(conn, &map, Duration::from_millis(timeout_ms)).await;
            if let Some(e) = broken {
                tracing::debug!(bus = %self.link, meter = %name, error = %e, "dropping the connection");
                self.conn = None;
                self.line_unsettled = matches!(self.link, Link::Rtu { .. });
            }
            results.push((name, result));
        }
        results
    }

    /// The open connection, made first if there is none.
    async fn connection(&mut self, timeout_ms: u64) -> Result<&mut Context, ReadError> {
        if self.conn.is_none() {
            let limit = Duration::from_millis(timeout_ms);
            let conn = match &self.link {
                Link::Tcp { host, port } => {
                    let stream = timeout(
                        limit,
                        tokio::net::TcpStream::connect((host.as_str(), *port)),
                    )
                    .await
                    .map_err(|_| {
                        ReadError::Connect(format!(
                            "{host}:{port}: no connection within {timeout_ms} ms"
                        ))
                    })?
                    .map_err(|e| ReadError::Connect(format!("{host}:{port}: {e}")))?;
                    // Requests are tiny; do not let Nagle hold them back.
                    let _ = stream.set_nodelay(true);
                    tokio_modbus::prelude::tcp::attach(stream)
                }
                Link::Rtu { serial, open } => {
                    let mut port = open(serial)
                        .map_err(|e| ReadError::Connect(format!("{}: {e}", serial.serial_port)))?;
                    // Whatever arrived while the port was closed belongs to no request of ours.
                    let _ = port.clear(tokio_serial::ClearBuffer::Input);
                    if self.line_unsettled {
                        let quiet = (limit / 2).max(Duration::from_millis(10));
                        settle(&mut port, quiet, limit).await;
                    }
                    tokio_modbus::prelude::rtu::attach(port)
                }
            };
            self.line_unsettled = false;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connection was just made"))
    }
}

/// Discards bytes until the line has been quiet for `quiet` (at most `limit` in all),
/// so a reply that was late for an earlier request is not taken for the next one.
async fn settle(port: &mut SerialStream, quiet: Duration, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 256];
    let mut discarded = 0usize;
    loop {
        let wait = quiet.min(deadline.saturating_duration_since(Instant::now()));
        if wait.is_zero() {
            break;
        }
        match timeout(wait, port.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            // Quiet for long enough, or the port says it has nothing more.
            _ => break,
        }
    }
    if discarded > 0 {
        tracing::debug!(
            bytes = discarded,
            "discarded late bytes before the next request"
        );
    }
}

/// Reads one meter: power first (its failure fails the meter), then the
/// optional quantities. Returns the result and, if the link must be dropped,
/// the error that broke it.
async fn read_meter(
    conn: &mut Context,
    map: &RegisterMap,
    limit: Duration,
) -> (Result<MeterValues, ReadError>, Option<ReadError>) {
    let watts = match read_register(conn, &map.power_w, limit).await {
        Ok(watts) => watts,
        Err(e) => {
            let broken = e.breaks_link().then(|| e.clone());
            return (Err(e), broken);
        }
    };
    let optional = [
        ("voltage", map.voltage_v),
        ("current", map.current_a),
        ("energy", map.energy_kwh),
    ];
    let mut read = [None; 3];
    let mut broken = None;
    for (slot, (what, register)) in read.iter_mut().zip(optional) {
        let Some(register) = register else { continue };
        match read_register(conn, &register, limit).await {
            Ok(value) => *slot = Some(value),
            Err(e) => {
                tracing::debug!(quantity = what, error = %e, "optional register failed");
                if e.breaks_link() {
                    // One timeout per unit and cycle: skip its remaining registers.
                    broken = Some(e);
                    break;
                }
            }
        }
    }
    let [volts, amps, energy_kwh] = read;
    let values = MeterValues {
        watts,
        volts,
        amps,
        energy_kwh,
    };
    (Ok(values), broken)
}

/// One request for the registers of one quantity.
async fn read_register(
    conn: &mut Context,
    register: &Register,
    limit: Duration,
) -> Result<f64, ReadError> {
    let count = register_count(register.data_type);
    let request = match register.kind {
        RegisterKind::Holding => Request::ReadHoldingRegisters(register.address, count),
        RegisterKind::Input => Request::ReadInputRegisters(register.address, count),
    };
    let response = match timeout(limit, conn.call(request)).await {
        Err(_) => {
            return Err(ReadError::Timeout {
                after_ms: limit.as_millis() as u64,
            });
        }
        Ok(Err(e)) => return Err(ReadError::Transport(e.to_string())),
        Ok(Ok(Err(code))) => return Err(ReadError::exception(code)),
        Ok(Ok(Ok(response))) => response,
    };
    // Matched by hand rather than through `Reader`, whose debug assertion
    // would panic on a device that answers with the wrong register count.
    let words = match response {
        Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words) => words,
        other => {
            return Err(ReadError::Transport(format!(
                "answer of the wrong kind: {other:?}"
            )));
        }
    };
    decode(register, &words).map_err(|e| {
        ReadError::Decode(format!(
            "{} register {} ({:#06x}): {e}",
            kind_name(register.kind),
            register.address,
            register.address
        ))
    })
}

fn kind_name(kind: RegisterKind) -> &'static str {
    match kind {
        RegisterKind::Holding => "holding",
        RegisterKind::Input => "input",
    }
}

/// The config spelling of a model.
pub fn model_name(model: MeterModel) -> &'static str {
    match model {
        MeterModel::Sdm120 => "sdm120",
        MeterModel::Sdm630 => "sdm630",
        MeterModel::Ddsu666 => "ddsu666",
        MeterModel::Custom => "custom",
    }
}

/// The probe output line for one meter, e.g.
/// `mains (sdm630 unit 1 @ 192.0.2.10:502): 1520.3 W, 229.8 V, 6.61 A, 12345.6 kWh`.
pub fn describe(meter: &MeterConfig, result: &Result<MeterValues, ReadError>) -> String {
    let at = match (&meter.tcp, &meter.rtu) {
        (Some(tcp), _) => format!("{}:{}", tcp.host, tcp.port),
        (None, Some(rtu)) => rtu.serial_port.clone(),
        (None, None) => "no link".to_owned(),
    };
    let head = format!(
        "{} ({} unit {} @ {at})",
        meter.name,
        model_name(meter.model),
        meter.unit_id
    );
    match result {
        Ok(v) => {
            let mut parts = vec![format!("{:.1} W", v.watts)];
            if let Some(volts) = v.volts {
                parts.push(format!("{volts:.1} V"));
            }
            if let Some(amps) = v.amps {
                parts.push(format!("{amps:.2} A"));
            }
            if let Some(kwh) = v.energy_kwh {
                parts.push(format!("{kwh:.1} kWh"));
            }
            format!("{head}: {}", parts.join(", "))
        }
        Err(e) => format!("{head}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TcpLink;

    fn meter(name: &str, tcp: Option<(&str, u16)>, rtu: Option<&str>) -> MeterConfig {
        MeterConfig {
            name: name.into(),
            model: MeterModel::Sdm120,
            unit_id: 1,
            timeout_ms: 300,
            tcp: tcp.map(|(host, port)| TcpLink {
                host: host.into(),
                port,
            }),
            rtu: rtu.map(|p| SerialLink {
                serial_port: p.into(),
                baud_rate: 9600,
                parity: Parity::None,
                stop_bits: 1,
                data_bits: 8,
            }),
            registers: None,
        }
    }

    #[test]
    fn meters_sharing_a_port_or_endpoint_form_one_bus_in_order_of_first_appearance() {
        let meters = [
            meter("a", None, Some("/dev/ttyUSB0")),
            meter("b", Some(("10.0.0.5", 502)), None),
            meter("c", None, Some("/dev/ttyUSB1")),
            meter("d", None, Some("/dev/ttyUSB0")),
            meter("e", Some(("10.0.0.5", 502)), None),
            meter("f", Some(("10.0.0.5", 503)), None),
        ];
        let buses = Bus::plan(&meters);
        let names: Vec<_> = buses.iter().map(Bus::meter_names).collect();
        assert_eq!(
            names,
            [vec!["a", "d"], vec!["b", "e"], vec!["c"], vec!["f"]]
        );
    }

    #[test]
    fn a_bus_can_be_moved_into_its_own_task() {
        fn owned_by_a_task<T: Send + 'static>() {}
        owned_by_a_task::<Bus>();
    }

    #[test]
    fn exceptions_are_named_with_a_hint() {
        let e = ReadError::exception(ExceptionCode::IllegalDataAddress);
        assert_eq!(
            e,
            ReadError::Exception {
                code: 2,
                name: "illegal data address".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "the meter answered with Modbus exception 0x02 (illegal data address) — no such register on this meter: wrong model or register map?"
        );
        let e = ReadError::exception(ExceptionCode::IllegalFunction);
        assert!(e.to_string().contains("0x01 (illegal function)"), "{e}");
        assert!(e.to_string().contains("wrong register kind"), "{e}");
        let e = ReadError::exception(ExceptionCode::new(0x42));
        assert_eq!(
            e.to_string(),
            "the meter answered with Modbus exception 0x42 (unknown exception)"
        );
    }

    #[test]
    fn describe_gives_one_probe_line() {
        let mut m = meter("mains", Some(("192.0.2.10", 502)), None);
        m.model = MeterModel::Sdm630;
        let ok = Ok(MeterValues {
            watts: 1520.3,
            volts: Some(229.8),
            amps: Some(6.61),
            energy_kwh: Some(12345.6),
        });
        assert_eq!(
            describe(&m, &ok),
            "mains (sdm630 unit 1 @ 192.0.2.10:502): 1520.3 W, 229.8 V, 6.61 A, 12345.6 kWh"
        );

        let mut c = meter("console", None, Some("/dev/ttyUSB0"));
        c.model = MeterModel::Ddsu666;
        c.unit_id = 2;
        assert_eq!(
            describe(&c, &Err(ReadError::Timeout { after_ms: 300 })),
            "console (ddsu666 unit 2 @ /dev/ttyUSB0): no answer within 300 ms — check wiring, baud rate, parity and unit id"
        );

        let power_only = Ok(MeterValues {
            watts: 0.04,
            volts: None,
            amps: None,
            energy_kwh: None,
        });
        assert_eq!(
            describe(&c, &power_only),
            "console (ddsu666 unit 2 @ /dev/ttyUSB0): 0.0 W"
        );
    }

    #[tokio::test]
    async fn a_custom_meter_without_a_map_is_an_error_not_zero() {
        let mut m = meter("pump", Some(("127.0.0.1", 1)), None);
        m.model = MeterModel::Custom;
        let mut buses = Bus::plan(&[m]);
        let results = buses[0].read_all().await;
        assert!(
            matches!(&results[0], (name, Err(ReadError::Config(_))) if name == "pump"),
            "{results:?}"
        );
    }
}
