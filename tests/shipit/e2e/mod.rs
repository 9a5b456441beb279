//! The e2e tier: real Debian hosts with systemd as PID 1 and a real sshd, booted by
//! `tests/testbed/up.sh` under systemd-nspawn, each in its own network namespace.
//!
//! Each test boots its own small testbed (named after the test, so a rerun after a crash
//! replaces the leftovers) and tears it down when it ends, panicking or not. shipit runs
//! inside the testbed's client network namespace, the only place the hosts can be reached
//! from. The tier needs root; without it the tests fail, unless `SHIPIT_SKIP_E2E=1` says
//! to skip them, in which case each prints a loud `E2E TIER NOT RUN` line.
//!
//! The whole tier carries a canary secret: every shipit run gets `SHIPIT_E2E_CANARY` in its
//! environment (deploy.yaml files put it into `env:` through `${SHIPIT_E2E_CANARY}`), every
//! run's stdout and stderr are captured on their way to the test, and when a testbed is
//! dropped the captures and every host's files (all but `.env`, where it belongs) and
//! journal are searched for it: one hit fails the test. Nothing a test does can skip it.

mod check;
mod delta;
mod deploy;
mod faults;
mod health;
mod hostile;
pub mod load;
mod proxy;
mod roles;
mod store;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::support::{Output, Project};

#[derive(Debug, Clone, Deserialize)]
pub struct Host {
    pub name: String,
    pub ip: String,
    pub port: u16,
    pub host_key: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct State {
    pub name: String,
    pub client_netns: String,
    pub client_ip: String,
    pub client_key: PathBuf,
    pub known_hosts: PathBuf,
    pub hosts: Vec<Host>,
}

pub struct Testbed {
    pub state: State,
    /// Where every shipit run's stdout and stderr are copied, for the canary check.
    captures: tempfile::TempDir,
    runs: std::sync::atomic::AtomicUsize,
}

/// The environment variable every shipit run of the tier carries, and its value: a secret
/// that must never appear in any output, log, history line or host file but `.env`.
pub const CANARY_VAR: &str = "SHIPIT_E2E_CANARY";
pub const CANARY: &str = "canary-db-password-91c2e7";

/// Copies stdout and stderr of the command into files under `$1` through fifos and `tee`,
/// then `exec`s the command, so its pid, exit status and signals stay its own.
const TEE: &str = r#"d=$1; shift
mkfifo "$d/out.fifo" "$d/err.fifo" || exit 125
tee "$d/stdout" <"$d/out.fifo" &
tee "$d/stderr" <"$d/err.fifo" >&2 &
exec "$@" >"$d/out.fifo" 2>"$d/err.fifo""#;

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbed")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the e2e tier can run here; `None` means "skipped, and said so loudly".
fn available(test: &str) -> Option<()> {
    if is_root() {
        // up.sh installs what it needs (systemd-container, debootstrap...) itself.
        return Some(());
    }
    let why = "not running as root (booting hosts with systemd-nspawn needs it)";
    if std::env::var("SHIPIT_SKIP_E2E").as_deref() == Ok("1") {
        // Straight to the stderr handle: libtest captures eprintln! of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! E2E TIER NOT RUN ({test}): {why} (SHIPIT_SKIP_E2E=1) !!!!!!!!\n"
        );
        return None;
    }
    panic!(
        "the e2e tier cannot run: {why}. Run the tests as root, or set SHIPIT_SKIP_E2E=1 to skip the tier knowingly"
    );
}

/// `SHIPIT_TESTBED_PREFIX=x` renames `e2e-foo` to `x-foo`, so two checkouts can run the
/// tier at once without tearing down each other's testbeds.
fn scoped(name: &str) -> String {
    match std::env::var("SHIPIT_TESTBED_PREFIX") {
        Ok(p) if !p.is_empty() => {
            let rest = name.strip_prefix("e2e").unwrap_or(name);
            let mut s = format!("{p}{rest}");
            s.truncate(20);
            s.trim_end_matches('-').to_owned()
        }
        _ => name.to_owned(),
    }
}

impl Testbed {
    /// Boot `n` hosts in a testbed named `name` (1-20 chars of `a-z0-9-`).
    pub fn up(name: &str, n: usize) -> Option<Testbed> {
        Testbed::up_with(name, n, &[])
    }

    /// `up` with extra arguments for up.sh (e.g. `--small-opt host2:30M`).
    pub fn up_with(name: &str, n: usize, extra: &[&str]) -> Option<Testbed> {
        available(name)?;
        let name = &scoped(name);
        let out = Command::new(scripts().join("up.sh"))
            .arg(n.to_string())
            .args(["--name", name])
            .args(extra)
            .output()
            .expect("run tests/testbed/up.sh");
        assert!(
            out.status.success(),
            "tests/testbed/up.sh {n} --name {name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let dir = stdout.lines().last().expect("up.sh prints the state dir");
        let json = std::fs::read_to_string(Path::new(dir).join("testbed.json")).unwrap();
        Some(Testbed {
            state: serde_json::from_str(&json).unwrap(),
            captures: tempfile::Builder::new()
                .prefix(&format!("shipit-{name}-out"))
                .tempdir()
                .unwrap(),
            runs: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.state.hosts[i]
    }

    /// Run shipit in `project` from inside the client network namespace.
    pub fn shipit(&self, project: &Project, args: &[&str]) -> Output {
        let out = self
            .shipit_command(project, args)
            .output()
            .expect("ip netns exec shipit");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The command `shipit` runs as (for tests that add env vars or signal it). Its
    /// stdout and stderr reach the caller as usual and are also kept for the canary check.
    pub fn shipit_command(&self, project: &Project, args: &[&str]) -> Command {
        let cmd = project.command(args);
        let program = cmd.get_program().to_owned();
        let n = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let dir = self.captures.path().join(format!("run-{n:04}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("args"), format!("{args:?}")).unwrap();
        let mut wrapped = Command::new("ip");
        wrapped
            .args(["netns", "exec", &self.state.client_netns])
            .args(["sh", "-c", TEE, "sh"])
            .arg(&dir)
            .arg(program)
            .args(cmd.get_args());
        wrapped.current_dir(project.path()).env_clear();
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                wrapped.env(k, v);
            }
        }
        wrapped.env(CANARY_VAR, CANARY);
        wrapped
    }

    /// A fault from tests/testbed/fault.sh, or `exec` for a root command inside a host.
    pub fn fault(&self, args: &[&str]) -> String {
        let out = Command::new(scripts().join("fault.sh"))
            .args(["--name", &self.state.name])
            .args(args)
            .output()
            .expect("run fault.sh");
        assert!(
            out.status.success(),
            "fault.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `tests/testbed/store.sh` on this testbed (the artifact store), with `env`; its
    /// stdout.
    pub fn store(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = Command::new(scripts().join("store.sh"))
            .args(["--name", &self.state.name])
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run store.sh");
        assert!(
            out.status.success(),
            "store.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start `shipit args` (with `env`) so that it stops itself at faultpoint `point`
    /// (`SHIPIT_TEST_STOP_AT`); returns the child and its pid once it has stopped there.
    pub fn stopped_at(
        &self,
        project: &Project,
        args: &[&str],
        env: &[(&str, &str)],
        point: &str,
    ) -> (std::process::Child, String) {
        use std::io::BufRead;
        let mut cmd = self.shipit_command(project, args);
        cmd.envs(env.iter().copied())
            .env("SHIPIT_TEST_STOP_AT", point)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn shipit");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let pid = line
                    .strip_prefix("@@faultpoint ")
                    .and_then(|l| l.split(" pid ").nth(1));
                if let Some(pid) = pid {
                    let _ = tx.send(pid.trim().to_owned());
                }
            }
        });
        let pid = rx
            .recv_timeout(std::time::Duration::from_secs(90))
            .unwrap_or_else(|_| panic!("shipit {args:?} never reached {point}"));
        (child, pid)
    }

    /// Run a shell command as root on host `i` and return its stdout.
    pub fn root(&self, i: usize, script: &str) -> String {
        let name = self.host(i).name.clone();
        self.fault(&["exec", &name, "sh", "-c", script])
    }

    /// Run `f` on a thread that lives in the client network namespace, so library code
    /// (the SSH transport) can reach the hosts directly.
    pub fn in_client_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.state.client_netns);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).expect("open the client netns");
                // SAFETY: setns on a valid namespace fd; it only changes this thread.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("netns thread")
        })
    }

    /// deploy.yaml's `ssh:` section for this testbed.
    pub fn ssh_yaml(&self, known_hosts: &Path) -> String {
        format!(
            "ssh:\n  user: deploy\n  identity_files: [{}]\n  known_hosts_file: {}\n  connect_timeout: 5s\n",
            self.state.client_key.display(),
            known_hosts.display()
        )
    }
}

impl Testbed {
    /// Every place the canary was found where it must not be: captured outputs of shipit
    /// runs, and files on the hosts other than `.env` (deploy roots, home directories,
    /// /tmp, /etc, /var/log) and their journals.
    pub fn canary_leaks(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        let mut runs: Vec<_> = std::fs::read_dir(self.captures.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        runs.sort();
        for run in runs {
            let args = std::fs::read_to_string(run.join("args")).unwrap_or_default();
            for stream in ["stdout", "stderr"] {
                // tee makes the file as the run starts: a missing one means a run whose
                // output this check never saw, which must not pass as "no leak".
                let bytes = std::fs::read(run.join(stream)).unwrap_or_else(|e| {
                    panic!("the {stream} of shipit {args} was not captured: {e}")
                });
                if String::from_utf8_lossy(&bytes).contains(CANARY) {
                    leaks.push(format!("the {stream} of shipit {args}"));
                }
            }
        }
        let search = format!(
            "grep -rlsF --exclude=.env -e {CANARY} /opt /srv /home /root /tmp /var/tmp /etc /var/log /run/user 2>/dev/null; \
             journalctl --no-pager -o cat 2>/dev/null | grep -qF -e {CANARY} && echo journal; true"
        );
        for host in &self.state.hosts {
            // Not `root`: a host a test stopped cannot be searched, and that is no failure.
            let Ok(out) = Command::new(scripts().join("fault.sh"))
                .args([
                    "--name",
                    &self.state.name,
                    "exec",
                    &host.name,
                    "sh",
                    "-c",
                    &search,
                ])
                .output()
            else {
                continue;
            };
            for place in String::from_utf8_lossy(&out.stdout).lines() {
                if !place.is_empty() {
                    leaks.push(format!("{}: {place}", host.name));
                }
            }
        }
        leaks
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // The canary check runs before teardown, for every test that booted a testbed; a
        // test that already failed keeps its own message.
        let leaks = if std::thread::panicking() {
            Vec::new()
        } else {
            self.canary_leaks()
        };
        let _ = Command::new(scripts().join("down.sh"))
            .args(["--name", &self.state.name])
            .output();
        assert!(
            leaks.is_empty(),
            "the canary secret leaked into: {leaks:#?}"
        );
    }
}
