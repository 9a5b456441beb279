//! The `health` section: the HTTP check's URL taken apart, the command, the timings.

use super::host;
use super::raw;
use super::{Ctx, Duration, HealthConfig, HttpCheck};

impl Ctx<'_> {
    pub(super) fn health(&mut self, h: raw::Health) -> HealthConfig {
        let http = h.http.and_then(|http| {
            let Some(url_s) = &http.url else {
                if let Some(s) = http.status.as_ref() {
                    self.problem(
                        s,
                        "`health.http` needs a `url`".into(),
                        Some("e.g. `url: http://127.0.0.1:8080/healthz`"),
                    );
                } else {
                    self.problem_at(
                        (0, 0),
                        "`health.http` needs a `url`".into(),
                        Some("e.g. `url: http://127.0.0.1:8080/healthz`"),
                    );
                }
                return None;
            };
            let url = self.text(url_s, "health.http.url")?;
            let (host, port, path) = match parse_http_url(url.expose()) {
                Ok(parts) => parts,
                Err(e) => {
                    self.problem(
                        url_s,
                        format!("`health.http.url`: {e}"),
                        Some(
                            "e.g. `http://127.0.0.1:8080/healthz`; it is requested on the host \
                             itself, through SSH",
                        ),
                    );
                    return None;
                }
            };
            let status = match &http.status {
                Some(s) if !(100..=599).contains(&s.value) => {
                    self.problem(
                        s,
                        format!(
                            "`health.http.status` must be an HTTP status (100-599); got {}",
                            s.value
                        ),
                        None,
                    );
                    200
                }
                Some(s) => s.value,
                None => 200,
            };
            let contains = http
                .contains
                .as_ref()
                .and_then(|c| self.text(c, "health.http.contains"));
            Some(HttpCheck {
                url,
                host,
                port,
                path,
                status,
                contains,
            })
        });
        let command = h
            .command
            .as_ref()
            .and_then(|c| self.text(c, "health.command"));
        let timeout = self.positive(&h.timeout, "health.timeout", 30_000);
        let interval = self.positive(&h.interval, "health.interval", 1_000);
        if let Some(i) = &h.interval
            && i.value > timeout
        {
            self.problem(
                i,
                format!(
                    "`health.interval` ({}) is longer than `health.timeout` ({timeout})",
                    i.value
                ),
                None,
            );
        }
        let settle = h
            .settle
            .map_or(Duration(std::time::Duration::from_secs(2)), |s| s.value);
        HealthConfig {
            http,
            command,
            timeout,
            interval,
            settle,
        }
    }
}

/// `http://host[:port][/path]` into its parts. Only http: the request travels inside the
/// SSH connection to the host's own loopback, so TLS would add nothing.
pub(super) fn parse_http_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            "only `http://` is supported: the check runs on the host itself, inside the SSH \
             connection"
                .to_owned()
        } else {
            format!("`{url}` is not an http:// URL")
        }
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    let spec = host::parse(authority).map_err(|e| format!("bad host in `{url}`: {e}"))?;
    if spec.user.is_some() {
        return Err(format!("`{url}`: credentials in the URL are not supported"));
    }
    if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{url}`: the path contains spaces or control characters"
        ));
    }
    Ok((spec.host, spec.port.unwrap_or(80), path))
}
