//! The end of a deploy or rollback: one row per host on stdout (or one JSON document),
//! then, for hosts that failed, why, with the service's journal.

use serde::Serialize;

use crate::exit::Exit;
use crate::host::HostRun;
use crate::outcome::{Outcome, Transfer};

use super::Printer;
use super::units::human_bytes;

#[derive(Serialize)]
struct HostJson<'a> {
    name: &'a str,
    #[serde(flatten)]
    outcome: &'a Outcome,
    release: Option<&'a str>,
    previous: Option<&'a str>,
    duration_ms: u128,
    uploaded_bytes: u64,
    /// `full`, `delta`, `cached`, or null when nothing was staged.
    transfer: Option<Transfer>,
    /// How long getting the artifact there and staging it took.
    transfer_ms: Option<u128>,
    reused_files: usize,
    warnings: &'a [String],
    journal: Option<&'a str>,
}

#[derive(Serialize)]
struct Json<'a> {
    ok: bool,
    exit_code: u8,
    action: &'a str,
    release: Option<&'a str>,
    version: Option<&'a str>,
    artifact_sha256: Option<&'a str>,
    total_ms: u128,
    hosts: Vec<HostJson<'a>>,
}

pub struct Context<'a> {
    pub action: &'a str,
    pub release: Option<&'a str>,
    pub version: Option<&'a str>,
    pub sha256: Option<&'a str>,
}

fn where_now(run: &HostRun) -> Option<&str> {
    match run.outcome {
        Outcome::Done => run.switched_to.as_deref(),
        Outcome::Broken { .. } => run.switched_to.as_deref().or(run.previous.as_deref()),
        _ => run.previous.as_deref(),
    }
}

/// What went over the wire to the host: `75.2 MB`, `1.1 MB delta, 4990 reused`,
/// `cached`, or `-`.
fn sent(r: &HostRun) -> String {
    let bytes = human_bytes(r.uploaded);
    match r.transfer {
        Some(Transfer::Delta) => format!("{bytes} delta, {} reused", r.reused),
        Some(Transfer::Full) => bytes,
        Some(Transfer::Cached) => "cached".into(),
        Some(Transfer::Store) => "from the store".into(),
        None if r.uploaded > 0 => bytes,
        None => "-".into(),
    }
}

/// The summary as the `--json` document's fields (docs/json.md).
fn document<'a>(runs: &'a [HostRun], exit: Exit, ctx: &Context<'a>) -> Json<'a> {
    Json {
        ok: exit == Exit::Ok,
        exit_code: exit.code(),
        action: ctx.action,
        release: ctx.release,
        version: ctx.version,
        artifact_sha256: ctx.sha256,
        total_ms: runs
            .iter()
            .map(|r| {
                r.finished
                    .unwrap_or_else(|| r.started.elapsed())
                    .as_millis()
            })
            .max()
            .unwrap_or(0),
        hosts: runs
            .iter()
            .map(|r| HostJson {
                name: r.name(),
                outcome: &r.outcome,
                release: where_now(r),
                previous: r.previous.as_deref(),
                duration_ms: r
                    .finished
                    .unwrap_or_else(|| r.started.elapsed())
                    .as_millis(),
                uploaded_bytes: r.uploaded,
                transfer: r.transfer,
                transfer_ms: r.transfer_took.map(|t| t.as_millis()),
                reused_files: r.reused,
                warnings: &r.warnings,
                journal: r.journal.as_deref(),
            })
            .collect(),
    }
}

/// The `--json` document of the run, as text (for `SHIPIT_SUMMARY`).
pub fn json(runs: &[HostRun], exit: Exit, ctx: &Context) -> String {
    super::json::render(&document(runs, exit, ctx)).unwrap_or_default()
}

pub fn print(printer: &Printer, runs: &[HostRun], exit: Exit, ctx: &Context, json: bool) {
    if json {
        printer.document(&document(runs, exit, ctx));
        return;
    }
    let w = runs
        .iter()
        .map(|r| r.name().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<w$}  {:<25}  {:<12}  {:<7}  {:<28}",
        "HOST", "NOW ON", "RESULT", "TIME", "SENT"
    );
    let mut details = Vec::new();
    for r in runs {
        let time = r
            .finished
            .unwrap_or_else(|| r.started.elapsed())
            .as_secs_f64();
        out.push_str(&format!(
            "\n{:<w$}  {:<25}  {:<12}  {:<7}  {}",
            r.name(),
            where_now(r).unwrap_or("-"),
            r.outcome.word(),
            format!("{time:.1}s"),
            sent(r)
        ));
        let why = match &r.outcome {
            Outcome::Skipped { reason } => Some(reason.clone()),
            Outcome::Unreachable { reason } => Some(reason.clone()),
            Outcome::Locked { holder } => Some(format!("locked by {holder}")),
            Outcome::Failed { step, reason } => Some(format!("{step}: {reason}")),
            Outcome::RolledBack { reason } => Some(reason.clone()),
            Outcome::Broken { reason } => Some(format!("{reason}; a human must look at this host")),
            Outcome::Interrupted { state } => Some(state.clone()),
            Outcome::NotSwitched { reason } => Some(reason.clone()),
            Outcome::Pending | Outcome::Done => None,
        };
        if let Some(why) = why {
            details.push(format!("{}: {}", r.name(), why.trim_end()));
        }
        if let Some(j) = r.journal.as_deref().filter(|j| !j.trim().is_empty()) {
            details.push(format!(
                "{}: last lines of the service's journal:\n{}",
                r.name(),
                j.trim_end()
            ));
        }
    }
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for r in runs {
        let word = r.outcome.word();
        match counts.iter_mut().find(|(w, _)| *w == word) {
            Some((_, n)) => *n += 1,
            None => counts.push((word, 1)),
        }
    }
    let counts: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
    let total = runs
        .iter()
        .map(|r| r.finished.unwrap_or_else(|| r.started.elapsed()))
        .max()
        .unwrap_or_default();
    let uploaded: u64 = runs.iter().map(|r| r.uploaded).sum();
    out.push_str(&format!(
        "\n{:<w$}  {:<25}  {:<12}  {:<7}  {}",
        "TOTAL",
        format!("{} host(s)", runs.len()),
        counts.join(", "),
        format!("{:.1}s", total.as_secs_f64()),
        human_bytes(uploaded)
    ));
    if !details.is_empty() {
        out.push_str("\n\n");
        out.push_str(&details.join("\n"));
    }
    printer.data(&out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printer::json::tests::assert_documented;

    fn run(name: &str, outcome: Outcome) -> HostRun {
        let mut run = HostRun::new(crate::ssh::Target {
            name: name.into(),
            host: name.into(),
            port: 22,
            user: "deploy".into(),
            identity_files: Vec::new(),
            known_hosts: crate::ssh::KnownHostsPolicy::Strict,
            known_hosts_files: Vec::new(),
            proxy_jump: None,
            proxy_command: None,
            identity_agent: None,
            connect_timeout: std::time::Duration::from_secs(1),
        });
        run.outcome = outcome;
        run
    }

    /// A host in every outcome, so that every variant's fields are in the document.
    fn every_outcome() -> Vec<HostRun> {
        let s = || "x".to_owned();
        let mut runs = vec![
            run("pending", Outcome::Pending),
            run("skipped", Outcome::Skipped { reason: s() }),
            run("unreachable", Outcome::Unreachable { reason: s() }),
            run("locked", Outcome::Locked { holder: s() }),
            run(
                "failed",
                Outcome::Failed {
                    step: s(),
                    reason: s(),
                },
            ),
            run("done", Outcome::Done),
            run("rolled-back", Outcome::RolledBack { reason: s() }),
            run("broken", Outcome::Broken { reason: s() }),
            run("interrupted", Outcome::Interrupted { state: s() }),
            run("not-switched", Outcome::NotSwitched { reason: s() }),
        ];
        runs[5].transfer = Some(Transfer::Delta);
        runs[5].switched_to = Some("20261122T051233Z-3f2a9c1d".into());
        runs[5].warnings.push("cleanup: x".into());
        runs[6].journal = Some("journal".into());
        runs
    }

    #[test]
    fn the_summary_document_is_documented_field_by_field() {
        let runs = every_outcome();
        let ctx = Context {
            action: "deploy",
            release: Some("20261122T051233Z-3f2a9c1d"),
            version: Some("1.0"),
            sha256: Some("3f2a"),
        };
        let text = super::super::json::render(&document(&runs, Exit::Mixed, &ctx)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert!(text.starts_with("{\n  \"schema_version\": 1,"), "{text}");
        assert_eq!(v["hosts"][3]["holder"], "x");
        assert_documented("the deploy summary", &v, &[]);
        let words: Vec<&str> = v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["result"].as_str().unwrap())
            .collect();
        let doc = include_str!("../../docs/json.md");
        for word in words.iter().chain(["full", "delta", "cached"].iter()) {
            assert!(doc.contains(&format!("`{word}`")), "docs/json.md: `{word}`");
        }
    }
}
