//! Placeholder with the health engine's interface, replaced by the real engine (branch
//! `health`) before this lands: polls only the unit's ActiveState.

use std::time::{Duration, Instant};

use crate::config::{HttpCheck, ServiceManager};
use crate::ssh::Session;

pub struct Spec<'a> {
    pub http: Option<&'a HttpCheck>,
    pub command: Option<&'a str>,
    pub release_dir: &'a str,
    pub manager: ServiceManager,
    pub service: &'a str,
    pub timeout: Duration,
    pub interval: Duration,
    pub settle: Duration,
}

pub struct Baseline {
    pub n_restarts: u64,
}

pub struct Attempt;

pub enum Outcome {
    Healthy {
        attempts: u32,
        elapsed: Duration,
    },
    Unhealthy {
        reason: String,
        attempts: u32,
        elapsed: Duration,
    },
}

pub async fn baseline(
    _session: &Session,
    _manager: ServiceManager,
    _service: &str,
) -> Result<Baseline, crate::ssh::Error> {
    Ok(Baseline { n_restarts: 0 })
}

pub async fn wait_healthy(
    session: &Session,
    spec: &Spec<'_>,
    _baseline: &Baseline,
    _on_attempt: impl FnMut(&Attempt) + Send,
) -> Outcome {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let state = session
            .exec(
                &format!("systemctl is-active -- '{}'", spec.service),
                |_, _| {},
            )
            .await
            .map(|o| o.stdout)
            .unwrap_or_default();
        if spec.manager == ServiceManager::None || state.trim() == "active" {
            return Outcome::Healthy {
                attempts,
                elapsed: started.elapsed(),
            };
        }
        if started.elapsed() > spec.timeout {
            return Outcome::Unhealthy {
                reason: format!("{} is {}", spec.service, state.trim()),
                attempts,
                elapsed: started.elapsed(),
            };
        }
        tokio::time::sleep(spec.interval).await;
    }
}

pub async fn journal_tail(
    _session: &Session,
    _manager: ServiceManager,
    _service: &str,
    _sudo: bool,
    _lines: usize,
) -> String {
    String::new()
}
