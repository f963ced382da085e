//! What every page's layout needs (language, who is looking, where we are)
//! and the small formatting helpers the pages share.

use axum::http::HeaderMap;
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::assets::asset_version;
use super::i18n::{Lang, negotiate};
use super::session::{Viewer, url_encode};

/// The layout's data.
#[derive(Debug, Clone)]
pub struct Page {
    pub lang: Lang,
    /// The navigation entry to highlight.
    pub active: &'static str,
    /// This page's path and query (the language switch comes back here).
    pub path: String,
    pub viewer: Viewer,
    /// The label key of the page's title.
    pub title_key: &'static str,
}

impl Page {
    pub fn new(
        headers: &HeaderMap,
        active: &'static str,
        path: &str,
        viewer: Viewer,
        title_key: &'static str,
    ) -> Self {
        Self {
            lang: negotiate(headers),
            active,
            path: path.to_owned(),
            viewer,
            title_key,
        }
    }

    /// A label in the page's language.
    pub fn t(&self, key: &str) -> &'static str {
        self.lang.t(key)
    }

    pub fn tag(&self) -> &'static str {
        self.lang.tag()
    }

    pub fn title(&self) -> &'static str {
        self.t(self.title_key)
    }

    pub fn is_admin(&self) -> bool {
        self.viewer.is_admin()
    }

    /// Whether to offer logout (someone logged in with a token).
    pub fn logged_in(&self) -> bool {
        !self.viewer.open && !self.viewer.name.is_empty()
    }

    /// The link that switches to the other language and comes back here.
    pub fn switch_href(&self) -> String {
        format!(
            "/lang/{}?back={}",
            self.lang.other().tag(),
            url_encode(&self.path)
        )
    }

    /// The other language's own name (`中文` / `English`).
    pub fn switch_label(&self) -> &'static str {
        self.lang.other().t("lang.self")
    }

    pub fn asset(&self, name: &str) -> String {
        format!("/assets/{}/{name}", asset_version())
    }

    /// `nav` or `nav current` for a navigation entry.
    pub fn nav_class(&self, entry: &str) -> &'static str {
        if entry == self.active { "current" } else { "" }
    }
}

/// HTML-escapes text (for the few places outside templates).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Hours with two decimals.
pub fn hours(h: f64) -> String {
    format!("{h:.2}")
}

/// A ratio as a percentage with one decimal, `—` when unknown.
pub fn percent(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "—".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// `2025-03-03T09:20:00.5+08:00` → `2025-03-03 09:20` (an API time stamp,
/// already in the instrument's zone, shortened for a table).
pub fn short_time(rfc3339: &str) -> String {
    match (rfc3339.get(0..10), rfc3339.get(11..16)) {
        (Some(d), Some(t)) => format!("{d} {t}"),
        _ => rfc3339.to_owned(),
    }
}

/// Only the `HH:MM` of an API time stamp.
pub fn clock(rfc3339: &str) -> String {
    rfc3339.get(11..16).unwrap_or(rfc3339).to_owned()
}

/// Milliseconds as `YYYY-MM-DD HH:MM` in `zone`.
pub fn local_minute(ms: i64, zone: &TimeZone) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| {
            t.to_zoned(zone.clone())
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

/// Milliseconds of an RFC 3339 time stamp.
pub fn parse_ms(rfc3339: &str) -> Option<i64> {
    rfc3339
        .parse::<Timestamp>()
        .ok()
        .map(Timestamp::as_millisecond)
}

/// The short name of a weekday.
pub fn weekday(lang: Lang, day: jiff::civil::Weekday) -> &'static str {
    let key = match day {
        jiff::civil::Weekday::Monday => "weekday.mon",
        jiff::civil::Weekday::Tuesday => "weekday.tue",
        jiff::civil::Weekday::Wednesday => "weekday.wed",
        jiff::civil::Weekday::Thursday => "weekday.thu",
        jiff::civil::Weekday::Friday => "weekday.fri",
        jiff::civil::Weekday::Saturday => "weekday.sat",
        jiff::civil::Weekday::Sunday => "weekday.sun",
    };
    lang.t(key)
}

/// Seconds as `1 h 05 min` / `12 min` / `40 s` (`1 小时 05 分` … in Chinese).
pub fn duration(seconds: f64, lang: Lang) -> String {
    let s = seconds.max(0.0).round() as i64;
    let (h, min, sec) = (lang.t("unit.h"), lang.t("unit.min"), lang.t("unit.s"));
    if s >= 3600 {
        format!("{} {h} {:02} {min}", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} {min}", s / 60)
    } else {
        format!("{s} {sec}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn api_time_stamps_are_shortened_to_the_minute() {
        assert_eq!(short_time("2025-03-03T09:20:00+08:00"), "2025-03-03 09:20");
        assert_eq!(clock("2025-03-03T09:20:00+08:00"), "09:20");
        assert_eq!(short_time("garbage"), "garbage");
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(duration(3900.0, Lang::En), "1 h 05 min");
        assert_eq!(duration(720.0, Lang::En), "12 min");
        assert_eq!(duration(40.2, Lang::En), "40 s");
        assert_eq!(duration(3900.0, Lang::Zh), "1 小时 05 分钟");
        assert_eq!(percent(Some(0.4567)), "45.7%");
        assert_eq!(percent(None), "—");
    }
}
