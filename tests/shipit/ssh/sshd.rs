//! Test bed for the SSH e2e tests: a real OpenSSH `sshd -D` on 127.0.0.1 with generated
//! host and client keys, and an `ssh-agent`. Everything lives in a fresh private
//! directory and every process is killed (by its own pid) when its guard is dropped.
//!
//! Prerequisites: root (sshd must switch users and own /run/sshd) and /usr/sbin/sshd
//! (Debian package `openssh-server`). Without them the tests fail loudly, unless
//! `SHIPIT_SKIP_E2E=1` is set, in which case they print `E2E TIER NOT RUN` and pass.
//!
//! Several servers can stand for several hosts on this one machine:
//! [`Sshd::start_with_own`] runs sshd in a mount namespace of its own, where one path is
//! a directory of that server alone.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use shipit::ssh::{KnownHostsPolicy, Target};

const SSHD: &str = "/usr/sbin/sshd";
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns `None` (after a loud message) when the e2e tier cannot run here and
/// `SHIPIT_SKIP_E2E=1` allows skipping it; panics when it cannot run and skipping is not
/// allowed.
pub fn prerequisites() -> Option<()> {
    prerequisites_with(&[])
}

/// [`prerequisites`], and these tools on PATH too: `(tool, Debian package)`.
pub fn prerequisites_with(tools: &[(&str, &str)]) -> Option<()> {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("not running as root (sshd needs it)".to_owned());
    }
    if !Path::new(SSHD).exists() {
        missing.push(format!("{SSHD} not found (apt-get install openssh-server)"));
    }
    for tool in ["ssh-keygen", "ssh-agent", "ssh-add"] {
        if !on_path(tool) {
            missing.push(format!(
                "`{tool}` not on PATH (apt-get install openssh-client)"
            ));
        }
    }
    for (tool, package) in tools {
        if !on_path(tool) {
            missing.push(format!("`{tool}` not on PATH (apt-get install {package})"));
        }
    }
    if missing.is_empty() {
        return Some(());
    }
    let why = missing.join("; ");
    if std::env::var("SHIPIT_SKIP_E2E").as_deref() == Ok("1") {
        // Written to the stderr handle directly: libtest captures `eprintln!` of passing tests.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! E2E TIER NOT RUN: {why} (SHIPIT_SKIP_E2E=1) !!!!!!!!\n"
        );
        return None;
    }
    panic!(
        "the SSH e2e tests cannot run: {why}. Fix that, or set SHIPIT_SKIP_E2E=1 to skip them explicitly"
    );
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ssh-keygen -t TYPE -N PASS -f DIR/NAME`; returns the private key path.
pub fn keygen(dir: &Path, name: &str, kind: &str, passphrase: &str) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", passphrase, "-C", name, "-f"])
        .arg(&path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    run(&mut cmd);
    path
}

pub fn public_key(private: &Path) -> String {
    let text = std::fs::read_to_string(private.with_extension("pub")).expect("read .pub");
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A running sshd and the keys that go with it.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// `ssh-ed25519 AAAA...` of the server.
    pub host_key: String,
    pub host_key_file: PathBuf,
    /// Authorized, unencrypted ed25519 key.
    pub client_key: PathBuf,
    /// Authorized RSA key (exercises rsa-sha2-256/512).
    pub rsa_key: PathBuf,
    /// Authorized key meant to be used only through the agent.
    pub agent_key: PathBuf,
    /// Authorized key encrypted with passphrase `pass`.
    pub encrypted_key: PathBuf,
    /// A key the server does not know.
    pub stranger_key: PathBuf,
    /// With [`Sshd::start_with_own`]: what this server's sessions see at the path given.
    pub own: Option<PathBuf>,
    /// Lines sshd has logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
    child: Child,
}

/// Where a server listens and what its sessions see.
#[derive(Clone, Copy)]
enum Shape<'a> {
    /// 127.0.0.1, the machine's own filesystem.
    Plain,
    /// 127.0.0.1; the server's own directory at this path.
    Own(&'a Path),
    /// Every 127.0.0.0/8 address of a network namespace of its own; a session that
    /// reached 127.0.0.N sees `hosts/127.0.0.N` at this path.
    PerAddress(&'a Path, u8),
}

impl Sshd {
    pub fn start() -> Sshd {
        Sshd::start_in(Shape::Plain, "100")
    }

    /// A server that takes at most `n` unauthenticated connections at once and drops the
    /// rest at once (`MaxStartups n:100:n`), as a busy bastion with sshd's defaults does.
    pub fn start_with_max_startups(n: u32) -> Sshd {
        Sshd::start_in(Shape::Plain, &format!("{n}:100:{n}"))
    }

    /// A server whose sessions see a directory of its own (`own`, empty at first) at
    /// `at`, an existing directory: sshd runs in a mount namespace of its own with `own`
    /// bind-mounted there. Servers started this way are separate hosts as far as `at` is
    /// concerned (an app's `deploy_to`), and nothing outside them sees the mounts.
    pub fn start_with_own(at: &Path) -> Sshd {
        Sshd::start_in(Shape::Own(at), "100")
    }

    /// One server standing for `hosts` hosts, 127.0.0.1 to 127.0.0.`hosts`: it listens on
    /// every address of a network namespace of its own (reach it through [`Sshd::enter`]),
    /// and a session that reached 127.0.0.N sees a directory of that address alone
    /// (`own/127.0.0.N`, empty at first) at `at`, an existing directory. Root's sessions
    /// only (the mount needs it). `max_startups` is sshd's `MaxStartups`, so one sshd's
    /// limit on connection starts meets a whole fleet's fan-out.
    pub fn start_per_address(at: &Path, hosts: u8, max_startups: &str) -> Sshd {
        Sshd::start_in(Shape::PerAddress(at, hosts), max_startups)
    }

    /// `command` run in this server's network namespace (from [`Sshd::start_per_address`]):
    /// `nsenter` with the command's program, arguments, directory and the environment it
    /// sets, alone (as [`crate::support::Project::command`] gives it).
    pub fn enter(&self, command: &Command) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/proc/{}/ns/net", self.child.id()))
            .arg("--")
            .arg(command.get_program())
            .args(command.get_args())
            .env_clear();
        for (k, v) in command.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            c.current_dir(dir);
        }
        c
    }

    /// How many starts sshd dropped for its `MaxStartups` so far.
    pub fn dropped_starts(&self) -> usize {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .filter(|l| l.contains("past MaxStartups"))
            .count()
    }

    fn start_in(shape: Shape, max_startups: &str) -> Sshd {
        // Not under /tmp: sshd's StrictModes rejects paths below world-writable dirs.
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&base).expect("create target tmp dir");
        let dir = tempfile::Builder::new()
            .prefix("sshd-")
            .tempdir_in(&base)
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let d = dir.path();

        let host_key_file = keygen(d, "host_ed25519", "ed25519", "");
        let client_key = keygen(d, "client_ed25519", "ed25519", "");
        let rsa_key = keygen(d, "client_rsa", "rsa", "");
        let agent_key = keygen(d, "agent_ed25519", "ed25519", "");
        let encrypted_key = keygen(d, "encrypted_ed25519", "ed25519", "pass");
        let stranger_key = keygen(d, "stranger_ed25519", "ed25519", "");
        let authorized: String = [&client_key, &rsa_key, &agent_key, &encrypted_key]
            .iter()
            .map(|k| public_key(k) + "\n")
            .collect();
        std::fs::write(d.join("authorized_keys"), authorized).expect("write authorized_keys");

        // Privilege separation directory; a fresh machine may not have it.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");

        let port = free_port();
        let (listen, force) = match shape {
            Shape::PerAddress(at, hosts) => {
                let own = d.join("own");
                for n in 1..=hosts {
                    std::fs::create_dir_all(own.join(format!("127.0.0.{n}"))).expect("mkdir");
                }
                // The session's host is the address it reached (SSH_CONNECTION's third
                // field): a mount namespace of its own with that address's directory.
                let script = d.join("own.sh");
                std::fs::write(
                    &script,
                    format!(
                        "#!/bin/sh\nset -- $SSH_CONNECTION\n\
                         exec unshare --mount --propagation private sh -c \
                         'mount --bind \"$1\" \"$2\" && exec sh -c \"$3\"' own \
                         '{own}'/\"$3\" '{at}' \"$SSH_ORIGINAL_COMMAND\"\n",
                        own = own.display(),
                        at = at.display(),
                    ),
                )
                .expect("write own.sh");
                std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod own.sh");
                // Root's sessions start in a home of their own: a login shell's rc files
                // on the machine running the tests (pyenv's rehash, say) stay out of it.
                let home = d.join("home");
                std::fs::create_dir(&home).expect("mkdir home");
                let force = format!(
                    "ForceCommand {}\nSetEnv HOME={}\n",
                    script.display(),
                    home.display()
                );
                ("0.0.0.0", force)
            }
            _ => ("127.0.0.1", String::new()),
        };
        let config = format!(
            "Port {port}\n\
             ListenAddress {listen}\n\
             HostKey {host}\n\
             PidFile none\n\
             UsePAM no\n\
             StrictModes no\n\
             PermitRootLogin prohibit-password\n\
             AuthorizedKeysFile {dir}/authorized_keys\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             AllowTcpForwarding yes\n\
             MaxSessions 50\n\
             MaxStartups {max_startups}\n\
             LogLevel INFO\n\
             {force}",
            host = host_key_file.display(),
            dir = d.display(),
        );
        let config_file = d.join("sshd_config");
        std::fs::write(&config_file, config).expect("write sshd_config");
        run(Command::new(SSHD).arg("-t").arg("-f").arg(&config_file));

        let own = match shape {
            Shape::Plain => None,
            _ => Some(d.join("own")),
        };
        let mut command = match (shape, &own) {
            (Shape::Own(at), Some(own)) => {
                std::fs::create_dir(own).expect("create the server's own directory");
                // `unshare` and `sh` exec: the child's pid is sshd's, and killing it ends
                // the namespace with its last process.
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#)
                    .arg("sh")
                    .arg(own)
                    .arg(at)
                    .arg(SSHD);
                c
            }
            (Shape::PerAddress(..), _) => {
                // A network namespace of its own: only its loopback, and nothing else
                // reaches the server (it listens on every address there).
                let mut c = Command::new("unshare");
                c.args(["--net", "sh", "-c"])
                    .arg(r#"ip link set lo up && exec "$@""#)
                    .arg("sh")
                    .arg(SSHD);
                c
            }
            _ => Command::new(SSHD),
        };
        let mut child = command
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sshd");
        // sshd -e logs to stderr; it is ready once it says it is listening. Keep draining
        // stderr afterwards so sshd never blocks on a full pipe.
        let stderr = child.stderr.take().expect("sshd stderr");
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut ready = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("SHIPIT_SSHD_LOG").is_some() {
                    eprintln!("sshd: {line}");
                }
                if line.contains("Server listening")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
                kept.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        if rx.recv_timeout(START_TIMEOUT).is_err() {
            let _ = child.kill();
            panic!(
                "sshd did not start listening on port {port} within {START_TIMEOUT:?} (set SHIPIT_SSHD_LOG=1 to see its log)"
            );
        }
        let host_key = public_key(&host_key_file);
        Sshd {
            dir,
            port,
            host_key,
            host_key_file,
            client_key,
            rsa_key,
            agent_key,
            encrypted_key,
            stranger_key,
            own,
            log,
            child,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A known_hosts file (in its own new directory) that records this server's key.
    pub fn known_hosts_with_key(&self, name: &str) -> PathBuf {
        let file = self.path(name);
        std::fs::write(
            &file,
            format!("# test\n[127.0.0.1]:{} {}\n", self.port, self.host_key),
        )
        .expect("write known_hosts");
        file
    }

    /// A strict target using `client_key` and a known_hosts file with the right key.
    pub fn target(&self, name: &str) -> Target {
        Target {
            name: name.to_owned(),
            host: "127.0.0.1".to_owned(),
            port: self.port,
            user: "root".to_owned(),
            identity_files: vec![self.client_key.clone()],
            known_hosts: KnownHostsPolicy::Strict,
            known_hosts_files: vec![self.known_hosts_with_key(&format!("known_hosts.{name}"))],
            proxy_jump: None,
            proxy_command: None,
            identity_agent: None,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// A project whose deploy.yaml reaches this server as root with its client key: `app`,
    /// `deploy_to`, an `ssh` block (with `ssh_extra`, indented lines of its own), then
    /// `rest` (service, hosts, ...). Its known_hosts file holds the server's key at each of
    /// `addresses` (at the server's port).
    pub fn project(
        &self,
        addresses: &[String],
        app: &str,
        deploy_to: &Path,
        ssh_extra: &str,
        rest: &str,
    ) -> crate::support::Project {
        let p = crate::support::Project::new();
        let known: String = addresses
            .iter()
            .map(|a| format!("[{a}]:{} {}\n", self.port, self.host_key))
            .collect();
        p.file("known_hosts", &known);
        p.file(
            "deploy.yaml",
            &format!(
                "app: {app}\ndeploy_to: {deploy_to}\n\
                 ssh:\n  user: root\n  identity_files: [{key}]\n  known_hosts_file: {known}\n\
                 {ssh_extra}{rest}",
                deploy_to = deploy_to.display(),
                key = self.client_key.display(),
                known = p.path().join("known_hosts").display(),
            ),
        );
        p
    }

    /// SHA256 fingerprint of the host key as `ssh-keygen -l` prints it.
    pub fn host_fingerprint(&self) -> String {
        let out = run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.host_key_file.with_extension("pub")));
        out.split_whitespace()
            .nth(1)
            .expect("fingerprint field")
            .to_owned()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (bind to port 0, read it, release it).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").port()
}

/// An `ssh-agent -D` on its own socket, holding the given keys.
pub struct Agent {
    pub socket: PathBuf,
    child: Child,
}

impl Agent {
    pub fn start(dir: &Path, keys: &[(&Path, &str)]) -> Agent {
        Agent::start_at(dir.join(format!("agent.{}.sock", free_port())), keys)
    }

    /// An agent listening at `socket` (its directory is where askpass files go).
    pub fn start_at(socket: PathBuf, keys: &[(&Path, &str)]) -> Agent {
        let dir = socket.parent().expect("a socket in a directory").to_owned();
        let dir = dir.as_path();
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ssh-agent");
        let agent = Agent { socket, child };
        // Bounded poll for the socket to appear.
        let until = Instant::now() + START_TIMEOUT;
        while !agent.socket.exists() {
            assert!(
                Instant::now() < until,
                "ssh-agent did not create {}",
                agent.socket.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        for (key, passphrase) in keys {
            // ssh-add reads a passphrase from SSH_ASKPASS when forced to.
            let askpass = dir.join(format!("askpass.{}", free_port()));
            std::fs::write(&askpass, format!("#!/bin/sh\necho '{passphrase}'\n"))
                .expect("write askpass");
            std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700))
                .expect("chmod askpass");
            run(Command::new("ssh-add")
                .arg(key)
                .env("SSH_AUTH_SOCK", &agent.socket)
                .env("SSH_ASKPASS", &askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("DISPLAY", ":0")
                .stdin(Stdio::null()));
        }
        agent
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
