//! What the demo prints, in Simplified Chinese or English.

use std::net::SocketAddr;
use std::path::Path;

/// The terminal's language, as far as the environment tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// POSIX order: `LC_ALL`, then `LC_MESSAGES`, then `LANG`; the first one
    /// set and not empty decides; `zh…` is Chinese, anything else English.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Self {
        let value = ["LC_ALL", "LC_MESSAGES", "LANG"]
            .into_iter()
            .filter_map(get)
            .find(|v| !v.is_empty());
        match value {
            Some(v) if v.to_ascii_lowercase().starts_with("zh") => Lang::Zh,
            _ => Lang::En,
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "en" => Some(Lang::En),
            "zh" | "zh-cn" | "zh_cn" => Some(Lang::Zh),
            _ => None,
        }
    }
}

/// Everything the banner shows.
#[derive(Debug)]
pub struct Banner<'a> {
    pub data_dir: &'a Path,
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
    pub instruments: usize,
    pub evaluator_token: &'a str,
    pub admin_token: &'a str,
    pub from: jiff::civil::Date,
    pub to: jiff::civil::Date,
    pub time_zone: &'a str,
    pub continuing: bool,
}

pub fn banner(lang: Lang, b: &Banner<'_>) -> String {
    let url = format!("http://{}/", b.http);
    let curl = format!(
        "curl -H \"Authorization: Bearer {}\" \"http://{}/api/v1/hours?from={}&to={}&period=month\"",
        b.evaluator_token, b.http, b.from, b.to
    );
    let outcomes = format!(
        "curl -H \"Authorization: Bearer {}\" \"http://{}/api/v1/bookings/outcomes?from={}&to={}\"",
        b.evaluator_token, b.http, b.from, b.to
    );
    match lang {
        Lang::En => format!(
            "labhours demo: {n} simulated instruments, each behind a real agent\n\
             \x20 {state}\n\
             \x20 data folder:     {dir}   (--reset starts over)\n\
             \x20 time zone:       {tz}\n\
             \x20 dashboard:       {url}\n\
             \x20 API:             {url}api/v1/   (OpenAPI: {url}api/v1/openapi.json)\n\
             \x20 MQTT broker:     {mqtt} (embedded)\n\
             \x20 evaluator token: {ev}\n\
             \x20 admin token:     {ad}\n\
             Verified hours per month, and every booking's outcome:\n\
             \x20 {curl}\n\
             \x20 {outcomes}\n",
            n = b.instruments,
            state = if b.continuing {
                "continuing where it left off"
            } else {
                "first start: backfilling the history"
            },
            dir = b.data_dir.display(),
            tz = b.time_zone,
            mqtt = b.mqtt,
            ev = b.evaluator_token,
            ad = b.admin_token,
        ),
        Lang::Zh => format!(
            "labhours 演示：{n} 台模拟仪器，每台由一个真实的采集代理（agent）接入\n\
             \x20 {state}\n\
             \x20 数据目录：     {dir}   （--reset 重新开始）\n\
             \x20 时区：         {tz}\n\
             \x20 仪表盘：       {url}\n\
             \x20 API：          {url}api/v1/   （OpenAPI：{url}api/v1/openapi.json）\n\
             \x20 MQTT 代理：    {mqtt}（内置）\n\
             \x20 评估方令牌：   {ev}\n\
             \x20 管理员令牌：   {ad}\n\
             按月的核验机时，以及每条预约的结果：\n\
             \x20 {curl}\n\
             \x20 {outcomes}\n",
            n = b.instruments,
            state = if b.continuing {
                "从上次停止处继续"
            } else {
                "首次启动：正在回填历史数据"
            },
            dir = b.data_dir.display(),
            tz = b.time_zone,
            mqtt = b.mqtt,
            ev = b.evaluator_token,
            ad = b.admin_token,
        ),
    }
}

pub fn backfilled(lang: Lang, days: u32, rows: u64, events: u64, secs: f64) -> String {
    match lang {
        Lang::En => format!(
            "History: {days} days, {rows} recorded readings replayed through the agents into {events} events ({secs:.1} s)"
        ),
        Lang::Zh => format!(
            "历史数据：{days} 天，{rows} 条读数经采集代理回放为 {events} 个事件（{secs:.1} 秒）"
        ),
    }
}

pub fn ready(lang: Lang, secs: f64) -> String {
    match lang {
        Lang::En => format!(
            "Ready: the history is delivered and reconciled, {secs:.1} s after start. Live now; Ctrl-C stops."
        ),
        Lang::Zh => format!(
            "就绪：历史数据已送达并完成核对（启动后 {secs:.1} 秒）。现在实时运行；按 Ctrl-C 停止。"
        ),
    }
}

pub fn not_a_demo_folder(lang: Lang, root: &std::path::Path, state_file: &str) -> String {
    let root = root.display();
    match lang {
        Lang::En => format!(
            "{root} exists and is not a demo's data folder (no {state_file}); pass another --data-dir"
        ),
        Lang::Zh => format!(
            "{root} 已存在，且不是演示数据目录（没有 {state_file}）；请用 --data-dir 指定另一个目录"
        ),
    }
}

pub fn not_a_zone(lang: Lang, zone: &str) -> String {
    match lang {
        Lang::En => format!("--time-zone {zone:?} is not an IANA zone (e.g. Asia/Shanghai)"),
        Lang::Zh => format!("--time-zone {zone:?} 不是 IANA 时区名（例如 Asia/Shanghai）"),
    }
}

pub fn stopping(lang: Lang) -> &'static str {
    match lang {
        Lang::En => {
            "Stopping: agents flush their outboxes, the collector commits what it received…"
        }
        Lang::Zh => "正在停止：采集代理保存发件箱，采集服务提交已收到的数据……",
    }
}

pub fn stopped(lang: Lang) -> &'static str {
    match lang {
        Lang::En => "Stopped. Run the same command again to continue where it left off.",
        Lang::Zh => "已停止。再次运行同一命令即可从停止处继续。",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_language_follows_lc_all_then_lc_messages_then_lang() {
        assert_eq!(Lang::from_env(env(&[("LANG", "zh_CN.UTF-8")])), Lang::Zh);
        assert_eq!(Lang::from_env(env(&[("LANG", "en_US.UTF-8")])), Lang::En);
        assert_eq!(
            Lang::from_env(env(&[("LANG", "zh_CN.UTF-8"), ("LC_ALL", "C")])),
            Lang::En
        );
        assert_eq!(
            Lang::from_env(env(&[("LANG", "C"), ("LC_MESSAGES", "zh_TW")])),
            Lang::Zh
        );
        assert_eq!(
            Lang::from_env(env(&[("LC_ALL", ""), ("LANG", "zh_CN")])),
            Lang::Zh
        );
        assert_eq!(Lang::from_env(env(&[])), Lang::En);
    }

    #[test]
    fn the_banner_names_the_url_the_tokens_and_a_curl_line_in_both_languages() {
        let b = Banner {
            data_dir: Path::new("/tmp/demo"),
            http: "127.0.0.1:8081".parse().expect("addr"),
            mqtt: "127.0.0.1:1883".parse().expect("addr"),
            instruments: 6,
            evaluator_token: "lh_eval",
            admin_token: "lh_admin",
            from: "2026-11-03".parse().expect("date"),
            to: "2026-12-04".parse().expect("date"),
            time_zone: "Asia/Shanghai",
            continuing: false,
        };
        for lang in [Lang::En, Lang::Zh] {
            let text = banner(lang, &b);
            assert!(text.contains("http://127.0.0.1:8081/"), "{text}");
            assert!(
                text.contains("lh_eval") && text.contains("lh_admin"),
                "{text}"
            );
            assert!(text.contains(
                "curl -H \"Authorization: Bearer lh_eval\" \"http://127.0.0.1:8081/api/v1/hours?from=2026-11-03&to=2026-12-04&period=month\""
            ), "{text}");
        }
        assert!(banner(Lang::Zh, &b).contains("仪表盘"));
    }
}
