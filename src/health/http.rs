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
mod tests {
    use super::*;

    fn done(raw: &str) -> Response {
        match parse(raw.as_bytes(), true) {
            Ok(Some(r)) => r,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    fn malformed(raw: &[u8], eof: bool) -> String {
        match parse(raw, eof) {
            Err(HttpError::Malformed(m)) => m,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn request_has_host_and_connection_close() {
        let r = request("127.0.0.1", 8080, "/healthz?x=1");
        assert!(r.starts_with("GET /healthz?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(r.contains("\r\nConnection: close\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        assert!(request("localhost", 80, "/").contains("\r\nHost: localhost\r\n"));
        assert!(request("::1", 9, "/").contains("\r\nHost: [::1]:9\r\n"));
    }

    #[test]
    fn content_length_body() {
        let r = done("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "OK");
        assert_eq!(r.body, b"ok");
        assert!(!r.truncated);
        assert_eq!(r.status_line(), "200 OK");
    }

    #[test]
    fn content_length_is_complete_before_eof_and_ignores_extra() {
        let raw = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 3\r\n\r\nbad and more";
        let r = parse(raw, false).unwrap().unwrap();
        assert_eq!(r.status_line(), "500 Internal Server Error");
        assert_eq!(r.body, b"bad");
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", false)
                .unwrap()
                .is_none()
        );
        assert!(
            malformed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", true)
                .contains("closed after 2 of the 5 body bytes")
        );
    }

    #[test]
    fn incomplete_head_needs_more() {
        for raw in [
            "",
            "HTT",
            "HTTP/1.1 200 OK\r\n",
            "HTTP/1.1 200 OK\r\nA: b\r\n\r",
        ] {
            assert!(parse(raw.as_bytes(), false).unwrap().is_none(), "{raw:?}");
        }
        assert!(matches!(parse(b"", true), Err(HttpError::Closed)));
        assert!(malformed(b"HTTP/1.1 200 OK\r\n", true).contains("middle of the response headers"));
    }

    #[test]
    fn body_until_close() {
        let raw = "HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6\r\n\r\nhello\nworld";
        assert!(parse(raw.as_bytes(), false).unwrap().is_none());
        assert_eq!(done(raw).body, b"hello\nworld");
        // HTTP/1.0 servers (python's http.server) and no reason phrase.
        let r = done("HTTP/1.0 404\r\n\r\n");
        assert_eq!(r.status_line(), "404");
        assert!(r.body.is_empty());
    }

    #[test]
    fn bare_lf_line_ends() {
        let r = done("HTTP/1.1 200 OK\nContent-Length: 2\n\nok");
        assert_eq!(r.body, b"ok");
    }

    #[test]
    fn chunked_body() {
        let raw = concat!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "2\r\nok\r\n7;ext=1\r\n, fine!\r\n0\r\nTrailer: x\r\n\r\n"
        );
        let r = done(raw);
        assert_eq!(r.body, b"ok, fine!");
        assert!(!r.truncated);
        // Complete without EOF as soon as the last chunk arrives.
        let r = parse(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.body, b"0123456789");
        // Split anywhere: more is needed.
        let full = raw.as_bytes();
        let body_start = raw.find("\r\n\r\n").unwrap() + 4;
        for cut in body_start..raw.find("0\r\nTrailer").unwrap() {
            assert!(
                parse(&full[..cut], false).unwrap().is_none(),
                "cut at {cut}"
            );
            assert!(
                malformed(&full[..cut], true).contains("middle of the chunked body"),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn chunked_wins_over_content_length() {
        let r = done(concat!(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n",
            "2\r\nok\r\n0\r\n\r\n"
        ));
        assert_eq!(r.body, b"ok");
    }

    #[test]
    fn bad_chunks_are_malformed() {
        assert!(
            malformed(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n",
                false
            )
            .contains("bad chunk size")
        );
        assert!(
            malformed(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokay\r\n",
                false
            )
            .contains("longer than its announced size")
        );
        let long = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            "1".repeat(2000)
        );
        assert!(malformed(long.as_bytes(), false).contains("bad chunk size line"));
    }

    #[test]
    fn bodies_are_bounded() {
        let big = "x".repeat(BODY_LIMIT + 10);
        // By Content-Length: done as soon as the limit is reached, without EOF.
        let raw = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        );
        let r = parse(&raw.as_bytes()[..raw.len() - 10], false)
            .unwrap()
            .unwrap();
        assert_eq!(r.body.len(), BODY_LIMIT);
        assert!(r.truncated);
        // Until close.
        let raw = format!("HTTP/1.1 200 OK\r\n\r\n{big}");
        let r = parse(raw.as_bytes(), false).unwrap().unwrap();
        assert_eq!(r.body.len(), BODY_LIMIT);
        assert!(r.truncated);
        // Chunked, in one huge chunk and in many small ones.
        let raw = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}",
            big.len()
        );
        let r = parse(raw.as_bytes(), false).unwrap().unwrap();
        assert_eq!(r.body.len(), BODY_LIMIT);
        assert!(r.truncated);
        let mut raw = String::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        for _ in 0..(BODY_LIMIT / 1000 + 2) {
            raw.push_str(&format!("3e8\r\n{}\r\n", "y".repeat(1000)));
        }
        let r = parse(raw.as_bytes(), false).unwrap().unwrap();
        assert_eq!(r.body.len(), BODY_LIMIT);
        assert!(r.truncated);
        // Exactly at the limit is not truncated.
        let exact = "z".repeat(BODY_LIMIT);
        let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY_LIMIT}\r\n\r\n{exact}");
        assert!(!done(&raw).truncated);
    }

    #[test]
    fn heads_are_bounded() {
        let raw = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(HEAD_LIMIT));
        assert!(malformed(raw.as_bytes(), false).contains("longer than 16 KiB"));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let r = done(concat!(
            "HTTP/1.1 100 Continue\r\n\r\n",
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
        ));
        assert_eq!(r.status, 201);
    }

    #[test]
    fn no_body_statuses() {
        let r = parse(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty());
    }

    #[test]
    fn not_http_is_said_early() {
        // An SSH server on the port: its banner has no blank line, so do not wait for one.
        let m = malformed(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n", false);
        assert_eq!(
            m,
            r#"not an HTTP response (it starts with "SSH-2.0-OpenSSH_9.2p1 Debian\r\n")"#
        );
        assert!(malformed(b"ok\n", true).starts_with("not an HTTP response"));
        assert!(malformed(b"HTTP/2 200\r\n\r\n", true).starts_with("bad HTTP status line"));
        assert!(malformed(b"HTTP/1.1 20 OK\r\n\r\n", true).starts_with("bad HTTP status line"));
        assert!(malformed(b"HTTP/1.1 700 Odd\r\n\r\n", true).starts_with("bad HTTP status line"));
        assert!(
            malformed(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", true)
                .contains("bad Content-Length")
        );
        assert!(
            malformed(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                true
            )
            .contains("conflicting")
        );
        // Repeated equal lengths are fine.
        assert_eq!(
            done("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok").body,
            b"ok"
        );
    }

    #[tokio::test]
    async fn get_over_a_stream() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let serve = async move {
            let mut req = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = server.read(&mut req).await.unwrap();
                got.extend_from_slice(&req[..n]);
            }
            // Dribble the response in small pieces.
            for piece in [
                "HTTP/1.1 200 OK\r\nTransfer-",
                "Encoding: chunked\r\n\r\n",
                "2\r\no",
                "k\r\n",
                "0\r\n\r\n",
            ] {
                server.write_all(piece.as_bytes()).await.unwrap();
                tokio::task::yield_now().await;
            }
            String::from_utf8(got).unwrap()
        };
        let (response, request) =
            tokio::join!(get(&mut client, "127.0.0.1", 8080, "/healthz"), serve);
        let response = response.unwrap();
        assert_eq!(response.body, b"ok");
        assert!(request.starts_with("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
    }

    #[tokio::test]
    async fn get_when_the_server_closes_at_once() {
        let (mut client, server) = tokio::io::duplex(1024);
        drop(server);
        let err = get(&mut client, "h", 80, "/").await.unwrap_err();
        assert!(
            matches!(err, HttpError::Io(_) | HttpError::Closed),
            "{err:?}"
        );
    }
}
