//! The agent's config file (`config/agent.example.toml` documents every key).
//!
//! Defaults live in the `defaults` module and nowhere else. Loading reports
//! every problem at once, each naming the key and the fix (shared with the
//! collector: `labhours_shared::config`, docs/configuration.md); what a
//! config must hold depends on the command ([`Purpose`]).

use std::path::{Path, PathBuf};

pub use labhours_shared::config::ConfigFileError;
use labhours_shared::config::file::{check_dir, read_secret};
use labhours_shared::config::{
    ConfigError, ConfigErrors, Example, LogConfig, TlsConfig, load_file, parse_toml,
};
use labhours_shared::state::StateRules;
use labhours_shared::trust::Signer;
use labhours_shared::trust::key_file::{self, KeyFileError};
use labhours_shared::wire::{DEFAULT_TOPIC_PREFIX, check_id};
use serde::{Deserialize, Serialize};

pub const EXAMPLE: Example = Example {
    path: "config/agent.example.toml",
    text: include_str!("../../config/agent.example.toml"),
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This agent's id: one MQTT topic level, unique per site.
    pub agent_id: String,
    /// The instrument this agent watches.
    pub instrument_id: String,
    /// Where the outbox and the result-file index live.
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    /// How often every meter is read, in one cycle.
    #[serde(default = "defaults::poll_interval_ms")]
    pub poll_interval_ms: u64,
    #[serde(default)]
    pub mqtt: MqttConfig,
    pub state: StateRules,
    #[serde(default)]
    pub meters: Vec<MeterConfig>,
    #[serde(default)]
    pub status: Option<StatusConfig>,
    #[serde(default)]
    pub results: Vec<ResultsConfig>,
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// The agent's signing key (docs/design/trust.md); unsigned without it.
    #[serde(default)]
    pub signing: SigningConfig,
    #[serde(default)]
    pub log: LogConfig,
}

/// `[signing]`: the Ed25519 key every envelope is signed with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// PKCS#8 file written by `labhours-agent keygen`, readable by the
    /// agent's service account only.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// While rotating: the key `key_file` replaces. Every envelope then
    /// carries this key's signed endorsement of the new one, so the
    /// collector enrols the new key by itself (docs/agent.md#rotating-the-key).
    #[serde(default)]
    pub previous_key_file: Option<PathBuf>,
}

impl SigningConfig {
    /// The key, when one is configured (endorsed by the previous key while
    /// rotating): an unreadable, malformed or world-readable file is an
    /// error naming the key and the fix.
    pub fn signer(&self, agent_id: &str) -> Result<Option<Signer>, ConfigError> {
        let Some(path) = &self.key_file else {
            if self.previous_key_file.is_some() {
                return Err(ConfigError::new(
                    "signing.previous_key_file",
                    "is set without signing.key_file (the new key)",
                    "set key_file to the new key from `labhours-agent keygen --out <new file>`",
                ));
            }
            return Ok(None);
        };
        let current = load_key("signing.key_file", path)?;
        let Some(previous_path) = &self.previous_key_file else {
            return Ok(Some(current));
        };
        let previous = load_key("signing.previous_key_file", previous_path)?;
        if previous.key_id() == current.key_id() {
            return Err(ConfigError::new(
                "signing.previous_key_file",
                format!(
                    "holds the same key ({}) as signing.key_file",
                    current.key_id()
                ),
                "make a new key with `labhours-agent keygen --out <new file>` and point key_file at it",
            ));
        }
        Ok(Some(current.rotated_from(&previous, agent_id)))
    }
}

fn load_key(field: &str, path: &Path) -> Result<Signer, ConfigError> {
    {
        key_file::load(path).map_err(|e| {
            let fix = match &e {
                KeyFileError::Readable { path, .. } => {
                    format!("run `chmod 600 {}`", path.display())
                }
                KeyFileError::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    format!(
                        "create it with `labhours-agent keygen --out {}` and enrol the key it prints, or remove [signing]",
                        path.display()
                    )
                }
                _ => format!("point {field} at the file `labhours-agent keygen` wrote"),
            };
            ConfigError::new(field, e.to_string(), fix)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    #[serde(default = "defaults::mqtt_host")]
    pub host: String,
    #[serde(default = "defaults::mqtt_port")]
    pub port: u16,
    #[serde(default = "defaults::topic_prefix")]
    pub topic_prefix: String,
    #[serde(default)]
    pub username: Option<String>,
    /// Read from this file at start (keeps secrets out of the config).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default = "defaults::keep_alive_s")]
    pub keep_alive_s: u64,
    #[serde(default = "defaults::heartbeat_interval_s")]
    pub heartbeat_interval_s: u64,
    /// Unacknowledged events are sent again after this long.
    #[serde(default = "defaults::ack_timeout_s")]
    pub ack_timeout_s: u64,
}

/// One Modbus power meter, reached over TCP or RTU (exactly one of the two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    pub name: String,
    /// A built-in register map, or `custom` with `registers`.
    pub model: MeterModel,
    #[serde(default = "defaults::unit_id")]
    pub unit_id: u8,
    #[serde(default = "defaults::meter_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub tcp: Option<TcpLink>,
    #[serde(default)]
    pub rtu: Option<SerialLink>,
    /// Register map for `model = "custom"` (overrides the preset otherwise).
    #[serde(default)]
    pub registers: Option<RegisterMap>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterModel {
    /// Eastron SDM120-Modbus (single phase).
    Sdm120,
    /// Eastron SDM630-Modbus (three phase).
    Sdm630,
    /// CHINT DDSU666 (single phase DIN-rail).
    Ddsu666,
    Custom,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpLink {
    pub host: String,
    #[serde(default = "defaults::modbus_port")]
    pub port: u16,
}

/// A serial port (RS-485 for meters, RS-232 for status lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialLink {
    /// `/dev/ttyUSB0` on Linux, `COM3` on Windows.
    pub serial_port: String,
    #[serde(default = "defaults::baud_rate")]
    pub baud_rate: u32,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "defaults::stop_bits")]
    pub stop_bits: u8,
    #[serde(default = "defaults::data_bits")]
    pub data_bits: u8,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// Where each quantity sits in the meter. Power is required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterMap {
    pub power_w: Register,
    #[serde(default)]
    pub voltage_v: Option<Register>,
    #[serde(default)]
    pub current_a: Option<Register>,
    #[serde(default)]
    pub energy_kwh: Option<Register>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub kind: RegisterKind,
    /// Zero-based protocol address (register 30013 in a manual is input address 12).
    pub address: u16,
    pub data_type: DataType,
    #[serde(default)]
    pub word_order: WordOrder,
    /// The decoded value is multiplied by this.
    #[serde(default = "defaults::scale")]
    pub scale: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterKind {
    Holding,
    Input,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    F32,
}

/// Byte order of a 32-bit value over two registers; `abcd` is big-endian.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    #[default]
    Abcd,
    Cdab,
    Badc,
    Dcba,
}

/// The instrument's own status line on a serial port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// The serial port the status lines come from; only `replay` does without.
    #[serde(default)]
    pub serial: Option<SerialLink>,
    /// Longer lines are dropped (and reported as a fault).
    #[serde(default = "defaults::max_line_bytes")]
    pub max_line_bytes: usize,
    /// Sent every `query_interval_s` for instruments that only answer when asked.
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default = "defaults::query_interval_s")]
    pub query_interval_s: u64,
    /// Tried in order; the first match wins; a line matching none is ignored.
    pub rules: Vec<StatusRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRule {
    /// A regular expression; a named group `sample` captures a sample or method id.
    pub pattern: String,
    /// `running`, `standby` or `fault`.
    pub state: labhours_shared::state::State,
}

/// A folder the instrument writes result files into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsConfig {
    pub folder: PathBuf,
    /// Globs relative to the folder; a file must match one.
    #[serde(default = "defaults::include")]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default = "defaults::yes")]
    pub recursive: bool,
    /// A file counts once unchanged for two checks and at least this old.
    #[serde(default = "defaults::min_age_s")]
    pub min_age_s: u64,
    /// Full rescan period; file-system events are only hints.
    #[serde(default = "defaults::rescan_interval_s")]
    pub rescan_interval_s: u64,
    /// Poll instead of file-system events (network shares).
    #[serde(default)]
    pub poll: bool,
    /// A regex on the file name; group `sample` (or the whole match) is the sample id.
    #[serde(default)]
    pub sample_id_pattern: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Size cap; beyond it summaries are dropped first, then the oldest events.
    #[serde(default = "defaults::outbox_max_bytes")]
    pub max_bytes: u64,
    /// How often sled writes acknowledgements and deletions in the
    /// background. (Every append is made durable before it returns; the
    /// name stays for existing config files.)
    #[serde(default = "defaults::summary_flush_ms")]
    pub summary_flush_ms: u64,
    /// sled page cache; small keeps the agent light.
    #[serde(default = "defaults::cache_bytes")]
    pub cache_bytes: u64,
    /// New events are refused when less than this would stay free on the
    /// outbox's disk, so the outbox can still delete delivered events and
    /// never fails half-way through a write.
    #[serde(default = "defaults::min_free_bytes")]
    pub min_free_bytes: u64,
}

/// Every default, in one place.
mod defaults {
    use std::path::PathBuf;

    pub fn data_dir() -> PathBuf {
        PathBuf::from("labhours-agent-data")
    }
    pub fn poll_interval_ms() -> u64 {
        1000
    }
    pub fn mqtt_host() -> String {
        "127.0.0.1".into()
    }
    pub fn mqtt_port() -> u16 {
        1883
    }
    pub fn topic_prefix() -> String {
        labhours_shared::wire::DEFAULT_TOPIC_PREFIX.into()
    }
    pub fn keep_alive_s() -> u64 {
        30
    }
    pub fn heartbeat_interval_s() -> u64 {
        60
    }
    pub fn ack_timeout_s() -> u64 {
        30
    }
    pub fn unit_id() -> u8 {
        1
    }
    pub fn meter_timeout_ms() -> u64 {
        300
    }
    pub fn modbus_port() -> u16 {
        502
    }
    pub fn baud_rate() -> u32 {
        9600
    }
    pub fn stop_bits() -> u8 {
        1
    }
    pub fn data_bits() -> u8 {
        8
    }
    pub fn scale() -> f64 {
        1.0
    }
    pub fn max_line_bytes() -> usize {
        1024
    }
    pub fn query_interval_s() -> u64 {
        10
    }
    pub fn include() -> Vec<String> {
        vec!["**/*".into()]
    }
    pub fn yes() -> bool {
        true
    }
    pub fn min_age_s() -> u64 {
        10
    }
    pub fn rescan_interval_s() -> u64 {
        300
    }
    pub fn outbox_max_bytes() -> u64 {
        256 * 1024 * 1024
    }
    pub fn summary_flush_ms() -> u64 {
        1000
    }
    pub fn cache_bytes() -> u64 {
        1024 * 1024
    }
    pub fn min_free_bytes() -> u64 {
        2 * 1024 * 1024
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: defaults::mqtt_host(),
            port: defaults::mqtt_port(),
            topic_prefix: DEFAULT_TOPIC_PREFIX.into(),
            username: None,
            password_file: None,
            tls: None,
            keep_alive_s: defaults::keep_alive_s(),
            heartbeat_interval_s: defaults::heartbeat_interval_s(),
            ack_timeout_s: defaults::ack_timeout_s(),
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_bytes: defaults::outbox_max_bytes(),
            summary_flush_ms: defaults::summary_flush_ms(),
            cache_bytes: defaults::cache_bytes(),
            min_free_bytes: defaults::min_free_bytes(),
        }
    }
}

/// What the config is for: `replay` reads no hardware, so a replay-only
/// config needs no meter, port or folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Purpose {
    /// `run` and `probe`: at least one source, and a status table needs its port.
    Run,
    /// `replay`: recorded samples instead of sources.
    Replay,
}

impl AgentConfig {
    /// Reads, parses and validates a config file for `run`.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        load_file(path, Self::parse)
    }

    /// What every command calls before it starts, and `check-config` too, so
    /// that it refuses exactly what a start would: the file parsed and
    /// validated for `purpose`, and every file it names (MQTT password, TLS
    /// certificates and key) read. All problems come back together.
    pub fn load_to_start(path: &Path, purpose: Purpose) -> Result<Self, ConfigFileError> {
        load_file(path, |text| {
            let config = parse_toml(text, &EXAMPLE, |c: &Self| c.problems(purpose))?;
            ConfigErrors(config.unreadable_files()).into_result()?;
            Ok(config)
        })
    }

    /// Parses and validates config text for `run`.
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        parse_toml(text, &EXAMPLE, |c: &Self| c.problems(Purpose::Run))
    }

    /// The files this config names that a start would refuse.
    pub fn unreadable_files(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if let Some(path) = &self.mqtt.password_file {
            errors.extend(read_secret("mqtt.password_file", path).err());
        }
        if let Some(tls) = &self.mqtt.tls {
            errors.extend(tls.client_config("mqtt.tls").err().into_iter().flatten());
        }
        errors.extend(check_dir("data_dir", &self.data_dir));
        errors.extend(self.signing.signer(&self.agent_id).err());
        errors
    }

    /// Checks everything serde cannot for `run`; reports every problem found.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        ConfigErrors(self.problems(Purpose::Run)).into_result()
    }

    /// Every problem serde cannot see, for `purpose`.
    pub fn problems(&self, purpose: Purpose) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for (field, id) in [
            ("agent_id", &self.agent_id),
            ("instrument_id", &self.instrument_id),
        ] {
            if check_id(field, id).is_err() {
                errors.push(ConfigError::new(
                    field,
                    format!("{id:?} is not a valid id"),
                    "use 1-64 characters from A-Z a-z 0-9 . _ - (it becomes an MQTT topic level)",
                ));
            }
        }
        if !(100..=3_600_000).contains(&self.poll_interval_ms) {
            errors.push(ConfigError::new(
                "poll_interval_ms",
                format!("{} ms is outside 100..=3600000", self.poll_interval_ms),
                "poll power meters every 1000 ms unless the meter cannot keep up",
            ));
        }
        errors.extend(
            self.state
                .validate(self.poll_interval_ms)
                .into_iter()
                .map(|e| e.under("state")),
        );
        self.validate_mqtt(&mut errors);
        for (i, meter) in self.meters.iter().enumerate() {
            let at = format!("meters[{i}]");
            errors.extend(
                meter
                    .validate(self.poll_interval_ms)
                    .into_iter()
                    .map(|e| e.under(&at)),
            );
            if self.meters[..i].iter().any(|m| m.name == meter.name) {
                errors.push(ConfigError::new(
                    format!("{at}.name"),
                    format!("{:?} is used by an earlier meter", meter.name),
                    "give every meter its own name",
                ));
            }
        }
        if let Some(status) = &self.status {
            errors.extend(status.validate().into_iter().map(|e| e.under("status")));
            if status.serial.is_none() && purpose == Purpose::Run {
                errors.push(ConfigError::new(
                    "status.serial",
                    "is missing, so no status line can be read",
                    "add serial = { serial_port = \"/dev/ttyUSB1\" } to [status] (only `replay` does without)",
                ));
            }
        }
        for (i, results) in self.results.iter().enumerate() {
            errors.extend(
                results
                    .validate()
                    .into_iter()
                    .map(|e| e.under(&format!("results[{i}]"))),
            );
        }
        if purpose == Purpose::Run
            && self.meters.is_empty()
            && self.status.is_none()
            && self.results.is_empty()
        {
            errors.push(ConfigError::new(
                "meters",
                "no source is configured, so the agent would measure nothing".to_owned(),
                "add at least one [[meters]], a [status] port or a [[results]] folder (a config only for `replay` needs none)",
            ));
        }
        if self.outbox.max_bytes < 1024 * 1024 {
            errors.push(ConfigError::new(
                "outbox.max_bytes",
                format!("{} bytes is less than 1 MiB", self.outbox.max_bytes),
                "keep the default 268435456 (256 MiB) or at least 1048576",
            ));
        }
        if self.outbox.summary_flush_ms > 60_000 {
            errors.push(ConfigError::new(
                "outbox.summary_flush_ms",
                format!(
                    "{} ms leaves acknowledged events on disk for over a minute",
                    self.outbox.summary_flush_ms
                ),
                "use at most 60000; the default is 1000",
            ));
        }
        if self.outbox.min_free_bytes > self.outbox.max_bytes {
            errors.push(ConfigError::new(
                "outbox.min_free_bytes",
                format!(
                    "{} bytes is more than outbox.max_bytes ({})",
                    self.outbox.min_free_bytes, self.outbox.max_bytes
                ),
                "keep the default 2097152 (2 MiB); 0 turns the free-space check off",
            ));
        }
        errors.extend(self.log.validate());
        errors
    }

    fn validate_mqtt(&self, errors: &mut Vec<ConfigError>) {
        let m = &self.mqtt;
        if m.host.trim().is_empty() {
            errors.push(ConfigError::new(
                "mqtt.host",
                "is empty",
                "name the MQTT broker host, e.g. \"127.0.0.1\"",
            ));
        }
        if m.topic_prefix.is_empty() || m.topic_prefix.contains(['+', '#']) {
            errors.push(ConfigError::new(
                "mqtt.topic_prefix",
                format!("{:?} is empty or holds a wildcard", m.topic_prefix),
                format!("use the default {DEFAULT_TOPIC_PREFIX:?} or a plain path such as \"site/labhours/v1\""),
            ));
        }
        if m.keep_alive_s < 5 {
            errors.push(ConfigError::new(
                "mqtt.keep_alive_s",
                format!("{} s is too short", m.keep_alive_s),
                "use 5 s or more; the default is 30",
            ));
        }
        if m.heartbeat_interval_s == 0 {
            errors.push(ConfigError::new(
                "mqtt.heartbeat_interval_s",
                "is 0",
                "use the default 60",
            ));
        }
        if m.ack_timeout_s == 0 {
            errors.push(ConfigError::new(
                "mqtt.ack_timeout_s",
                "is 0",
                "use the default 30",
            ));
        }
        if m.password_file.is_some() && m.username.is_none() {
            errors.push(ConfigError::new(
                "mqtt.username",
                "a password_file is set without a username",
                "set mqtt.username too",
            ));
        }
        if let Some(tls) = &m.tls {
            errors.extend(tls.validate().into_iter().map(|e| e.under("mqtt.tls")));
        }
    }
}

impl MeterConfig {
    fn validate(&self, poll_interval_ms: u64) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if self.name.trim().is_empty() {
            errors.push(ConfigError::new(
                "name",
                "is empty",
                "name the meter, e.g. \"main\"",
            ));
        }
        match (&self.tcp, &self.rtu) {
            (Some(_), Some(_)) | (None, None) => errors.push(ConfigError::new(
                "tcp",
                "a meter needs exactly one of `tcp` and `rtu`",
                "add tcp = { host = \"10.0.0.5\" } or rtu = { serial_port = \"/dev/ttyUSB0\" }, not both",
            )),
            (Some(tcp), None) if tcp.host.trim().is_empty() => {
                errors.push(ConfigError::new("tcp.host", "is empty", "give the meter's or gateway's address"));
            }
            (None, Some(rtu)) => errors.extend(rtu.validate().into_iter().map(|e| e.under("rtu"))),
            _ => {}
        }
        if !(1..=247).contains(&self.unit_id) {
            errors.push(ConfigError::new(
                "unit_id",
                format!("{} is not a Modbus unit address", self.unit_id),
                "use the address set on the meter, 1-247 (default 1)",
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms >= poll_interval_ms {
            errors.push(ConfigError::new(
                "timeout_ms",
                format!(
                    "{} ms must be above 0 and below poll_interval_ms ({poll_interval_ms})",
                    self.timeout_ms
                ),
                "the default 300 ms suits meters on RS-485 and on a LAN",
            ));
        }
        if self.model == MeterModel::Custom && self.registers.is_none() {
            errors.push(ConfigError::new(
                "registers",
                "model = \"custom\" needs a register map",
                "add [meters.registers] with at least power_w = { kind, address, data_type }",
            ));
        }
        errors
    }
}

impl SerialLink {
    fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if self.serial_port.trim().is_empty() {
            errors.push(ConfigError::new(
                "serial_port",
                "is empty",
                "name the port, e.g. \"/dev/ttyUSB0\" or \"COM3\"",
            ));
        }
        if !(300..=921_600).contains(&self.baud_rate) {
            errors.push(ConfigError::new(
                "baud_rate",
                format!("{} is not a serial speed", self.baud_rate),
                "use the speed set on the device, e.g. 9600",
            ));
        }
        if !matches!(self.stop_bits, 1 | 2) {
            errors.push(ConfigError::new(
                "stop_bits",
                format!("{} is not 1 or 2", self.stop_bits),
                "use 1 (or 2 if the device says so)",
            ));
        }
        if !(5..=8).contains(&self.data_bits) {
            errors.push(ConfigError::new(
                "data_bits",
                format!("{} is not 5-8", self.data_bits),
                "use 8",
            ));
        }
        errors
    }
}

impl StatusConfig {
    /// The port's name for messages ("(none)" in a replay-only config).
    pub fn port_name(&self) -> &str {
        self.serial
            .as_ref()
            .map_or("(none)", |s| s.serial_port.as_str())
    }

    fn validate(&self) -> Vec<ConfigError> {
        let mut errors: Vec<_> = self
            .serial
            .iter()
            .flat_map(SerialLink::validate)
            .map(|e| e.under("serial"))
            .collect();
        if !(16..=65_536).contains(&self.max_line_bytes) {
            errors.push(ConfigError::new(
                "max_line_bytes",
                format!("{} is outside 16..=65536", self.max_line_bytes),
                "use the default 1024",
            ));
        }
        if self.query.is_some() && self.query_interval_s == 0 {
            errors.push(ConfigError::new(
                "query_interval_s",
                "is 0 with a query set",
                "ask every 10 s or so",
            ));
        }
        if self.rules.is_empty() {
            errors.push(ConfigError::new(
                "rules",
                "no status rule is given",
                "add [[status.rules]] with a pattern and a state",
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if let Err(e) = regex::Regex::new(&rule.pattern) {
                errors.push(ConfigError::new(
                    format!("rules[{i}].pattern"),
                    format!("not a valid regular expression: {e}"),
                    "fix the pattern (Rust regex syntax)",
                ));
            }
            use labhours_shared::state::State;
            if !matches!(rule.state, State::Running | State::Standby | State::Fault) {
                errors.push(ConfigError::new(
                    format!("rules[{i}].state"),
                    format!("a status line cannot say {}", rule.state),
                    "use running, standby or fault",
                ));
            }
        }
        errors
    }
}

impl ResultsConfig {
    fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if self.folder.as_os_str().is_empty() {
            errors.push(ConfigError::new(
                "folder",
                "is empty",
                "name the folder the instrument writes results into",
            ));
        }
        for (key, globs) in [("include", &self.include), ("exclude", &self.exclude)] {
            for (i, glob) in globs.iter().enumerate() {
                if let Err(e) = globset::Glob::new(glob) {
                    errors.push(ConfigError::new(
                        format!("{key}[{i}]"),
                        format!("not a valid glob: {e}"),
                        "use globs such as \"**/*.raw\"",
                    ));
                }
            }
        }
        if self.include.is_empty() {
            errors.push(ConfigError::new(
                "include",
                "is empty, so no file would ever count",
                "remove it to include every file, or list globs",
            ));
        }
        if self.rescan_interval_s == 0 {
            errors.push(ConfigError::new(
                "rescan_interval_s",
                "is 0",
                "use the default 300",
            ));
        }
        if let Some(pattern) = &self.sample_id_pattern
            && let Err(e) = regex::Regex::new(pattern)
        {
            errors.push(ConfigError::new(
                "sample_id_pattern",
                format!("not a valid regular expression: {e}"),
                "fix the pattern (Rust regex syntax)",
            ));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        agent_id = "nmr-pc"
        instrument_id = "nmr-600"
        [state]
        on_above_w = 20
        running_above_w = 400
        [[meters]]
        name = "main"
        model = "sdm120"
        tcp = { host = "127.0.0.1" }
    "#;

    #[cfg(unix)]
    #[test]
    fn a_signing_key_others_can_read_or_that_is_missing_is_named_with_its_fix() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("agent.key");
        let text = format!(
            "data_dir = {:?}\n{MINIMAL}\n[signing]\nkey_file = {key:?}\n",
            dir.path()
        );
        let config = AgentConfig::parse(&text).expect("parses: files are checked at start");
        let missing = config.unreadable_files();
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing[0].field, "signing.key_file");
        assert!(
            missing[0].fix.contains("labhours-agent keygen --out"),
            "{missing:?}"
        );
        labhours_shared::trust::key_file::generate(&key).expect("key");
        assert!(config.unreadable_files().is_empty());
        assert!(config.signing.signer("a").expect("loads").is_some());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let readable = config.unreadable_files();
        assert_eq!(readable[0].field, "signing.key_file");
        assert!(readable[0].fix.contains("chmod 600"), "{readable:?}");
    }

    #[test]
    fn a_rotating_signer_carries_the_previous_keys_endorsement_and_bad_pairs_are_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (old, new) = (dir.path().join("old.key"), dir.path().join("new.key"));
        let old_signer = labhours_shared::trust::key_file::generate(&old).expect("old");
        labhours_shared::trust::key_file::generate(&new).expect("new");
        let signing = |key: Option<&Path>, previous: Option<&Path>| SigningConfig {
            key_file: key.map(Path::to_owned),
            previous_key_file: previous.map(Path::to_owned),
        };
        let signer = signing(Some(&new), Some(&old))
            .signer("a1")
            .expect("loads")
            .expect("signs");
        let rotation = signer.rotation().expect("rotating");
        assert_eq!(rotation.from, old_signer.key_id());
        assert!(rotation.verifies("a1", &old_signer.public_key()));
        let field = |c: SigningConfig| c.signer("a1").expect_err("refused").field;
        assert_eq!(
            field(signing(Some(&old), Some(&old))),
            "signing.previous_key_file"
        );
        assert_eq!(
            field(signing(None, Some(&old))),
            "signing.previous_key_file"
        );
        assert_eq!(
            field(signing(Some(&new), Some(&dir.path().join("gone.key")))),
            "signing.previous_key_file"
        );
    }

    fn fields(text: &str) -> Vec<String> {
        AgentConfig::parse(text)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_minimal_config_takes_every_default() {
        let c = AgentConfig::parse(MINIMAL).expect("valid");
        assert_eq!(c.poll_interval_ms, 1000);
        assert_eq!(c.mqtt.port, 1883);
        assert_eq!(c.meters[0].unit_id, 1);
        assert_eq!(c.meters[0].tcp.as_ref().map(|t| t.port), Some(502));
        assert_eq!(c.outbox.max_bytes, 256 * 1024 * 1024);
        assert_eq!(c.state.min_dwell_s, 30);
    }

    #[test]
    fn a_meter_with_both_transports_is_rejected_by_name() {
        let text = MINIMAL.replace(
            "tcp = { host = \"127.0.0.1\" }",
            "tcp = { host = \"h\" }\nrtu = { serial_port = \"/dev/ttyUSB0\" }",
        );
        assert_eq!(fields(&text), ["meters[0].tcp"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = MINIMAL
            .replace("nmr-pc", "nmr pc")
            .replace("running_above_w = 400", "running_above_w = 10")
            .replace("model = \"sdm120\"", "model = \"custom\"\nunit_id = 0");
        assert_eq!(
            fields(&text),
            [
                "agent_id",
                "state.running_above_w",
                "state.running_exit_below_w",
                "meters[0].unit_id",
                "meters[0].registers"
            ]
        );
    }

    #[test]
    fn a_bad_status_pattern_names_the_rule() {
        let text = format!(
            "{MINIMAL}\n[status]\nserial = {{ serial_port = \"/dev/ttyS0\" }}\n[[status.rules]]\npattern = \"RUN(\"\nstate = \"running\"\n[[status.rules]]\npattern = \"OFF\"\nstate = \"off\"\n"
        );
        assert_eq!(
            fields(&text),
            ["status.rules[0].pattern", "status.rules[1].state"]
        );
    }

    #[test]
    fn an_unknown_key_is_named() {
        let text = MINIMAL.replace(
            "agent_id",
            "poll_interval_ms = 1000\nagnet_id = \"x\"\nagent_id",
        );
        let err = AgentConfig::parse(&text).unwrap_err();
        assert_eq!(err.0[0].field, "agnet_id");
        assert_eq!(err.0[0].at.map(|p| p.line), Some(3));
        assert!(
            err.0[0].fix.contains("did you mean `agent_id`?"),
            "{}",
            err.0[0]
        );
    }

    #[test]
    fn type_range_and_semantic_errors_come_together_with_their_keys() {
        let text = MINIMAL
            .replace("nmr-pc", "nmr pc")
            .replace("on_above_w = 20", "on_above_w = \"20\"")
            .replace(
                "model = \"sdm120\"",
                "model = \"sdm12\"\nunit_id = 300\ntimeout_ms = \"300\"",
            )
            + "[mqtt]\nport = 70000\nkeep_alive_s = 1\n";
        let err = AgentConfig::parse(&text).unwrap_err();
        let mut got = err.keys_and_lines();
        got.sort();
        assert_eq!(
            got,
            [
                ("agent_id", None),
                ("meters[0].model", Some(9)),
                ("meters[0].timeout_ms", Some(11)),
                ("meters[0].unit_id", Some(10)),
                ("mqtt.keep_alive_s", None),
                ("mqtt.port", Some(14)),
                ("state.on_above_w", Some(5)),
            ],
            "{err}"
        );
        let port = err.0.iter().find(|e| e.field == "mqtt.port").unwrap();
        assert!(
            port.fix.starts_with("write a whole number from 0 to 65535"),
            "{port}"
        );
        assert!(port.fix.contains("`port = 1883`"), "{port}");
        let model = err.0.iter().find(|e| e.field == "meters[0].model").unwrap();
        assert!(
            model.fix.contains("sdm120, sdm630, ddsu666, custom"),
            "{model}"
        );
    }

    #[test]
    fn missing_keys_are_all_named_and_the_rest_still_checked() {
        let err = AgentConfig::parse("poll_interval_ms = \"1000\"\n").unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["poll_interval_ms", "agent_id", "instrument_id", "state"],
            "{err}"
        );
        assert_eq!(
            err.0[1].fix,
            "add it, e.g. `agent_id = \"nmr600-pc\"` (see config/agent.example.toml)"
        );
        assert_eq!(
            err.0[3].fix,
            "add a [state] table as in config/agent.example.toml"
        );
        // With the table there, a semantic problem shows beside the missing ids.
        let err = AgentConfig::parse("[state]\non_above_w = 1\nrunning_above_w = 5\n").unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["agent_id", "instrument_id", "meters"], "{err}");
    }

    const REPLAY_ONLY: &str = r#"
        agent_id = "nmr-pc"
        instrument_id = "nmr-600"
        [state]
        on_above_w = 20
        running_above_w = 400
        [status]
        [[status.rules]]
        pattern = "^RUN"
        state = "running"
    "#;

    #[test]
    fn a_replay_only_config_needs_no_hardware_but_run_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, REPLAY_ONLY).unwrap();
        let config = AgentConfig::load_to_start(&path, Purpose::Replay).expect("valid for replay");
        assert!(config.meters.is_empty() && config.status.unwrap().serial.is_none());
        let err = AgentConfig::load_to_start(&path, Purpose::Run).unwrap_err();
        let fields = err.fields();
        assert_eq!(fields, ["status.serial"]);
        let no_status = REPLAY_ONLY.split("[status]").next().unwrap();
        std::fs::write(&path, no_status).unwrap();
        AgentConfig::load_to_start(&path, Purpose::Replay).expect("no status rules either");
        let err = AgentConfig::load_to_start(&path, Purpose::Run).unwrap_err();
        assert_eq!(err.fields()[0], "meters");
    }

    #[test]
    fn every_file_the_config_names_is_checked_before_a_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let missing = dir.path().join("missing");
        std::fs::write(dir.path().join("data"), "a file").unwrap();
        std::fs::write(
            &path,
            format!(
                "data_dir = {data:?}\n{MINIMAL}\n[mqtt]\nusername = \"u\"\npassword_file = {pw:?}\n[mqtt.tls]\nca_file = {ca:?}\n",
                data = dir.path().join("data"),
                pw = missing.join("pw"),
                ca = missing.join("ca.pem"),
            ),
        )
        .unwrap();
        let err = AgentConfig::load_to_start(&path, Purpose::Run).unwrap_err();
        let fields = err.fields();
        assert_eq!(
            fields,
            ["mqtt.password_file", "mqtt.tls.ca_file", "data_dir"],
            "{err}"
        );
        // `load` alone (tests, the demo) does not read them.
        AgentConfig::load(&path).expect("valid without the files");
    }
}
