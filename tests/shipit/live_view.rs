//! The live view on a real terminal: `shipit deploy` (packaging included) in a detached
//! tmux session of 120x30 against three local sshd servers, the screen captured every
//! 100 ms until the run ends, and every byte the terminal received kept (`pipe-pane`).
//!
//! The servers are the SSH tests' (tests/shipit/ssh/sshd.rs), each in a mount namespace
//! of its own with a directory of its own at the app's `deploy_to`: three hosts on one
//! machine. The upload is 32 MiB per host and a `before_switch` hook sleeps, so the view
//! stays up for a while; the `after_switch` hook sleeps a different time on each host, so
//! the hosts finish one by one. Needs root, sshd, tmux and unshare, like the SSH tests
//! (`SHIPIT_SKIP_E2E=1` skips it loudly when they are missing).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::ssh::sshd::{self, Sshd};
use crate::support::Project;

const HOSTS: [&str; 3] = ["web-alpha", "web-bravo", "web-charlie"];
/// Seconds each host's `after_switch` hook sleeps: they finish in this order.
const PACE: [&str; 3] = ["0.2", "0.9", "1.6"];
const COLUMNS: u16 = 120;
const LINES: u16 = 30;
const BLOB: usize = 32 << 20;
const POLL: Duration = Duration::from_millis(100);
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// A tmux server of this test's own (its own socket) running one command in a detached
/// session; killed, by that socket, when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// `sh script` in a `COLUMNS`x`LINES` session whose pane stays after the command ends
    /// (so its last screen can be read); every byte the pane receives is also appended to
    /// `raw`. `pipe-pane` is in the same tmux command as `new-session`, so it is in place
    /// before the pane's first output is read.
    fn start(dir: &Path, script: &Path, raw: &Path) -> Tmux {
        let conf = dir.join("tmux.conf");
        std::fs::write(
            &conf,
            "set -g remain-on-exit on\nset -g status off\nset -g history-limit 10000\n",
        )
        .unwrap();
        let tmux = Tmux {
            socket: dir.join("tmux.sock"),
        };
        let out = tmux
            .command()
            .arg("-f")
            .arg(&conf)
            .args(["new-session", "-d", "-s", "live", "-x"])
            .arg(COLUMNS.to_string())
            .arg("-y")
            .arg(LINES.to_string())
            .arg(format!("sh {}", quote(script)))
            .args([";", "pipe-pane", "-t", "live"])
            .arg(format!("cat >{}", quote(raw)))
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn command(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-u").arg("-S").arg(&self.socket).env_remove("TMUX");
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The visible screen.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "live"])
    }

    /// Everything the pane holds: the scrollback, then the screen.
    fn everything(&self) -> String {
        self.run(&["capture-pane", "-p", "-S", "-", "-E", "-", "-t", "live"])
    }

    fn pane_dead(&self) -> bool {
        self.run(&["display-message", "-p", "-t", "live", "#{pane_dead}"])
            .trim()
            == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

fn quote(path: &Path) -> String {
    let s = path.display().to_string();
    assert!(!s.contains('\''), "{s}");
    format!("'{s}'")
}

/// Bytes that do not compress (xorshift), so the artifact is as big as the file.
fn incompressible(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A spinner frame (indicatif's are braille).
fn is_glyph(c: char) -> bool {
    ('\u{2800}'..='\u{28ff}').contains(&c)
}

/// A row about one host: its name first, after a spinner glyph or not (a live row, or a
/// summary row). `(host, spinning, the rest)`. Lines that only mention a host (`canary:
/// switching web-alpha`, `web-alpha: <hook output>`) are not rows of it.
fn host_row(line: &str) -> Option<(&'static str, bool, &str)> {
    let line = line.trim_start();
    let (spinning, line) = match line.chars().next() {
        Some(c) if is_glyph(c) => (true, line[c.len_utf8()..].trim_start()),
        _ => (false, line),
    };
    let name = line.split_whitespace().next()?;
    let host = HOSTS.iter().find(|h| **h == name)?;
    Some((host, spinning, line[name.len()..].trim()))
}

/// The overall row's `done/total hosts finished, elapsed`.
fn overall(line: &str) -> Option<(u64, u64, String)> {
    let (before, after) = line.split_once(" hosts finished, ")?;
    let count = before.rsplit(' ').next()?;
    let (done, total) = count.split_once('/')?;
    let elapsed = after.split_whitespace().next()?.to_owned();
    Some((done.parse().ok()?, total.parse().ok()?, elapsed))
}

/// What the captures showed, over the whole run.
#[derive(Default)]
struct Seen {
    captures: usize,
    live: usize,
    counts: Vec<u64>,
    elapsed: Vec<String>,
}

/// The checks every capture must pass.
fn check(screen: &str, seen: &mut Seen) -> Result<(), String> {
    let lines: Vec<&str> = screen.lines().collect();
    for host in HOSTS {
        let rows: Vec<&&str> = lines
            .iter()
            .filter(|l| host_row(l).is_some_and(|(h, ..)| h == host))
            .collect();
        if rows.len() > 1 {
            return Err(format!("{host} has {} rows: {rows:#?}", rows.len()));
        }
    }
    for (host, spinning, rest) in lines.iter().filter_map(|l| host_row(l)) {
        if spinning && rest == "done" {
            return Err(format!("{host} is done and still spinning"));
        }
    }
    if let Some(l) = lines.iter().find(|l| l.contains("0/0 hosts finished")) {
        return Err(format!("an empty overall row: {l:?}"));
    }
    let rows: Vec<_> = lines.iter().filter_map(|l| overall(l)).collect();
    if rows.len() > 1 {
        return Err(format!("{} overall rows", rows.len()));
    }
    let bars = lines
        .iter()
        .filter(|l| l.starts_with("packaging ["))
        .count();
    if bars > 1 {
        return Err(format!("{bars} packaging bars"));
    }
    let live = !rows.is_empty() || lines.iter().any(|l| host_row(l).is_some_and(|r| r.1));
    if bars > 0 && live {
        return Err("the packaging bar and the live view at once".into());
    }
    if let Some((done, total, elapsed)) = rows.into_iter().next() {
        if total != HOSTS.len() as u64 {
            return Err(format!("the overall row counts {total} hosts"));
        }
        if seen.counts.last().is_some_and(|&last| done < last) {
            return Err(format!("the finished count went back to {done}"));
        }
        seen.counts.push(done);
        seen.elapsed.push(elapsed);
    }
    seen.captures += 1;
    seen.live += usize::from(live);
    Ok(())
}

/// Lines of `text` that contain `what`.
fn count(text: &str, what: &str) -> usize {
    text.lines().filter(|l| l.contains(what)).count()
}

#[test]
fn deploy_on_a_terminal_shows_one_row_per_host_then_only_the_summary() {
    if sshd::prerequisites_with(&[("tmux", "tmux"), ("unshare", "util-linux")]).is_none() {
        return;
    }
    // Every server's sessions see a directory of their own here.
    let deploy_to = tempfile::tempdir().unwrap();
    let servers: Vec<Sshd> = HOSTS
        .iter()
        .map(|_| Sshd::start_with_own(deploy_to.path()))
        .collect();
    let key = &servers[0].client_key;
    let public = sshd::public_key(key);
    let mut known_hosts = String::new();
    for (server, pace) in servers.iter().zip(PACE) {
        // One key for all three.
        let mut keys = std::fs::OpenOptions::new()
            .append(true)
            .open(server.path("authorized_keys"))
            .unwrap();
        writeln!(keys, "{public}").unwrap();
        std::fs::write(server.own.as_ref().unwrap().join("pace"), pace).unwrap();
        known_hosts.push_str(&format!(
            "[127.0.0.1]:{} {}\n",
            server.port, server.host_key
        ));
    }

    let p = Project::new();
    std::fs::create_dir_all(p.path().join("pkg")).unwrap();
    std::fs::write(p.path().join("pkg/blob"), incompressible(BLOB)).unwrap();
    p.file("pkg/VERSION", "1\n");
    p.file("known_hosts", &known_hosts);
    let hosts: String = servers
        .iter()
        .zip(HOSTS)
        .map(|(s, name)| format!("  - {{host: 127.0.0.1, port: {}, name: {name}}}\n", s.port))
        .collect();
    p.file(
        "deploy.yaml",
        &format!(
            "app: live
deploy_to: {deploy_to}
package: {{root: pkg, include: [blob, VERSION]}}
ssh:
  user: root
  identity_files: [{key}]
  known_hosts_file: {known_hosts}
service: {{manager: none}}
hooks:
  before_switch: ['sleep 1']
  after_switch: ['sleep \"$(cat ../../pace)\"']
rollout: {{canary: 1}}
hosts:
{hosts}",
            deploy_to = deploy_to.path().display(),
            key = key.display(),
            known_hosts = p.path().join("known_hosts").display(),
        ),
    );

    // The run, as a script for the pane: shipit with the clean environment the other
    // black-box tests give it (and the pane's TERM), then its exit status, to a file.
    let work = tempfile::tempdir().unwrap();
    let exit_file = work.path().join("exit");
    let raw_file = work.path().join("raw");
    let script = work.path().join("run.sh");
    let command = p.command(&["deploy", "--app-version", "1"]);
    let env: String = command
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}='{}' ", k.to_str()?, v?.to_str()?)))
        .collect();
    std::fs::write(
        &script,
        format!(
            "cd {dir} || exit 1\nenv -i TERM=\"$TERM\" {env}{bin} deploy --app-version 1\necho $? >{exit}.tmp && mv {exit}.tmp {exit}\n",
            dir = quote(p.path()),
            bin = quote(Path::new(command.get_program())),
            exit = quote(&exit_file),
        ),
    )
    .unwrap();

    let tmux = Tmux::start(work.path(), &script, &raw_file);
    let mut seen = Seen::default();
    let until = Instant::now() + RUN_LIMIT;
    let mut last = String::new();
    while !exit_file.exists() {
        assert!(
            Instant::now() < until,
            "the deploy did not end within {RUN_LIMIT:?}; the screen:\n{last}"
        );
        last = tmux.screen();
        if let Err(problem) = check(&last, &mut seen) {
            panic!(
                "capture {}: {problem}; the screen:\n{last}",
                seen.captures + 1
            );
        }
        std::thread::sleep(POLL);
    }
    // The pane is dead once tmux has read all of the run's output.
    while !tmux.pane_dead() {
        assert!(Instant::now() < until, "the pane did not close");
        std::thread::sleep(POLL);
    }
    let code = std::fs::read_to_string(&exit_file).unwrap();
    let everything = tmux.everything();
    let screen = tmux.screen();
    // The raw stream reaches the file through `cat`: wait for its last line.
    let mut raw = String::new();
    while !raw.contains("TOTAL") {
        assert!(
            Instant::now() < until,
            "the summary never reached {}",
            raw_file.display()
        );
        std::thread::sleep(POLL);
        raw = String::from_utf8_lossy(&std::fs::read(&raw_file).unwrap_or_default()).into_owned();
    }
    let context = format!(
        "after {} captures; everything the pane holds:\n{everything}",
        seen.captures
    );
    assert_eq!(code.trim(), "0", "exit status; {context}");
    if let Err(problem) = check(&everything, &mut Seen::default()) {
        panic!("the last screen: {problem}; {context}");
    }

    // While it ran: packaging showed its bar (perhaps too briefly for a capture: the
    // terminal was sent it), then the live view came up; hosts finished one by one and
    // the clock moved.
    assert!(
        raw.contains("packaging ["),
        "the terminal was never sent the packaging bar; {context}"
    );
    assert!(seen.live > 0, "no capture showed the live view; {context}");
    assert!(
        seen.counts.iter().any(|&n| n > 0 && n < HOSTS.len() as u64),
        "the finished count never moved on screen (counts seen: {:?}); {context}",
        seen.counts
    );
    let mut clock = seen.elapsed.clone();
    clock.dedup();
    assert!(
        clock.len() >= 2,
        "the overall clock never moved (seen: {clock:?}); {context}"
    );
    // All hosts finished is on screen only between the last host's end and the summary:
    // too short for a capture, so it is looked for in what the terminal was sent.
    let all = format!("{n}/{n} hosts finished", n = HOSTS.len());
    assert!(
        raw.contains(&all),
        "the terminal was never sent `{all}`; {context}"
    );

    // Before its total was known, the packaging bar was empty, not full of nothing.
    assert!(
        !raw.contains("=] 0 B/0 B"),
        "the terminal was sent a packaging bar full of 0 B; {context}"
    );

    // At the end: every line printed once, the summary, and nothing of the live view.
    for line in [
        "packaged 2 files",
        "deploying live 1 (",
        "canary: switching web-alpha",
        "batch 1: switching web-bravo, web-charlie",
    ] {
        assert_eq!(count(&everything, line), 1, "`{line}`; {context}");
    }
    let summary: Vec<&str> = everything
        .lines()
        .skip_while(|l| !l.starts_with("HOST "))
        .take(5)
        .collect();
    assert_eq!(summary.len(), 5, "the summary table; {context}");
    for (row, host) in summary[1..].iter().zip(HOSTS) {
        assert!(
            row.starts_with(host) && row.contains(" done "),
            "{row:?}; {context}"
        );
    }
    assert!(
        summary[4].starts_with("TOTAL") && summary[4].contains("3 done"),
        "{context}"
    );
    assert!(
        screen.contains("TOTAL"),
        "the summary is not on the last screen:\n{screen}"
    );
    for residue in [
        "overall",
        "hosts finished",
        "connecting",
        "packaging [",
        "uploading [",
    ] {
        assert_eq!(
            count(&everything, residue),
            0,
            "`{residue}` left; {context}"
        );
    }
    assert!(
        !everything.chars().any(is_glyph),
        "a spinner glyph left; {context}"
    );
    for host in HOSTS {
        assert_eq!(
            everything
                .lines()
                .filter(|l| host_row(l).is_some_and(|(h, ..)| h == host))
                .count(),
            1,
            "{host}: one row, the summary's; {context}"
        );
    }
}
