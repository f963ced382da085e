//! A Modbus power-meter simulator on tokio-modbus's server side, for tests
//! and for `labhours-collector demo` (compiled with the `sim` feature only).
//!
//! One [`Sim`] holds the state of several units (by unit id): the register
//! layout each serves, the values behind it and an injectable [`Fault`]. Serve
//! it over TCP ([`TcpSim`], 127.0.0.1, a free port) or RTU over a pty pair
//! ([`RtuSim`], Unix only), several units on one bus.
//!
//! The preset layouts here are written out again from the vendors' manuals
//! rather than taken from `crate::meter::presets`, so a wrong
//! address in the agent shows up as a failing test instead of agreeing with
//! itself.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{DataType, MeterModel, Register, RegisterKind, RegisterMap, WordOrder};
#[cfg(unix)]
use crate::meter::bus::{SerialOpener, serial_builder};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::Service;
#[cfg(unix)]
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

/// What a register carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    Power,
    Voltage,
    Current,
    Energy,
}

/// One value the simulated meter serves. The register holds `value / scale`
/// (a DDSU666 holds kW, so its power register has scale 1000).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimRegister {
    pub quantity: Quantity,
    pub kind: RegisterKind,
    pub address: u16,
    pub data_type: DataType,
    pub word_order: WordOrder,
    pub scale: f64,
}

/// The register layout of a preset model, from its manual.
pub fn preset_layout(model: MeterModel) -> Vec<SimRegister> {
    use Quantity::*;
    let f32_abcd = |quantity, kind, address, scale| SimRegister {
        quantity,
        kind,
        address,
        data_type: DataType::F32,
        word_order: WordOrder::Abcd,
        scale,
    };
    // Eastron manuals number input registers from 30001 (= protocol address 0).
    let eastron = |register: u16| register - 30001;
    let input = RegisterKind::Input;
    let holding = RegisterKind::Holding;
    match model {
        // Eastron SDM120-Modbus: 30001 V, 30007 A, 30013 W, 30343 kWh.
        MeterModel::Sdm120 => vec![
            f32_abcd(Voltage, input, eastron(30001), 1.0),
            f32_abcd(Current, input, eastron(30007), 1.0),
            f32_abcd(Power, input, eastron(30013), 1.0),
            f32_abcd(Energy, input, eastron(30343), 1.0),
        ],
        // Eastron SDM630-Modbus: 30001 V1, 30049 ΣI, 30053 ΣP, 30343 kWh.
        MeterModel::Sdm630 => vec![
            f32_abcd(Voltage, input, eastron(30001), 1.0),
            f32_abcd(Current, input, eastron(30049), 1.0),
            f32_abcd(Power, input, eastron(30053), 1.0),
            f32_abcd(Energy, input, eastron(30343), 1.0),
        ],
        // CHINT DDSU666: 2000H U, 2002H I, 2004H P (kW), 4000H ImpEp.
        MeterModel::Ddsu666 => vec![
            f32_abcd(Voltage, holding, 0x2000, 1.0),
            f32_abcd(Current, holding, 0x2002, 1.0),
            f32_abcd(Power, holding, 0x2004, 1000.0),
            f32_abcd(Energy, holding, 0x4000, 1.0),
        ],
        MeterModel::Custom => Vec::new(),
    }
}

/// The layout a custom register map describes.
pub fn layout_of(map: &RegisterMap) -> Vec<SimRegister> {
    let entry = |quantity, r: &Register| SimRegister {
        quantity,
        kind: r.kind,
        address: r.address,
        data_type: r.data_type,
        word_order: r.word_order,
        scale: r.scale,
    };
    let mut layout = vec![entry(Quantity::Power, &map.power_w)];
    for (quantity, register) in [
        (Quantity::Voltage, &map.voltage_v),
        (Quantity::Current, &map.current_a),
        (Quantity::Energy, &map.energy_kwh),
    ] {
        if let Some(r) = register {
            layout.push(entry(quantity, r));
        }
    }
    layout
}

/// Misbehaviour to inject into one unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Answer every request with this exception code.
    Exception(u8),
    /// Answer requests starting at `address` with this exception code.
    ExceptionAt { address: u16, code: u8 },
    /// Never answer (a dead or misaddressed unit).
    Silent,
    /// Answer correctly, but only after this delay.
    Late(Duration),
}

/// One simulated meter.
#[derive(Debug, Clone)]
pub struct SimUnit {
    pub layout: Vec<SimRegister>,
    pub watts: f64,
    pub volts: f64,
    pub amps: f64,
    pub kwh: f64,
    pub fault: Option<Fault>,
    /// Requests addressed to this unit so far.
    pub requests: u64,
    /// Power values served one per read of the power register, the last
    /// one repeated: a recording played back at the poller's own pace, so a
    /// test needs no timing (`calibrate --minutes`).
    pub power_script: Vec<f64>,
    script_position: usize,
}

impl SimUnit {
    pub fn new(layout: Vec<SimRegister>) -> Self {
        Self {
            layout,
            watts: 0.0,
            volts: 0.0,
            amps: 0.0,
            kwh: 0.0,
            fault: None,
            requests: 0,
            power_script: Vec::new(),
            script_position: 0,
        }
    }

    /// Serves `watts` one value per power read, then the last one.
    pub fn scripted(mut self, watts: Vec<f64>) -> Self {
        self.power_script = watts;
        self
    }

    /// Moves the script on if this request reads the power register.
    fn play_script(&mut self, kind: RegisterKind, address: u16) {
        let reads_power = self
            .layout
            .iter()
            .any(|r| r.quantity == Quantity::Power && r.kind == kind && r.address == address);
        if reads_power && let Some(&w) = self.power_script.get(self.script_position) {
            self.watts = w;
            self.script_position += 1;
        }
    }

    pub fn preset(model: MeterModel) -> Self {
        Self::new(preset_layout(model))
    }

    pub fn reading(mut self, watts: f64, volts: f64, amps: f64, kwh: f64) -> Self {
        (self.watts, self.volts, self.amps, self.kwh) = (watts, volts, amps, kwh);
        self
    }

    fn value(&self, quantity: Quantity) -> f64 {
        match quantity {
            Quantity::Power => self.watts,
            Quantity::Voltage => self.volts,
            Quantity::Current => self.amps,
            Quantity::Energy => self.kwh,
        }
    }

    /// The words at `address..address + count`, as a meter would refuse them.
    fn read(
        &self,
        kind: RegisterKind,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, ExceptionCode> {
        let mut image = BTreeMap::new();
        for register in self.layout.iter().filter(|r| r.kind == kind) {
            let words = encode(register, self.value(register.quantity));
            for (offset, word) in (0u16..).zip(words) {
                image.insert(register.address + offset, word);
            }
        }
        if image.is_empty() {
            return Err(ExceptionCode::IllegalFunction);
        }
        (0..count)
            .map(|i| {
                address
                    .checked_add(i)
                    .and_then(|a| image.get(&a).copied())
                    .ok_or(ExceptionCode::IllegalDataAddress)
            })
            .collect()
    }
}

/// The register words for `value`, written independently of the agent's decoder.
fn encode(register: &SimRegister, value: f64) -> Vec<u16> {
    let raw = value / register.scale;
    let swap_bytes = matches!(register.word_order, WordOrder::Badc | WordOrder::Dcba);
    let swap_words = matches!(register.word_order, WordOrder::Cdab | WordOrder::Dcba);
    let abcd: Vec<u16> = match register.data_type {
        DataType::U16 => vec![raw.round() as u16],
        DataType::I16 => vec![raw.round() as i16 as u16],
        DataType::U32 => split(raw.round() as u32),
        DataType::I32 => split(raw.round() as i32 as u32),
        DataType::F32 => split((raw as f32).to_bits()),
    };
    let mut words: Vec<u16> = abcd
        .into_iter()
        .map(|w| if swap_bytes { w.swap_bytes() } else { w })
        .collect();
    if swap_words && words.len() == 2 {
        words.swap(0, 1);
    }
    words
}

fn split(bits: u32) -> Vec<u16> {
    vec![(bits >> 16) as u16, bits as u16]
}

/// Every unit of one simulated bus, shared with the server tasks.
#[derive(Debug, Default)]
pub struct SimState {
    pub units: BTreeMap<u8, SimUnit>,
}

/// Handle on a [`SimState`]; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Sim(Arc<Mutex<SimState>>);

impl Sim {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_unit(self, unit_id: u8, unit: SimUnit) -> Self {
        self.lock().units.insert(unit_id, unit);
        self
    }

    /// Changes one unit (its values or its fault) while being served.
    pub fn update(&self, unit_id: u8, change: impl FnOnce(&mut SimUnit)) {
        change(self.lock().units.get_mut(&unit_id).expect("no such unit"));
    }

    pub fn requests(&self, unit_id: u8) -> u64 {
        self.lock().units.get(&unit_id).map_or(0, |u| u.requests)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.0.lock().expect("sim state poisoned")
    }

    /// The answer to a request, decided now (with the values of now), and
    /// how long to hold it back.
    fn answer(
        &self,
        unit_id: u8,
        request: &Request<'_>,
    ) -> (Result<Option<Response>, ExceptionCode>, Duration) {
        let mut state = self.lock();
        // Nobody with that address on the bus: silence, as on RS-485.
        let Some(unit) = state.units.get_mut(&unit_id) else {
            return (Ok(None), Duration::ZERO);
        };
        unit.requests += 1;
        let (kind, address, count) = match *request {
            Request::ReadInputRegisters(a, n) => (RegisterKind::Input, a, n),
            Request::ReadHoldingRegisters(a, n) => (RegisterKind::Holding, a, n),
            _ => return (Err(ExceptionCode::IllegalFunction), Duration::ZERO),
        };
        let mut delay = Duration::ZERO;
        match unit.fault {
            Some(Fault::Silent) => return (Ok(None), Duration::ZERO),
            Some(Fault::Exception(code)) => return (Err(ExceptionCode::new(code)), Duration::ZERO),
            Some(Fault::ExceptionAt { address: at, code }) if at == address => {
                return (Err(ExceptionCode::new(code)), Duration::ZERO);
            }
            Some(Fault::Late(d)) => delay = d,
            _ => {}
        }
        unit.play_script(kind, address);
        let result = unit.read(kind, address, count).map(|words| {
            Some(match kind {
                RegisterKind::Input => Response::ReadInputRegisters(words),
                RegisterKind::Holding => Response::ReadHoldingRegisters(words),
            })
        });
        (result, delay)
    }
}

#[derive(Debug, Clone)]
struct SimService(Sim);

impl Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let (answer, delay) = self.0.answer(req.slave, &req.request);
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            answer
        })
    }
}

/// The simulator served over Modbus TCP on 127.0.0.1.
#[derive(Debug)]
pub struct TcpSim {
    addr: SocketAddr,
    sim: Sim,
    server: Option<JoinHandle<()>>,
    /// Clones of accepted sockets, so [`TcpSim::stop`] can cut them at once.
    connections: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl TcpSim {
    /// Serves `sim` on a free loopback port.
    pub async fn start(sim: Sim) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut this = Self {
            addr: listener.local_addr()?,
            sim,
            server: None,
            connections: Arc::default(),
        };
        this.serve(listener);
        Ok(this)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Goes away: closes every connection and stops listening.
    pub async fn stop(&mut self) {
        for conn in self.connections.lock().expect("poisoned").drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        if let Some(server) = self.server.take() {
            server.abort();
            // Once the task is gone its listener is closed.
            let _ = server.await;
        }
    }

    /// Comes back on the same port.
    pub async fn restart(&mut self) -> io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    fn serve(&mut self, listener: TcpListener) {
        let sim = self.sim.clone();
        let connections = self.connections.clone();
        self.server = Some(tokio::spawn(async move {
            let server = tokio_modbus::server::tcp::Server::new(listener);
            let on_connected = move |stream: TcpStream, _peer: SocketAddr| {
                let sim = sim.clone();
                let connections = connections.clone();
                async move {
                    let stream = stream.into_std()?;
                    connections
                        .lock()
                        .expect("poisoned")
                        .push(stream.try_clone()?);
                    Ok(Some((SimService(sim), TcpStream::from_std(stream)?)))
                }
            };
            let _ = server.serve(&on_connected, |_err| {}).await;
        }));
    }
}

impl Drop for TcpSim {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// The simulator served over Modbus RTU on a pty pair: the server owns the
/// master side, the agent opens the slave side by its path.
#[derive(Debug)]
#[cfg(unix)]
pub struct RtuSim {
    path: String,
    /// Holding the slave side open keeps the pty alive while the agent has
    /// it closed (between a timeout and the reopen); otherwise the master
    /// reads EIO and the server stops.
    _keep_open: SerialStream,
    server: JoinHandle<()>,
}

#[cfg(unix)]
impl RtuSim {
    /// Serves `sim`; open the pty with [`RtuSim::opener`], as often as needed.
    pub fn start(sim: Sim) -> io::Result<Self> {
        Self::start_inner(sim, true)
    }

    /// Serves `sim` for the agent's own exclusive opener ([`Bus::plan`]).
    /// Without a lock of the simulator's own it can open the pty once; a
    /// reopen would find the pty still marked exclusive (only root may then
    /// open it), so use this for tests that never drop the connection.
    ///
    /// [`Bus::plan`]: crate::meter::Bus::plan
    pub fn start_for_one_exclusive_open(sim: Sim) -> io::Result<Self> {
        Self::start_inner(sim, false)
    }

    fn start_inner(sim: Sim, shared: bool) -> io::Result<Self> {
        let (master, mut slave) = SerialStream::pair()?;
        if shared {
            // A shared lock and no TIOCEXCL, so the agent can open (and reopen)
            // the same pty with a shared open too.
            slave.set_exclusive(false)?;
        }
        let path = slave
            .name()
            .ok_or_else(|| io::Error::other("the pty has no path"))?;
        let server = tokio::spawn(async move {
            let server = tokio_modbus::server::rtu::Server::new(master);
            let _ = server.serve_forever(SimService(sim)).await;
        });
        Ok(Self {
            path,
            _keep_open: slave,
            server,
        })
    }

    /// The pty to put in `rtu.serial_port`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Opens ports like the agent does, but shared: the simulator holds the
    /// pty open too, and an exclusive open would lock the agent out of
    /// reopening it.
    pub fn opener() -> SerialOpener {
        Arc::new(|link| Ok(serial_builder(link).exclusive(false).open_native_async()?))
    }
}

#[cfg(unix)]
impl Drop for RtuSim {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(data_type: DataType, word_order: WordOrder, scale: f64) -> SimRegister {
        SimRegister {
            quantity: Quantity::Power,
            kind: RegisterKind::Holding,
            address: 0,
            data_type,
            word_order,
            scale,
        }
    }

    #[test]
    fn encodes_like_the_manuals_say() {
        // 230.5 = 0x4366_8000
        assert_eq!(
            encode(&reg(DataType::F32, WordOrder::Abcd, 1.0), 230.5),
            [0x4366, 0x8000]
        );
        assert_eq!(
            encode(&reg(DataType::F32, WordOrder::Cdab, 1.0), 230.5),
            [0x8000, 0x4366]
        );
        assert_eq!(
            encode(&reg(DataType::F32, WordOrder::Badc, 1.0), 230.5),
            [0x6643, 0x0080]
        );
        assert_eq!(
            encode(&reg(DataType::F32, WordOrder::Dcba, 1.0), 230.5),
            [0x0080, 0x6643]
        );
        // 1500 W as kW = 1.5 = 0x3FC0_0000
        assert_eq!(
            encode(&reg(DataType::F32, WordOrder::Abcd, 1000.0), 1500.0),
            [0x3FC0, 0x0000]
        );
        assert_eq!(
            encode(&reg(DataType::I16, WordOrder::Abcd, 1.0), -200.0),
            [0xFF38]
        );
        assert_eq!(
            encode(&reg(DataType::I32, WordOrder::Cdab, 1.0), -100_000.0),
            [0x7960, 0xFFFE]
        );
    }

    #[test]
    fn a_missing_register_or_kind_is_refused_like_a_meter_would() {
        let unit = SimUnit::preset(MeterModel::Sdm120).reading(1.0, 2.0, 3.0, 4.0);
        assert_eq!(
            unit.read(RegisterKind::Input, 0x0C, 2).map(|w| w.len()),
            Ok(2)
        );
        assert_eq!(
            unit.read(RegisterKind::Input, 0x0D, 2),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            unit.read(RegisterKind::Holding, 0x0C, 2),
            Err(ExceptionCode::IllegalFunction)
        );
    }
}
