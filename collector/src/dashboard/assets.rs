//! The dashboard's static files, compiled into the binary: its style sheet
//! and the vendored htmx (`collector/assets/vendor/`, see its README).
//! They are served under `/assets/{version}/{name}`, where the version is a
//! hash of their content, so browsers may keep them for a year
//! (`immutable`); a new build with other content has another path.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Every embedded file: name, content type, bytes.
pub const FILES: &[(&str, &str, &[u8])] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/style.css"),
    ),
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/htmx/htmx.min.js"),
    ),
];

/// The first 12 hex digits of the SHA-256 of every embedded file.
pub fn asset_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut hash = Sha256::new();
        for (name, _, bytes) in FILES {
            hash.update(name.as_bytes());
            hash.update(bytes);
        }
        labhours_shared::trust::hex(&hash.finalize()[..6])
    })
}

/// `GET /assets/{version}/{name}`: an embedded file; cached for a year when
/// the version is this build's, not cached otherwise.
pub async fn serve(Path((version, name)): Path<(String, String)>) -> Response {
    let Some((_, content_type, bytes)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let cache = if version == asset_version() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, cache),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        *bytes,
    )
        .into_response()
}
