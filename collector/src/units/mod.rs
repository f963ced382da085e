//! Organisation units (docs/design/organisations.md): a tree such as
//! university → college → lab, the instruments in each, and the [`Scope`]
//! a token scoped to a unit sees.
//!
//! - [`UnitConfig`]: one `[[units]]` table; [`validate`] reports every
//!   problem of the tree at once (duplicate id, unknown parent, cycle) and
//!   every `unit` key naming no unit;
//! - [`Organisation`]: the tree and which unit each configured instrument is
//!   in, answering "is this instrument in that unit's subtree";
//! - [`Scope`]: all instruments, or those of one subtree; every API route
//!   and dashboard page reads through [`ScopedReports`], which applies it.
//!
//! Without `[[units]]` an instrument's `unit` is a `/`-separated path
//! ("Chemistry/NMR Centre", as before units existed): each prefix is then a
//! unit whose id is the path itself.

mod scoped_reports;

#[cfg(test)]
mod scope_matrix;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use labhours_shared::config::ConfigError;
use serde::{Deserialize, Serialize};

pub use scoped_reports::ScopedReports;

use crate::config::CollectorConfig;

/// One `[[units]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitConfig {
    /// What `[[instruments]] unit`, `[[http.tokens]] unit` and `?unit=` name.
    pub id: String,
    /// Shown in English pages and exports.
    pub name: String,
    /// Shown in Chinese pages; `name` when absent.
    #[serde(default)]
    pub name_zh: Option<String>,
    /// The unit this one belongs to; absent: a top unit (under the site).
    #[serde(default)]
    pub parent: Option<String>,
}

/// A unit of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unit {
    pub id: String,
    pub name: String,
    pub name_zh: Option<String>,
    pub parent: Option<String>,
}

/// The unit tree and the unit of each configured instrument.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Organisation {
    /// By id.
    units: BTreeMap<String, Unit>,
    /// Configured instrument id → the id of its unit (none: the site's).
    members: BTreeMap<String, String>,
    /// Built from `/` paths: no `[[units]]` in the config.
    paths: bool,
    /// A hub's sites (`[[hub.sites]]`), top units whose instruments and
    /// units are those the site forwards: ids `site/…`
    /// (docs/design/federation.md).
    sites: BTreeSet<String>,
}

/// Every problem of `[[units]]` and of the `unit` keys that name units,
/// each with its key and fix.
pub fn validate(config: &CollectorConfig) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let units = &config.units;
    let ids: BTreeSet<&str> = units.iter().map(|u| u.id.as_str()).collect();
    for (i, unit) in units.iter().enumerate() {
        let at = format!("units[{i}]");
        if labhours_shared::wire::check_id("id", &unit.id).is_err() {
            errors.push(ConfigError::new(
                format!("{at}.id"),
                format!("{:?} is not a valid id", unit.id),
                "use 1-64 characters from A-Z a-z 0-9 . _ -, e.g. \"chem\"",
            ));
        }
        if units[..i].iter().any(|u| u.id == unit.id) {
            errors.push(ConfigError::new(
                format!("{at}.id"),
                format!("{:?} is listed twice", unit.id),
                "give each unit its own id",
            ));
        }
        if unit.name.trim().is_empty() {
            errors.push(ConfigError::new(
                format!("{at}.name"),
                "is empty",
                "name the unit as its people know it, e.g. \"College of Chemistry\"",
            ));
        }
        match &unit.parent {
            Some(p) if !ids.contains(p.as_str()) => errors.push(ConfigError::new(
                format!("{at}.parent"),
                format!("{p:?} is not the id of a unit"),
                format!(
                    "use one of {}, or leave parent out for a top unit",
                    list(&ids)
                ),
            )),
            _ => {}
        }
    }
    // A cycle: walking up from a unit comes back to it.
    let parent: BTreeMap<&str, &str> = units
        .iter()
        .filter_map(|u| Some((u.id.as_str(), u.parent.as_deref()?)))
        .collect();
    for (i, unit) in units.iter().enumerate() {
        let mut at = unit.id.as_str();
        let mut seen = BTreeSet::new();
        while let Some(&up) = parent.get(at) {
            if up == unit.id {
                let mut ring: Vec<&str> = seen.into_iter().collect();
                ring.push(&unit.id);
                errors.push(ConfigError::new(
                    format!("units[{i}].parent"),
                    format!(
                        "{:?} is its own ancestor (the cycle goes through {})",
                        unit.id,
                        list(&ring.into_iter().collect())
                    ),
                    "make one unit of the cycle a top unit (no parent) or give it a parent outside the cycle",
                ));
                break;
            }
            if !seen.insert(up) {
                break; // a cycle above this unit, reported for its members
            }
            at = up;
        }
    }
    if !units.is_empty() {
        for (i, inst) in config.instruments.iter().enumerate() {
            if let Some(u) = &inst.unit
                && !ids.contains(u.as_str())
            {
                errors.push(ConfigError::new(
                    format!("instruments[{i}].unit"),
                    format!("{u:?} is not the id of a [[units]] table"),
                    format!(
                        "use one of {}, add a [[units]] table with id = {u:?}, or leave unit out (the site's)",
                        list(&ids)
                    ),
                ));
            }
        }
    }
    let paths: BTreeSet<String> = config
        .instruments
        .iter()
        .filter_map(|i| i.unit.as_deref().map(normalize_path))
        .filter_map(|p| p.split('/').next().map(str::to_owned))
        .collect();
    for (i, site) in config.hub.iter().flat_map(|h| &h.sites).enumerate() {
        if ids.contains(site.id.as_str()) || (units.is_empty() && paths.contains(&site.id)) {
            errors.push(ConfigError::new(
                format!("hub.sites[{i}].id"),
                format!("{:?} is also a unit of this collector", site.id),
                "give the site an id no unit has (a site is a top unit of the hub)",
            ));
        }
    }
    let known = Organisation::from_config(config);
    for (i, token) in config.http.tokens.iter().enumerate() {
        if let Some(u) = &token.unit
            && known.canonical(u).is_none()
        {
            errors.push(ConfigError::new(
                format!("http.tokens[{i}].unit"),
                format!("{u:?} is not a unit"),
                format!(
                    "use one of {}, or leave unit out for a token that sees every instrument",
                    list(&known.units.keys().map(String::as_str).collect())
                ),
            ));
        }
    }
    errors
}

fn list(ids: &BTreeSet<&str>) -> String {
    if ids.is_empty() {
        return "(none configured)".into();
    }
    ids.iter()
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `/` path with its segments trimmed and empty ones dropped.
fn normalize_path(path: &str) -> String {
    path.split('/')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

impl Organisation {
    /// The tree of a config (already validated: unknown parents and
    /// cycles are not looked for again; a broken link ends a walk up).
    pub fn from_config(config: &CollectorConfig) -> Self {
        let mut org = Self::default();
        if config.units.is_empty() {
            org.paths = true;
            for inst in &config.instruments {
                let Some(path) = inst.unit.as_deref().map(normalize_path) else {
                    continue;
                };
                if path.is_empty() {
                    continue;
                }
                let mut prefix: Option<String> = None;
                for segment in path.split('/') {
                    let id = match &prefix {
                        Some(p) => format!("{p}/{segment}"),
                        None => segment.to_owned(),
                    };
                    org.units.entry(id.clone()).or_insert_with(|| Unit {
                        id: id.clone(),
                        name: segment.to_owned(),
                        name_zh: None,
                        parent: prefix.clone(),
                    });
                    prefix = Some(id);
                }
                org.members.insert(inst.id.clone(), path);
            }
        } else {
            for u in &config.units {
                org.units.entry(u.id.clone()).or_insert_with(|| Unit {
                    id: u.id.clone(),
                    name: u.name.clone(),
                    name_zh: u.name_zh.clone(),
                    parent: u.parent.clone(),
                });
            }
            for inst in &config.instruments {
                if let Some(u) = &inst.unit {
                    org.members.insert(inst.id.clone(), u.clone());
                }
            }
        }
        for site in config.hub.iter().flat_map(|h| &h.sites) {
            org.units.entry(site.id.clone()).or_insert_with(|| Unit {
                id: site.id.clone(),
                name: if site.name.is_empty() {
                    site.id.clone()
                } else {
                    site.name.clone()
                },
                name_zh: None,
                parent: None,
            });
            org.sites.insert(site.id.clone());
        }
        org
    }

    /// The hub site a forwarded id (`site/…`) belongs to.
    fn site_of<'a>(&self, id: &'a str) -> Option<&'a str> {
        id.split_once('/')
            .map(|(site, _)| site)
            .filter(|site| self.sites.contains(*site))
    }

    /// A configured instrument's unit as a path from its top unit
    /// (`chem/nmr-lab`): what a site forwards, so the hub keeps the tree.
    pub fn path_of(&self, instrument: &str) -> Option<String> {
        let own = self.unit_of(instrument)?;
        if self.paths {
            return Some(own.to_owned());
        }
        let mut up = self.ancestors(own);
        up.reverse();
        Some(up.join("/"))
    }

    /// The id of the unit `asked` names (with `/` paths: spaces around
    /// segments and empty segments ignored), if there is one.
    pub fn canonical(&self, asked: &str) -> Option<String> {
        let id = if self.paths || self.site_of(asked).is_some() {
            normalize_path(asked)
        } else {
            asked.to_owned()
        };
        // Below a hub site, the units are the site's own (a path under it).
        (self.units.contains_key(&id) || self.site_of(&id).is_some()).then_some(id)
    }

    pub fn unit(&self, id: &str) -> Option<&Unit> {
        self.units.get(id)
    }

    /// Every unit, by id.
    pub fn units(&self) -> impl Iterator<Item = &Unit> {
        self.units.values()
    }

    /// The unit of a configured instrument (its id).
    pub fn unit_of(&self, instrument: &str) -> Option<&str> {
        self.members.get(instrument).map(String::as_str)
    }

    /// `unit` and the units above it, nearest first (stops at a broken link
    /// or a repeat, so an unvalidated tree cannot loop).
    pub fn ancestors<'a>(&'a self, unit: &'a str) -> Vec<&'a str> {
        let mut out = vec![unit];
        let mut at = unit;
        while let Some(up) = self.units.get(at).and_then(|u| u.parent.as_deref()) {
            if out.contains(&up) {
                break;
            }
            out.push(up);
            at = up;
        }
        out
    }

    /// Whether `instrument` is in unit `unit` or below it.
    pub fn contains(&self, unit: &str, instrument: &str) -> bool {
        self.unit_of(instrument)
            .is_some_and(|own| self.ancestors(own).contains(&unit))
            || self.site_of(instrument) == Some(unit)
    }

    /// What a caller scoped to `unit` (an id) sees; `None`: everything.
    pub fn scope(&self, unit: Option<&str>) -> Scope {
        let Some(unit) = unit else {
            return Scope::All;
        };
        let instruments = self
            .members
            .keys()
            .filter(|i| self.contains(unit, i))
            .cloned()
            .collect();
        let units = self
            .units
            .keys()
            .filter(|u| self.ancestors(u).contains(&unit))
            .cloned()
            .collect();
        Scope::Unit(Arc::new(Within {
            unit: unit.to_owned(),
            instruments,
            units,
            site: self.sites.contains(unit),
        }))
    }

    /// Whether the tree came from `/` paths (no `[[units]]`).
    pub fn from_paths(&self) -> bool {
        self.paths
    }
}

/// What one caller may see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every instrument (an unscoped token, or no tokens at all).
    #[default]
    All,
    /// Only the instruments of one unit's subtree.
    Unit(Arc<Within>),
}

/// A unit's subtree, resolved once per request.
#[derive(Debug, PartialEq, Eq)]
pub struct Within {
    /// The unit's id.
    pub unit: String,
    /// The configured instruments in it or below it.
    pub instruments: BTreeSet<String>,
    /// It and the units below it.
    pub units: BTreeSet<String>,
    /// The unit is a hub's site: everything forwarded under `unit/` is in it.
    pub site: bool,
}

impl Within {
    /// Whether `id` (an instrument or unit) is forwarded by this site.
    fn under_site(&self, id: &str) -> bool {
        self.site
            && id
                .strip_prefix(self.unit.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl Scope {
    /// Whether the caller may see `instrument`.
    pub fn allows(&self, instrument: &str) -> bool {
        match self {
            Self::All => true,
            Self::Unit(w) => w.instruments.contains(instrument) || w.under_site(instrument),
        }
    }

    /// Whether the caller may see unit `unit` (an id).
    pub fn allows_unit(&self, unit: &str) -> bool {
        match self {
            Self::All => true,
            Self::Unit(w) => w.units.contains(unit) || w.under_site(unit),
        }
    }

    /// The unit the caller is held to.
    pub fn unit(&self) -> Option<&str> {
        match self {
            Self::All => None,
            Self::Unit(w) => Some(&w.unit),
        }
    }
}
