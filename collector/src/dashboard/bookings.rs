//! Bookings from the browser (`/bookings`): an admin uploads a CSV or
//! iCalendar file; "preview" is a dry run listing every bad row with its
//! line number and what would change; "apply" imports it (with the same
//! parser and checks as `labhours-collector bookings import`). The preview
//! keeps the file's text in the form, so applying needs no second upload.

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};

use super::page::Page;
use super::session::Viewer;
use super::{DashState, PageError, blocking};
use crate::bookings::Format;
use crate::bookings::store::{ImportOptions, ImportReport};

/// Files up to this size are carried from the preview to "apply" in the
/// page; larger ones must be chosen again.
pub const CARRY_LIMIT: usize = 2 * 1024 * 1024;

/// What was uploaded.
#[derive(Debug, Default)]
pub struct Upload {
    pub file_name: String,
    pub text: String,
    pub apply: bool,
    pub skip_invalid: bool,
}

/// The format from the file name (as the CLI decides it).
pub fn format_of(file_name: &str) -> Option<Format> {
    Format::from_path(std::path::Path::new(file_name))
}

#[derive(askama::Template)]
#[template(path = "bookings.html")]
struct BookingsTemplate {
    page: Page,
    report: Option<ImportReport>,
    applied: bool,
    error: String,
    file_name: String,
    carried: String,
    skip_invalid: bool,
}

fn render(t: BookingsTemplate, status: StatusCode) -> Result<Response, PageError> {
    Ok((status, Html(askama::Template::render(&t)?)).into_response())
}

fn empty(page: Page) -> BookingsTemplate {
    BookingsTemplate {
        page,
        report: None,
        applied: false,
        error: String::new(),
        file_name: String::new(),
        carried: String::new(),
        skip_invalid: false,
    }
}

/// `GET /bookings`.
pub async fn page(viewer: Viewer, headers: HeaderMap, uri: Uri) -> Result<Response, PageError> {
    let page = Page::new(&headers, "bookings", uri.path(), viewer, "bookings.title");
    render(empty(page), StatusCode::OK)
}

async fn read(mut multipart: Multipart) -> Result<Upload, String> {
    let mut upload = Upload::default();
    let mut carried_name = String::new();
    let mut carried = String::new();
    while let Some(field) = multipart.next_field().await.map_err(|e| e.body_text())? {
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "file" => {
                let file_name = field.file_name().unwrap_or("").to_owned();
                let bytes = field.bytes().await.map_err(|e| e.body_text())?;
                if !bytes.is_empty() {
                    let format = format_of(&file_name).unwrap_or(Format::Csv);
                    upload.text = crate::bookings::decode(&file_name, bytes.to_vec(), format)?;
                    upload.file_name = file_name;
                }
            }
            "carried" => carried = field.text().await.map_err(|e| e.body_text())?,
            "carried_name" => carried_name = field.text().await.map_err(|e| e.body_text())?,
            "action" => upload.apply = field.text().await.map_err(|e| e.body_text())? == "apply",
            "skip_invalid" => upload.skip_invalid = true,
            _ => {}
        }
    }
    if upload.file_name.is_empty() && !carried.is_empty() {
        upload.file_name = carried_name;
        upload.text = carried;
    }
    Ok(upload)
}

/// `POST /bookings` (admins).
pub async fn upload(
    State(state): State<DashState>,
    viewer: Viewer,
    headers: HeaderMap,
    uri: Uri,
    multipart: Multipart,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let page = Page::new(
        &headers,
        "bookings",
        uri.path(),
        viewer.clone(),
        "bookings.title",
    );
    let mut t = empty(page.clone());
    let upload = match read(multipart).await {
        Ok(u) => u,
        Err(e) => {
            t.error = e;
            return render(t, StatusCode::BAD_REQUEST);
        }
    };
    let Some(format) = format_of(&upload.file_name) else {
        t.error = format!(
            "{:?}: {}",
            upload.file_name,
            page.t("bookings.unknown_format")
        );
        return render(t, StatusCode::BAD_REQUEST);
    };
    let options = ImportOptions {
        dry_run: !upload.apply,
        skip_invalid: upload.skip_invalid,
    };
    let now = state.now();
    let text = upload.text.clone();
    let source = format!("dashboard:{}", upload.file_name);
    let report = blocking(&state, &viewer, move |r| {
        r.import_bookings_file(
            format,
            &text,
            &source,
            options,
            now,
            &crate::units::Scope::All,
        )
    })
    .await?;
    let refused = !report.errors.is_empty() && !upload.skip_invalid;
    t.applied = report.applied;
    t.skip_invalid = upload.skip_invalid;
    t.file_name = upload.file_name.clone();
    if !report.applied && upload.text.len() <= CARRY_LIMIT {
        t.carried = upload.text;
    }
    t.report = Some(report);
    let status = if refused && upload.apply {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    render(t, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_comes_from_the_extension_in_any_case() {
        assert_eq!(format_of("march.CSV"), Some(Format::Csv));
        assert_eq!(format_of("feed.ics"), Some(Format::Ics));
        assert_eq!(format_of("notes.txt"), None);
    }
}
