//! §7 corrections: an admin assigns unbooked usage in `[start, end)` of an
//! instrument to a user, group, usage type or existing booking, or attaches
//! a note. Evidence is never edited; every correction is kept with who,
//! when and why, and reports show corrected figures beside uncorrected ones.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::bookings::UsageType;

/// What an admin submits (`POST /api/v1/corrections`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCorrection {
    pub instrument_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub end: Timestamp,
    /// Who used the instrument, when known.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// The usage type the unbooked usage counts as.
    #[serde(default)]
    pub usage_type: Option<UsageType>,
    /// An existing booking the usage belongs to (its usage type applies
    /// unless `usage_type` is given).
    #[serde(default)]
    pub booking_id: Option<String>,
    /// Why: required, shown in the audit trail.
    pub reason: String,
}

/// A recorded correction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Correction {
    pub id: i64,
    #[serde(flatten)]
    pub correction: NewCorrection,
    /// The token name of the admin who made it.
    pub created_by: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}
