//! Labels in English and Simplified Chinese: one TOML table per language
//! (`collector/i18n/en.toml`, `collector/i18n/zh-CN.toml`), compiled in,
//! `[section] key = "text"` read as `section.key`. The language comes from
//! the `lang` cookie (set by the switch, `/lang/{code}`), else from
//! `Accept-Language`, else English.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

const EN: &str = include_str!("../../i18n/en.toml");
const ZH: &str = include_str!("../../i18n/zh-CN.toml");

/// The name of the cookie that keeps the chosen language.
pub const LANG_COOKIE: &str = "lh_lang";

/// A dashboard language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// The BCP 47 tag (`lang` attribute, cookie value, switch path).
    pub fn tag(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Zh => "zh-CN",
        }
    }

    pub fn parse(tag: &str) -> Option<Self> {
        let tag = tag.trim().to_ascii_lowercase();
        if tag == "en" || tag.starts_with("en-") {
            Some(Self::En)
        } else if tag == "zh" || tag.starts_with("zh-") {
            Some(Self::Zh)
        } else {
            None
        }
    }

    /// The other language (what the switch offers).
    pub fn other(self) -> Self {
        match self {
            Self::En => Self::Zh,
            Self::Zh => Self::En,
        }
    }

    /// The label of `key` in this language; the key itself when missing
    /// (a unit test makes sure none is).
    pub fn t(self, key: &str) -> &'static str {
        let table = tables();
        let map = match self {
            Self::En => &table.0,
            Self::Zh => &table.1,
        };
        match map.get(key) {
            Some(text) => text.as_str(),
            None => missing(key, self),
        }
    }
}

/// A key without a label shows as itself. Each such key is kept once (so
/// that a label computed from data, `outcome.<name>`, cannot grow memory
/// request by request) and logged once.
fn missing(key: &str, lang: Lang) -> &'static str {
    static MISSING: OnceLock<std::sync::Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut seen = MISSING
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(text) = seen.get(key) {
        return text;
    }
    tracing::warn!(key, lang = lang.tag(), "missing dashboard label");
    let text: &'static str = Box::leak(key.to_owned().into_boxed_str());
    seen.insert(key.to_owned(), text);
    text
}

type Table = HashMap<String, String>;

fn tables() -> &'static (Table, Table) {
    static TABLES: OnceLock<(Table, Table)> = OnceLock::new();
    TABLES.get_or_init(|| {
        (
            flatten(EN).expect("i18n/en.toml is checked by the tests"),
            flatten(ZH).expect("i18n/zh-CN.toml is checked by the tests"),
        )
    })
}

/// `[section] key = "text"` as `section.key` → text.
pub fn flatten(text: &str) -> Result<Table, String> {
    let value: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Table::new();
    fn walk(prefix: &str, table: &toml::Table, out: &mut Table) -> Result<(), String> {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::String(s) => {
                    out.insert(key, s.clone());
                }
                toml::Value::Table(t) => walk(&key, t, out)?,
                _ => return Err(format!("{key} is not text")),
            }
        }
        Ok(())
    }
    walk("", &value, &mut out)?;
    Ok(out)
}

/// The language for a request: the cookie, else the best of
/// `Accept-Language` (q-values weighed), else English.
pub fn negotiate(headers: &HeaderMap) -> Lang {
    if let Some(lang) = super::session::cookie(headers, LANG_COOKIE).and_then(|v| Lang::parse(&v)) {
        return lang;
    }
    headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(from_accept_language)
        .unwrap_or(Lang::En)
}

/// The first language with the highest q in an `Accept-Language` value.
pub fn from_accept_language(value: &str) -> Option<Lang> {
    let mut best: Option<(f32, Lang)> = None;
    for part in value.split(',') {
        let mut pieces = part.split(';');
        let tag = pieces.next().unwrap_or("").trim();
        let q = pieces
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if let Some(lang) = Lang::parse(tag)
            && q > 0.0
            && best.is_none_or(|(b, _)| q > b)
        {
            best = Some((q, lang));
        }
    }
    best.map(|(_, l)| l)
}

#[derive(Debug, Deserialize)]
pub struct Back {
    back: Option<String>,
}

/// `GET /lang/{code}?back=/path`: keeps the language in a cookie (a
/// preference, not a change on the server) and goes back.
pub async fn switch(Path(code): Path<String>, Query(back): Query<Back>) -> Response {
    let Some(lang) = Lang::parse(&code) else {
        return (StatusCode::NOT_FOUND, "no such language").into_response();
    };
    let target = super::session::safe_next(back.back.as_deref());
    let cookie = format!(
        "{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax",
        lang.tag()
    );
    let mut response =
        (StatusCode::SEE_OTHER, [(header::LOCATION, target.as_str())]).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_languages_have_exactly_the_same_labels() {
        let en = flatten(EN).expect("en.toml");
        let zh = flatten(ZH).expect("zh-CN.toml");
        let mut missing_zh: Vec<_> = en.keys().filter(|k| !zh.contains_key(*k)).collect();
        let mut missing_en: Vec<_> = zh.keys().filter(|k| !en.contains_key(*k)).collect();
        missing_zh.sort();
        missing_en.sort();
        assert!(
            missing_zh.is_empty(),
            "missing in zh-CN.toml: {missing_zh:?}"
        );
        assert!(missing_en.is_empty(), "missing in en.toml: {missing_en:?}");
        assert!(en.values().chain(zh.values()).all(|t| !t.trim().is_empty()));
    }

    #[test]
    fn every_label_a_template_or_page_names_exists() {
        let en = flatten(EN).expect("en.toml");
        let mut sources: Vec<(String, String)> = Vec::new();
        for dir in ["templates", "src/dashboard"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            for entry in std::fs::read_dir(&path).expect("readable dir") {
                let path = entry.expect("entry").path();
                let text = std::fs::read_to_string(&path).expect("readable file");
                sources.push((path.display().to_string(), text));
            }
        }
        let mut unknown = Vec::new();
        let mut seen = 0;
        for (file, text) in &sources {
            // `page.t("…")`, `lang.t("…")`: a method call named `t`.
            for opener in [".t(\""] {
                let mut rest = text.as_str();
                while let Some(at) = rest.find(opener) {
                    rest = &rest[at + opener.len()..];
                    let Some(end) = rest.find('"') else { break };
                    let key = &rest[..end];
                    if key.contains('.') && !key.contains(' ') {
                        seen += 1;
                        if !en.contains_key(key) {
                            unknown.push(format!("{file}: {key}"));
                        }
                    }
                }
            }
        }
        assert!(
            seen > 50,
            "only {seen} label uses found: is the scan broken?"
        );
        assert!(
            unknown.is_empty(),
            "labels used but not defined: {unknown:?}"
        );
    }

    #[test]
    fn a_key_without_a_label_shows_as_itself_and_is_kept_once() {
        // Built at run time, as labels computed from data are.
        let key = format!("outcome.{}", "never_heard_of");
        let a = Lang::En.t(&key);
        let b = Lang::Zh.t(&key);
        assert_eq!(a, "outcome.never_heard_of");
        assert!(std::ptr::eq(a, b), "the same leaked text both times");
    }

    #[test]
    fn accept_language_picks_the_highest_quality_known_language() {
        assert_eq!(
            from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"),
            Some(Lang::Zh)
        );
        assert_eq!(
            from_accept_language("fr;q=1, en-GB;q=0.5, zh;q=0.4"),
            Some(Lang::En)
        );
        assert_eq!(
            from_accept_language("en;q=0.2, zh-TW;q=0.7"),
            Some(Lang::Zh)
        );
        assert_eq!(from_accept_language("fr, de"), None);
    }

    #[test]
    fn the_cookie_wins_over_accept_language() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("en"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; lh_lang=zh-CN"),
        );
        assert_eq!(negotiate(&headers), Lang::Zh);
        headers.remove(header::COOKIE);
        assert_eq!(negotiate(&headers), Lang::En);
    }
}
