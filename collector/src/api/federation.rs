//! A hub's routes (docs/design/federation.md): `POST /api/v1/federation/batch`
//! takes a site's forwarded results, authenticated by the site's own
//! credential (the site id comes from it, never from the body);
//! `GET /api/v1/sites` tells how fresh every site's figures are.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};

use super::handlers::Rows;
use super::{ApiError, ApiState, Caller, ErrorBody};
use crate::config::HubSiteConfig;
use crate::federation::history::SiteKey;
use crate::federation::{Applied, Batch, SiteRow};

/// The largest batch body (64 MiB; a site sends `batch_rows` rows, 5000 by default).
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// The sites a hub takes batches from.
#[derive(Clone, Default)]
pub struct HubSites {
    sites: Vec<HubSite>,
}

#[derive(Clone)]
struct HubSite {
    id: String,
    name: String,
    token_sha256: [u8; 32],
    checkpoint_key: Option<SiteKey>,
}

impl std::fmt::Debug for HubSites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.sites.iter().map(|s| &s.id))
            .finish()
    }
}

impl HubSites {
    /// From `[[hub.sites]]` (validated: every hash is 64 hex digits).
    pub fn new(sites: &[HubSiteConfig]) -> anyhow::Result<Self> {
        let sites = sites
            .iter()
            .map(|s| {
                let hash =
                    labhours_shared::trust::from_hex::<32>(&s.token_sha256).ok_or_else(|| {
                        anyhow::anyhow!(
                            "hub.sites: the token_sha256 of {:?} is not 64 hex digits",
                            s.id
                        )
                    })?;
                let checkpoint_key = s
                    .checkpoint_key
                    .as_deref()
                    .map(crate::evidence::note::parse_verifier_key)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("hub.sites: checkpoint_key of {:?}: {e}", s.id))?;
                Ok(HubSite {
                    id: s.id.clone(),
                    name: s.name.clone(),
                    token_sha256: hash,
                    checkpoint_key,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { sites })
    }

    pub fn is_hub(&self) -> bool {
        !self.sites.is_empty()
    }

    /// (id, name) of every site, in config order.
    pub fn listed(&self) -> Vec<(String, String)> {
        self.sites
            .iter()
            .map(|s| (s.id.clone(), s.name.clone()))
            .collect()
    }

    /// The site holding `token` (its id and checkpoint key), comparing
    /// with every site's hash in full and in constant time.
    fn identify(&self, token: &str) -> Option<(String, Option<SiteKey>)> {
        use subtle::ConstantTimeEq as _;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for site in &self.sites {
            if bool::from(presented.ct_eq(&site.token_sha256)) {
                found = Some((site.id.clone(), site.checkpoint_key.clone()));
            }
        }
        found
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A site's forwarded results (a hub only). Resending a batch, or an
/// older one, changes nothing: each row carries the site's change version
/// and the newest wins.
#[utoipa::path(
    post,
    path = "/api/v1/federation/batch",
    tag = "federation",
    request_body = Batch,
    security(("site" = [])),
    responses(
        (status = 200, description = "Applied (the site may forget these changes)", body = Applied),
        (status = 400, description = "The body is not a batch, or a row cannot be stored (the message names it)", body = ErrorBody),
        (status = 401, description = "No or an unknown site credential", body = ErrorBody),
        (status = 403, description = "The batch names another site than its credential's", body = ErrorBody),
        (status = 404, description = "This collector is not a hub ([hub] sites is empty)", body = ErrorBody),
        (status = 500, description = "Internal error (details in the log)", body = ErrorBody),
    )
)]
pub async fn batch(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<Batch>, JsonRejection>,
) -> Result<Json<Applied>, ApiError> {
    // No credential is a 401 anywhere (as the API document says); a
    // credential sent to a collector that is no hub, a 404.
    let token =
        bearer(&headers).ok_or_else(|| ApiError::unauthorized("missing site credential"))?;
    if !state.hub.is_hub() {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "this collector is not a hub: list the sites under [[hub.sites]] in its config",
        ));
    }
    let (site, key) = state
        .hub
        .identify(token)
        .ok_or_else(|| ApiError::unauthorized("unknown site credential"))?;
    let batch = body.map(|Json(b)| b).map_err(|e| {
        ApiError::bad_parameter(
            "body",
            format!("the body is not a batch: {}", e.body_text()),
        )
    })?;
    if batch.site != site {
        return Err(ApiError::forbidden(format!(
            "the batch says it comes from site {:?} but the credential is site {site:?}'s: check [upstream] site_id and token_file at the site",
            batch.site
        )));
    }
    let now = state.now();
    let reports = state.reports_for(None);
    let applied = tokio::task::spawn_blocking(move || {
        reports.federation_apply(&site, key.as_ref(), &batch, now)
    })
    .await
    .map_err(|e| ApiError::internal(format!("a Reports call panicked: {e}")))??;
    Ok(Json(applied))
}

/// Per site of a hub: when it last forwarded and up to when its figures
/// are final ("site X: data up to …"). Empty on a collector that is not a hub.
#[utoipa::path(
    get,
    path = "/api/v1/sites",
    tag = "federation",
    responses(
        (status = 200, description = "One row per configured site", body = Rows<SiteRow>),
        (status = 401, description = "No or an unknown bearer token", body = ErrorBody),
        (status = 500, description = "Internal error (details in the log)", body = ErrorBody),
    )
)]
pub async fn sites(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<Rows<SiteRow>>, ApiError> {
    let listed = state.hub.listed();
    // A caller scoped to one site sees that site's line only.
    let reports = state.reports_for(caller.unit.as_deref());
    let rows = tokio::task::spawn_blocking(move || reports.sites(&listed))
        .await
        .map_err(|e| ApiError::internal(format!("a Reports call panicked: {e}")))??;
    Ok(Json(Rows { rows }))
}
