//! [`ArtifactError`]: what goes wrong packing or inspecting an artifact.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The package's inputs are not what the config says (missing root, empty include...).
    #[error("{0}")]
    Invalid(String),
    /// Something would land outside the release directory.
    #[error("{0}")]
    Escape(String),
    /// An artifact that is not what it claims to be.
    #[error("{0}")]
    Corrupt(String),
    #[error("{what} `{path}`: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}
