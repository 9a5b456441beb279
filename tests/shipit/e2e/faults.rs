//! Reliability under faults, on real hosts: the fault matrix (SIGKILL, SIGTERM and a cut
//! link at every step of `deploy` and `rollback`), two deploys racing for the lock, a
//! disk that fills up, and a soak of deploy/rollback cycles.
//!
//! Steps are hit deterministically with `SHIPIT_TEST_STOP_AT` (src/faultpoint.rs): the
//! client stops itself at the step, the test applies the fault, then resumes it. Every
//! case records what happened; `RELIABILITY.md` is the table of those records, checked
//! against each run (see `reliability` below).
//!
//! `cargo test` runs a representative subset of the matrix; `SHIPIT_FAULTS=full` runs all
//! of it. `SHIPIT_SOAK_CYCLES=N` sets the soak's length (default 5; the soak command
//! `tests/soak.sh` uses 200).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::deploy::App;
use crate::e2e::Testbed;

const DEPLOY_DIR: &str = "/opt/hello";

// ---------------------------------------------------------------------------------------
// Processes: spawn stopped at a step, wait for the stop, wait for the end (all bounded).

fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// Wait until `child` has stopped itself at its fault point; false if it ended first.
fn wait_stopped(child: &mut Child, limit: Duration) -> bool {
    let started = Instant::now();
    loop {
        match proc_state(child.id()) {
            Some('T') | Some('t') => return true,
            Some('Z') | None => return false,
            _ => {}
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        assert!(
            started.elapsed() < limit,
            "shipit never reached its fault point within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid (ip netns exec execs shipit in place).
    unsafe { libc::kill(child.id() as i32, sig) };
}

struct Ended {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ended {
    fn how(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(9)) => "killed".into(),
            (None, Some(s)) => format!("signal {s}"),
            _ => "?".into(),
        }
    }
}

/// Wait for `child` to end, at most `limit` (then SIGKILL it and fail).
fn wait_end(mut child: Child, limit: Duration) -> Ended {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > limit {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
            panic!("shipit did not end within {limit:?}: {}", e.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ended {
        code: status.code(),
        signal: status.signal(),
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

fn spawn(app: &App, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = app.tb.shipit_command(&app.p, args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// What a host really looks like.

#[derive(Debug, Clone)]
struct Seen {
    /// Release id `current` points to.
    current: String,
    /// VERSION of that release ("" when it is not a complete release).
    version: String,
    lock: Option<serde_json::Value>,
    /// `.tmp-*` dirs and `*.part.*` artifacts.
    leftovers: Vec<String>,
    states: BTreeMap<String, String>,
}

fn look(app: &App, i: usize) -> Seen {
    let out = app.tb.root(
        i,
        &format!(
            "cd {DEPLOY_DIR} || exit 0
c=$(readlink current); echo \"current ${{c#releases/}}\"
if [ -f current/VERSION ] && [ -x current/bin/hello ] && [ -f current/.shipit/release.json ] && [ -f current/.env ]; then echo \"version $(cat current/VERSION)\"; fi
[ -d .shipit/lock ] && echo \"lock $(cat .shipit/lock/owner.json 2>/dev/null | tr -d '\\n')\"
for r in releases/.tmp-* .shipit/artifacts/*.part.*; do [ -e \"$r\" ] && echo \"leftover $r\"; done
for r in releases/*/; do r=${{r%/}}; printf 'state %s ' \"${{r#releases/}}\"; tr -d '\\n' < \"$r/.shipit/release.json\" 2>/dev/null; echo; done
"
        ),
    );
    let mut seen = Seen {
        current: String::new(),
        version: String::new(),
        lock: None,
        leftovers: Vec::new(),
        states: BTreeMap::new(),
    };
    for line in out.lines() {
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        match k {
            "current" => seen.current = v.to_owned(),
            "version" => seen.version = v.to_owned(),
            "lock" => seen.lock = Some(serde_json::from_str(v).unwrap_or(serde_json::Value::Null)),
            "leftover" => seen.leftovers.push(v.to_owned()),
            "state" => {
                let (id, json) = v.split_once(' ').unwrap_or((v, ""));
                let state = serde_json::from_str::<serde_json::Value>(json)
                    .ok()
                    .and_then(|j| j["state"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "incomplete".into());
                seen.states.insert(id.to_owned(), state);
            }
            _ => {}
        }
    }
    seen
}

/// The app answers, within `limit`, with the message of the release `current` points to
/// (a restart the killed client left running on the host may still be finishing).
fn answers_current(app: &App, i: usize, limit: Duration) -> Result<String, String> {
    let started = Instant::now();
    loop {
        let seen = look(app, i);
        let want = format!("hello v{}", seen.version);
        let got = app.http(i);
        if !seen.version.is_empty() && got == want {
            return Ok(seen.version);
        }
        if started.elapsed() > limit {
            return Err(format!(
                "host {}: current -> {} (version {:?}), app answers {got:?}",
                i + 1,
                seen.current,
                seen.version
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pid_alive(pid: u64) -> bool {
    matches!(proc_state(pid as u32), Some(c) if c != 'Z')
}

/// `shipit status --json` against what is really on the hosts: current, every release's
/// state, and the lock (held or not; when held by a dead process, said to be stale).
/// Returns a short description of the locks.
fn status_tells_the_truth(app: &App, hosts: usize) -> String {
    let out = app.shipit(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}\n{}\n{}", out.stdout, out.stderr));
    let mut locks = Vec::new();
    for i in 0..hosts {
        let seen = look(app, i);
        let h = &doc["hosts"][i];
        assert_eq!(
            h["current"].as_str().unwrap_or(""),
            seen.current,
            "status says current is {} on host {}, the host says {}",
            h["current"],
            i + 1,
            seen.current
        );
        for row in h["releases"].as_array().unwrap() {
            let id = row["id"].as_str().unwrap();
            assert_eq!(
                Some(row["state"].as_str().unwrap()),
                seen.states.get(id).map(String::as_str),
                "status and release.json disagree about {id} on host {}",
                i + 1
            );
        }
        assert_eq!(
            h["releases"].as_array().unwrap().len(),
            seen.states.len(),
            "status lists every release on host {}",
            i + 1
        );
        match &seen.lock {
            None => assert!(
                h["lock"].is_null(),
                "status says locked, the host has no lock: {h:#}"
            ),
            Some(owner) => {
                let text = h["lock"]
                    .as_str()
                    .unwrap_or_else(|| panic!("host {} is locked, status says not: {h:#}", i + 1));
                let pid = owner["pid"].as_u64().unwrap_or(0);
                assert!(text.contains(&format!("pid {pid}")), "{text}");
                let dead = !pid_alive(pid);
                assert_eq!(
                    text.contains("stale"),
                    dead,
                    "status says whether the holder (pid {pid}, alive: {}) is gone: {text}",
                    !dead
                );
                assert_eq!(h["lock_stale"].as_bool(), Some(dead), "{h:#}");
                locks.push(format!(
                    "host{}: {}",
                    i + 1,
                    if dead { "stale lock" } else { "lock held" }
                ));
            }
        }
    }
    if locks.is_empty() {
        "no lock".into()
    } else {
        locks.join(", ")
    }
}

// ---------------------------------------------------------------------------------------
// RELIABILITY.md: every case records a row; the file is the table of those rows.

/// One row of RELIABILITY.md. `outcome` must be the same on every run; `figures` are
/// run-dependent (timings, memory) and are not compared.
#[derive(Debug, Clone)]
pub struct Row {
    pub case: String,
    pub runs: u32,
    pub outcome: String,
    pub figures: String,
}

mod reliability {
    //! Each suite renders its rows into its own section of RELIABILITY.md, between
    //! `<!-- suite:NAME -->` and `<!-- /suite:NAME -->`. After a run, every row it
    //! produced must be in the committed file with the same `runs` and `outcome`;
    //! otherwise the test fails and says how to regenerate (`SHIPIT_RELIABILITY_WRITE=1`
    //! rewrites the rows this run produced, the run's commit and date, and the figures).
    //! So the document cannot claim what the suite no longer sees.

    use super::Row;
    use std::path::PathBuf;

    fn path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("RELIABILITY.md")
    }

    fn cell(s: &str) -> String {
        s.replace('|', "\\|").replace('\n', " ")
    }

    fn parse_row(line: &str) -> Option<Row> {
        let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
        let cols: Vec<String> = inner
            .replace("\\|", "\u{1}")
            .split('|')
            .map(|c| c.trim().replace('\u{1}', "|"))
            .collect();
        if cols.len() != 4 || cols[0] == "case" || cols[0].starts_with("---") {
            return None;
        }
        Some(Row {
            case: cols[0]
                .strip_prefix('`')
                .and_then(|c| c.strip_suffix('`'))
                .unwrap_or(&cols[0])
                .to_owned(),
            runs: cols[1].parse().ok()?,
            outcome: cols[2].clone(),
            figures: cols[3].clone(),
        })
    }

    fn render(suite: &str, rows: &[Row], produced_by: &str) -> String {
        let mut s = format!(
            "<!-- suite:{suite} -->\n{produced_by}\n\n| case | runs | what happened | figures (this run) |\n|---|---|---|---|\n"
        );
        for r in rows {
            s.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                cell(&r.case),
                r.runs,
                cell(&r.outcome),
                cell(&r.figures)
            ));
        }
        s.push_str(&format!("<!-- /suite:{suite} -->"));
        s
    }

    fn commit() -> String {
        std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into())
    }

    fn today() -> String {
        std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    /// Check (or, with SHIPIT_RELIABILITY_WRITE=1, write) `suite`'s rows. `complete`:
    /// this run produced every row of the suite (a write drops rows it did not produce).
    pub fn record(suite: &str, command: &str, rows: &[Row], complete: bool) {
        let text = std::fs::read_to_string(path()).unwrap_or_default();
        let (open, close) = (
            format!("<!-- suite:{suite} -->"),
            format!("<!-- /suite:{suite} -->"),
        );
        let section = match (text.find(&open), text.find(&close)) {
            (Some(a), Some(b)) if a < b => Some((a, b + close.len())),
            _ => None,
        };
        let committed: Vec<Row> = section
            .map(|(a, b)| text[a..b].lines().filter_map(parse_row).collect())
            .unwrap_or_default();
        if std::env::var("SHIPIT_RELIABILITY_WRITE").as_deref() == Ok("1") {
            // Rows this run produced replace theirs; rows of cases it did not run stay.
            let mut merged = if complete {
                Vec::new()
            } else {
                committed.clone()
            };
            for r in rows {
                match merged.iter_mut().find(|c| c.case == r.case) {
                    Some(c) => *c = r.clone(),
                    None => merged.push(r.clone()),
                }
            }
            let by = format!(
                "Produced by `{command}` at commit {} on {}.",
                commit(),
                today()
            );
            let block = render(suite, &merged, &by);
            let new = match section {
                Some((a, b)) => format!("{}{block}{}", &text[..a], &text[b..]),
                None => format!("{text}\n{block}\n"),
            };
            std::fs::write(path(), new).unwrap();
            return;
        }
        let mut wrong = Vec::new();
        for r in rows {
            match committed.iter().find(|c| c.case == r.case) {
                None => wrong.push(format!("`{}`: not in RELIABILITY.md", r.case)),
                Some(c) if c.runs != r.runs || c.outcome != r.outcome => wrong.push(format!(
                    "`{}`: RELIABILITY.md says {} run(s): {:?}; this run: {} run(s): {:?}",
                    r.case, c.runs, c.outcome, r.runs, r.outcome
                )),
                Some(_) => {}
            }
        }
        assert!(
            wrong.is_empty(),
            "RELIABILITY.md does not match what the suite saw (regenerate with SHIPIT_RELIABILITY_WRITE=1 {command}, review, commit):\n{}",
            wrong.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------
// The fault matrix.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Kill,
    Term,
    Link,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL",
            Fault::Term => "SIGTERM",
            Fault::Link => "link cut",
        }
    }
}

/// Steps as the issue names them, and the fault point that is each one.
const DEPLOY_STEPS: &[(&str, &str)] = &[
    ("lock", "lock"),
    ("upload", "upload"),
    ("unpack", "unpack"),
    ("link", "link"),
    ("hooks", "before_switch:1"),
    ("switch", "switch"),
    ("restart", "restart"),
    ("health", "health"),
    ("cleanup", "cleanup"),
];
const ROLLBACK_STEPS: &[(&str, &str)] = &[
    ("lock", "lock"),
    ("switch", "switch"),
    ("restart", "restart"),
    ("health", "health"),
    ("hooks", "after_rollback:1"),
    ("cleanup", "cleanup"),
];

/// The cases `cargo test` runs: every fault kind, every command, the steps where each
/// matters most (before anything changes, mid-stage, at the switch, while restarting,
/// while health-checking, after it all).
const SUBSET: &[(&str, &str, Fault)] = &[
    ("deploy", "upload", Fault::Kill),
    ("deploy", "unpack", Fault::Term),
    ("deploy", "switch", Fault::Kill),
    ("deploy", "restart", Fault::Term),
    ("deploy", "health", Fault::Link),
    ("deploy", "cleanup", Fault::Kill),
    ("rollback", "switch", Fault::Kill),
    ("rollback", "health", Fault::Term),
    ("rollback", "restart", Fault::Link),
];

struct Matrix<'a> {
    app: App<'a>,
    hosts: usize,
    n: u32,
}

impl Matrix<'_> {
    fn next_version(&mut self) -> String {
        self.n += 1;
        self.n.to_string()
    }

    /// Deploy a fresh version; it must work. Returns the version.
    fn deploy_ok(&mut self) -> String {
        let v = self.next_version();
        self.app.set_version(&v);
        let msg = format!("hello v{v}");
        let (out, _) = self.app.deploy(&v, &[("MESSAGE", &msg)], &[]);
        assert_eq!(out.code, 0, "setup deploy {v}: {}", out.stderr);
        v
    }

    fn where_is(&self, i: usize, old: &str, new: &str) -> String {
        let v = look(&self.app, i).version;
        if v == old {
            "old".into()
        } else if v == new {
            "target".into()
        } else {
            format!("v{v}?")
        }
    }

    /// Wait (bounded) until no host has a guard armed: each one the faulted run left
    /// fires once confirm_timeout (5 s here) has passed. `status --json` shows an armed
    /// guard while it waits. Returns where each host is then, and checks that the app
    /// answers with it.
    fn guards_settle(&self, old: &str, new: &str) -> Vec<String> {
        let armed = |i: usize| {
            self.app
                .tb
                .root(
                    i,
                    &format!("if test -e {DEPLOY_DIR}/.shipit/guard; then echo armed; fi"),
                )
                .contains("armed")
        };
        let before: Vec<bool> = (0..self.hosts).map(armed).collect();
        if before.iter().any(|a| *a) {
            let out = self.app.shipit(&["status", "--json"]);
            let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
            for (i, was) in before.iter().enumerate() {
                // A guard may fire between the look and the status: only a guard still
                // armed after the status must have been shown.
                if *was && armed(i) {
                    assert!(
                        doc["hosts"][i]["guard"].is_object(),
                        "host {} has a guard armed, status does not show it: {}",
                        i + 1,
                        out.stdout
                    );
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while (0..self.hosts).any(armed) {
            assert!(
                Instant::now() < deadline,
                "a guard did not fire within 30 s"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        (0..self.hosts)
            .map(|i| {
                answers_current(&self.app, i, Duration::from_secs(15))
                    .unwrap_or_else(|e| panic!("after the guards: {e}"));
                format!("host{}: {}", i + 1, self.where_is(i, old, new))
            })
            .collect()
    }

    /// One case: start the command stopped at `point` on host 1, apply `fault`, resume,
    /// then check the invariants and rerun. Returns the row.
    fn case(&mut self, command: &str, step: &str, point: &str, fault: Fault) -> Row {
        let started = Instant::now();
        let ip0 = self.app.tb.host(0).ip.clone();
        // Setup: old = what runs now; new = what the command moves to.
        let (old, new, args): (String, String, Vec<String>) = if command == "deploy" {
            let old = look(&self.app, 0).version;
            let new = self.next_version();
            self.app.set_version(&new);
            (
                old,
                new.clone(),
                vec!["deploy".into(), "--app-version".into(), new],
            )
        } else {
            let back_to = self.deploy_ok();
            // Rollback goes from `old` to the release of `back_to`, named explicitly: a
            // plain `rollback` rerun after a switched-but-killed one would go one further.
            let back_id = self.app.current(0);
            let old = self.deploy_ok();
            (
                old,
                back_to,
                vec!["rollback".into(), "--to".into(), back_id],
            )
        };
        let msg = format!("hello v{}", if command == "deploy" { &new } else { &old });
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stop = format!("{point}@{ip0}");
        let mut child = spawn(
            &self.app,
            &args,
            &[("MESSAGE", &msg), ("SHIPIT_TEST_STOP_AT", &stop)],
        );
        let reached = wait_stopped(&mut child, Duration::from_secs(90));
        let cut = Instant::now();
        if reached {
            match fault {
                Fault::Kill => signal(&child, libc::SIGKILL),
                Fault::Term => {
                    signal(&child, libc::SIGTERM);
                    signal(&child, libc::SIGCONT);
                }
                Fault::Link => {
                    self.app.tb.fault(&["link-down", "host1"]);
                    signal(&child, libc::SIGCONT);
                }
            }
        }
        let ended = wait_end(child, Duration::from_secs(180));
        let took = cut.elapsed();
        if fault == Fault::Link && reached {
            self.app.tb.fault(&["link-up", "host1"]);
        }
        assert!(
            reached,
            "{command} never reached {point} ({}):\n{}",
            ended.how(),
            ended.stderr
        );
        // After the fault: every host's `current` is a complete release, and the app
        // answers with it (old or new, never neither).
        let mut places = Vec::new();
        for i in 0..self.hosts {
            let seen = look(&self.app, i);
            assert!(
                !seen.version.is_empty(),
                "{command}/{step}/{}: host {} current -> {:?} is not a complete release",
                fault.name(),
                i + 1,
                seen.current
            );
            if let Err(e) = answers_current(&self.app, i, Duration::from_secs(15)) {
                panic!("{command}/{step}/{}: {e}", fault.name());
            }
            places.push(format!("host{}: {}", i + 1, self.where_is(i, &old, &new)));
        }
        let locks = status_tells_the_truth(&self.app, self.hosts);
        // host2's lock after a fault in the finish phase depends on which host's finish
        // ran first (they are not ordered): only the faulted host's goes in the outcome.
        let host1_lock = locks
            .split(", ")
            .find(|l| l.starts_with("host1:"))
            .map_or("host1: no lock".to_owned(), str::to_owned);
        // Once confirm_timeout has passed, every guard the faulted run left has fired:
        // the fleet is never mixed (all old, or all target), whatever the fault.
        let after_guards = self.guards_settle(&old, &new);
        let settled: Vec<&str> = after_guards
            .iter()
            .map(|p| p.split_once(": ").map_or("", |(_, w)| w))
            .collect();
        assert!(
            settled.windows(2).all(|w| w[0] == w[1]),
            "{command}/{step}/{}: a mixed fleet once the guards had their time: {after_guards:?}",
            fault.name()
        );
        // A rerun of the same command works and leaves everything on `new`.
        let rerun = self.app.run_with(&args, &[("MESSAGE", &msg)]);
        assert_eq!(
            rerun.code,
            0,
            "{command}/{step}/{}: the rerun failed:\n{}\n{}",
            fault.name(),
            rerun.stdout,
            rerun.stderr
        );
        for i in 0..self.hosts {
            let seen = look(&self.app, i);
            assert_eq!(
                seen.version,
                new,
                "after the rerun, host {} runs new",
                i + 1
            );
            assert_eq!(
                seen.states.get(&seen.current).map(String::as_str),
                Some("live"),
                "{command}/{step}/{}: after the rerun, host {}'s current release is live: {seen:?}",
                fault.name(),
                i + 1
            );
            assert!(seen.lock.is_none(), "no lock left after the rerun");
            assert!(
                seen.leftovers.is_empty(),
                "half-made leftovers after the rerun: {:?}",
                seen.leftovers
            );
            answers_current(&self.app, i, Duration::from_secs(15)).unwrap();
        }
        let after_rerun = status_tells_the_truth(&self.app, self.hosts);
        assert_eq!(after_rerun, "no lock");
        Row {
            case: format!("{command} / {step} / {}", fault.name()),
            runs: 1,
            outcome: format!(
                "{}; {}; app answered its current release; status agreed, {host1_lock}; \
                 after confirm_timeout: {}; rerun: exit 0, both hosts on target and live",
                ended.how(),
                places.join(", "),
                after_guards.join(", ")
            ),
            figures: format!(
                "status: {locks}; ended {:.1}s after the fault; case {:.0}s",
                took.as_secs_f64(),
                started.elapsed().as_secs_f64()
            ),
        }
    }
}

fn full() -> bool {
    std::env::var("SHIPIT_FAULTS").as_deref() == Ok("full")
}

#[test]
fn every_fault_at_every_step_leaves_a_working_host_and_a_rerun_fixes_it() {
    let Some(tb) = Testbed::up("e2e-faults", 2) else {
        return;
    };
    let app = App::new(
        &tb,
        &[0, 1],
        // One host at a time: what host2 went through when host1 was hit is then always
        // the same, so the table can be compared run to run.
        "rollout: {canary: 0, parallel: 1, confirm_timeout: 5s}\nkeep_releases: 3\n",
    );
    app.p.file(
        "deploy.yaml",
        &app.p.read("deploy.yaml").replace(
            "  before_switch: ['test -x bin/hello']",
            "  before_switch: ['test -x bin/hello']\n  after_rollback: ['true']",
        ),
    );
    let mut m = Matrix {
        app,
        hosts: 2,
        n: 0,
    };
    m.deploy_ok();
    let mut cases: Vec<(&str, &str, &str, Fault)> = Vec::new();
    for (command, steps) in [("deploy", DEPLOY_STEPS), ("rollback", ROLLBACK_STEPS)] {
        for &(step, point) in steps {
            for fault in [Fault::Kill, Fault::Term, Fault::Link] {
                if full() || SUBSET.contains(&(command, step, fault)) {
                    cases.push((command, step, point, fault));
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (command, step, point, fault) in cases {
        rows.push(m.case(command, step, point, fault));
    }
    reliability::record(
        "faults",
        "SHIPIT_FAULTS=full cargo test --locked --test shipit e2e::faults::every_fault",
        &rows,
        full(),
    );
}

// ---------------------------------------------------------------------------------------
// Two deploys at once.

#[test]
fn two_deploys_started_at_once_one_proceeds_the_other_exits_3_naming_the_holder() {
    let Some(tb) = Testbed::up("e2e-race", 2) else {
        return;
    };
    let extra = "rollout: {canary: 0, parallel: 2}\nkeep_releases: 2\n";
    // Two operators, two checkouts, the same hosts.
    let a = App::new(&tb, &[0, 1], extra);
    let b = App::new(&tb, &[0, 1], extra);
    a.set_version("0");
    let (out, _) = a.deploy("0", &[("MESSAGE", "hello v0")], &[]);
    out.code(0);
    let reps = 20;
    let mut a_won = 0;
    let mut took = Vec::new();
    for r in 0..reps {
        let (va, vb) = (format!("{}", 2 * r + 1), format!("{}", 2 * r + 2));
        a.set_version(&va);
        b.set_version(&vb);
        let (ma, mb) = (format!("hello v{va}"), format!("hello v{vb}"));
        let env = |m: &str| {
            vec![
                ("MESSAGE", m.to_owned()),
                ("SHIPIT_TEST_STOP_AT", "lock".to_owned()),
            ]
        };
        let spawn_env = |app: &App, v: &str, m: &str| {
            let e = env(m);
            let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
            spawn(app, &["deploy", "--app-version", v, "--json"], &e)
        };
        let mut ca = spawn_env(&a, &va, &ma);
        let mut cb = spawn_env(&b, &vb, &mb);
        assert!(
            wait_stopped(&mut ca, Duration::from_secs(90)),
            "a reached the lock"
        );
        assert!(
            wait_stopped(&mut cb, Duration::from_secs(90)),
            "b reached the lock"
        );
        let (pa, pb) = (ca.id(), cb.id());
        // Released at the same moment, in turn first or second.
        let t = Instant::now();
        if r % 2 == 0 {
            signal(&ca, libc::SIGCONT);
            signal(&cb, libc::SIGCONT);
        } else {
            signal(&cb, libc::SIGCONT);
            signal(&ca, libc::SIGCONT);
        }
        let ea = wait_end(ca, Duration::from_secs(120));
        let eb = wait_end(cb, Duration::from_secs(120));
        took.push(t.elapsed().as_secs_f64());
        let codes = (ea.code, eb.code);
        let (winner, loser, winner_pid, v) = match codes {
            (Some(0), Some(3)) => (&ea, &eb, pa, &va),
            (Some(3), Some(0)) => (&eb, &ea, pb, &vb),
            _ => panic!(
                "repetition {r}: exactly one deploy proceeds and the other exits 3; got {} and {}:\n--- a\n{}\n--- b\n{}",
                ea.how(),
                eb.how(),
                ea.stderr,
                eb.stderr
            ),
        };
        if winner_pid == pa {
            a_won += 1;
        }
        let _ = winner;
        let said = format!("{}{}", loser.stdout, loser.stderr);
        assert!(
            said.contains(&format!("(pid {winner_pid})"))
                && said.contains("running `shipit deploy`"),
            "repetition {r}: the loser names the holder (pid {winner_pid}):\n{said}"
        );
        for i in 0..2 {
            let seen = look(&a, i);
            assert_eq!(
                &seen.version,
                v,
                "repetition {r}: host {} runs the winner's release",
                i + 1
            );
            assert!(seen.lock.is_none(), "repetition {r}: no lock left");
        }
    }
    took.sort_by(f64::total_cmp);
    reliability::record(
        "concurrency",
        "cargo test --locked --test shipit e2e::faults::two_deploys",
        &[Row {
            case: "two `shipit deploy` started at the same moment on the same 2 hosts".into(),
            runs: reps,
            outcome: "every time: exactly one exit 0 (both hosts on its release), the other exit 3 naming the holder (user@machine, pid, command); no lock left".into(),
            figures: format!(
                "first-started process won {a_won} of {reps}; both ended within {:.1}-{:.1}s",
                took[0],
                took[took.len() - 1]
            ),
        }],
        true,
    );
}

// ---------------------------------------------------------------------------------------
// A disk that fills up.

#[test]
fn a_disk_that_fills_during_upload_or_unpack_switches_nothing_and_leaves_no_target() {
    let Some(tb) = Testbed::up_with("e2e-diskfull", 2, &["--small-opt", "host2:80M"]) else {
        return;
    };
    // delta: off: these cases are about the whole artifact arriving and unpacking (a
    // delta of this change would be a few hundred bytes).
    let app = App::new(
        &tb,
        &[0, 1],
        "rollout: {canary: 0, parallel: 2}\ndelta: off\n",
    );
    app.set_version("1");
    let (out, summary) = app.deploy("1", &[("MESSAGE", "hello v1")], &[]);
    out.code(0);
    let good = summary["release"].as_str().unwrap().to_owned();
    let ip1 = tb.host(1).ip.clone();
    let ids = |i: usize| -> Vec<String> { look(&app, i).states.into_keys().collect() };
    let nothing_switched = |what: &str, summary: &serde_json::Value, before: &[Vec<String>]| {
        for (i, before) in before.iter().enumerate() {
            let seen = look(&app, i);
            assert_eq!(
                seen.current,
                good,
                "{what}: host {} still on the good release",
                i + 1
            );
            assert_eq!(app.http(i), "hello v1", "{what}: the app answers");
            assert!(seen.lock.is_none(), "{what}: the lock is released");
            assert!(
                seen.leftovers.is_empty(),
                "{what}: host {} keeps no partial file: {:?}",
                i + 1,
                seen.leftovers
            );
            for (id, state) in &seen.states {
                assert!(
                    before.contains(id) || state == "failed",
                    "{what}: host {} keeps release {id} as {state}: only `failed` (never a rollback target) is allowed",
                    i + 1
                );
            }
        }
        let h2 = &summary["hosts"][1];
        assert_eq!(h2["result"], "failed", "{what}: {summary:#}");
        let reason = h2["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("No space left on device"),
            "{what}: a clear error: {reason}"
        );
        reason.to_owned()
    };
    let mut rows = Vec::new();

    // 1. /opt fills up just as the upload begins.
    let before = [ids(0), ids(1)];
    app.set_version("2");
    let stop = format!("upload@{ip1}");
    let mut child = spawn(
        &app,
        &["deploy", "--app-version", "2", "--json"],
        &[("MESSAGE", "hello v2"), ("SHIPIT_TEST_STOP_AT", &stop)],
    );
    assert!(wait_stopped(&mut child, Duration::from_secs(90)));
    tb.fault(&["fill-opt", "host2"]);
    signal(&child, libc::SIGCONT);
    let ended = wait_end(child, Duration::from_secs(120));
    let summary: serde_json::Value = serde_json::from_str(&ended.stdout).unwrap_or_default();
    assert_eq!(ended.code, Some(1), "{}", ended.stderr);
    let reason = nothing_switched("full during the upload", &summary, &before);
    assert_eq!(summary["hosts"][1]["step"], "upload", "{reason}");
    rows.push(Row {
        case: "/opt fills up during the upload (host2 of 2)".into(),
        runs: 1,
        outcome: "exit 1, host2 `failed` at upload with `No space left on device`; nothing switched anywhere; no partial artifact; no release left as a rollback target".into(),
        figures: String::new(),
    });
    tb.fault(&["unfill-opt", "host2"]);
    let (out, _) = app.deploy("2", &[("MESSAGE", "hello v2")], &[]);
    out.code(0);
    // Back to the good release for the next case.
    let out = app.shipit(&["rollback", "--to", &good]);
    out.code(0);

    // 2. An artifact that fits compressed but not unpacked (120 MB of zeros, 80 MB disk).
    let before = [ids(0), ids(1)];
    std::fs::write(app.p.path().join("pkg/bin/zeros"), vec![0u8; 120 << 20]).unwrap();
    app.set_version("3");
    let (out, summary) = app.deploy("3", &[("MESSAGE", "hello v3")], &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let reason = nothing_switched("full while unpacking", &summary, &before);
    // The whole artifact is unpacked as it arrives: one step, `upload`.
    assert_eq!(summary["hosts"][1]["step"], "upload", "{reason}");
    rows.push(Row {
        case: "artifact fits compressed but not unpacked (host2 of 2)".into(),
        runs: 1,
        outcome: "exit 1, host2 `failed` at upload (unpacked as it arrives) with `No space left on device`; nothing switched anywhere; the half-unpacked dir removed; no release left as a rollback target".into(),
        figures: String::new(),
    });
    std::fs::remove_file(app.p.path().join("pkg/bin/zeros")).unwrap();
    app.set_version("4");
    let (out, _) = app.deploy("4", &[("MESSAGE", "hello v4")], &[]);
    out.code(0);
    assert_eq!(app.http(1), "hello v4");
    reliability::record(
        "disk",
        "cargo test --locked --test shipit e2e::faults::a_disk",
        &rows,
        true,
    );
}

// ---------------------------------------------------------------------------------------
// Soak.

/// Run `cmd`, sampling its open fds; returns the output, peak RSS (KiB, from wait4) and
/// peak open fds.
fn run_measured(mut cmd: Command) -> (Option<i32>, String, u64, usize) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut err = child.stderr.take().unwrap();
    let e = std::thread::spawn(move || {
        use std::io::Read;
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut peak_fds = 0;
    let started = Instant::now();
    let (status, rss) = loop {
        if let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            peak_fds = peak_fds.max(d.count());
        }
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid out-parameter for wait4.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child's pid, without blocking.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break (status, ru.ru_maxrss as u64);
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "soak cycle hung"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    std::mem::forget(child);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, e.join().unwrap(), rss, peak_fds)
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn soak_deploy_and_rollback_cycles_stay_bounded() {
    let cycles: usize = std::env::var("SHIPIT_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(2);
    let Some(tb) = Testbed::up("e2e-soak", 3) else {
        return;
    };
    let keep = 3;
    let app = App::new(
        &tb,
        &[0, 1, 2],
        &format!("rollout: {{canary: 0, parallel: 3}}\nkeep_releases: {keep}\n"),
    );
    app.set_version("0");
    let (out, _) = app.deploy("0", &[("MESSAGE", "hello v0")], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (mut rss, mut fds) = (Vec::new(), Vec::new());
    let mut max_releases = 0;
    let started = Instant::now();
    for c in 0..cycles {
        let v = (c + 1).to_string();
        app.set_version(&v);
        for args in [
            vec!["deploy", "--app-version", v.as_str()],
            vec!["rollback"],
        ] {
            let mut cmd = tb.shipit_command(&app.p, &args);
            cmd.env("MESSAGE", format!("hello v{v}"));
            let (code, stderr, r, f) = run_measured(cmd);
            assert_eq!(code, Some(0), "cycle {c}: {args:?} failed:\n{stderr}");
            rss.push(r);
            fds.push(f as u64);
        }
        for i in 0..3 {
            let n = look(&app, i).states.len();
            max_releases = max_releases.max(n);
            assert!(
                n <= keep + 1,
                "cycle {c}: host {} keeps {n} releases, keep_releases is {keep}",
                i + 1
            );
        }
    }
    // Growth: the last fifth of the runs against the first fifth (medians; at least 2).
    let k = (rss.len() / 5).max(2);
    let (rss0, rss1) = (median(&rss[..k]), median(&rss[rss.len() - k..]));
    let (fd0, fd1) = (median(&fds[..k]), median(&fds[fds.len() - k..]));
    assert!(
        rss1 <= rss0 + rss0 / 10 + 2048,
        "the client's peak RSS grew from {rss0} KiB to {rss1} KiB over {cycles} cycles"
    );
    assert!(
        fd1 <= fd0 + 2,
        "the client's open files grew from {fd0} to {fd1} over {cycles} cycles"
    );
    reliability::record(
        "soak",
        "SHIPIT_SOAK_CYCLES=200 cargo test --locked --test shipit e2e::faults::soak",
        &[Row {
            case: format!("soak: {cycles} deploy+rollback cycles on 3 hosts, keep_releases {keep}"),
            runs: cycles as u32,
            outcome: format!(
                "0 failures; releases on disk never above keep_releases+1 ({}); no growth of the client's peak RSS or open files",
                keep + 1
            ),
            figures: format!(
                "peak RSS {rss0}->{rss1} KiB (median first/last fifth), max {} KiB; peak open fds {fd0}->{fd1}, max {}; at most {max_releases} releases on a host; {:.0}s",
                rss.iter().max().unwrap(),
                fds.iter().max().unwrap(),
                started.elapsed().as_secs_f64()
            ),
        }],
        // The CI run and the long soak have rows of their own.
        false,
    );
}
