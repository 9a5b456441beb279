//! The `proxy` section: zero-downtime deploys behind HAProxy, checked against the rest of
//! the config (a template unit per slot needs the system manager and a plain unit name;
//! `PORT` is the slot's, so the `.env` must not set it).

use std::collections::BTreeMap;

use super::raw::{self, S};
use super::{AnalysisConfig, Ctx, Duration, ProxyConfig, ProxyMode, ServiceConfig};
use crate::config::ServiceManager;
use crate::redact::Text;

const DEFAULT_STEPS: [u32; 3] = [10, 50, 100];

impl Ctx<'_> {
    pub(super) fn proxy(
        &mut self,
        mut p: raw::Proxy,
        service: &ServiceConfig,
        env: &BTreeMap<String, Text>,
        deploy_to: Option<&Text>,
    ) -> Option<ProxyConfig> {
        let listen = match &p.listen {
            None => {
                self.problem_at(
                    (0, 0),
                    "`proxy` needs `listen`: the public port HAProxy holds for the app".into(),
                    Some("e.g. `listen: 80`"),
                );
                return None;
            }
            Some(s) if s.value == 0 => {
                self.problem(s, "`proxy.listen` must be a port (1-65535)".into(), None);
                return None;
            }
            Some(s) => s.value,
        };
        let mut bad = false;
        let slots = match &p.slots {
            None => [9001, 9002],
            Some(s) => {
                let ports: Vec<u16> = s.value.iter().map(|p| p.value).collect();
                let ok = ports.len() == 2
                    && ports[0] != ports[1]
                    && !ports.contains(&0)
                    && !ports.contains(&listen);
                if !ok {
                    self.problem(
                        s,
                        format!(
                            "`proxy.slots` must be two different ports, neither 0 nor the \
                             `listen` port ({listen}); got {ports:?}"
                        ),
                        Some("e.g. `slots: [9001, 9002]`"),
                    );
                    bad = true;
                    [9001, 9002]
                } else {
                    [ports[0], ports[1]]
                }
            }
        };
        let steps = match &p.steps {
            None => DEFAULT_STEPS.to_vec(),
            Some(s) => {
                let steps: Vec<u32> = s.value.iter().map(|p| p.value).collect();
                let rising = steps.windows(2).all(|w| w[0] < w[1]);
                let ok = !steps.is_empty() && rising && steps[0] >= 1 && steps.last() == Some(&100);
                if !ok {
                    self.problem(
                        s,
                        format!(
                            "`proxy.steps` must be rising percentages from 1 that end at 100; \
                             got {steps:?}"
                        ),
                        Some("e.g. `steps: [10, 50, 100]`, or `[100]` to move all at once"),
                    );
                    bad = true;
                }
                steps
            }
        };
        let a = p.analysis.take().unwrap_or_default();
        let interval = self.positive(&a.interval, "proxy.analysis.interval", 10_000);
        let max_error_rate = match &a.max_error_rate {
            None => 1.0,
            Some(s) => match parse_percent(&s.value) {
                Some(r) => r,
                None => {
                    self.problem(
                        s,
                        format!(
                            "`proxy.analysis.max_error_rate` must be a percentage from 0% to \
                             100%; got `{}`",
                            s.value
                        ),
                        Some("e.g. `max_error_rate: 1%` or `0.5%`"),
                    );
                    bad = true;
                    1.0
                }
            },
        };
        let mode = p.mode.as_ref().map_or(ProxyMode::Http, |m| m.value);
        let max_response_time = a.max_response_time.as_ref().map(|s| s.value);
        if let (ProxyMode::Tcp, Some(s)) = (mode, &a.max_response_time) {
            self.problem(
                s,
                "`proxy.analysis.max_response_time` needs `mode: http` (a TCP stream has no \
                 response time)"
                    .into(),
                None,
            );
        }
        self.proxy_fits(&p, service, env);
        if let Some(d) = deploy_to.map(Text::expose) {
            // It goes into HAProxy's configuration and a unit's command line unquoted, and
            // the admin socket's path must fit a Unix socket address (108 bytes).
            let plain = d
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
            if !plain || d.len() > 80 {
                self.problem_at(
                    (0, 0),
                    format!(
                        "with `proxy`, `deploy_to` must be at most 80 characters of letters, \
                         digits and `/._-`; got `{d}`"
                    ),
                    None,
                );
                bad = true;
            }
        }
        if bad {
            return None;
        }
        Some(ProxyConfig {
            listen,
            slots,
            mode,
            drain_timeout: duration_or(&p.drain_timeout, 30),
            watch: duration_or(&p.watch, 30),
            steps,
            analysis: AnalysisConfig {
                interval,
                max_error_rate,
                max_response_time,
            },
        })
    }

    /// What the rest of the config must be for slots to work.
    fn proxy_fits(
        &mut self,
        p: &raw::Proxy,
        service: &ServiceConfig,
        env: &BTreeMap<String, Text>,
    ) {
        let at = p
            .listen
            .as_ref()
            .map_or((0, 0), |s| (s.referenced.line(), s.referenced.column()));
        if service.manager != ServiceManager::Systemd {
            self.problem_at(
                at,
                "`proxy` needs `service.manager: systemd` (HAProxy and the slots run as \
                 system units)"
                    .into(),
                None,
            );
        }
        if service.name.contains(['.', '@']) {
            self.problem_at(
                at,
                format!(
                    "with `proxy`, `service.name` is the template's base name, without `.` or \
                     `@`; got `{}`",
                    service.name
                ),
                Some("e.g. `name: hello`: the slots run as hello@9001 and hello@9002"),
            );
        }
        if service.restart == super::RestartMode::Reload {
            self.problem_at(
                at,
                "`service.restart: reload` does not apply with `proxy`: a new release always \
                 starts in the idle slot"
                    .into(),
                None,
            );
        }
        if env.contains_key("PORT") {
            self.problem_at(
                at,
                "with `proxy`, `PORT` is each slot's own port: remove it from `env`".into(),
                Some("the template unit sets `Environment=PORT=%i`; the .env would override it"),
            );
        }
    }
}

fn duration_or(d: &Option<S<Duration>>, secs: u64) -> Duration {
    d.as_ref()
        .map_or(Duration(std::time::Duration::from_secs(secs)), |s| s.value)
}

/// `1%`, `0.5%`, `100%` -> percent.
pub fn parse_percent(text: &str) -> Option<f64> {
    let n: f64 = text.trim().strip_suffix('%')?.trim().parse().ok()?;
    (n.is_finite() && (0.0..=100.0).contains(&n)).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::parse_percent;

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("1%"), Some(1.0));
        assert_eq!(parse_percent(" 0.5 %"), Some(0.5));
        assert_eq!(parse_percent("100%"), Some(100.0));
        assert_eq!(parse_percent("1"), None);
        assert_eq!(parse_percent("101%"), None);
        assert_eq!(parse_percent("-1%"), None);
        assert_eq!(parse_percent("x%"), None);
    }
}
