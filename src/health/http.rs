//! The health check's own tiny HTTP/1.1 client: one `GET` with `Connection: close` over
//! any byte stream (in shipit, a direct-tcpip tunnel through the host's SSH connection),
//! and a parser for what comes back: status line, headers, and a body framed by
//! `Content-Length`, chunked transfer-encoding, or the end of the connection.
//!
//! Everything is bounded: headers to [`HEAD_LIMIT`], the body to [`BODY_LIMIT`] (a longer
//! body is cut there and flagged, which is enough to look for a substring near its
//! start). The caller bounds the time.

use std::fmt;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes of body kept; more is not read.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Bytes of status line + headers accepted.
pub const HEAD_LIMIT: usize = 16 * 1024;
/// Longest chunk-size line accepted (size, extensions, CRLF).
const CHUNK_LINE_LIMIT: usize = 1024;

/// A response, with its body cut at [`BODY_LIMIT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The reason phrase as the server sent it (may be empty).
    pub reason: String,
    pub body: Vec<u8>,
    /// The body was longer than [`BODY_LIMIT`] and was cut.
    pub truncated: bool,
}

impl Response {
    /// `500 Internal Server Error`, or just `500` when the server sent no phrase.
    pub fn status_line(&self) -> String {
        if self.reason.is_empty() {
            self.status.to_string()
        } else {
            format!("{} {}", self.status, self.reason)
        }
    }
}

/// Why no response could be read.
#[derive(Debug)]
pub enum HttpError {
    /// The connection closed before a single byte of response arrived.
    Closed,
    /// What arrived is not a valid HTTP/1.x response.
    Malformed(String),
    Io(std::io::Error),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Closed => f.write_str("the connection closed without a response"),
            HttpError::Malformed(why) => f.write_str(why),
            HttpError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// The request bytes for `GET path` to `host:port`.
pub fn request(host: &str, port: u16, path: &str) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let authority = if port == 80 {
        host
    } else {
        format!("{host}:{port}")
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: shipit/{}\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Sends `GET path` over `stream` and reads the response. The write side is not shut
/// down (some servers take a half-close for a client that went away).
pub async fn get<S>(
    stream: &mut S,
    host: &str,
    port: u16,
    path: &str,
) -> Result<Response, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(request(host, port, path).as_bytes())
        .await
        .map_err(HttpError::Io)?;
    stream.flush().await.map_err(HttpError::Io)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A reset after a complete response is still a response.
            Err(e) => {
                return match parse(&buf, true) {
                    Ok(Some(response)) => Ok(response),
                    _ => Err(HttpError::Io(e)),
                };
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(response) = parse(&buf, n == 0)? {
            return Ok(response);
        }
        if n == 0 {
            // parse() with eof=true either returns a response or an error.
            return Err(HttpError::Closed);
        }
    }
}

/// How the body's end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Parses the bytes received so far. `Ok(None)`: more is needed (only when `eof` is
/// false). `eof`: the peer closed the connection after these bytes.
pub fn parse(buf: &[u8], eof: bool) -> Result<Option<Response>, HttpError> {
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        if rest.len() >= 5 && !rest.starts_with(b"HTTP/") {
            return Err(HttpError::Malformed(format!(
                "not an HTTP response (it starts with {})",
                excerpt(rest, 40)
            )));
        }
        let Some((head_len, body_start)) = head_end(rest) else {
            if rest.len() > HEAD_LIMIT {
                return Err(HttpError::Malformed(format!(
                    "the response headers are longer than {} KiB",
                    HEAD_LIMIT / 1024
                )));
            }
            if !eof {
                return Ok(None);
            }
            return Err(if rest.is_empty() {
                HttpError::Closed
            } else if rest.len() < 5 && !b"HTTP/".starts_with(rest) {
                HttpError::Malformed(format!(
                    "not an HTTP response (it starts with {})",
                    excerpt(rest, 40)
                ))
            } else {
                HttpError::Malformed(
                    "the connection closed in the middle of the response headers".into(),
                )
            });
        };
        if head_len > HEAD_LIMIT {
            return Err(HttpError::Malformed(format!(
                "the response headers are longer than {} KiB",
                HEAD_LIMIT / 1024
            )));
        }
        let head = String::from_utf8_lossy(&rest[..head_len]);
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let (status, reason) = status_line(lines.next().unwrap_or_default())?;
        let body = &rest[body_start..];
        // Interim responses (100 Continue, 103 Early Hints) come before the real one.
        if (100..200).contains(&status) && status != 101 {
            at += body_start;
            continue;
        }
        let framing = framing(status, lines)?;
        let decoded = match framing {
            Framing::Length(n) => {
                if body.len() >= n {
                    Some((body[..n.min(BODY_LIMIT)].to_vec(), n > BODY_LIMIT))
                } else if body.len() >= BODY_LIMIT {
                    Some((body[..BODY_LIMIT].to_vec(), true))
                } else if eof {
                    return Err(HttpError::Malformed(format!(
                        "the connection closed after {} of the {n} body bytes",
                        body.len()
                    )));
                } else {
                    None
                }
            }
            Framing::UntilClose => {
                if body.len() > BODY_LIMIT {
                    Some((body[..BODY_LIMIT].to_vec(), true))
                } else if eof {
                    Some((body.to_vec(), false))
                } else {
                    None
                }
            }
            Framing::Chunked => dechunk(body, eof)?,
        };
        return Ok(decoded.map(|(body, truncated)| Response {
            status,
            reason,
            body,
            truncated,
        }));
    }
}

/// Where the head ends: (length of the head without its blank line, start of the body).
/// Accepts bare LF line ends as well as CRLF.
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        let next = nl + 1;
        if buf.get(next) == Some(&b'\n') {
            return Some((nl, next + 1));
        }
        if buf.get(next) == Some(&b'\r') && buf.get(next + 1) == Some(&b'\n') {
            return Some((nl, next + 2));
        }
        i = next;
    }
    None
}

fn status_line(line: &str) -> Result<(u16, String), HttpError> {
    let bad = || {
        HttpError::Malformed(format!(
            "bad HTTP status line {}",
            excerpt(line.as_bytes(), 80)
        ))
    };
    let rest = line.strip_prefix("HTTP/1.").ok_or_else(bad)?;
    let mut parts = rest.splitn(3, ' ');
    let _minor = parts.next().filter(|m| m.len() == 1).ok_or_else(bad)?;
    let code = parts.next().ok_or_else(bad)?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let status: u16 = code.parse().map_err(|_| bad())?;
    if !(100..=599).contains(&status) {
        return Err(bad());
    }
    let reason = parts.next().unwrap_or_default().trim().to_owned();
    Ok((status, reason))
}

fn framing<'a>(status: u16, headers: impl Iterator<Item = &'a str>) -> Result<Framing, HttpError> {
    if status == 204 || status == 304 {
        return Ok(Framing::Length(0));
    }
    let mut chunked = None;
    let mut length: Option<usize> = None;
    for line in headers {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides; anything but chunked last means "until close".
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            chunked = Some(last.eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            for v in value.split(',') {
                let v = v.trim();
                let n: usize = v
                    .parse()
                    .ok()
                    .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| HttpError::Malformed(format!("bad Content-Length `{value}`")))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HttpError::Malformed(
                        "conflicting Content-Length headers".into(),
                    ));
                }
                length = Some(n);
            }
        }
    }
    Ok(match (chunked, length) {
        (Some(true), _) => Framing::Chunked,
        (Some(false), _) => Framing::UntilClose,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::UntilClose,
    })
}

/// Decodes a chunked body received so far: `Ok(None)` when more is needed.
fn dechunk(mut rest: &[u8], eof: bool) -> Result<Option<(Vec<u8>, bool)>, HttpError> {
    let mut out = Vec::new();
    let need_more = |out: Vec<u8>| {
        if eof {
            Err(HttpError::Malformed(format!(
                "the connection closed in the middle of the chunked body (after {} bytes)",
                out.len()
            )))
        } else {
            Ok(None)
        }
    };
    loop {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() > CHUNK_LINE_LIMIT {
                return Err(HttpError::Malformed("bad chunk size line".into()));
            }
            return need_more(out);
        };
        if nl > CHUNK_LINE_LIMIT {
            return Err(HttpError::Malformed("bad chunk size line".into()));
        }
        let line = String::from_utf8_lossy(&rest[..nl]);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16)
            .ok()
            .filter(|_| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                HttpError::Malformed(format!("bad chunk size {}", excerpt(line.as_bytes(), 40)))
            })?;
        rest = &rest[nl + 1..];
        if size == 0 {
            // Trailers may follow; the body is complete either way.
            return Ok(Some((out, false)));
        }
        let room = BODY_LIMIT - out.len();
        if rest.len() < size {
            if rest.len() >= room {
                out.extend_from_slice(&rest[..room]);
                return Ok(Some((out, true)));
            }
            return need_more(out);
        }
        if size >= room {
            out.extend_from_slice(&rest[..room]);
            return Ok(Some((out, true)));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        if rest.starts_with(b"\r\n") {
            rest = &rest[2..];
        } else if rest.starts_with(b"\n") {
            rest = &rest[1..];
        } else if rest.is_empty() || rest == b"\r" {
            return need_more(out);
        } else {
            return Err(HttpError::Malformed(
                "a chunk is longer than its announced size".into(),
            ));
        }
    }
}

/// Up to `max` bytes of `bytes` as a quoted, escaped string for messages.
pub fn excerpt(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    let more = if bytes.len() > max { "..." } else { "" };
    format!("\"{}{more}\"", text.escape_debug())
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
