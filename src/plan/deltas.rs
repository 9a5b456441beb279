//! What a deploy sends each host, decided from its survey: nothing (the artifact is
//! cached there), a delta against its live release, or the whole artifact. Deltas are
//! built once per live release they start from, in the background as soon as a survey
//! names one.

use std::collections::HashMap;
use std::sync::Arc;

use crate::artifact::delta::{self, Delta};
use crate::artifact::{Artifact, Manifest};
use crate::config::DeltaMode;
use crate::remote::stage::{DeltaSource, Source};
use crate::remote::survey::Survey;

const NO_RECORD: &str = concat!(
    "the live release has no record of its files to link them safely ",
    "(it was not made with delta: hardlink); the next deploy can be a delta"
);

/// Deltas of one artifact, by the sha256 of the live release's manifest they start from:
/// hosts on the same release share one. Its own `Arc`, so a build can start in the
/// background as soon as a host's survey names its live release.
pub struct Deltas {
    artifact: Arc<Artifact>,
    /// Shared dirs and files: never reused (they become links on the host).
    shared: Vec<String>,
    mode: DeltaMode,
    built: tokio::sync::Mutex<HashMap<String, Result<Arc<Delta>, String>>>,
}

impl Deltas {
    pub fn new(artifact: Arc<Artifact>, shared: Vec<String>, mode: DeltaMode) -> Deltas {
        Deltas {
            artifact,
            shared,
            mode,
            built: Default::default(),
        }
    }

    /// Start building the delta from live release manifest `base` in the background.
    pub fn prefetch(self: &Arc<Self>, base: Option<&str>) {
        if let Some(base) = base.filter(|_| self.mode != DeltaMode::Off) {
            let (me, base) = (self.clone(), base.to_owned());
            tokio::spawn(async move {
                let _ = me.get(&base).await;
            });
        }
    }

    /// The delta for a host whose live release has manifest `base` (JSON), built once per
    /// distinct base. `Err` says why that host gets the full artifact.
    pub async fn get(&self, base: &str) -> Result<Arc<Delta>, String> {
        use sha2::Digest;
        if self.mode == DeltaMode::Off {
            return Err("delta: off".into());
        }
        if let Some(why) = delta::unsupported(&self.artifact.manifest) {
            return Err(why);
        }
        let key = hex::encode(sha2::Sha256::digest(base.as_bytes()));
        let mut cache = self.built.lock().await;
        if let Some(found) = cache.get(&key) {
            return found.clone();
        }
        let built = match serde_json::from_str::<Manifest>(base) {
            Err(e) => Err(format!("the live release's manifest is unreadable ({e})")),
            Ok(old) if old.format != self.artifact.manifest.format => Err(format!(
                "the live release's manifest has format {}",
                old.format
            )),
            Ok(old) => {
                let artifact = self.artifact.clone();
                let shared = self.shared.clone();
                let link = self.mode == DeltaMode::Hardlink;
                match tokio::task::spawn_blocking(move || {
                    delta::build(&artifact, &old, &shared, link)
                })
                .await
                {
                    Ok(Ok(delta)) if delta.len() > self.artifact.size / 2 => Err(format!(
                        "the delta ({}) would be more than half the artifact",
                        crate::printer::units::human_bytes(delta.len())
                    )),
                    Ok(Ok(delta)) => Ok(Arc::new(delta)),
                    Ok(Err(e)) => Err(format!("cannot build the delta: {e}")),
                    Err(e) => Err(format!("cannot build the delta: {e}")),
                }
            }
        };
        cache.insert(key, built.clone());
        built
    }
}

/// What a host is sent to stage the release, decided from its survey: one choice for a
/// deploy and for its dry run.
pub enum Shipment {
    /// Nothing: the artifact is cached on the host.
    Cached,
    /// What the live release (`base`) lacks.
    Delta { delta: Arc<Delta>, base: String },
    /// The whole artifact; `why_not_delta` when a delta was considered.
    Full { why_not_delta: Option<String> },
}

impl Deltas {
    /// What to send a host whose survey is `survey`.
    pub async fn shipment(&self, survey: &Survey) -> Shipment {
        if survey.cached {
            return Shipment::Cached;
        }
        match (&survey.base_manifest, &survey.current) {
            // `current` points somewhere that is not a release of this layout: whatever is
            // there is not a base to copy or link files from.
            (Some(_), Some(base)) if !crate::remote::layout::is_release_id(base) => {
                Shipment::Full {
                    why_not_delta: Some(format!(
                        "`current` points to `{base}`, not to a release under releases/"
                    )),
                }
            }
            (Some(_), Some(_)) if self.mode == DeltaMode::Hardlink && !survey.base_verified => {
                Shipment::Full {
                    why_not_delta: Some(NO_RECORD.into()),
                }
            }
            (Some(manifest), Some(base)) => match self.get(manifest).await {
                Ok(delta) => Shipment::Delta {
                    delta,
                    base: base.clone(),
                },
                Err(why) => Shipment::Full {
                    why_not_delta: Some(why),
                },
            },
            _ => Shipment::Full {
                why_not_delta: None,
            },
        }
    }

    /// The stage script's source for `delta` against release `base`.
    pub fn delta_source<'a>(&self, delta: &'a Delta, base: &'a str) -> Source<'a> {
        Source::Delta(DeltaSource {
            base,
            link: delta.link,
            reuse_len: delta.reuse_gz.len() as u64,
            tree_sha256: &delta.tree_sha256,
            content_sha256: &delta.content_sha256,
        })
    }

    pub fn full_source(&self) -> Source<'_> {
        Source::Full {
            cksum: &self.artifact.cksum,
        }
    }
}
