//! The `health.http` check: shipit's own `GET` ([`super::http`]) through a direct-tcpip
//! tunnel to the URL's host:port as seen from the server.

use std::time::Duration;

use super::http;
use super::spec::human;
use crate::config::HttpCheck;
use crate::ssh::{self, Session};

/// One `GET` within `budget`; `Err` is the reason it fails, naming the URL.
pub(super) async fn check_http(
    session: &Session,
    check: &HttpCheck,
    budget: Duration,
) -> Result<(), String> {
    let url = check.url.shown();
    let request = async {
        let mut tunnel = session
            .tunnel(&check.host, check.port)
            .await
            .map_err(|e| match e {
                ssh::Error::Tunnel { to, reason, .. } => {
                    format!("cannot connect to {to} on the host: {reason}")
                }
                other => other.to_string(),
            })?;
        http::get(&mut tunnel, &check.host, check.port, &check.path)
            .await
            .map_err(|e| e.to_string())
    };
    let response = tokio::time::timeout(budget, request)
        .await
        .map_err(|_| format!("GET {url}: no complete response within {}", human(budget)))?
        .map_err(|e| format!("GET {url}: {e}"))?;
    judge_response(
        &response,
        check.status,
        check.contains.as_ref().map(|c| (c.expose(), c.shown())),
    )
    .map_err(|e| format!("GET {url}: {e}"))
}

/// Whether a response passes: `contains` is (value, what may be shown of it).
fn judge_response(
    response: &http::Response,
    status: u16,
    contains: Option<(&str, &str)>,
) -> Result<(), String> {
    if response.status != status {
        return Err(format!("{} (expected {status})", response.status_line()));
    }
    if let Some((needle, shown)) = contains {
        let body = String::from_utf8_lossy(&response.body);
        if !body.contains(needle) {
            let cut = if response.truncated {
                format!(" (first {} KiB read)", http::BODY_LIMIT / 1024)
            } else {
                String::new()
            };
            return Err(format!(
                "{}, but the body does not contain `{shown}`{cut}; it starts with {}",
                response.status_line(),
                http::excerpt(&response.body, 100)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, reason: &str, body: &str) -> http::Response {
        http::Response {
            status,
            reason: reason.into(),
            body: body.as_bytes().to_vec(),
            truncated: false,
        }
    }

    #[test]
    fn http_reasons() {
        assert_eq!(
            judge_response(&response(200, "OK", "ok"), 200, Some(("ok", "ok"))),
            Ok(())
        );
        assert_eq!(judge_response(&response(204, "", ""), 204, None), Ok(()));
        assert_eq!(
            judge_response(
                &response(500, "Internal Server Error", "boom"),
                200,
                Some(("ok", "ok"))
            ),
            Err("500 Internal Server Error (expected 200)".into())
        );
        assert_eq!(
            judge_response(
                &response(200, "OK", "starting\n"),
                200,
                Some(("ready", "ready"))
            ),
            Err(
                r#"200 OK, but the body does not contain `ready`; it starts with "starting\n""#
                    .into()
            )
        );
        // A secret needle is not shown.
        assert_eq!(
            judge_response(
                &response(200, "OK", "nope"),
                200,
                Some(("s3cret", "[redacted]"))
            ),
            Err(
                r#"200 OK, but the body does not contain `[redacted]`; it starts with "nope""#
                    .into()
            )
        );
        let mut big = response(200, "OK", "");
        big.body = vec![b'x'; http::BODY_LIMIT];
        big.truncated = true;
        let e = judge_response(&big, 200, Some(("ok", "ok"))).unwrap_err();
        assert!(e.contains("(first 64 KiB read)"), "{e}");
        assert!(e.ends_with("...\""), "{e}");
    }
}
