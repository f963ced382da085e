//! The HTTP API (`/api/v1`): verified usage hours, booking outcomes,
//! sessions, timelines and corrections for evaluators; corrections and
//! bookings writes for admins. `docs/api.md` documents every route;
//! `GET /api/v1/openapi.json` is generated from this module.
//!
//! Everything it reads or writes goes through [`Reports`] (blocking, so
//! called in `spawn_blocking`); [`app`] builds the router, tested with
//! `oneshot` against a fake.

pub(crate) mod auth;
mod error;
pub mod federation;
mod handlers;
pub mod params;
pub mod table;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use jiff::Timestamp;
use utoipa::OpenApi;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

pub use auth::{Caller, LOCAL_CALLER, hash_token, new_token};
pub use error::{ApiError, ErrorBody};
pub use handlers::hours_query;
pub use table::{Format, HoursResponse, hours_body, to_csv};

use crate::config::TokenConfig;
use crate::units::{Organisation, ScopedReports};
use crate::verified::Reports;

/// The largest `POST /api/v1/bookings` body (16 MiB).
pub const MAX_BOOKINGS_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The API's clock: "now" for the instrument list and the time stamps of
/// corrections and imports.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    reports: Arc<dyn Reports>,
    auth: Arc<auth::Auth>,
    clock: Clock,
    /// The InfluxDB sink's figures, when it runs (for `healthz`).
    sink: Option<Arc<crate::influx::SinkStats>>,
    /// The key checkpoints are signed with (served beside them).
    collector_key: Option<crate::evidence::checkpoint::CollectorKey>,
    /// Resolves a token's unit to the instruments it may see.
    organisation: Arc<Organisation>,
    /// The sites a hub takes forwarded results from (empty: not a hub).
    hub: Arc<federation::HubSites>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// The API over `reports`, open to holders of `tokens` (the config's
    /// `http.tokens`), on the system clock. With no tokens every caller is
    /// an admin: the config allows that only on a loopback listener.
    /// Fails when a token's `sha256` is not 64 hex digits.
    pub fn new(reports: Arc<dyn Reports>, tokens: &[TokenConfig]) -> anyhow::Result<Self> {
        Ok(Self {
            reports,
            auth: Arc::new(auth::Auth::new(tokens)?),
            clock: Arc::new(Timestamp::now),
            sink: None,
            collector_key: None,
            organisation: Arc::default(),
            hub: Arc::new(federation::HubSites::default()),
        })
    }

    /// The same state serving the collector's checkpoint key.
    pub fn with_collector_key(mut self, key: crate::evidence::checkpoint::CollectorKey) -> Self {
        self.collector_key = Some(key);
        self
    }

    /// The same state resolving token units in `organisation` (without
    /// it, a scoped token sees no instrument).
    pub fn with_organisation(mut self, organisation: Arc<Organisation>) -> Self {
        self.organisation = organisation;
        self
    }

    /// The same state taking forwarded results from `sites` (a hub).
    pub fn with_hub(mut self, sites: federation::HubSites) -> Self {
        self.hub = Arc::new(sites);
        self
    }

    /// The same state reporting the InfluxDB sink's figures in `healthz`.
    pub fn with_sink(mut self, sink: Option<Arc<crate::influx::SinkStats>>) -> Self {
        self.sink = sink;
        self
    }

    /// The same state with another clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub(crate) fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// What a caller scoped to `unit` (`None`: unscoped) reads and writes
    /// through: the only way handlers and pages reach the store, so no
    /// route can skip the scope (docs/design/organisations.md).
    pub(crate) fn reports_for(&self, unit: Option<&str>) -> Arc<dyn Reports> {
        ScopedReports::wrap(
            self.reports.clone(),
            self.organisation.clone(),
            self.organisation.scope(unit),
        )
    }

    /// The unit a request is held to: `asked` (`?unit=`) when it is the
    /// caller's unit or below it, else the caller's. A unit that does not
    /// exist, or lies outside the caller's, is 404 alike (not told apart).
    pub(crate) fn unit_for(
        &self,
        caller: &Caller,
        asked: Option<&str>,
    ) -> Result<Option<String>, ApiError> {
        let Some(asked) = asked else {
            return Ok(caller.unit.clone());
        };
        let scope = self.organisation.scope(caller.unit.as_deref());
        match self.organisation.canonical(asked) {
            Some(id) if scope.allows_unit(&id) => Ok(Some(id)),
            _ => Err(crate::verified::QueryError::UnknownUnit(asked.to_owned()).into()),
        }
    }

    /// The unit tree (the dashboard's unit picker).
    pub(crate) fn organisation(&self) -> &Arc<Organisation> {
        &self.organisation
    }

    /// The sites a hub takes results from (the dashboard lists them).
    pub(crate) fn hub(&self) -> &federation::HubSites {
        &self.hub
    }

    /// The configured tokens (the dashboard exchanges them for sessions).
    pub(crate) fn auth(&self) -> &auth::Auth {
        &self.auth
    }
}

/// The router of the whole API.
pub fn app(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/healthz", get(handlers::healthz))
        .route("/api/v1/openapi.json", get(handlers::openapi_json))
        .route("/api/v1/hours", get(handlers::hours))
        .route("/api/v1/bookings/outcomes", get(handlers::outcomes))
        .route(
            "/api/v1/bookings",
            post(handlers::import_bookings).layer(DefaultBodyLimit::max(MAX_BOOKINGS_BODY_BYTES)),
        )
        .route("/api/v1/instruments", get(handlers::instruments))
        .route("/api/v1/checkpoints", get(handlers::checkpoints))
        .route("/api/v1/quarantine", get(handlers::quarantine))
        .route("/api/v1/quarantine/{id}", get(handlers::quarantine_entry))
        .route("/api/v1/instruments/{id}/timeline", get(handlers::timeline))
        .route("/api/v1/sessions", get(handlers::sessions))
        .route(
            "/api/v1/corrections",
            get(handlers::corrections).post(handlers::add_correction),
        )
        .route(
            "/api/v1/federation/batch",
            post(federation::batch).layer(DefaultBodyLimit::max(federation::MAX_BATCH_BYTES)),
        )
        .route("/api/v1/sites", get(federation::sites))
        .fallback(handlers::not_found)
        .with_state(state)
}

/// The OpenAPI document, generated from the handlers and row types.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "labhours collector API",
        description = "Verified usage hours of shared instruments. Every route but healthz and openapi.json needs `Authorization: Bearer <token>`; writes and the quarantine need an admin token. See docs/api.md."
    ),
    paths(
        handlers::hours,
        handlers::outcomes,
        handlers::instruments,
        handlers::timeline,
        handlers::sessions,
        handlers::corrections,
        handlers::add_correction,
        handlers::import_bookings,
        handlers::quarantine,
        handlers::quarantine_entry,
        handlers::checkpoints,
        handlers::openapi_json,
        handlers::healthz,
        federation::batch,
        federation::sites,
    ),
    // Referenced only from query parameters, which utoipa does not collect.
    components(schemas(handlers::FormatName, handlers::JsonOnly)),
    modifiers(&BearerScheme, &EdgeSchemas),
    security(("bearer" = [])),
    tags(
        (name = "hours", description = "Verified usage hours (reconciliation.md §6)"),
        (name = "bookings", description = "Booking outcomes and booking imports"),
        (name = "instruments", description = "Instruments, their state and timelines"),
        (name = "corrections", description = "Admin corrections of unbooked usage (§7)"),
        (name = "evidence", description = "The collector's signed checkpoints (docs/evidence.md)"),
        (name = "federation", description = "A hub: results forwarded by sites, and their freshness (docs/design/federation.md)"),
        (name = "meta", description = "Health, the quarantine of refused payloads, and this document"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme.
#[derive(Debug)]
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        // A site's own credential ([[hub.sites]] token_sha256), not an API token.
        components.add_security_scheme(
            "site",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Gives every `from` and `to` query parameter the schema of what it
/// accepts ([`handlers::edge_schema`]), not just `string`.
#[derive(Debug)]
struct EdgeSchemas;

impl utoipa::Modify for EdgeSchemas {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                for parameter in operation.parameters.iter_mut().flatten() {
                    if matches!(parameter.parameter_in, ParameterIn::Query)
                        && matches!(parameter.name.as_str(), "from" | "to")
                    {
                        parameter.schema = Some(handlers::edge_schema().into());
                    }
                }
            }
        }
    }
}
