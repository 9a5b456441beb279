//! `shipit init`: a starter deploy.yaml and unit file that pass validation as written.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::exit::{Exit, Failure};
use crate::settings::Settings;

const DEPLOY_YAML: &str = include_str!("../templates/deploy.yaml");
const UNIT_FILE: &str = include_str!("../templates/app.service");

/// A valid app name from a directory name: lowercase, other characters become `-`.
fn app_from_dir(dir: &Path) -> String {
    let raw = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("app")
        .to_lowercase();
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned
        .trim_start_matches(['-', '_'])
        .chars()
        .take(64)
        .collect::<String>();
    if cleaned.is_empty() {
        "app".into()
    } else {
        cleaned
    }
}

pub fn run(settings: &Settings, app: Option<&str>) -> Result<Exit> {
    let config_path = &settings.config;
    let dir = match config_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let app = match app {
        Some(a) => a.to_owned(),
        None => app_from_dir(&std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone())),
    };
    let valid = app.len() <= 64 && crate::config::valid_name(&app);
    if !valid {
        return Err(
            Failure::new(Exit::Invalid, format!("`{app}` is not a valid app name"))
                .hint("use lowercase letters, digits, `-` and `_`, e.g. `--app hello`")
                .into(),
        );
    }
    let unit_rel = format!("deploy/{app}.service");
    let unit_path = if dir == Path::new(".") {
        PathBuf::from(&unit_rel)
    } else {
        dir.join(&unit_rel)
    };
    // Check both before writing either: init never half-happens.
    for path in [config_path, &unit_path] {
        if path.symlink_metadata().is_ok() {
            return Err(Failure::new(
                Exit::Failed,
                format!(
                    "`{}` already exists; `shipit init` never overwrites",
                    path.display()
                ),
            )
            .hint("move it aside or edit it; `shipit config` checks a deploy.yaml")
            .into());
        }
    }
    let recipe = super::detect::detect(&dir, &app);
    let fill = |t: &str| {
        t.replace("{{found}}", &recipe.found)
            .replace("{{build}}", &recipe.build)
            .replace("{{include}}", &recipe.include)
            .replace("{{app}}", &app)
    };
    std::fs::create_dir_all(unit_path.parent().unwrap_or(&dir))
        .with_context(|| format!("cannot create `{}`", dir.join("deploy").display()))?;
    write_new(&unit_path, &fill(UNIT_FILE))?;
    if let Err(e) = write_new(config_path, &fill(DEPLOY_YAML)) {
        let _ = std::fs::remove_file(&unit_path);
        return Err(e);
    }
    settings.printer.info(&format!(
        "wrote `{}` and `{}`\n\
         found {}
         next: set the hosts and check the build, then run `shipit config` to check it",
        config_path.display(),
        unit_path.display(),
        recipe.found
    ));
    if let Some(hint) = super::detect::platform_hint() {
        settings.printer.info(&format!("hint: {hint}"));
    }
    Ok(Exit::Ok)
}

/// Create `path` with `text`, failing if it appeared in the meantime.
fn write_new(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create `{}`", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_from_directories() {
        assert_eq!(app_from_dir(Path::new("/src/My App")), "my-app");
        assert_eq!(app_from_dir(Path::new("/src/_x.y")), "x-y");
        assert_eq!(app_from_dir(Path::new("/")), "app");
        assert_eq!(app_from_dir(Path::new("/src/---")), "app");
    }
}
