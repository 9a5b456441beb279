//! Where a host ended up after a run: what the summary shows and the exit code is made
//! from (the one table is [`crate::exit::for_hosts`]).

use serde::Serialize;

/// Where a host stands, for the summary and the exit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Outcome {
    /// Not worked on yet, or still in progress.
    Pending,
    /// Already on this artifact; nothing done.
    Skipped { reason: String },
    /// Could not connect, authenticate or verify the host key.
    Unreachable { reason: String },
    /// Another deploy holds the lock.
    Locked { holder: String },
    /// A step failed before anything was switched on this host.
    Failed { step: String, reason: String },
    /// Switched and healthy.
    Done,
    /// Unhealthy (or stopped by a failure elsewhere), and put back on its old release.
    RolledBack { reason: String },
    /// Could not be put back: a human must look.
    Broken { reason: String },
    /// Stopped by Ctrl-C or SIGTERM at a safe point.
    Interrupted { state: String },
    /// Staged, but the rollout stopped before its turn: still on its old release.
    NotSwitched { reason: String },
}

impl Outcome {
    /// The one word the summary's RESULT column and the live view show.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Pending => "not started",
            Outcome::Skipped { .. } => "unchanged",
            Outcome::Unreachable { .. } => "unreachable",
            Outcome::Locked { .. } => "locked",
            Outcome::Failed { .. } => "failed",
            Outcome::Done => "done",
            Outcome::RolledBack { .. } => "rolled back",
            Outcome::Broken { .. } => "BROKEN",
            Outcome::Interrupted { .. } => "interrupted",
            Outcome::NotSwitched { .. } => "not switched",
        }
    }
}

/// What a host was sent to stage the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transfer {
    /// Nothing: the artifact was cached on the host.
    Cached,
    /// The whole artifact.
    Full,
    /// Only what the live release lacks.
    Delta,
    /// The host downloaded the whole artifact from the store (`artifacts.store`).
    Store,
}
