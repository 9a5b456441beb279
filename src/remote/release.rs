//! A release's record on its host, `releases/<id>/.shipit/release.json`: what it is and
//! where it stands. The stage script writes it (`staged`, or `failed` when a hook
//! fails), the finish script moves it on (`live`, `rolled-back`), the survey reads it
//! back for every release.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Unpacked and linked; not (yet) serving. Never a rollback target.
    Staged,
    /// Switched to and healthy: a rollback target once something newer is current.
    Live,
    /// Failed staging, a hook, or its health check. Removed first by cleanup.
    Failed,
    /// Left by `shipit rollback`; not a target of the next rollback.
    RolledBack,
}

/// `releases/<id>/.shipit/release.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseInfo {
    pub id: String,
    pub app: String,
    pub version: String,
    pub commit: Option<String>,
    pub artifact_sha256: String,
    pub state: State,
    pub created_at: u64,
    pub deployed_by: String,
    /// sha256 of what the config adds to the artifact (.env, unit file, shared paths,
    /// hooks): a deploy is a no-op only when this matches too.
    #[serde(default)]
    pub config_sha256: Option<String>,
}

/// A release found on a host. `info` is `None` when release.json is missing or
/// unreadable: a release shipit did not finish making.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    pub info: Option<ReleaseInfo>,
}

impl Found {
    pub fn state(&self) -> Option<State> {
        self.info.as_ref().map(|i| i.state)
    }
}
