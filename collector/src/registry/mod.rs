//! The instrument registry: every configured instrument with the site's
//! defaults applied, and the site defaults for instruments that send events
//! without being configured (`docs/instruments.md`).
//!
//! [`Registry::from_config`] compiles zones and open hours once;
//! [`Registry::instrument`] answers for any id. [`Instrument::open_ms`] gives
//! the published open time of a period (reconciliation.md §6 `open_hours`),
//! [`Instrument::policy_hash`] fingerprints what reconciliation depends on.

mod open_hours;
pub mod thresholds_check;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use jiff::tz::TimeZone;
use labhours_shared::config::{ConfigError, ConfigErrors};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use open_hours::OpenHours;

use crate::config::{
    CollectorConfig, OpenHoursConfig, ReconciliationRules, Thresholds, UsageSource,
};
use crate::reconcile::{Interval, Ms};

/// The site's defaults and the configured instruments.
#[derive(Debug, Clone)]
pub struct Registry {
    site_zone: TimeZone,
    site_time_zone: String,
    site_rules: ReconciliationRules,
    site_open_hours: Option<OpenHours>,
    /// In config order.
    instruments: Vec<Instrument>,
    by_id: HashMap<String, usize>,
    /// The unit tree and which unit each instrument is in.
    organisation: std::sync::Arc<crate::units::Organisation>,
}

/// One instrument with every setting resolved.
#[derive(Debug, Clone)]
pub struct Instrument {
    pub id: String,
    pub name: String,
    /// The id of its unit ([`crate::units`]; without `[[units]]`, the
    /// `/` path "Chemistry/NMR Centre" with spaces around segments trimmed).
    pub unit: Option<String>,
    pub zone: TimeZone,
    /// IANA name of `zone`.
    pub time_zone: String,
    pub usage_source: UsageSource,
    pub file_run_s: Option<u64>,
    /// The site's rules with this instrument's overrides applied.
    pub rules: ReconciliationRules,
    /// §1 thresholds the agent applies, when configured here.
    pub thresholds: Option<Thresholds>,
    /// Its own open hours, else the site's; `None`: unknown.
    pub open_hours: Option<OpenHours>,
    /// `false`: not in the config; site defaults are used.
    pub configured: bool,
    /// Configured, or the config lists no instruments (then every one is
    /// taken as monitored). Bookings of an instrument not monitored get the
    /// outcome `not_monitored` (docs/bookings.md).
    pub monitored: bool,
}

impl Registry {
    /// Builds the registry from a config. The config is checked again
    /// ([`CollectorConfig::validate`]), so every error comes back the same way.
    pub fn from_config(config: &CollectorConfig) -> Result<Self, ConfigErrors> {
        config.validate()?;
        let mut errors = Vec::new();
        let site_zone = zone("site.time_zone", config.site.time_zone(), &mut errors);
        let site_open_hours = compile("open_hours", config.open_hours.as_ref(), &mut errors);
        let organisation = crate::units::Organisation::from_config(config);
        let mut instruments = Vec::with_capacity(config.instruments.len());
        for (i, inst) in config.instruments.iter().enumerate() {
            let at = format!("instruments[{i}]");
            let (zone, time_zone) = match &inst.time_zone {
                Some(name) => (
                    zone(&format!("{at}.time_zone"), name, &mut errors),
                    name.as_str(),
                ),
                None => (site_zone.clone(), config.site.time_zone()),
            };
            let open_hours = match &inst.open_hours {
                Some(own) => compile(&format!("{at}.open_hours"), Some(own), &mut errors),
                None => site_open_hours.clone(),
            };
            instruments.push(Instrument {
                id: inst.id.clone(),
                name: inst.name.clone(),
                unit: organisation.unit_of(&inst.id).map(str::to_owned),
                zone,
                time_zone: time_zone.to_owned(),
                usage_source: inst.usage_source,
                file_run_s: inst.file_run_s,
                rules: inst.rules.apply(&config.reconciliation),
                thresholds: inst.thresholds.clone(),
                open_hours,
                configured: true,
                monitored: true,
            });
        }
        ConfigErrors(errors).into_result()?;
        let by_id = instruments
            .iter()
            .enumerate()
            .map(|(i, inst)| (inst.id.clone(), i))
            .collect();
        Ok(Self {
            site_zone,
            site_time_zone: config.site.time_zone().to_owned(),
            site_rules: config.reconciliation.clone(),
            site_open_hours,
            instruments,
            by_id,
            organisation: std::sync::Arc::new(organisation),
        })
    }

    /// The configured instrument, or one with the site defaults, named by
    /// its id and with `configured = false`.
    pub fn instrument(&self, id: &str) -> Instrument {
        match self.by_id.get(id) {
            Some(&i) => self.instruments[i].clone(),
            None => Instrument {
                id: id.to_owned(),
                name: id.to_owned(),
                unit: None,
                zone: self.site_zone.clone(),
                time_zone: self.site_time_zone.clone(),
                usage_source: UsageSource::default(),
                file_run_s: None,
                rules: self.site_rules.clone(),
                thresholds: None,
                open_hours: self.site_open_hours.clone(),
                configured: false,
                monitored: self.instruments.is_empty(),
            },
        }
    }

    /// The configured instruments, in config order.
    pub fn configured(&self) -> impl Iterator<Item = &Instrument> {
        self.instruments.iter()
    }

    /// The unit tree.
    pub fn organisation(&self) -> &std::sync::Arc<crate::units::Organisation> {
        &self.organisation
    }

    pub fn site_zone(&self) -> &TimeZone {
        &self.site_zone
    }
}

/// What reconciliation depends on, in a fixed field order.
#[derive(Serialize)]
struct Policy<'a> {
    time_zone: &'a str,
    usage_source: UsageSource,
    file_run_s: Option<u64>,
    rules: &'a ReconciliationRules,
    /// Only when set, so that monitored instruments keep their hashes;
    /// adding an instrument to the config changes its hash and outcomes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    not_monitored: bool,
}

impl Instrument {
    /// Published open time within `period`; None when no open hours are configured.
    pub fn open_ms(&self, period: Interval) -> Option<Ms> {
        self.open_hours
            .as_ref()
            .map(|open| open.open_ms(&self.zone, period))
    }

    /// Whether this instrument's unit path is `unit` or below it: how a
    /// hub places a site's forwarded instruments, whose units are paths
    /// under the site's id (`site-a/chem/nmr-lab`).
    pub fn in_unit(&self, unit: &str) -> bool {
        unit_within(self.unit.as_deref().unwrap_or(""), unit)
    }

    /// A stable fingerprint of everything reconciliation depends on: zone
    /// name, usage_source, file_run_s, the resolved rules and whether it is
    /// monitored (not the name, unit, thresholds or open hours). Hex SHA-256 of a canonical JSON text,
    /// so it is the same across runs and builds; stored with results so that
    /// a config change triggers re-reconciliation.
    pub fn policy_hash(&self) -> String {
        let policy = Policy {
            time_zone: &self.time_zone,
            usage_source: self.usage_source,
            file_run_s: self.file_run_s,
            rules: &self.rules,
            not_monitored: !self.monitored,
        };
        // Plain structs, strings and numbers: serialising cannot fail.
        let json = serde_json::to_string(&policy).unwrap_or_default();
        labhours_shared::trust::hex(&Sha256::digest(json.as_bytes()))
    }
}

/// Whether the unit path `own` is `wanted` or below it, by whole `/`
/// segments trimmed of spaces ("Chemistry" holds "Chemistry/NMR", not
/// "Chemistry2"; "" holds everything).
pub fn unit_within(own: &str, wanted: &str) -> bool {
    let mut own = unit_segments(own);
    unit_segments(wanted).all(|w| own.next() == Some(w))
}

fn unit_segments(unit: &str) -> impl Iterator<Item = &str> {
    unit.split('/').map(str::trim).filter(|seg| !seg.is_empty())
}

fn zone(field: &str, name: &str, errors: &mut Vec<ConfigError>) -> TimeZone {
    TimeZone::get(name).unwrap_or_else(|_| {
        crate::config::check_zone(field, name, errors);
        TimeZone::UTC
    })
}

fn compile(
    field: &str,
    config: Option<&OpenHoursConfig>,
    errors: &mut Vec<ConfigError>,
) -> Option<OpenHours> {
    match OpenHours::compile(config?) {
        Ok(open) => Some(open),
        Err(e) => {
            errors.extend(e.into_iter().map(|e| e.under(field)));
            None
        }
    }
}
