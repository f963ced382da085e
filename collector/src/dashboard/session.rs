//! Browser login, sessions and the CSRF check.
//!
//! - Login: an API token (as `[[http.tokens]]` holds them) is exchanged for
//!   a session: a random secret in an `HttpOnly; SameSite=Strict` cookie
//!   (`Secure` when the request came over HTTPS, as a TLS-terminating proxy
//!   says with `X-Forwarded-Proto: https`), its SHA-256 stored in the
//!   collector's database with the token's name and role. Logout deletes
//!   it; a session also ends when it expires or when its token is removed
//!   from the config or changes role.
//! - With no tokens configured (loopback only) every visitor is the local
//!   admin, as for the API.
//! - CSRF: every unsafe method must come from this origin: a
//!   `Sec-Fetch-Site: same-origin` header, or (browsers without it) an
//!   `Origin` whose host is the request's `Host`. Anything else is a 403.

use axum::Form;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::page::Page;
use super::{DashState, PageError};
use crate::api::{hash_token, new_token};
use crate::config::TokenRole;
use crate::verified::DashSession;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "lh_session";

/// How long a session lasts (12 hours).
pub const SESSION_TTL_MS: i64 = 12 * 3_600_000;

/// Who is looking at a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The token's name (`created_by` of the corrections they make), or
    /// `local` without tokens.
    pub name: String,
    pub role: TokenRole,
    /// The unit their token is scoped to: they see only its instruments.
    pub unit: Option<String>,
    /// No tokens are configured: nobody logs in or out.
    pub open: bool,
}

impl Viewer {
    pub fn is_admin(&self) -> bool {
        self.role == TokenRole::Admin
    }

    /// 403 unless an admin.
    pub fn require_admin(&self) -> Result<(), PageError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(PageError::new(
                StatusCode::FORBIDDEN,
                "evaluators read; this action needs an admin",
            ))
        }
    }
}

/// Not logged in: to the login page (with where to come back to).
#[derive(Debug)]
pub struct LoginFirst {
    next: String,
    htmx: bool,
}

impl IntoResponse for LoginFirst {
    fn into_response(self) -> Response {
        let target = format!("/login?next={}", url_encode(&self.next));
        if self.htmx {
            // htmx follows this header with a full page load.
            let mut response = StatusCode::UNAUTHORIZED.into_response();
            if let Ok(v) = HeaderValue::from_str(&target) {
                response.headers_mut().insert("HX-Redirect", v);
            }
            return response;
        }
        Redirect::to(&target).into_response()
    }
}

/// The value of cookie `name`, if sent.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim().to_owned())
        })
}

/// A local path to go back to: `/` unless `next` is a path on this site
/// (no scheme, no `//host`, no backslash, no control character: browsers
/// drop tabs and newlines from a URL, so `/\t/host` would become `//host`).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.chars().any(|c| c == '\\' || c.is_control()) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl FromRequestParts<DashState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &DashState) -> Result<Self, Response> {
        let auth = state.api.auth();
        if auth.is_open() {
            return Ok(Viewer {
                name: crate::api::LOCAL_CALLER.into(),
                role: TokenRole::Admin,
                unit: None,
                open: true,
            });
        }
        let next = parts
            .uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let htmx = parts.headers.contains_key("HX-Request");
        let login_first = || {
            LoginFirst {
                next: next.clone(),
                htmx,
            }
            .into_response()
        };
        let Some(secret) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(login_first());
        };
        let id = hash_token(&secret);
        let now = state.now();
        let found = sessions(state, move |r| r.find_session(&id, now))
            .await
            .map_err(IntoResponse::into_response)?;
        match found {
            Some(s) => match auth.unit_of_held(&s.token_sha256, s.role) {
                Some(unit) => Ok(Viewer {
                    name: s.token_name,
                    role: s.role,
                    unit,
                    open: false,
                }),
                None => Err(login_first()),
            },
            None => Err(login_first()),
        }
    }
}

/// The CSRF check of every unsafe method (a middleware on the dashboard).
pub async fn csrf(request: Request, next: Next) -> Response {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if safe || same_origin(request.headers()) {
        return next.run(request).await;
    }
    super::PageError::new(
        StatusCode::FORBIDDEN,
        "Origin / Sec-Fetch-Site: 表单不是从本站页面提交的，请刷新页面后重试。 \
         This form was not sent from this site; reload the page and try again.",
    )
    .into_response()
}

/// Whether an unsafe request provably comes from a page of this site.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text("sec-fetch-site") {
        return site == "same-origin";
    }
    let (Some(origin), Some(host)) = (text("origin"), text("host")) else {
        return false;
    };
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    origin_host.is_some_and(|h| h.eq_ignore_ascii_case(host))
}

fn secure(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn session_cookie(value: &str, max_age_s: i64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[derive(Debug, Deserialize)]
pub struct NextParam {
    next: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "login.html")]
struct LoginTemplate {
    page: Page,
    next: String,
    failed: bool,
}

fn login_form(
    headers: &HeaderMap,
    next: String,
    failed: bool,
    status: StatusCode,
) -> Result<Response, PageError> {
    let viewer = Viewer {
        name: String::new(),
        role: TokenRole::Evaluator,
        unit: None,
        open: false,
    };
    let page = Page::new(headers, "login", "/login", viewer, "login.title");
    let html = askama::Template::render(&LoginTemplate { page, next, failed })?;
    Ok((status, Html(html)).into_response())
}

/// `GET /login`.
pub async fn login_page(
    State(state): State<DashState>,
    headers: HeaderMap,
    Query(q): Query<NextParam>,
) -> Result<Response, PageError> {
    if state.api.auth().is_open() {
        return Ok(Redirect::to("/").into_response());
    }
    login_form(
        &headers,
        safe_next(q.next.as_deref()),
        false,
        StatusCode::OK,
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

/// `POST /login`: a known token opens a session; an unknown one shows the
/// form again (401).
pub async fn login(
    State(state): State<DashState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let next = safe_next(form.next.as_deref());
    let auth = state.api.auth();
    if auth.is_open() {
        return Ok(Redirect::to(&next).into_response());
    }
    let Some(caller) = auth.identify(form.token.trim()) else {
        return login_form(&headers, next, true, StatusCode::UNAUTHORIZED);
    };
    let secret = new_token().map_err(PageError::internal)?;
    let id = hash_token(&secret);
    let now = state.now();
    let session = DashSession {
        token_name: caller.name,
        token_sha256: hash_token(form.token.trim()),
        role: caller.role,
        expires_at_ms: now.as_millisecond() + SESSION_TTL_MS,
    };
    sessions(&state, move |r| r.create_session(&id, &session, now)).await?;
    let mut response = Redirect::to(&next).into_response();
    let cookie = session_cookie(&secret, SESSION_TTL_MS / 1000, secure(&headers));
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(PageError::internal)?,
    );
    Ok(response)
}

/// `POST /logout`: the session is deleted on the server and the cookie cleared.
pub async fn logout(
    State(state): State<DashState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if let Some(secret) = cookie(&headers, SESSION_COOKIE) {
        let id = hash_token(&secret);
        sessions(&state, move |r| r.end_session(&id)).await?;
    }
    let target = if state.api.auth().is_open() {
        "/"
    } else {
        "/login"
    };
    let mut response = Redirect::to(target).into_response();
    let cookie = session_cookie("", 0, secure(&headers));
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(PageError::internal)?,
    );
    Ok(response)
}

/// Runs a call on the session table (no viewer yet: login and the session
/// check); it reads no instrument, so it is not scoped.
async fn sessions<T: Send + 'static>(
    state: &DashState,
    call: impl FnOnce(&dyn crate::verified::Reports) -> Result<T, crate::verified::QueryError>
    + Send
    + 'static,
) -> Result<T, PageError> {
    let reports = state.api.reports_for(None);
    tokio::task::spawn_blocking(move || call(&*reports))
        .await
        .map_err(PageError::internal)?
        .map_err(PageError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_same_origin_fetch_passes_and_a_cross_site_one_does_not() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
    }

    #[test]
    fn without_sec_fetch_site_the_origin_must_name_the_host() {
        assert!(same_origin(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080")])));
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/report?year=2025")), "/report?year=2025");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\t/evil.example")), "/");
        assert_eq!(safe_next(Some("/\n/evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_only_over_https() {
        let plain = session_cookie("abc", 60, false);
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        assert!(session_cookie("abc", 60, true).ends_with("; Secure"));
    }
}
