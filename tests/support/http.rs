//! A tiny HTTP/1.1 client for the collector's API in tests: one request per
//! connection (`Connection: close`), the answer read to the end and split
//! into status, headers and body (`Content-Length` checked, `chunked`
//! decoded). Enough for loopback tests; not a general client.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one request may take, connect to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of this name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> anyhow::Result<&str> {
        std::str::from_utf8(&self.body).context("the body is not UTF-8")
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "the body is not JSON: {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// `GET target` (path and query, e.g. `/api/v1/hours?from=2025-01-01&to=2025-02-01`).
pub async fn get(addr: SocketAddr, target: &str) -> anyhow::Result<Response> {
    request(addr, "GET", target, None).await
}

/// `POST target` with a JSON body.
pub async fn post_json(
    addr: SocketAddr,
    target: &str,
    body: &serde_json::Value,
) -> anyhow::Result<Response> {
    let body = serde_json::to_vec(body)?;
    request(addr, "POST", target, Some(("application/json", &body))).await
}

/// `GET target` with `Authorization: Bearer <token>`.
pub async fn get_with_token(
    addr: SocketAddr,
    target: &str,
    token: &str,
) -> anyhow::Result<Response> {
    request_with(addr, "GET", target, None, Some(token)).await
}

/// One request on a new connection, the answer read until the server closes.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: Option<(&str, &[u8])>,
) -> anyhow::Result<Response> {
    request_with(addr, method, target, body, None).await
}

/// [`request`], with a bearer token when given.
pub async fn request_with(
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: Option<(&str, &[u8])>,
    token: Option<&str>,
) -> anyhow::Result<Response> {
    let exchange = async {
        let mut head =
            format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some((content_type, bytes)) = body {
            head.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                bytes.len()
            ));
        }
        head.push_str("\r\n");
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(head.as_bytes()).await?;
        if let Some((_, bytes)) = body {
            stream.write_all(bytes).await?;
        }
        stream.flush().await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .with_context(|| format!("{method} {target}: no complete answer within {TIMEOUT:?}"))?
        .with_context(|| format!("{method} {target}"))?;
    parse(&raw).with_context(|| format!("{method} {target}: a malformed answer"))
}

/// Splits a whole HTTP/1.1 answer (the connection closed after it).
pub fn parse(raw: &[u8]) -> anyhow::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).context("headers are not UTF-8")?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next(), parts.next());
    ensure!(
        version == Some("HTTP/1.1"),
        "status line {status_line:?} is not HTTP/1.1"
    );
    let status: u16 = code
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status code in {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("header line {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    response.body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .with_context(|| format!("content-length {length:?}"))?;
        ensure!(
            rest.len() == length,
            "content-length {length} but {} body bytes",
            rest.len()
        );
        rest.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(response)
}

/// Decodes a `Transfer-Encoding: chunked` body (extensions and trailers ignored).
fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk size line without CRLF")?;
        let line = std::str::from_utf8(&raw[..eol])?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(hex, 16).with_context(|| format!("chunk size {line:?}"))?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if raw.len() < size + 2 || &raw[size..size + 2] != b"\r\n" {
            bail!("a chunk of {size} bytes is cut short");
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_length_answer_is_split() {
        let r =
            parse(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 2\r\n\r\nok")
                .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some("text/plain"));
        assert_eq!(r.body, b"ok");
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok").is_err());
    }

    #[test]
    fn a_chunked_answer_is_decoded() {
        let raw = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
                    4\r\n{\"a\"\r\n9;x=1\r\n: [1, 2]}\r\n0\r\n\r\n";
        let r = parse(raw).unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.json().unwrap(), serde_json::json!({"a": [1, 2]}));
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab").is_err());
    }
}
