//! The admin dashboard under `/` (docs/dashboard.md): server-rendered pages
//! over the same [`Reports`] the API uses.
//!
//! - [`session`]: login (an API token exchanged for a session cookie),
//!   logout, who is looking ([`session::Viewer`]) and the CSRF check;
//! - [`i18n`]: labels in English and Simplified Chinese;
//! - [`assets`]: embedded CSS and the vendored htmx, with cache headers;
//! - one file per page: [`fleet`], [`instrument`], [`exceptions`],
//!   [`report`], [`agents`], [`bookings`];
//! - pure parts, unit-tested: [`fleet::filter_page`], [`timeline_svg`],
//!   [`exceptions::build`], [`report::Table`].

pub mod agents;
pub mod assets;
pub mod bookings;
pub mod exceptions;
pub mod fleet;
pub mod i18n;
pub mod instrument;
pub mod page;
pub mod report;
pub mod scenario;
pub mod session;
pub mod timeline_svg;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use tower_http::compression::CompressionLayer;

use crate::api::ApiState;
use crate::verified::{QueryError, Reports};

/// The largest bookings file accepted from the browser (16 MiB, as the API).
pub const MAX_UPLOAD_BYTES: usize = crate::api::MAX_BOOKINGS_BODY_BYTES;

/// What the pages share.
#[derive(Clone, Debug)]
pub struct DashState {
    api: ApiState,
    site_zone: TimeZone,
}

impl DashState {
    /// The dashboard over the API's state (its reports, tokens and clock);
    /// dates are shown in `site_zone`.
    pub fn new(api: ApiState, site_zone: TimeZone) -> Self {
        Self { api, site_zone }
    }

    /// What `viewer` reads and writes through: held to their unit.
    fn reports_for(&self, viewer: &session::Viewer) -> Arc<dyn Reports> {
        self.api.reports_for(viewer.unit.as_deref())
    }

    fn now(&self) -> Timestamp {
        self.api.now()
    }

    /// (id, name) of a hub's sites; empty on a site.
    fn hub_sites(&self) -> Vec<(String, String)> {
        self.api.hub().listed()
    }

    /// Today's date in the site's zone.
    fn today(&self) -> jiff::civil::Date {
        self.now().to_zoned(self.site_zone.clone()).date()
    }
}

/// A failure shown as a page.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "dashboard page failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the collector's log has the detail",
        )
    }
}

impl From<QueryError> for PageError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadParameter { parameter, message } => {
                Self::new(StatusCode::BAD_REQUEST, format!("{parameter}: {message}"))
            }
            QueryError::UnknownInstrument(id) => {
                Self::new(StatusCode::NOT_FOUND, format!("no instrument {id:?}"))
            }
            QueryError::UnknownUnit(id) => {
                Self::new(StatusCode::NOT_FOUND, format!("no unit {id:?}"))
            }
            QueryError::Db(e) => Self::internal(e),
        }
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        Self::internal(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        // The request's language is not known here: the heading says what
        // went wrong in both languages; the detail names the parameter.
        let key = match self.status {
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "error.bad_request",
            StatusCode::UNAUTHORIZED => "error.unauthorized",
            StatusCode::FORBIDDEN => "error.forbidden",
            StatusCode::NOT_FOUND => "error.not_found",
            _ => "error.internal",
        };
        let body = format!(
            "<!doctype html><meta charset=utf-8><title>{code}</title>\
             <h1>{code} · {zh} / {en}</h1><p>{message}</p><p><a href=\"/\">labhours</a></p>",
            code = self.status.as_u16(),
            zh = page::escape(i18n::Lang::Zh.t(key)),
            en = page::escape(i18n::Lang::En.t(key)),
            message = page::escape(&self.message),
        );
        (self.status, Html(body)).into_response()
    }
}

/// Runs a blocking `Reports` call off the async threads, seen from `viewer`.
async fn blocking<T: Send + 'static>(
    state: &DashState,
    viewer: &session::Viewer,
    call: impl FnOnce(&dyn Reports) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, PageError> {
    let reports = state.reports_for(viewer);
    tokio::task::spawn_blocking(move || call(&*reports))
        .await
        .map_err(PageError::internal)?
        .map_err(PageError::from)
}

/// Every dashboard path with its handlers, in one list: [`routes`] mounts
/// them and the scope matrix (`units/scope_matrix.rs`) calls each, so a
/// new page cannot skip that test.
pub(crate) fn pages() -> Vec<(&'static str, MethodRouter<DashState>)> {
    vec![
        ("/", get(fleet::page)),
        ("/fleet/table", get(fleet::table_fragment)),
        ("/instruments/{id}", get(instrument::page)),
        ("/exceptions", get(exceptions::page)),
        ("/exceptions/assign", post(exceptions::assign)),
        ("/exceptions/review", post(exceptions::review)),
        ("/exceptions/move", post(exceptions::move_time)),
        ("/report", get(report::page)),
        ("/report.csv", get(report::csv)),
        ("/report.xlsx", get(report::xlsx)),
        ("/agents", get(agents::page)),
        (
            "/bookings",
            get(bookings::page)
                .post(bookings::upload)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        ),
        ("/login", get(session::login_page).post(session::login)),
        ("/logout", post(session::logout)),
        ("/lang/{code}", get(i18n::switch)),
        ("/assets/{version}/{name}", get(assets::serve)),
    ]
}

/// The dashboard's routes (everything but `/api/v1`), gzip-compressed when
/// the browser accepts it, every unsafe method behind the CSRF check.
pub fn routes(state: DashState) -> Router {
    pages()
        .into_iter()
        .fold(Router::new(), |router, (path, handlers)| {
            router.route(path, handlers)
        })
        .layer(axum::middleware::from_fn(session::csrf))
        .layer(CompressionLayer::new())
        .with_state(state)
}
