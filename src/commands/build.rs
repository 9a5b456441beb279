//! `shipit build`: the build steps, in order, from the config's directory.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::config::Config;
use crate::exit::{Exit, Failure};
use crate::printer::Printer;
use crate::settings::Settings;

pub fn run(settings: &Settings, app_version: Option<&str>) -> Result<Exit> {
    let config = settings.load_config()?;
    let version = crate::git::app_version(&config.dir, app_version)?;
    build(&config, &version, &settings.printer)?;
    Ok(Exit::Ok)
}

/// Run every build step; the first failure stops the rest.
pub fn build(config: &Config, version: &str, printer: &Printer) -> Result<()> {
    run_steps(config, "build step", &config.build, version, &[], printer)
}

/// `hooks.local_before` / `hooks.local_after`: local commands around a rollout, run like
/// build steps, with `env` (the run's `SHIPIT_*` variables) in their environment.
pub fn run_hooks(
    config: &Config,
    kind: &str,
    hooks: &[crate::redact::Text],
    version: &str,
    env: &[(&str, String)],
    printer: &Printer,
) -> Result<()> {
    run_steps(
        config,
        &format!("{kind} hook"),
        hooks,
        version,
        env,
        printer,
    )
}

fn run_steps(
    config: &Config,
    what: &str,
    steps: &[crate::redact::Text],
    version: &str,
    env: &[(&str, String)],
    printer: &Printer,
) -> Result<()> {
    let total = steps.len();
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        printer.info(&format!("{what} {n}/{total}: `{step}`"));
        let started = std::time::Instant::now();
        let mut command = Command::new("sh");
        command.envs(env.iter().map(|(k, v)| (*k, v)));
        let mut child = command
            .arg("-c")
            .arg(step.expose())
            .current_dir(&config.dir)
            .env("SHIPIT_APP", &config.app)
            .env("SHIPIT_VERSION", version)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `sh` for build step {n}"))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        std::thread::scope(|s| {
            s.spawn(|| stream(stdout, "build", printer));
            s.spawn(|| stream(stderr, "build", printer));
        });
        let status = child
            .wait()
            .with_context(|| format!("waiting for build step {n}"))?;
        if !status.success() {
            use std::os::unix::process::ExitStatusExt;
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(sig)) => format!("signal {sig}"),
                _ => "an unknown status".into(),
            };
            return Err(Failure::new(
                Exit::Failed,
                format!("build step {n}/{total} (`{step}`) failed with {how}"),
            )
            .hint("fix the build and run it again; nothing was packaged or deployed")
            .into());
        }
        printer.info(&format!(
            "build step {n}/{total} done in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

fn stream(pipe: Option<impl Read>, source: &str, printer: &Printer) {
    let Some(pipe) = pipe else { return };
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    while let Ok(n) = reader.read_until(b'\n', &mut line) {
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        printer.child_line(source, text.trim_end_matches(['\n', '\r']));
        line.clear();
    }
}
