//! `shipit package`: build, then write the artifact and print its path.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;

use crate::artifact::{self, Artifact, PackRequest, Progress};
use crate::config::Config;
use crate::exit::Exit;
use crate::printer::Printer;
use crate::printer::units::human_bytes;
use crate::settings::Settings;

pub fn run(settings: &Settings, no_build: bool, app_version: Option<&str>) -> Result<Exit> {
    let config = settings.load_config()?;
    let artifact = package(&config, no_build, app_version, &settings.printer)?;
    settings.printer.data(&artifact.path.display().to_string());
    Ok(Exit::Ok)
}

/// Build (unless `no_build`) and pack. Shared with `deploy`.
pub fn package(
    config: &Config,
    no_build: bool,
    app_version: Option<&str>,
    printer: &Printer,
) -> Result<Artifact> {
    let version = crate::git::app_version(&config.dir, app_version)?;
    let mtime = crate::git::source_date(&config.dir)?;
    if !no_build {
        super::build::build(config, &version, printer)?;
    }
    let root = config.dir.join(config.package.root.expose());
    let include: Vec<String> = config
        .package
        .include
        .iter()
        .map(|t| t.expose().to_owned())
        .collect();
    let exclude: Vec<String> = config
        .package
        .exclude
        .iter()
        .map(|t| t.expose().to_owned())
        .collect();
    let commit = crate::git::commit(&config.dir);
    let out_dir = if config.dir == std::path::Path::new(".") {
        "dist".into()
    } else {
        config.dir.join("dist")
    };

    let bar = printer.bytes_bar("packaging");
    let last = AtomicU64::new(0);
    let progress = |p: Progress| match p {
        Progress::Total(n) => bar.set_length(n),
        Progress::Done(n) => {
            last.store(n, Ordering::Relaxed);
            bar.set_position(n);
        }
    };
    let started = std::time::Instant::now();
    let result = artifact::pack(&PackRequest {
        root: &root,
        include: &include,
        exclude: &exclude,
        app: &config.app,
        version: &version,
        commit: commit.as_deref(),
        mtime,
        out_dir: &out_dir,
        progress: &progress,
    });
    bar.finish_and_clear();
    let artifact = result?;
    printer.info(&format!(
        "packaged {} files ({}) into {} ({}, sha256 {}) in {:.1}s",
        artifact.manifest.files().count(),
        human_bytes(last.load(Ordering::Relaxed)),
        artifact.path.display(),
        human_bytes(artifact.size),
        &artifact.sha256[..12],
        started.elapsed().as_secs_f64()
    ));
    Ok(artifact)
}
