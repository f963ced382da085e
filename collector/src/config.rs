//! The collector's config file (`config/collector.example.toml` documents every key).
//!
//! Every key has a default, so the collector runs with no file at all:
//! embedded broker on 127.0.0.1:1883, HTTP on 127.0.0.1:8080, data in
//! `./labhours-collector-data`, site time zone UTC (with a warning:
//! [`CollectorConfig::warnings`]). Loading and error reporting are shared
//! with the agent (`labhours_shared::config`, docs/configuration.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use labhours_shared::config::ConfigFileError;
use labhours_shared::config::file::{check_dir, read_secret};
use labhours_shared::config::{
    ConfigError, ConfigErrors, Example, LogConfig, ServerTlsConfig, TlsConfig, load_file,
    parse_toml,
};
use labhours_shared::state::{State, StateRules};
use labhours_shared::wire::{DEFAULT_TOPIC_PREFIX, check_id};
use serde::{Deserialize, Serialize};

pub const EXAMPLE: Example = Example {
    path: "config/collector.example.toml",
    text: include_str!("../../config/collector.example.toml"),
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    #[serde(default)]
    pub site: SiteConfig,
    /// The database and quarantine live here.
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub http: HttpConfig,
    /// Optional time-series copy for Grafana.
    #[serde(default)]
    pub influxdb: Option<InfluxConfig>,
    /// Forward verified results to a parent collector (a hub;
    /// docs/design/federation.md).
    #[serde(default)]
    pub upstream: Option<UpstreamConfig>,
    /// Take forwarded results from these sites (this collector is a hub).
    #[serde(default)]
    pub hub: Option<HubConfig>,
    /// Site-wide defaults of the reconciliation rules; instruments may override.
    #[serde(default)]
    pub reconciliation: ReconciliationRules,
    /// The site's published open hours (开放机时), used by every instrument
    /// without its own; absent: open hours unknown (docs/instruments.md).
    #[serde(default)]
    pub open_hours: Option<OpenHoursConfig>,
    #[serde(default)]
    pub instruments: Vec<InstrumentConfig>,
    /// The organisation units instruments belong to (docs/configuration.md).
    #[serde(default)]
    pub units: Vec<crate::units::UnitConfig>,
    /// How bookings files are read (`labhours-collector bookings import`).
    #[serde(default)]
    pub bookings: BookingsConfig,
    /// Signed agents and the migration period (docs/design/trust.md).
    #[serde(default)]
    pub trust: TrustConfig,
    #[serde(default)]
    pub log: LogConfig,
}

/// `[trust]`: what ingest accepts without a signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Accept unsigned envelopes from agents without an enrolled key
    /// (default true during the migration period; their hours are marked
    /// unsigned). An agent with an enrolled key must sign either way.
    #[serde(default = "defaults::allow_unsigned")]
    pub allow_unsigned: bool,
    /// The collector's own Ed25519 key, which signs checkpoints
    /// (docs/evidence.md); absent: `<data_dir>/collector.key`, created on
    /// first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Agents' keys enrolled by config (as `agents enrol` does), at every
    /// start. Removing one here does not unenrol it: revoke it with
    /// `agents revoke`.
    #[serde(default)]
    pub keys: Vec<TrustKey>,
}

/// `[[trust.keys]]`: one agent's public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustKey {
    pub agent_id: String,
    /// `ed25519:<64 hex digits>`, as `labhours-agent keygen` prints it.
    pub public_key: String,
}

impl TrustConfig {
    /// The configured keys, parsed; every problem named by its entry.
    pub fn parsed_keys(
        &self,
    ) -> Result<Vec<(String, labhours_shared::trust::PublicKey)>, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut keys = Vec::new();
        let mut owners = std::collections::HashMap::new();
        for (i, entry) in self.keys.iter().enumerate() {
            let at = |field: &str| format!("trust.keys[{i}].{field}");
            if check_id("agent_id", &entry.agent_id).is_err() {
                errors.push(ConfigError::new(
                    at("agent_id"),
                    format!("{:?} is not an agent id", entry.agent_id),
                    "use the agent's agent_id: 1-64 characters from A-Z a-z 0-9 . _ -",
                ));
            }
            match entry
                .public_key
                .parse::<labhours_shared::trust::PublicKey>()
            {
                Err(e) => errors.push(ConfigError::new(
                    at("public_key"),
                    e.to_string(),
                    "copy the `public key: ed25519:…` line `labhours-agent keygen` printed",
                )),
                Ok(key) => match owners.insert(key, (i, entry.agent_id.clone())) {
                    Some((first, owner)) if owner != entry.agent_id => {
                        errors.push(ConfigError::new(
                            at("public_key"),
                            format!(
                                "is also trust.keys[{first}]'s, for agent {owner}; a key belongs to one agent"
                            ),
                            "give each agent its own key (labhours-agent keygen on each)",
                        ));
                    }
                    _ => keys.push((entry.agent_id.clone(), key)),
                },
            }
        }
        if errors.is_empty() {
            Ok(keys)
        } else {
            Err(errors)
        }
    }
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            allow_unsigned: defaults::allow_unsigned(),
            key_file: None,
            keys: Vec::new(),
        }
    }
}

impl TrustConfig {
    pub fn policy(&self) -> crate::trust::TrustPolicy {
        crate::trust::TrustPolicy {
            allow_unsigned: self.allow_unsigned,
        }
    }
}

/// iCalendar properties that carry the instrument and the group (see docs/bookings.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingsConfig {
    /// Property holding the instrument id; when an event lacks it, LOCATION is used.
    #[serde(default = "defaults::ical_instrument_property")]
    pub ical_instrument_property: String,
    /// Property holding the group; when an event lacks it, the ORGANIZER's
    /// e-mail domain is used, else the group is empty.
    #[serde(default = "defaults::ical_group_property")]
    pub ical_group_property: String,
    /// Recurring events without COUNT or UNTIL are expanded this many days
    /// ahead of each import (1 to 3660).
    #[serde(default = "defaults::ical_horizon_days")]
    pub ical_horizon_days: u32,
}

impl Default for BookingsConfig {
    fn default() -> Self {
        Self {
            ical_instrument_property: defaults::ical_instrument_property(),
            ical_group_property: defaults::ical_group_property(),
            ical_horizon_days: defaults::ical_horizon_days(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Shown on the dashboard and in reports.
    #[serde(default = "defaults::site_name")]
    pub name: String,
    /// IANA zone: local booking times and report periods are read in it.
    /// Absent: UTC, with a warning ([`CollectorConfig::warnings`]); read it
    /// through [`SiteConfig::time_zone`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

impl SiteConfig {
    /// The site's zone, UTC when none is set.
    pub fn time_zone(&self) -> &str {
        self.time_zone.as_deref().unwrap_or("UTC")
    }
}

/// The broker: embedded (default) or an external one the collector joins as a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    #[serde(default = "defaults::topic_prefix")]
    pub topic_prefix: String,
    /// Address of the embedded broker (used when `external` is absent).
    #[serde(default = "defaults::embedded_listen")]
    pub embedded_listen: SocketAddr,
    /// The embedded broker refuses a CONNECT without an agent credential
    /// (`agents credential`). Off by default for the migration period: an
    /// existing fleet keeps connecting until the admin turns it on.
    #[serde(default)]
    pub require_credentials: bool,
    /// The embedded broker speaks TLS only, with this certificate.
    #[serde(default)]
    pub embedded_tls: Option<ServerTlsConfig>,
    #[serde(default)]
    pub external: Option<ExternalBroker>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalBroker {
    pub host: String,
    #[serde(default = "defaults::mqtt_port")]
    pub port: u16,
    #[serde(default = "defaults::client_id")]
    pub client_id: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// MQTT 5 shared-subscription group, so several collectors share the load.
    #[serde(default)]
    pub shared_group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where the API listens (port 0: any free port).
    #[serde(default = "defaults::http_listen")]
    pub listen: SocketAddr,
    /// Who may call the API. With none, only a loopback `listen` is allowed
    /// and every local caller is an admin (see docs/api.md).
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// What a token's holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// Reads hours, outcomes, sessions, timelines and corrections.
    Evaluator,
    /// Reads everything and writes corrections and bookings.
    Admin,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Evaluator => "evaluator",
            Self::Admin => "admin",
        }
    }
}

/// An API token, stored only as the SHA-256 of its text
/// (`labhours-collector token new` makes one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it; recorded as `created_by` of their corrections.
    pub name: String,
    pub role: TokenRole,
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
    /// Only the instruments of this unit and the units below it, everywhere
    /// (API, exports, dashboard); absent: every instrument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// `[upstream]`: where this collector forwards its verified results
/// (docs/design/federation.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL of the hub's API, e.g. `https://hub.example.edu:8443`.
    pub url: String,
    /// This site's id at the hub (the hub takes it from the credential and
    /// refuses a batch that names another).
    pub site_id: String,
    /// File holding this site's credential (the hub keeps its SHA-256).
    pub token_file: PathBuf,
    /// Changed rows per batch (1 to 100000).
    #[serde(default = "defaults::upstream_batch_rows")]
    pub batch_rows: usize,
    /// Longest wait between retries while the hub is away (1 to 3600 s);
    /// waits double from 1 s up to it.
    #[serde(default = "defaults::upstream_retry_max_s")]
    pub retry_max_s: u64,
}

impl UpstreamConfig {
    fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            errors.push(ConfigError::new(
                "upstream.url",
                format!("{:?} is not an http(s) URL", self.url),
                "use the hub's API base URL, e.g. \"https://hub.example.edu:8443\"",
            ));
        }
        if check_id("site_id", &self.site_id).is_err() {
            errors.push(ConfigError::new(
                "upstream.site_id",
                format!("{:?} is not a plain name", self.site_id),
                "use 1-64 characters from A-Z a-z 0-9 . _ -, the id the hub lists in [[hub.sites]]",
            ));
        }
        if !(1..=100_000).contains(&self.batch_rows) {
            errors.push(ConfigError::new(
                "upstream.batch_rows",
                format!("{} is not from 1 to 100000", self.batch_rows),
                "use the default 5000",
            ));
        }
        if !(1..=3600).contains(&self.retry_max_s) {
            errors.push(ConfigError::new(
                "upstream.retry_max_s",
                format!("{} is not from 1 to 3600 seconds", self.retry_max_s),
                "use the default 60",
            ));
        }
        errors
    }
}

/// `[hub]`: the sites whose forwarded results this collector takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    #[serde(default)]
    pub sites: Vec<HubSiteConfig>,
}

/// One site of a hub: its id (the prefix of its instruments here), its
/// name and the SHA-256 of its credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSiteConfig {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Lower-case hex SHA-256 of the site's credential
    /// (`labhours-collector token new` makes one).
    pub token_sha256: String,
    /// The site collector's signed-note verifier key, as
    /// `labhours-collector checkpoint key` prints it at the site; with it
    /// the hub verifies the site's checkpoints.
    #[serde(default)]
    pub checkpoint_key: Option<String>,
}

impl HubConfig {
    fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, site) in self.sites.iter().enumerate() {
            let at = format!("hub.sites[{i}]");
            if check_id("id", &site.id).is_err() || site.id.contains('/') {
                errors.push(ConfigError::new(
                    format!("{at}.id"),
                    format!("{:?} is not a plain name", site.id),
                    "use 1-64 characters from A-Z a-z 0-9 . _ - (it prefixes the site's instruments: \"site-a/nmr-600\")",
                ));
            }
            if !seen.insert(site.id.as_str()) {
                errors.push(ConfigError::new(
                    format!("{at}.id"),
                    format!("{:?} is listed twice", site.id),
                    "give every site its own id",
                ));
            }
            if labhours_shared::trust::from_hex::<32>(&site.token_sha256).is_none() {
                errors.push(ConfigError::new(
                    format!("{at}.token_sha256"),
                    "is not 64 hex digits",
                    "paste the sha256 that `labhours-collector token new` printed for this site",
                ));
            }
            if let Some(Err(e)) = site
                .checkpoint_key
                .as_deref()
                .map(crate::evidence::note::parse_verifier_key)
            {
                errors.push(ConfigError::new(
                    format!("{at}.checkpoint_key"),
                    e,
                    "paste the second line `labhours-collector checkpoint key` prints at that site (name+hash+key)",
                ));
            }
        }
        errors
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// The organisation (`api = "v2"`; ignored by VictoriaMetrics).
    #[serde(default)]
    pub org: String,
    /// The bucket (`v2`), or the database (`v1`).
    pub bucket: String,
    /// File holding the API token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Which write API: `v2` (`/api/v2/write`, InfluxDB 2 and 3,
    /// VictoriaMetrics) or `v1` (`/write`, InfluxDB 1.x).
    #[serde(default)]
    pub api: InfluxApi,
}

impl InfluxConfig {
    fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            errors.push(ConfigError::new(
                "influxdb.url",
                format!("{:?} is not an http(s) URL", self.url),
                "use the base URL of the server, e.g. \"http://127.0.0.1:8086\"",
            ));
        }
        if self.bucket.trim().is_empty() {
            errors.push(ConfigError::new(
                "influxdb.bucket",
                "is empty",
                "name the bucket (api = \"v2\") or the database (api = \"v1\") to write to",
            ));
        }
        if self.api == InfluxApi::V2 && self.org.trim().is_empty() {
            errors.push(ConfigError::new(
                "influxdb.org",
                "is empty, and InfluxDB 2 needs the organisation",
                "set org = \"your-org\" (VictoriaMetrics ignores it: any name will do), or api = \"v1\"",
            ));
        }
        errors
    }
}

/// The InfluxDB write API the sink uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApi {
    #[default]
    V2,
    V1,
}

/// The §2–§5 parameters of reconciliation.md, with its defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationRules {
    #[serde(default = "defaults::in_use_states")]
    pub in_use_states: Vec<State>,
    #[serde(default = "defaults::merge_gap_s")]
    pub merge_gap_s: u64,
    #[serde(default = "defaults::min_session_s")]
    pub min_session_s: u64,
    #[serde(default = "defaults::grace_s")]
    pub early_grace_s: u64,
    #[serde(default = "defaults::grace_s")]
    pub late_grace_s: u64,
    #[serde(default = "defaults::no_show_below_s")]
    pub no_show_below_s: u64,
    #[serde(default = "defaults::grace_s")]
    pub late_start_after_s: u64,
    #[serde(default = "defaults::grace_s")]
    pub early_finish_before_s: u64,
    /// An agent silent for this long (no event of any kind) makes the state
    /// `unknown` from its last sign of life until its next transition.
    #[serde(default = "defaults::silence_after_s")]
    pub silence_after_s: u64,
}

/// Per-instrument overrides of the site's [`ReconciliationRules`]
/// (`[instruments.rules]`): every field absent keeps the site's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_use_states: Option<Vec<State>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_gap_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_session_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_grace_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_grace_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_show_below_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_start_after_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_finish_before_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_after_s: Option<u64>,
}

impl RulesOverride {
    /// The site's rules with every override given here applied.
    pub fn apply(&self, site: &ReconciliationRules) -> ReconciliationRules {
        // Destructured so that a new rule cannot be forgotten here.
        let Self {
            in_use_states,
            merge_gap_s,
            min_session_s,
            early_grace_s,
            late_grace_s,
            no_show_below_s,
            late_start_after_s,
            early_finish_before_s,
            silence_after_s,
        } = self;
        ReconciliationRules {
            in_use_states: in_use_states
                .clone()
                .unwrap_or_else(|| site.in_use_states.clone()),
            merge_gap_s: merge_gap_s.unwrap_or(site.merge_gap_s),
            min_session_s: min_session_s.unwrap_or(site.min_session_s),
            early_grace_s: early_grace_s.unwrap_or(site.early_grace_s),
            late_grace_s: late_grace_s.unwrap_or(site.late_grace_s),
            no_show_below_s: no_show_below_s.unwrap_or(site.no_show_below_s),
            late_start_after_s: late_start_after_s.unwrap_or(site.late_start_after_s),
            early_finish_before_s: early_finish_before_s.unwrap_or(site.early_finish_before_s),
            silence_after_s: silence_after_s.unwrap_or(site.silence_after_s),
        }
    }
}

impl RulesOverride {
    /// Whether this override sets `field` (a [`ReconciliationRules`] key).
    fn sets(&self, field: &str) -> bool {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get(field).map(|_| ()))
            .is_some()
    }
}

impl ReconciliationRules {
    /// Checks the rules (field names relative to the rules table).
    fn validate(&self) -> impl Iterator<Item = ConfigError> {
        let silence = (self.silence_after_s == 0).then(|| {
            ConfigError::new(
                "silence_after_s",
                "0 s would make every instrument `unknown` between two events",
                "use the default 180, or longer than the agents' heartbeat interval",
            )
        });
        validate_in_use_states(&self.in_use_states).chain(silence)
    }
}

/// The §1 thresholds of an instrument's state rules. The agent applies them
/// (its `[state]` table); the collector records them so that the instruments
/// API shows the policy in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Below this the instrument is `off` (W).
    pub on_above_w: f64,
    /// At or above this the instrument enters `running` (W).
    pub running_above_w: f64,
    /// While `running`, power at or above this stays `running` (W); default
    /// 90 % of `running_above_w`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_exit_below_w: Option<f64>,
    /// Default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_dwell_s: Option<u64>,
    /// Default 300 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_stale_after_s: Option<u64>,
}

impl Thresholds {
    /// The agent's form of these thresholds, every other setting at its default.
    pub fn to_state_rules(&self) -> StateRules {
        let mut rules = StateRules::with_thresholds(self.on_above_w, self.running_above_w);
        rules.running_exit_below_w = self.running_exit_below_w;
        if let Some(dwell) = self.min_dwell_s {
            rules.min_dwell_s = dwell;
        }
        if let Some(stale) = self.status_stale_after_s {
            rules.status_stale_after_s = stale;
        }
        rules
    }

    /// The agent's own checks, so that the collector accepts exactly what an
    /// agent would (field names relative to the thresholds table).
    fn validate(&self) -> Vec<ConfigError> {
        // The poll interval only matters for max_sample_gap_s, not set here.
        self.to_state_rules().validate(1)
    }
}

/// Published open hours (开放机时): a weekly schedule in 30-minute steps plus
/// dated extra-open and closed periods, all in the instrument's local time.
/// `closed` beats `extra_open`, which adds to `weekly` (docs/instruments.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenHoursConfig {
    /// Ranges per weekday, `"08:30-12:00"`; a day absent or empty is closed.
    #[serde(default)]
    pub weekly: WeeklyConfig,
    /// Dated periods open in addition to the weekly schedule.
    #[serde(default)]
    pub extra_open: Vec<DatedPeriod>,
    /// Dated periods closed whatever the weekly schedule or `extra_open` say.
    #[serde(default)]
    pub closed: Vec<DatedPeriod>,
}

/// The weekly schedule: `"HH:MM-HH:MM"` ranges per day, 30-minute steps,
/// `"24:00"` allowed as an end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeeklyConfig {
    #[serde(default)]
    pub mon: Vec<String>,
    #[serde(default)]
    pub tue: Vec<String>,
    #[serde(default)]
    pub wed: Vec<String>,
    #[serde(default)]
    pub thu: Vec<String>,
    #[serde(default)]
    pub fri: Vec<String>,
    #[serde(default)]
    pub sat: Vec<String>,
    #[serde(default)]
    pub sun: Vec<String>,
}

impl WeeklyConfig {
    /// `(key, ranges)` from Monday to Sunday.
    pub fn days(&self) -> [(&'static str, &[String]); 7] {
        [
            ("mon", &self.mon),
            ("tue", &self.tue),
            ("wed", &self.wed),
            ("thu", &self.thu),
            ("fri", &self.fri),
            ("sat", &self.sat),
            ("sun", &self.sun),
        ]
    }
}

/// A dated period `[from, to)` in local time: `"YYYY-MM-DD"` (the start of
/// that day, so a date as `to` is exclusive) or `"YYYY-MM-DDTHH:MM"` on a
/// 30-minute step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatedPeriod {
    pub from: String,
    pub to: String,
    /// Free text shown with the period, e.g. "National Day".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Where usage comes from for an instrument.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The state timeline (power and status line).
    #[default]
    State,
    /// Completed result files, each a run of `file_run_s` ending at its mtime.
    Files,
}

/// One instrument of the registry (docs/instruments.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentConfig {
    pub id: String,
    pub name: String,
    /// The id of its `[[units]]` table; without `[[units]]`, a `/` path
    /// such as "Chemistry/NMR Centre". Absent: the site's.
    #[serde(default)]
    pub unit: Option<String>,
    /// Overrides the site zone for this instrument.
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub usage_source: UsageSource,
    /// Length of one run for `usage_source = "files"`.
    #[serde(default)]
    pub file_run_s: Option<u64>,
    /// Overrides of the site's `[reconciliation]` values (`[instruments.rules]`).
    #[serde(default)]
    pub rules: RulesOverride,
    /// §1 thresholds the agent applies, recorded for the instruments API.
    #[serde(default)]
    pub thresholds: Option<Thresholds>,
    /// Replaces the site's `[open_hours]` entirely when present.
    #[serde(default)]
    pub open_hours: Option<OpenHoursConfig>,
}

mod defaults {
    use super::*;

    pub fn allow_unsigned() -> bool {
        true
    }

    pub fn data_dir() -> PathBuf {
        PathBuf::from("labhours-collector-data")
    }
    pub fn site_name() -> String {
        "labhours".into()
    }

    pub fn ical_instrument_property() -> String {
        "X-LABHOURS-INSTRUMENT".into()
    }

    pub fn ical_group_property() -> String {
        "X-LABHOURS-GROUP".into()
    }

    /// About twelve months.
    pub fn ical_horizon_days() -> u32 {
        365
    }

    pub fn topic_prefix() -> String {
        DEFAULT_TOPIC_PREFIX.into()
    }
    pub fn embedded_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1883))
    }
    pub fn mqtt_port() -> u16 {
        1883
    }
    pub fn client_id() -> String {
        "labhours-collector".into()
    }
    pub fn http_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }
    pub fn in_use_states() -> Vec<State> {
        vec![State::Running]
    }
    pub fn merge_gap_s() -> u64 {
        300
    }
    pub fn min_session_s() -> u64 {
        120
    }
    pub fn grace_s() -> u64 {
        900
    }
    pub fn no_show_below_s() -> u64 {
        300
    }
    pub fn upstream_batch_rows() -> usize {
        5000
    }

    pub fn upstream_retry_max_s() -> u64 {
        60
    }

    pub fn silence_after_s() -> u64 {
        180
    }
}

impl Default for SiteConfig {
    fn default() -> Self {
        Self {
            name: defaults::site_name(),
            time_zone: None,
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            topic_prefix: defaults::topic_prefix(),
            embedded_listen: defaults::embedded_listen(),
            require_credentials: false,
            embedded_tls: None,
            external: None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: defaults::http_listen(),
            tokens: Vec::new(),
        }
    }
}

impl Default for ReconciliationRules {
    fn default() -> Self {
        Self {
            in_use_states: defaults::in_use_states(),
            merge_gap_s: defaults::merge_gap_s(),
            min_session_s: defaults::min_session_s(),
            early_grace_s: defaults::grace_s(),
            late_grace_s: defaults::grace_s(),
            no_show_below_s: defaults::no_show_below_s(),
            late_start_after_s: defaults::grace_s(),
            early_finish_before_s: defaults::grace_s(),
            silence_after_s: defaults::silence_after_s(),
        }
    }
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            site: SiteConfig::default(),
            data_dir: defaults::data_dir(),
            mqtt: MqttConfig::default(),
            http: HttpConfig::default(),
            influxdb: None,
            upstream: None,
            hub: None,
            reconciliation: ReconciliationRules::default(),
            open_hours: None,
            instruments: Vec::new(),
            units: Vec::new(),
            bookings: BookingsConfig::default(),
            trust: TrustConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl CollectorConfig {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        load_file(path, Self::parse)
    }

    /// What `run` calls before it starts, and `check-config` too, so that it
    /// refuses exactly what a start would: the file parsed and validated, and
    /// every file it names (broker password, TLS certificates and key,
    /// InfluxDB token) read. All problems come back together.
    pub fn load_to_start(path: &Path) -> Result<Self, ConfigFileError> {
        load_file(path, |text| {
            let config = Self::parse(text)?;
            ConfigErrors(config.unreadable_files()).into_result()?;
            Ok(config)
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        parse_toml(text, &EXAMPLE, |c: &Self| ConfigErrors::of(c.validate()))
    }

    /// The files this config names that a start would refuse.
    pub fn unreadable_files(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if let Some(ext) = &self.mqtt.external {
            if let Some(path) = &ext.password_file {
                errors.extend(read_secret("mqtt.external.password_file", path).err());
            }
            if let Some(tls) = &ext.tls {
                errors.extend(
                    tls.client_config("mqtt.external.tls")
                        .err()
                        .into_iter()
                        .flatten(),
                );
            }
        }
        if let Some(tls) = &self.mqtt.embedded_tls {
            errors.extend(
                tls.server_config("mqtt.embedded_tls")
                    .err()
                    .into_iter()
                    .flatten(),
            );
        }
        if let Some(path) = self.influxdb.as_ref().and_then(|i| i.token_file.as_ref()) {
            errors.extend(read_secret("influxdb.token_file", path).err());
        }
        if let Some(up) = &self.upstream {
            errors.extend(read_secret("upstream.token_file", &up.token_file).err());
        }
        errors.extend(check_dir("data_dir", &self.data_dir));
        errors
    }

    /// What is allowed but probably not meant; `check-config` and `run`
    /// print these.
    pub fn warnings(&self) -> Vec<ConfigError> {
        let mut warnings = Vec::new();
        if self.site.time_zone.is_none() {
            warnings.push(ConfigError::new(
                "site.time_zone",
                "is not set, so days, months and local booking times are read in UTC",
                "name the site's zone, e.g. [site] time_zone = \"Asia/Shanghai\" (time_zone = \"UTC\" if the site really is on UTC)",
            ));
        }
        warnings
    }

    /// Checks everything serde cannot; reports every problem found.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        check_zone("site.time_zone", self.site.time_zone(), &mut errors);
        let prefix = &self.mqtt.topic_prefix;
        if prefix.is_empty() || prefix.contains(['+', '#']) {
            errors.push(ConfigError::new(
                "mqtt.topic_prefix",
                format!("{prefix:?} is empty or holds a wildcard"),
                format!("use the default {DEFAULT_TOPIC_PREFIX:?}, the same as the agents'"),
            ));
        }
        if let Some(ext) = &self.mqtt.external {
            // Settings of the embedded broker would silently do nothing.
            for (key, set) in [
                ("mqtt.require_credentials", self.mqtt.require_credentials),
                ("mqtt.embedded_tls", self.mqtt.embedded_tls.is_some()),
            ] {
                if set {
                    errors.push(ConfigError::new(
                        key,
                        "applies to the embedded broker, but [mqtt.external] is set",
                        "remove it and configure credentials and TLS in the external broker (see docs/configuration.md)",
                    ));
                }
            }
            if ext.host.trim().is_empty() {
                errors.push(ConfigError::new(
                    "mqtt.external.host",
                    "is empty",
                    "name the broker host",
                ));
            }
            if ext.password_file.is_some() && ext.username.is_none() {
                errors.push(ConfigError::new(
                    "mqtt.external.username",
                    "a password_file is set without a username",
                    "set mqtt.external.username too",
                ));
            }
            if let Some(group) = &ext.shared_group
                && check_id("shared_group", group).is_err()
            {
                errors.push(ConfigError::new(
                    "mqtt.external.shared_group",
                    format!("{group:?} is not a plain name"),
                    "use 1-64 characters from A-Z a-z 0-9 . _ -",
                ));
            }
            if let Some(tls) = &ext.tls {
                errors.extend(
                    tls.validate()
                        .into_iter()
                        .map(|e| e.under("mqtt.external.tls")),
                );
            }
        }
        if let Some(influx) = &self.influxdb {
            errors.extend(influx.validate());
        }
        errors.extend(self.trust.parsed_keys().err().into_iter().flatten());
        if let Some(up) = &self.upstream {
            errors.extend(up.validate());
        }
        if let Some(hub) = &self.hub {
            errors.extend(hub.validate());
        }
        errors.extend(validate_http(&self.http));
        let horizon = self.bookings.ical_horizon_days;
        if !(1..=3660).contains(&horizon) {
            errors.push(ConfigError::new(
                "bookings.ical_horizon_days",
                format!("{horizon} is not from 1 to 3660 days"),
                "use the default 365 (twelve months), or how far ahead bookings are made",
            ));
        }
        errors.extend(
            self.reconciliation
                .validate()
                .map(|e| e.under("reconciliation")),
        );
        if let Some(open) = &self.open_hours {
            errors.extend(open_hours_errors(open).map(|e| e.under("open_hours")));
        }
        for (i, inst) in self.instruments.iter().enumerate() {
            let at = format!("instruments[{i}]");
            if check_id("id", &inst.id).is_err() {
                errors.push(ConfigError::new(
                    format!("{at}.id"),
                    format!("{:?} is not a valid id", inst.id),
                    "use the agents' instrument_id: 1-64 characters from A-Z a-z 0-9 . _ -",
                ));
            }
            if self.instruments[..i]
                .iter()
                .any(|other| other.id == inst.id)
            {
                errors.push(ConfigError::new(
                    format!("{at}.id"),
                    format!("{:?} is listed twice", inst.id),
                    "list each instrument once",
                ));
            }
            if let Some(zone) = &inst.time_zone {
                check_zone(&format!("{at}.time_zone"), zone, &mut errors);
            }
            if inst.usage_source == UsageSource::Files && inst.file_run_s.unwrap_or(0) == 0 {
                errors.push(ConfigError::new(
                    format!("{at}.file_run_s"),
                    "usage_source = \"files\" needs the length of one run",
                    "set file_run_s to the typical run length in seconds, e.g. 1800",
                ));
            }
            // The merged rules are checked, but only the fields this
            // instrument sets are reported here: a bad site value is reported
            // once, under `reconciliation`.
            let rules_at = format!("{at}.rules");
            errors.extend(
                inst.rules
                    .apply(&self.reconciliation)
                    .validate()
                    .filter(|e| inst.rules.sets(&e.field))
                    .map(|e| e.under(&rules_at)),
            );
            if let Some(thresholds) = &inst.thresholds {
                let thresholds_at = format!("{at}.thresholds");
                errors.extend(
                    thresholds
                        .validate()
                        .into_iter()
                        .map(|e| e.under(&thresholds_at)),
                );
            }
            if let Some(open) = &inst.open_hours {
                let open_at = format!("{at}.open_hours");
                errors.extend(open_hours_errors(open).map(|e| e.under(&open_at)));
            }
        }
        errors.extend(self.log.validate());
        errors.extend(crate::units::validate(self));
        ConfigErrors(errors).into_result()
    }
}

/// The problems of one open-hours table (field names relative to it).
fn open_hours_errors(open: &OpenHoursConfig) -> impl Iterator<Item = ConfigError> {
    crate::registry::OpenHours::compile(open)
        .err()
        .into_iter()
        .flatten()
}

/// How to make a token and its hash, for the fix texts.
const TOKEN_FIX: &str = "run `labhours-collector token new --name NAME --role evaluator` and paste the [[http.tokens]] entry it prints (`labhours-collector token hash` hashes an existing token read from stdin)";

fn validate_http(http: &HttpConfig) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    if http.tokens.is_empty() && !http.listen.ip().is_loopback() {
        errors.push(ConfigError::new(
            "http.tokens",
            format!(
                "http.listen {} is reachable from other hosts but no token is configured, so the API would be open to anyone",
                http.listen
            ),
            format!("add [[http.tokens]] entries ({TOKEN_FIX}), or listen on 127.0.0.1"),
        ));
    }
    for (i, token) in http.tokens.iter().enumerate() {
        let at = format!("http.tokens[{i}]");
        if check_id("name", &token.name).is_err() {
            errors.push(ConfigError::new(
                format!("{at}.name"),
                format!("{:?} is not a plain name", token.name),
                "use 1-64 characters from A-Z a-z 0-9 . _ -, e.g. \"evaluation-office\"",
            ));
        }
        if http.tokens[..i].iter().any(|t| t.name == token.name) {
            errors.push(ConfigError::new(
                format!("{at}.name"),
                format!("{:?} is listed twice", token.name),
                "give each token its own name",
            ));
        }
        let hex_ok = token.sha256.len() == 64
            && token
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            errors.push(ConfigError::new(
                format!("{at}.sha256"),
                "is not 64 lower-case hex digits (a SHA-256; never the token itself)",
                TOKEN_FIX,
            ));
        } else if http.tokens[..i].iter().any(|t| t.sha256 == token.sha256) {
            errors.push(ConfigError::new(
                format!("{at}.sha256"),
                "the same token is listed under another name",
                format!("give each holder a token of their own: {TOKEN_FIX}"),
            ));
        }
    }
    errors
}

pub(crate) fn check_zone(field: &str, zone: &str, errors: &mut Vec<ConfigError>) {
    if jiff::tz::TimeZone::get(zone).is_err() {
        errors.push(ConfigError::new(
            field,
            format!("{zone:?} is not a known IANA time zone"),
            "use a name such as \"Asia/Shanghai\", \"Europe/Berlin\" or \"UTC\"",
        ));
    }
}

fn validate_in_use_states(states: &[State]) -> impl Iterator<Item = ConfigError> {
    let bad = states.is_empty() || states.contains(&State::Unknown);
    bad.then(|| {
        ConfigError::new(
            "in_use_states",
            format!("{states:?} is empty or counts `unknown` as use"),
            "list the states that mean the instrument is working, usually [\"running\"]",
        )
    })
    .into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_a_working_config() {
        let c = CollectorConfig::parse("").expect("valid");
        assert_eq!(c, CollectorConfig::default());
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.reconciliation.no_show_below_s, 300);
    }

    #[test]
    fn a_misspelt_zone_is_named_with_a_fix() {
        let err = CollectorConfig::parse("[site]\ntime_zone = \"Asia/Shangai\"").unwrap_err();
        assert_eq!(err.0[0].field, "site.time_zone");
        assert!(err.0[0].fix.contains("Asia/Shanghai"));
    }

    #[test]
    fn a_files_instrument_needs_its_run_length() {
        let text = "[[instruments]]\nid = \"ms-1\"\nname = \"QTOF\"\nusage_source = \"files\"\n";
        let err = CollectorConfig::parse(text).unwrap_err();
        assert_eq!(err.0[0].field, "instruments[0].file_run_s");
    }

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn tokens_are_checked_for_hex_hashes_unique_names_and_a_public_listen_needs_one() {
        let good = format!(
            "[http]\nlisten = \"0.0.0.0:8080\"\n[[http.tokens]]\nname = \"evaluation-office\"\nrole = \"evaluator\"\nsha256 = \"{HASH}\"\n"
        );
        let c = CollectorConfig::parse(&good).expect("valid");
        assert_eq!(c.http.tokens[0].role, TokenRole::Evaluator);

        let text = format!(
            "[[http.tokens]]\nname = \"a\"\nrole = \"admin\"\nsha256 = \"{}\"\n[[http.tokens]]\nname = \"a\"\nrole = \"evaluator\"\nsha256 = \"{HASH}\"\n",
            HASH.to_uppercase()
        );
        let err = CollectorConfig::parse(&text).unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["http.tokens[0].sha256", "http.tokens[1].name"]);
        assert!(
            err.0[0].fix.contains("labhours-collector token new"),
            "{}",
            err.0[0].fix
        );

        let err = CollectorConfig::parse("[http]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].field, "http.tokens");
        assert!(CollectorConfig::parse("[http]\nlisten = \"[::1]:0\"\n").is_ok());
    }

    #[test]
    fn an_ical_horizon_outside_1_to_3660_days_names_the_key() {
        for days in [0, 3661] {
            let text = format!("[bookings]\nical_horizon_days = {days}\n");
            let err = CollectorConfig::parse(&text).unwrap_err();
            assert_eq!(err.0[0].field, "bookings.ical_horizon_days");
        }
        let ok = CollectorConfig::parse("[bookings]\nical_horizon_days = 90\n").unwrap();
        assert_eq!(ok.bookings.ical_horizon_days, 90);
        assert_eq!(BookingsConfig::default().ical_horizon_days, 365);
    }

    #[test]
    fn unknown_is_never_usage() {
        let text = "[reconciliation]\nin_use_states = [\"running\", \"unknown\"]\n";
        let err = CollectorConfig::parse(text).unwrap_err();
        assert_eq!(err.0[0].field, "reconciliation.in_use_states");
    }

    #[test]
    fn every_type_range_and_key_problem_comes_back_with_its_key_path() {
        let text = "data_dir = 5\n[site]\ntime_zon = \"Asia/Shanghai\"\n[http]\nlisten = \"localhost\"\n[reconciliation]\nmerge_gap_s = -1\nsilence_after_s = 0\n[[instruments]]\nid = \"nmr 600\"\nname = \"NMR\"\nusage_source = \"filez\"\n[instruments.thresholds]\non_above_w = \"50\"\nrunning_above_w = 800.0\n";
        let err = CollectorConfig::parse(text).unwrap_err();
        let mut got = err.keys_and_lines();
        got.sort();
        assert_eq!(
            got,
            [
                ("data_dir", Some(1)),
                ("http.listen", Some(5)),
                ("instruments[0].id", None),
                ("instruments[0].thresholds.on_above_w", Some(14)),
                ("instruments[0].usage_source", Some(12)),
                ("reconciliation.merge_gap_s", Some(7)),
                ("reconciliation.silence_after_s", None),
                ("site.time_zon", Some(3)),
            ],
            "{err}"
        );
        let zone = err.0.iter().find(|e| e.field == "site.time_zon").unwrap();
        assert!(zone.fix.starts_with("did you mean `time_zone`?"), "{zone}");
        let listen = err.0.iter().find(|e| e.field == "http.listen").unwrap();
        assert!(listen.fix.contains("listen = \""), "{listen}");
    }

    #[test]
    fn a_site_without_a_zone_gets_a_warning_and_an_explicit_utc_none() {
        let warnings = CollectorConfig::parse("").unwrap().warnings();
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].field, "site.time_zone");
        assert!(
            warnings[0].fix.contains("time_zone = \"Asia/Shanghai\""),
            "{}",
            warnings[0]
        );
        let utc = CollectorConfig::parse("[site]\ntime_zone = \"UTC\"\n").unwrap();
        assert!(utc.warnings().is_empty());
        assert_eq!(
            utc.site.time_zone(),
            CollectorConfig::default().site.time_zone()
        );
    }

    #[test]
    fn every_file_the_config_names_is_checked_before_a_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collector.toml");
        let missing = dir.path().join("missing");
        std::fs::write(
            &path,
            format!(
                "[mqtt.external]\nhost = \"broker\"\nusername = \"c\"\npassword_file = {pw:?}\n[mqtt.external.tls]\nca_file = {ca:?}\n[influxdb]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = {token:?}\n",
                pw = missing.join("pw"),
                ca = missing.join("ca.pem"),
                token = missing.join("token"),
            ),
        )
        .unwrap();
        let err = CollectorConfig::load_to_start(&path).unwrap_err();
        let fields = err.fields();
        assert_eq!(
            fields,
            [
                "mqtt.external.password_file",
                "mqtt.external.tls.ca_file",
                "influxdb.token_file"
            ],
            "{err}"
        );
        CollectorConfig::load(&path).expect("valid without the files");
    }

    #[test]
    fn the_embedded_brokers_credentials_and_tls_are_checked_and_named() {
        let both = "[mqtt]\nrequire_credentials = true\n[mqtt.embedded_tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
        let config = CollectorConfig::parse(both).expect("valid");
        assert!(config.mqtt.require_credentials);
        assert!(!CollectorConfig::default().mqtt.require_credentials);
        // With an external broker they would do nothing: refused, by name.
        let err =
            CollectorConfig::parse(&format!("{both}[mqtt.external]\nhost = \"b\"\n")).unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["mqtt.require_credentials", "mqtt.embedded_tls"],
            "{err}"
        );
        // Missing certificate files are named before a start.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collector.toml");
        std::fs::write(&path, both.replace("c.pem", "/nonexistent/c.pem")).unwrap();
        let err = CollectorConfig::load_to_start(&path).unwrap_err();
        let fields = err.fields();
        assert!(fields.contains(&"mqtt.embedded_tls.cert_file"), "{err}");
        assert!(fields.contains(&"mqtt.embedded_tls.key_file"), "{err}");
    }

    #[test]
    fn trust_keys_in_the_config_are_parsed_and_each_problem_names_its_entry() {
        let key = |byte: u8| format!("ed25519:{}", "0".repeat(62) + &format!("{byte:02x}"));
        let ok = format!(
            "[[trust.keys]]\nagent_id = \"nmr-pc\"\npublic_key = \"{}\"\n",
            key(1)
        );
        let config = CollectorConfig::parse(&ok).expect("valid");
        let keys = config.trust.parsed_keys().expect("parsed");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].0, "nmr-pc");
        let bad = format!(
            "{ok}[[trust.keys]]\nagent_id = \"bad/id\"\npublic_key = \"ed25519:12\"\n\
             [[trust.keys]]\nagent_id = \"xrd-pc\"\npublic_key = \"{}\"\n",
            key(1)
        );
        let err = CollectorConfig::parse(&bad).unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "trust.keys[1].agent_id",
                "trust.keys[1].public_key",
                "trust.keys[2].public_key"
            ],
            "{err}"
        );
        assert!(err.0[2].problem.contains("for agent nmr-pc"), "{err}");
    }
}
