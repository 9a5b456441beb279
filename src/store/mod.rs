//! The artifact store (`artifacts.store`): an S3-compatible bucket the deployer uploads
//! each artifact to once, and hosts download it from with a short-lived presigned URL,
//! so the deployer's uplink carries each byte once instead of once per host.
//!
//! Objects are `<prefix><app>/<sha256>.tar.gz`, with the sha256 in their metadata. An
//! object already there with that size and sha256 is not uploaded again. shipit never
//! deletes objects: old artifacts are left to the bucket's lifecycle rules (see
//! docs/operations.md), so a bucket shared with other tools loses nothing to shipit.

pub mod client;
pub mod credentials;
pub mod sigv4;

use std::time::{Duration, Instant};

use crate::artifact::Artifact;
use crate::config::ArtifactsConfig;

pub use client::Bucket;

/// The store of a deploy, opened and filled the first time a host needs the whole
/// artifact: a deploy whose hosts all take deltas (or have it cached) never touches it.
pub struct Lazy {
    config: ArtifactsConfig,
    app: String,
    cell: tokio::sync::OnceCell<Result<(Store, Uploaded), String>>,
    said: std::sync::atomic::AtomicBool,
    repaired: tokio::sync::OnceCell<Result<Uploaded, String>>,
}

impl Lazy {
    pub fn new(config: &ArtifactsConfig, app: &str) -> Lazy {
        Lazy {
            config: config.clone(),
            app: app.to_owned(),
            cell: tokio::sync::OnceCell::new(),
            said: std::sync::atomic::AtomicBool::new(false),
            repaired: tokio::sync::OnceCell::new(),
        }
    }

    /// A host found the store's copy does not match its sha256 (changed in the bucket):
    /// upload the artifact again over it, once per run, so later hosts and deploys get
    /// the right bytes. `Some` for the one caller that should report it.
    pub async fn repair(&self, artifact: &Artifact) -> Option<Result<Uploaded, String>> {
        let Some(Ok((store, _))) = self.cell.get() else {
            return None;
        };
        let mut first = false;
        let got = self
            .repaired
            .get_or_init(|| async {
                first = true;
                store.upload(artifact).await
            })
            .await;
        first.then(|| got.clone())
    }

    /// `artifacts.store`, as configured.
    pub fn configured(&self) -> &str {
        &self.config.store
    }

    /// The store, with `artifact` in it (uploaded by the first caller, once); the
    /// second value is `Some` for the one caller that should report the upload.
    pub async fn ready(&self, artifact: &Artifact) -> (Result<&Store, String>, Option<Uploaded>) {
        let got = self
            .cell
            .get_or_init(|| async {
                let env = |k: &str| std::env::var(k).ok();
                let store = Store::open(&self.config, &self.app, &artifact.sha256, &env).await?;
                let up = store.ensure(artifact).await?;
                Ok((store, up))
            })
            .await;
        match got {
            Ok((store, up)) => {
                let first = !self.said.swap(true, std::sync::atomic::Ordering::SeqCst);
                (Ok(store), first.then_some(*up))
            }
            Err(e) => (Err(e.clone()), None),
        }
    }
}

/// The store, opened for one artifact.
pub struct Store {
    bucket: Bucket,
    key: String,
    ttl: Duration,
}

/// What [`Store::ensure`] did.
#[derive(Debug, Clone, Copy)]
pub struct Uploaded {
    /// Bytes sent to the store (0 when it already had the artifact).
    pub sent: u64,
    pub took: Duration,
}

impl Store {
    /// The store of `config`, for the artifact `sha256` of `app`; credentials from the
    /// usual places ([`credentials::find`]).
    pub async fn open(
        config: &ArtifactsConfig,
        app: &str,
        sha256: &str,
        lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Store, String> {
        let creds = credentials::find(lookup).await?;
        let region = config
            .region
            .clone()
            .or_else(|| lookup("AWS_REGION"))
            .or_else(|| lookup("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let bucket = Bucket::new(config.endpoint.as_deref(), &config.bucket, &region, creds)?;
        Ok(Store {
            bucket,
            key: format!("{}{app}/{sha256}.tar.gz", config.prefix),
            ttl: config.url_ttl.0,
        })
    }

    /// `s3://bucket/key`, for messages.
    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket.bucket, self.key)
    }

    /// Upload the artifact unless the store already has it (same size and sha256).
    pub async fn ensure(&self, artifact: &Artifact) -> Result<Uploaded, String> {
        let started = Instant::now();
        if let Some(h) = self.bucket.head(&self.key).await?
            && h.size == artifact.size
            && h.sha256.as_deref() == Some(artifact.sha256.as_str())
        {
            return Ok(Uploaded {
                sent: 0,
                took: started.elapsed(),
            });
        }
        self.upload(artifact).await
    }

    /// Upload the artifact, whatever the store has.
    async fn upload(&self, artifact: &Artifact) -> Result<Uploaded, String> {
        let started = Instant::now();
        if artifact.size > client::MULTIPART_OVER {
            self.bucket
                .put_multipart(&self.key, &artifact.path, &artifact.sha256)
                .await?;
        } else {
            let body = match &artifact.bytes {
                Some(b) => b.to_vec(),
                None => std::fs::read(&artifact.path)
                    .map_err(|e| format!("{}: {e}", artifact.path.display()))?,
            };
            self.bucket.put(&self.key, body, &artifact.sha256).await?;
        }
        Ok(Uploaded {
            sent: artifact.size,
            took: started.elapsed(),
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A presigned GET of the artifact, valid for `artifacts.url_ttl`: a bearer
    /// credential until then, so it goes to hosts inside scripts and never to output.
    pub fn url(&self) -> String {
        self.bucket.presign_get(&self.key, self.ttl)
    }
}
