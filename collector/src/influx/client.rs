//! Writing a batch over HTTP, and what each answer means for the batch
//! (the policy of mature writers such as Telegraf's outputs):
//!
//! | answer | meaning | the sink |
//! |---|---|---|
//! | 2xx | written | moves its cursors |
//! | 413 | too large | sends half as much, down to one point |
//! | 429, 5xx, no answer | busy or away | waits (`Retry-After` honoured, else doubling 1 s → 60 s) and sends it again |
//! | 400, 422, other 4xx | malformed | sets the batch aside with the server's message, moves on |
//! | 401, 403, 404 | token or bucket wrong | stops, says why; a restart resumes from the cursors |

use std::time::Duration;

use crate::config::{InfluxApi, InfluxConfig};
use crate::dashboard::session::url_encode as encode;

/// How long one request may take in all.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// How much of an error answer's body is kept as its message.
const MESSAGE_BYTES: u64 = 4096;

/// What an answer means for the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Written,
    TooLarge,
    Retry {
        after: Option<Duration>,
        message: String,
    },
    Rejected {
        status: u16,
        message: String,
    },
    Stop {
        status: u16,
        message: String,
    },
}

/// The answer's meaning from its status, `Retry-After` header and body.
pub fn classify(status: u16, retry_after: Option<&str>, message: String) -> Reply {
    match status {
        200..=299 => Reply::Written,
        413 => Reply::TooLarge,
        401 | 403 | 404 => Reply::Stop { status, message },
        429 | 500..=599 => Reply::Retry {
            after: retry_after.and_then(parse_retry_after),
            message: format!("{status}: {message}"),
        },
        _ => Reply::Rejected { status, message },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by InfluxDB
/// or VictoriaMetrics, and is treated as absent), capped.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Where and how batches are written: the InfluxDB sink's write endpoint,
/// or a hub's federation route (the same retry rules apply to both).
#[derive(Clone)]
pub struct Target {
    /// The full write URL, with its query.
    pub url: String,
    content_type: &'static str,
    /// `Authorization` header value.
    auth: Option<String>,
    http: ureq::Agent,
}

impl std::fmt::Debug for Target {
    // Never the credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// The write endpoint of `config` (`/api/v2/write`, or `/write` for
    /// InfluxDB 1.x), with the token read from its file.
    pub fn new(config: &InfluxConfig, token: Option<String>) -> Self {
        let base = config.url.trim_end_matches('/');
        let url = match config.api {
            InfluxApi::V2 => format!(
                "{base}/api/v2/write?org={}&bucket={}&precision=ms",
                encode(&config.org),
                encode(&config.bucket)
            ),
            InfluxApi::V1 => format!("{base}/write?db={}&precision=ms", encode(&config.bucket)),
        };
        Self::post_to(
            url,
            "text/plain; charset=utf-8",
            token.map(|t| format!("Token {t}")),
            TIMEOUT,
        )
    }

    /// Any endpoint, posted to with `content_type` and the `Authorization`
    /// value `auth`; one request may take `timeout` in all.
    pub fn post_to(
        url: String,
        content_type: &'static str,
        auth: Option<String>,
        timeout: Duration,
    ) -> Self {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            url,
            content_type,
            auth,
            http,
        }
    }

    /// Posts `body`; a failed connection is a [`Reply::Retry`].
    pub fn post(&self, body: &str) -> Reply {
        let mut request = self.http.post(&self.url).content_type(self.content_type);
        if let Some(auth) = &self.auth {
            request = request.header("Authorization", auth);
        }
        match request.send(body) {
            Err(e) => Reply::Retry {
                after: None,
                message: e.to_string(),
            },
            Ok(mut answer) => {
                let status = answer.status().as_u16();
                let retry_after = answer
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let message = if (200..300).contains(&status) {
                    String::new()
                } else {
                    answer
                        .body_mut()
                        .with_config()
                        .limit(MESSAGE_BYTES)
                        .read_to_string()
                        .unwrap_or_default()
                        .trim()
                        .to_owned()
                };
                classify(status, retry_after.as_deref(), message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_means_what_mature_writers_make_of_it() {
        assert_eq!(classify(204, None, String::new()), Reply::Written);
        assert_eq!(classify(413, None, "big".into()), Reply::TooLarge);
        assert_eq!(
            classify(429, Some("7"), "slow down".into()),
            Reply::Retry {
                after: Some(Duration::from_secs(7)),
                message: "429: slow down".into()
            }
        );
        assert_eq!(
            classify(503, Some("999999"), "x".into()),
            Reply::Retry {
                after: Some(MAX_RETRY_AFTER),
                message: "503: x".into()
            }
        );
        assert_eq!(
            classify(500, Some("Wed, 21 Oct 2015 07:28:00 GMT"), "x".into()),
            Reply::Retry {
                after: None,
                message: "500: x".into()
            }
        );
        for status in [400, 422, 405] {
            assert_eq!(
                classify(status, None, "bad line 3".into()),
                Reply::Rejected {
                    status,
                    message: "bad line 3".into()
                }
            );
        }
        for status in [401, 403, 404] {
            assert!(matches!(
                classify(status, None, String::new()),
                Reply::Stop { .. }
            ));
        }
    }

    #[test]
    fn org_and_bucket_are_percent_encoded_in_the_write_url() {
        let config = InfluxConfig {
            url: "http://db:8086/".into(),
            org: "my org/δ".into(),
            bucket: "lab&hours".into(),
            token_file: None,
            api: InfluxApi::V2,
        };
        assert_eq!(
            Target::new(&config, None).url,
            "http://db:8086/api/v2/write?org=my%20org/%CE%B4&bucket=lab%26hours&precision=ms"
        );
    }
}
