#!/usr/bin/env python3
"""The fleet benchmark: what one command costs on 20, 100, 250 and 500 hosts.

Plain sshd hosts (tests/testbed/sshd-hosts.sh: one port each on 127.0.0.1, a private /opt
per host, `service.manager: none` for shipit), started once for the largest N; a smaller
N uses the first N of them. A tiny app (20 small files) is packaged twice by `shipit
package` (A, and B with one file changed) and deployed untimed once (A). Then per N and
round, contenders interleaved (each round starts one contender further on), `sync` and
the hosts' sessions settled before every timed command:

  floor      the connection floor: `ssh -F CFG -o ControlMaster=no deploy@hostI true`
             per host, `xargs -P 100`
  floor-russh  the floor with the SSH library shipit is built on: examples/russh_floor.rs
             (russh alone: connect, check the host key, authenticate, exec `true`, read
             its exit status, disconnect; every host at once, 10 handshakes in flight,
             as shipit's default ssh.max_concurrent_starts)
  status     `shipit status --json`
  noop       `shipit deploy --artifact A --json`, every host already on A (all skipped)
  delta      `shipit deploy --artifact B --json` (one small file differs from A)
  rollback   `shipit rollback --json` (back to A, so the next round's noop is one)
  ansible    `ansible all -m ansible.builtin.command -a true -f N` (N <= 100 only)
  pyinfra    `pyinfra [--yes] --parallel N INVENTORY.py exec -- true` (N <= 100 only)

noop, delta and rollback run in this order, as one block (each needs the one before);
floor, status, Ansible and pyinfra fall before or after it, alternating per round. The
bastion part (`bastion`) reaches the same hosts through one more sshd (a testbed of its
own, OpenSSH's default MaxStartups 10:30:100 unless --bastion-max-startups): `ssh -J`
for the floor, shipit status and noop with `ssh.proxy_jump`; its sshd log (LogLevel
VERBOSE) gives the logins and the refused or dropped connections per command.

Per timed command: wall time, the client's CPU (user+sys of the child and what it
reaped, from wait4), the whole machine's CPU in that time (/proc/stat: the client and
every sshd, shell and process it made the hosts run), and its peak RSS (ru_maxrss; the
largest single process, so n/a for the xargs floor); medians and min-max over the runs,
cost per host (median wall / N).

  sudo python3 bench/fleet.py                # full run: N = 20,100,250,500, 3 runs, bastion
  sudo python3 bench/fleet.py --smoke        # N = 2,3, one run, bastion at N=2: CI's check
  sudo python3 bench/fleet.py --hosts 20,100 --only floor,status,noop --runs 5
  sudo python3 bench/fleet.py --shipit target/release/shipit --only bastion

The russh floor is target/release/examples/russh-floor, built when missing (`cargo build
--release --example russh-floor`), or --russh-floor PATH; a PATH that is not there is
reported as skipped.

Parts (--only, comma separated; default all): floor, floor-russh, status, noop, delta,
rollback, ansible, pyinfra, bastion (the three bastion commands). Needs a release build
(`cargo build --release`, or --shipit PATH). Raw results: bench/out/fleet.json, the
report: bench/out/fleet.md, every command's output in bench/out/logs/fleet/; a full run
(not --smoke, no --only/--hosts/--runs) also replaces the fleet section of BENCHMARKS.md.
Must run as root (the sshd hosts need it). Ansible comes from bench/deploy.py's cached
venv (/var/tmp/shipit-bench-ansible, its pinned ansible-core), pyinfra from PyPI into
/var/tmp/shipit-bench-pyinfra (SHIPIT_BENCH_PYINFRA_VENV); a contender that cannot be
installed or does not run is reported as skipped, with the reason. Everything the harness
starts is stopped by PID on exit, also on failure or Ctrl-C.
"""
import argparse
import calendar
import glob
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import deploy  # noqa: E402 - bench/deploy.py: log, run, CHILDREN, kill_children, ensure_ansible, VENV...

ROOT = deploy.ROOT
SSHD_HOSTS = os.path.join(deploy.TESTBED, "sshd-hosts.sh")
TB_PREFIX = os.environ.get("SHIPIT_BENCH_FLEET_TESTBED", "bench-fleet")
PYINFRA_VENV = os.environ.get("SHIPIT_BENCH_PYINFRA_VENV", "/var/tmp/shipit-bench-pyinfra")
PYINFRA_SPEC = os.environ.get("SHIPIT_BENCH_PYINFRA", "pyinfra")
CHUNK = 100  # hosts per sshd-hosts.sh testbed (the script takes at most 200)
FLOOR_P = 100  # the floor's fan-out (xargs -P)
DEFAULT_RUSSH_FLOOR = os.path.join(ROOT, "target", "release", "examples", "russh-floor")
FOREIGN_MAX_N = 100  # Ansible and pyinfra only up to this N
DEFAULT_NS = [20, 100, 250, 500]
PARTS = ["floor", "floor-russh", "status", "noop", "delta", "rollback", "ansible", "pyinfra", "bastion"]
MAIN = ["floor", "floor-russh", "status", "noop", "delta", "rollback", "ansible", "pyinfra"]
BASTION = ["floor-j", "status-j", "noop-j"]
LABELS = {
    "floor": "floor-ssh (ssh true, xargs -P 100)",
    "floor-russh": "floor-russh (connect + exec true)",
    "status": "shipit status",
    "noop": "shipit deploy, no-op",
    "delta": "shipit deploy, delta",
    "rollback": "shipit rollback",
    "ansible": "Ansible (command true)",
    "pyinfra": "pyinfra (exec true)",
    "floor-j": "floor-ssh -J bastion",
    "status-j": "shipit status via bastion",
    "noop-j": "shipit no-op via bastion",
}
BEGIN = "<!-- bench/fleet.py: begin -->"
END = "<!-- bench/fleet.py: end -->"

# What the bastion's sshd log says (LogLevel VERBOSE, so that every dropped connection is
# logged, not only the first of a throttling episode).
BASTION_COUNTERS = {
    "logins": re.compile(r"Accepted publickey for "),
    "drop": re.compile(r"drop connection"),
    "throttling": re.compile(r"beginning MaxStartups throttling"),
    "reset": re.compile(r"Connection reset"),
    "exceeded": re.compile(r"exceeded MaxStartups"),
}
THROTTLE_SUMMARY = re.compile(r"exited MaxStartups throttling after [^,]*, (\d+) connections dropped")

# The floor through the bastion: sh keeps one failed ssh (exit 255) from making xargs stop
# launching the rest, and names it on stderr, where it is counted.
FLOOR_J = 'ssh -F "$0" -o ControlMaster=no -J "$1" "deploy@$2" true || echo "floor-failed $2 exit $?" >&2'

log = deploy.log


# --- processes ------------------------------------------------------------------------------


GNU_TIME = "/usr/bin/time"


class Measured(types.SimpleNamespace):
    """rc, wall (s), cpu (s: user+sys of the child and its reaped descendants), maxrss_kb,
    machine_cpu (s: every CPU's busy time in between, from /proc/stat)."""


def busy_seconds():
    """The machine's busy CPU time so far (every CPU: user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle, iowait = fields[3], fields[4] if len(fields) > 4 else 0
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def measure(argv, out_path, err_path, env=None, cwd=None, timeout=None):
    """Run argv in its own process group (tracked in deploy.CHILDREN, so it is killed on
    exit or Ctrl-C), stdout to out_path, stderr appended to err_path; reap it with wait4
    for its rusage. A command still running after `timeout` s is killed (rc -9)."""
    expired = []
    # Peak RSS through GNU time: a child forked from this Python process carries Python's
    # resident pages (about 22 MB) into its high-water mark until it execs, which would
    # hide any smaller peak. time(1) is small, and reports its child's own ru_maxrss.
    rss_file = None
    if os.access(GNU_TIME, os.X_OK):
        rss_file = out_path + ".rss"
        argv = [GNU_TIME, "-q", "-f", "%M", "-o", rss_file, *argv]
    with open(out_path, "wb") as so, open(err_path, "ab") as se:
        busy0 = busy_seconds()
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=so, stderr=se, env=env, cwd=cwd,
                             start_new_session=True)
    deploy.CHILDREN.add(p)

    def expire():
        if p.returncode is None:
            expired.append(True)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    timer = threading.Timer(timeout, expire) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        machine_cpu = busy_seconds() - busy0
        p.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if timer:
            timer.cancel()
        if p.returncode is not None:
            deploy.CHILDREN.discard(p)
    maxrss_kb = ru.ru_maxrss
    if rss_file:
        try:
            with open(rss_file) as f:
                maxrss_kb = int(f.read().split()[-1])
        except (OSError, ValueError, IndexError):
            pass
    return Measured(rc=p.returncode, wall=wall, cpu=ru.ru_utime + ru.ru_stime, maxrss_kb=maxrss_kb,
                    machine_cpu=machine_cpu, timed_out=bool(expired))


def settle(pids, timeout=10.0):
    """Wait (bounded) until these sshds have reaped every session."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        busy = False
        for pid in pids:
            for t in glob.glob(f"/proc/{pid}/task/*/children"):
                try:
                    with open(t) as f:
                        busy = bool(f.read().strip())
                except OSError:
                    continue
                if busy:
                    break
            if busy:
                break
        if not busy:
            return True
        time.sleep(0.02)
    return False


def tail(path, chars=1500):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - chars))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard
    if want == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                want = int(f.read())
        except (OSError, ValueError):
            want = 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as e:
        log(f"WARNING: cannot raise the open-files limit from {soft} to {want}: {e}")
        return soft
    return want


# --- the hosts ------------------------------------------------------------------------------


class Testbed:
    """One sshd-hosts.sh testbed (at most 200 hosts each)."""

    def __init__(self, name, count, log_level, started):
        env = dict(os.environ, TESTBED_SSHD_LOG_LEVEL=log_level)
        env.pop("TESTBED_SSHD_OPT_TMPFS", None)
        self.name = name
        started.append(self)  # before `up`: a half-made testbed is torn down too
        log(f"starting {count} sshd host(s) (testbed {name})")
        _, so, _ = deploy.run([SSHD_HOSTS, "--name", name, "up", str(count)], env=env, capture=True)
        self.state = so.strip().splitlines()[-1]
        with open(os.path.join(self.state, "testbed.json")) as f:
            tb = json.load(f)
        self.hosts = tb["hosts"]
        self.client_key = tb["client_key"]
        self.known_hosts = tb["known_hosts"]
        self.ssh_config = tb["ssh_config"]

    def down(self):
        log(f"stopping the sshd hosts (testbed {self.name})")
        deploy.run([SSHD_HOSTS, "--name", self.name, "down"], check=False)

    def sshd_log(self, i):
        return os.path.join(self.state, "hosts", self.hosts[i]["name"], "sshd.log")

    def sshd_config(self, i):
        return os.path.join(self.state, "hosts", self.hosts[i]["name"], "sshd_config")

    def authorize(self, pubkey_line):
        """Let the fleet's one client key in too (the testbed's own runtime authorized_keys)."""
        path = os.path.join(self.state, "authorized_keys")
        with open(path) as f:
            have = f.read()
        if pubkey_line.strip() not in have:
            with open(path, "a") as f:
                f.write(("" if have.endswith("\n") or not have else "\n") + pubkey_line.strip() + "\n")


class Fleet:
    """`total` hosts from ceil(total / CHUNK) testbeds, under one client key, one
    known_hosts file and one ssh_config (Host h001..: 127.0.0.1 and the port); optionally
    a bastion (one more testbed of one host)."""

    def __init__(self, total, work, with_bastion, max_startups, started):
        self.work = work
        self.testbeds = []  # the hosts' testbeds; `started` also gets the bastion's
        self.hosts = []  # {name, port, pid, opt, log, testbed}
        self.bastion = None
        width = max(3, len(str(total)))
        left, j = total, 0
        while left > 0:
            j += 1
            count = min(CHUNK, left)
            tb = Testbed(f"{TB_PREFIX}-{j}", count, "INFO", started)
            self.testbeds.append(tb)
            for i, h in enumerate(tb.hosts):
                self.hosts.append({"name": f"h{len(self.hosts) + 1:0{width}d}", "port": h["port"], "pid": h["pid"],
                                   "opt": h["opt"], "log": tb.sshd_log(i), "testbed": tb.name})
            left -= count
        self.client_key = self.testbeds[0].client_key
        with open(self.client_key + ".pub") as f:
            pub = f.read()
        for tb in self.testbeds[1:]:
            tb.authorize(pub)
        known = [tb.known_hosts for tb in self.testbeds]
        if with_bastion:
            bt = Testbed(f"{TB_PREFIX}-bastion", 1, "VERBOSE", started)
            bt.authorize(pub)
            known.append(bt.known_hosts)  # shipit checks the jump host's key in the same file
            self.bastion = {"port": bt.hosts[0]["port"], "pid": bt.hosts[0]["pid"], "log": bt.sshd_log(0),
                            "config": bt.sshd_config(0), "jump": f"deploy@127.0.0.1:{bt.hosts[0]['port']}",
                            "max_startups": "100 (testbed)"}
        self.known_hosts = os.path.join(work, "known_hosts")
        with open(self.known_hosts, "w") as out:
            for path in known:
                with open(path) as f:
                    out.write(f.read())
        os.chmod(self.known_hosts, 0o644)
        self.ssh_config = os.path.join(work, "ssh_config")
        with open(self.ssh_config, "w") as f:
            for h in self.hosts:
                f.write(f"Host {h['name']}\n    HostName 127.0.0.1\n    Port {h['port']}\n")
            if self.bastion:
                f.write(f"Host fleet-bastion\n    HostName 127.0.0.1\n    Port {self.bastion['port']}\n")
            f.write(f"Host *\n    IdentityFile {self.client_key}\n    IdentitiesOnly yes\n"
                    f"    UserKnownHostsFile {self.known_hosts}\n    GlobalKnownHostsFile /dev/null\n"
                    "    StrictHostKeyChecking yes\n    BatchMode yes\n    ConnectTimeout 10\n")
        # Every testbed lets the one key in (the first host of each, and the bastion; untimed).
        firsts = [next(h["name"] for h in self.hosts if h["testbed"] == tb.name) for tb in self.testbeds]
        for name in firsts + (["fleet-bastion"] if self.bastion else []):
            deploy.run(["ssh", "-F", self.ssh_config, f"deploy@{name}", "true"], capture=True)
        if self.bastion and max_startups != "testbed":
            self.set_max_startups(max_startups)

    def pids(self, n, bastion=False):
        return [h["pid"] for h in self.hosts[:n]] + ([self.bastion["pid"]] if bastion and self.bastion else [])

    def hosts_file(self, n):
        path = os.path.join(self.work, f"hosts-{n}")
        with open(path, "w") as f:
            f.write("".join(h["name"] + "\n" for h in self.hosts[:n]))
        return path

    def addresses_file(self, n):
        """`127.0.0.1 PORT` per host, for the russh floor."""
        path = os.path.join(self.work, f"addresses-{n}")
        with open(path, "w") as f:
            f.write("".join(f"127.0.0.1 {h['port']}\n" for h in self.hosts[:n]))
        return path

    def current(self, i, deploy_to="/opt/fleet"):
        """The release id host i's `current` points to (read on disk), or None."""
        try:
            return os.path.basename(os.readlink(os.path.join(self.hosts[i]["opt"], deploy_to.removeprefix("/opt/"),
                                                             "current")).rstrip("/"))
        except OSError:
            return None

    def set_max_startups(self, value):
        """sshd-hosts.sh writes `MaxStartups 100`; a bastion as found in the wild has
        OpenSSH's default. Rewrite the bastion's (runtime) sshd_config and SIGHUP its sshd,
        which re-executes itself with the same arguments, PID and mount namespace."""
        b = self.bastion
        with open(b["config"]) as f:
            text = f.read()
        new, k = re.subn(r"(?m)^MaxStartups .*$", f"MaxStartups {value}", text)
        if not k:
            new = text.rstrip("\n") + f"\nMaxStartups {value}\n"
        with open(b["config"], "w") as f:
            f.write(new)
        deploy.run(["/usr/sbin/sshd", "-t", "-f", b["config"]], capture=True)
        off = os.path.getsize(b["log"])
        log(f"bastion sshd: MaxStartups {value} (SIGHUP to {b['pid']})")
        os.kill(b["pid"], signal.SIGHUP)
        deadline = time.time() + 15
        while True:
            with open(b["log"], "rb") as f:
                f.seek(off)
                restarted = b"Received SIGHUP" in f.read()
            rc = 1
            if restarted:
                rc = subprocess.run(["ssh", "-F", self.ssh_config, "-o", "ConnectTimeout=2", "deploy@fleet-bastion",
                                     "true"], stdin=subprocess.DEVNULL, capture_output=True, timeout=20).returncode
            if rc == 0:
                break
            if time.time() > deadline:
                raise RuntimeError(f"the bastion's sshd did not come back after SIGHUP:\n{tail(b['log'])}")
            time.sleep(0.1)
        with open(f"/proc/{b['pid']}/comm") as f:
            if f.read().strip() != "sshd":
                raise RuntimeError("the bastion's sshd PID changed after SIGHUP")
        b["max_startups"] = value

    def bastion_offset(self):
        return os.path.getsize(self.bastion["log"])

    def bastion_counts(self, off):
        with open(self.bastion["log"], "rb") as f:
            f.seek(off)
            text = f.read().decode(errors="replace")
        c = {k: len(rx.findall(text)) for k, rx in BASTION_COUNTERS.items()}
        c["throttle_summary_dropped"] = sum(int(m) for m in THROTTLE_SUMMARY.findall(text))
        # A reset is a client going away without a goodbye, not a refusal: counted apart.
        c["refused"] = c["drop"] + c["exceeded"]
        return c


# --- the benchmark --------------------------------------------------------------------------


def make_tree(path, files=20):
    """A tiny app: `files` small text files in two directories."""
    for i in range(files):
        sub = "conf" if i % 5 == 0 else "app"
        os.makedirs(os.path.join(path, sub), exist_ok=True)
        with open(os.path.join(path, sub, f"file{i:02d}.txt"), "w") as f:
            f.write(f"file {i} of the fleet benchmark's app\n" * (10 + 5 * i))


def release_time(release_id):
    """The UTC second in a release id (`20261122T051233Z-3f2a9c1d`), or None."""
    try:
        return calendar.timegm(time.strptime(release_id[:16], "%Y%m%dT%H%M%SZ"))
    except (TypeError, ValueError):
        return None


class Bench:
    def __init__(self, a, shipit, work, out):
        self.a = a
        self.shipit = shipit
        self.work = work
        self.out = out
        self.logs = os.path.join(out, "logs", "fleet")
        os.makedirs(self.logs, exist_ok=True)
        for f in glob.glob(os.path.join(self.logs, "*")):
            os.unlink(f)
        self.fleet = None
        self.results = []
        self.skipped = {}  # (name, n) -> reason
        self.unavailable = {}  # name -> reason (install failed): skipped at every N
        rf = a.russh_floor
        self.russh_floor_missing = None if os.path.isfile(rf) and os.access(rf, os.X_OK) else (
            f"no russh floor at {rf} (cargo build --release --example russh-floor)")
        self.seq = 0
        self.a_id = None
        self.next_delta_at = 0.0
        self.pyinfra_flags = []
        self.cp_dir = os.path.join(work, "ansible-cp")
        os.makedirs(self.cp_dir)
        self.empty = os.path.join(work, "empty_ssh_config")
        open(self.empty, "w").close()
        self.tree = os.path.join(work, "tree")
        self.art_a = self.art_b = None

    # -- setup --

    def artifacts(self):
        make_tree(self.tree)
        tree_b = os.path.join(self.work, "tree-b")
        shutil.copytree(self.tree, tree_b)
        with open(os.path.join(tree_b, "app", "file01.txt"), "a") as f:
            f.write("changed in B\n")
        self.art_a = deploy.package(self.shipit, self.work, self.tree, "vA")
        self.art_b = deploy.package(self.shipit, self.work, tree_b, "vB")

    def shipit_config(self, n, tag, jump=None):
        d = os.path.join(self.work, f"shipit-{tag}-{n}")
        os.makedirs(d, exist_ok=True)
        hosts = "".join(f"  - {{host: 127.0.0.1, port: {h['port']}, name: {h['name']}}}\n"
                        for h in self.fleet.hosts[:n])
        cfg = (f"app: bench\ndeploy_to: /opt/fleet\nkeep_releases: 3\n"
               f"package:\n  root: {self.tree}\n  include: [.]\n"
               f"ssh:\n  user: deploy\n  identity_files: [{self.fleet.client_key}]\n"
               f"  known_hosts: strict\n  known_hosts_file: {self.fleet.known_hosts}\n"
               + (f"  proxy_jump: {jump}\n" if jump else "")
               + "service:\n  manager: none\n"
               f"rollout:\n  parallel: {n}\n  canary: 0\n"
               f"hosts:\n{hosts}")
        path = os.path.join(d, "deploy.yaml")
        with open(path, "w") as f:
            f.write(cfg)
        deploy.run([self.shipit, "-c", path, "config"], capture=True)  # validates
        return path

    def ansible_files(self, n):
        inv = os.path.join(self.work, f"inventory-{n}.ini")
        with open(inv, "w") as f:
            f.write("[fleet]\n" + "".join(h["name"] + "\n" for h in self.fleet.hosts[:n]))
            f.write(f"[fleet:vars]\nansible_user=deploy\nansible_ssh_common_args=-F {self.fleet.ssh_config}\n"
                    "ansible_python_interpreter=/usr/bin/python3\n")
        cfg = os.path.join(self.work, "ansible.cfg")
        with open(cfg, "w") as f:
            # Ansible's own defaults for ssh (ControlPersist 60s), pipelining on.
            f.write("[defaults]\nhost_key_checking = True\ngathering = explicit\nretry_files_enabled = False\n"
                    f"local_tmp = {self.work}/ansible-local\n"
                    "[ssh_connection]\npipelining = True\n"
                    "ssh_args = -o ControlMaster=auto -o ControlPersist=60s\n"
                    f"control_path_dir = {self.cp_dir}\n")
        return inv, cfg

    def pyinfra_inventory(self, n):
        inv = os.path.join(self.work, f"pyinfra_inventory_{n}.py")
        common = {"ssh_hostname": "127.0.0.1", "ssh_user": "deploy", "ssh_key": self.fleet.client_key,
                  "ssh_known_hosts_file": self.fleet.known_hosts, "ssh_strict_host_key_checking": "yes",
                  "ssh_config_file": self.empty, "ssh_allow_agent": False, "ssh_look_for_keys": False}
        with open(inv, "w") as f:
            f.write("# Written by bench/fleet.py.\nhosts = [\n")
            for h in self.fleet.hosts[:n]:
                f.write(f"    ({h['name']!r}, {dict(common, ssh_port=h['port'])!r}),\n")
            f.write("]\n")
        return inv

    def stop_ansible_masters(self):
        # bench/deploy.py's Bench.stop_ansible_masters only needs `cp_dir`.
        deploy.Bench.stop_ansible_masters(types.SimpleNamespace(cp_dir=self.cp_dir))

    # -- running --

    def execute(self, part, n, name, argv, run_no, *, env=None, cwd=None, bastion=False, timed=True):
        """One command, settled and synced before; a result dict (recorded when timed)."""
        self.seq += 1
        tag = "" if timed else "setup-"
        base = os.path.join(self.logs, f"{self.seq:04d}-{tag}{part}-{name}-n{n}-r{run_no}")
        outf, errf = base + ".out", base + ".log"
        with open(errf, "w") as f:
            f.write(f"$ {shlex.join(argv)}\n")
        pids = self.fleet.pids(n, bastion)
        settle(pids)
        os.sync()
        off = self.fleet.bastion_offset() if bastion else None
        m = measure(argv, outf, errf, env=env, cwd=cwd, timeout=max(600, 4 * n))
        settle(pids)
        r = {"part": part, "n": n, "name": name, "run": run_no, "wall": m.wall, "cpu": m.cpu,
             "machine_cpu": m.machine_cpu,
             "rss_mb": None if name in ("floor", "floor-j") else m.maxrss_kb / 1024, "rc": m.rc, "ok": m.rc == 0,
             "timed_out": m.timed_out, "cmd": shlex.join(argv), "log": os.path.relpath(errf, ROOT),
             "out": outf, "err": errf}
        if bastion:
            r["bastion"] = self.fleet.bastion_counts(off)
        if timed:
            self.results.append(r)
            extra = ""
            if bastion:
                c = r["bastion"]
                extra = f"; bastion: {c['logins']} login(s), {c['refused']} refused/dropped"
            log(f"{part} N={n} {name} run {run_no}: {m.wall:.2f} s (CPU {m.cpu:.2f} s, "
                f"machine CPU {m.machine_cpu:.2f} s, "
                f"max RSS {m.maxrss_kb / 1024:.0f} MB, exit {m.rc}){extra}")
        return r

    def json_out(self, r):
        with open(r["out"], errors="replace") as f:
            text = f.read()
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise RuntimeError(f"{r['cmd']}: no JSON document on stdout ({e}):\n{text[-500:]}\n{tail(r['err'])}")

    def check(self, r, op, n, expect=None):
        """Did the shipit command do what it should? Raises RuntimeError saying why not."""
        why = None
        if r["rc"] != 0:
            why = f"exit {r['rc']}" + (" (timed out)" if r["timed_out"] else "")
        else:
            doc = self.json_out(r)
            hosts = doc.get("hosts", [])
            if len(hosts) != n:
                why = f"{len(hosts)} host(s) in the JSON document, expected {n}"
            elif op == "status":
                bad = [h["name"] for h in hosts if not h.get("reachable") or h.get("current") != self.a_id]
                if bad:
                    why = f"not reachable or not on {self.a_id}: {', '.join(bad[:5])}"
            else:
                want = "skipped" if op == "noop" else "done"
                bad = [f"{h['name']}: {h.get('result')} {h.get('reason', '')}".strip()
                       for h in hosts if h.get("result") != want]
                if bad:
                    why = f"expected every host {want}; " + "; ".join(bad[:5])
                elif op == "delta":
                    expect = doc.get("release")
                    r["release"] = expect
                    r["transfer"] = sorted({str(h.get("transfer")) for h in hosts})
            if why is None and op in ("noop", "delta", "rollback"):
                cur = self.fleet.current(0)
                want = expect or self.a_id
                if cur != want:
                    why = f"host 0's current is {cur}, expected {want}"
        if why:
            r["ok"] = False
            r["why"] = why
            raise RuntimeError(f"{r['cmd']}: {why}\n{tail(r['err'])}")
        return r

    def first_deploy(self, n):
        cfg = self.shipit_config(n, "fleet")
        log(f"first deploy of A to {n} host(s) (untimed)")
        r = self.execute("setup", n, "first-deploy", [self.shipit, "-c", cfg, "deploy", "--artifact", self.art_a,
                                                       "--json"], 0, timed=False)
        if r["rc"] != 0:
            raise RuntimeError(f"the first deploy failed (exit {r['rc']}):\n{tail(r['err'])}")
        doc = self.json_out(r)
        self.a_id = doc.get("release")
        bad = [h["name"] for h in doc.get("hosts", []) if h.get("result") != "done"]
        if bad or self.fleet.current(0) != self.a_id:
            raise RuntimeError(f"the first deploy left {', '.join(bad[:5]) or 'host 0'} off {self.a_id}")
        self.next_delta_at = (release_time(self.a_id) or time.time()) + 1

    def wait_for_delta(self):
        """Release ids are <UTC second>-<artifact sha>: B deployed again in the second of its
        previous (rolled-back) release would collide with it. Untimed wait for a new second."""
        while time.time() < self.next_delta_at:
            time.sleep(0.02)

    def shipit_block(self, n, cfg, run_no):
        """noop, delta, rollback, in this order: each needs the state the one before left.
        A delta or rollback not asked for still runs, untimed, where the other needs it."""
        ops = self.a.parts
        base = [self.shipit, "-c", cfg]
        if "noop" in ops:
            self.check(self.execute("fleet", n, "noop", base + ["deploy", "--artifact", self.art_a, "--json"], run_no),
                       "noop", n)
        if "delta" in ops or "rollback" in ops:
            self.wait_for_delta()
            r = self.execute("fleet", n, "delta", base + ["deploy", "--artifact", self.art_b, "--json"], run_no,
                             timed="delta" in ops)
            self.check(r, "delta", n)
            self.next_delta_at = (release_time(r.get("release")) or time.time()) + 1
            self.check(self.execute("fleet", n, "rollback", base + ["rollback", "--json"], run_no,
                                    timed="rollback" in ops), "rollback", n, self.a_id)

    def floor_cmd(self, n, jump=False):
        hf = self.fleet.hosts_file(n)
        if jump:
            return ["xargs", "-a", hf, "-P", str(FLOOR_P), "-I", "{}", "sh", "-c", FLOOR_J, self.fleet.ssh_config,
                    self.fleet.bastion["jump"], "{}"]
        return ["xargs", "-a", hf, "-P", str(FLOOR_P), "-I", "{}", "ssh", "-F", self.fleet.ssh_config, "-o",
                "ControlMaster=no", "deploy@{}", "true"]

    def russh_floor_cmd(self, n):
        f = self.fleet
        return [self.a.russh_floor, f.client_key, f.known_hosts, "deploy", "10", f.addresses_file(n)]

    def foreign_cmd(self, name, n):
        if name == "ansible":
            inv, cfg = self.ansible_files(n)
            env = dict(os.environ, ANSIBLE_CONFIG=cfg)
            return [os.path.join(deploy.VENV, "bin", "ansible"), "all", "-i", inv, "-m", "ansible.builtin.command",
                    "-a", "true", "-f", str(n)], env
        inv = self.pyinfra_inventory(n)
        return ([os.path.join(PYINFRA_VENV, "bin", "pyinfra")] + self.pyinfra_flags + ["--parallel", str(n), inv,
                                                                                       "exec", "--", "true"]), None

    def foreign(self, name, n, run_no, timed=True):
        """Ansible or pyinfra; a failure skips the contender at this N (never fatal)."""
        argv, env = self.foreign_cmd(name, n)
        try:
            r = self.execute("fleet", n, name, argv, run_no, env=env, cwd=self.work, timed=timed)
        finally:
            if name == "ansible":  # its ControlPersist masters hold sessions open on the hosts
                self.stop_ansible_masters()
        if r["rc"] != 0:
            what = "warm-up run" if not timed else f"run {run_no}"
            reason = f"{what} failed (exit {r['rc']}): " + " ".join(tail(r["err"], 300).split())[-300:]
            self.skipped[(name, n)] = reason
            r["ok"] = False
            log(f"{name} at N={n}: skipped: {reason}")
            return False
        return True

    def fleet_part(self, n):
        parts = self.a.parts
        cfg = self.shipit_config(n, "fleet")
        units = [u for u in ("floor", "status") if u in parts]
        if "floor-russh" in parts:
            if self.russh_floor_missing:
                self.skipped[("floor-russh", n)] = self.russh_floor_missing
            else:
                units.insert(1, "floor-russh")
        if parts & {"noop", "delta", "rollback"}:
            units.append("shipit")
        for name in ("ansible", "pyinfra"):
            if name not in parts or self.a.smoke:
                continue
            if n > FOREIGN_MAX_N:
                continue
            if name in self.unavailable:
                self.skipped[(name, n)] = self.unavailable[name]
                continue
            log(f"{name} at N={n}: warm-up run (untimed)")
            if self.foreign(name, n, 0, timed=False):
                units.append(name)
        if not units:
            return
        for run_no in range(1, self.a.runs + 1):
            k = (run_no - 1) % len(units)
            for u in units[k:] + units[:k]:
                if u in ("floor", "floor-russh"):
                    argv = self.floor_cmd(n) if u == "floor" else self.russh_floor_cmd(n)
                    r = self.execute("fleet", n, u, argv, run_no)
                    if r["rc"] != 0:
                        log(f"WARNING: {u} failed at N={n} (exit {r['rc']}): {tail(r['err'], 300)}")
                elif u == "status":
                    self.check(self.execute("fleet", n, "status", [self.shipit, "-c", cfg, "status", "--json"],
                                            run_no), "status", n)
                elif u == "shipit":
                    self.shipit_block(n, cfg, run_no)
                elif (u, n) not in self.skipped:
                    self.foreign(u, n, run_no)

    def bastion_part(self, n):
        cfg = self.shipit_config(n, "bastion", jump=self.fleet.bastion["jump"])
        for run_no in range(1, self.a.runs + 1):
            k = (run_no - 1) % len(BASTION)
            for u in BASTION[k:] + BASTION[:k]:
                if u == "floor-j":
                    r = self.execute("bastion", n, u, self.floor_cmd(n, jump=True), run_no, bastion=True)
                    with open(r["err"], errors="replace") as f:
                        r["failed_hosts"] = sum(1 for line in f if line.startswith("floor-failed "))
                    r["ok"] = r["rc"] == 0 and r["failed_hosts"] == 0
                    continue
                op = u.removesuffix("-j")
                argv = [self.shipit, "-c", cfg] + (["status", "--json"] if op == "status" else
                                                   ["deploy", "--artifact", self.art_a, "--json"])
                r = self.execute("bastion", n, u, argv, run_no, bastion=True)
                try:
                    self.check(r, op, n)
                except RuntimeError as e:  # recorded and reported; nothing here changes the hosts
                    log(f"WARNING: {u} at N={n} run {run_no} failed: {str(e).splitlines()[0]}")


# --- installing the other tools -----------------------------------------------------------


def ensure_pyinfra(logf):
    """pyinfra in its own venv; returns (version, extra flags). Raises with the reason."""
    bin_ = os.path.join(PYINFRA_VENV, "bin", "pyinfra")
    if not os.path.exists(bin_):
        log(f"creating the pyinfra venv in {PYINFRA_VENV} ({PYINFRA_SPEC} from PyPI)")
        shutil.rmtree(PYINFRA_VENV, ignore_errors=True)
        deploy.run([sys.executable, "-m", "venv", PYINFRA_VENV], log_to=logf)
        deploy.run([os.path.join(PYINFRA_VENV, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
                    PYINFRA_SPEC], log_to=logf)
    # The flags this version has (pyinfra 3 asks before executing unless -y/--yes; 2.x has no -y).
    rc, so, se = deploy.run([bin_, "--help"], capture=True, check=False)
    if rc != 0:
        raise RuntimeError(f"`pyinfra --help` exited {rc}: {(so + se)[-300:]}")
    text = so + se
    if "--parallel" not in text:
        raise RuntimeError("this pyinfra has no --parallel")
    flags = ["--yes"] if "--yes" in text else []
    return deploy.version(f"{shlex.quote(bin_)} --version"), flags


# --- the report -----------------------------------------------------------------------------


def stats(vals):
    return statistics.median(vals), min(vals), max(vals)


def wall_cell(rs):
    med, lo, hi = stats([r["wall"] for r in rs])
    bad = sum(1 for r in rs if not r["ok"])
    return f"{med:.2f} [{lo:.2f}-{hi:.2f}]" + (f" ({bad} failed)" if bad else "")


def report(b, meta):
    R = b.results
    L = [f"Run of {meta['date']} ({meta['kind']}), `{meta['argv']}`. Machine: {meta['machine']}. "
         f"**Indicative**: {meta['note']}", "",
         "Versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()), "",
         f"Hosts: plain sshd hosts on 127.0.0.1 (`tests/testbed/sshd-hosts.sh`, {CHUNK} per testbed, LogLevel "
         f"INFO, MaxStartups 100), started once for N={meta['max_n']}; a smaller N uses the first N. App: "
         f"{meta['files']} small files, artifacts A and B (about {meta['artifact_bytes']} bytes, B with one file "
         "changed) from `shipit package`; A deployed to every host untimed before the first round. "
         f"{meta['runs']} timed run(s) per command and N, contenders interleaved (each round starts one further "
         "on; noop, delta, rollback always in this order, as one block), `sync` and the hosts' sessions settled "
         "before each. Cells: wall time in s, median [min-max]. Client CPU: user+sys of the command and what it "
         "reaped (wait4; not Ansible's ControlPersist ssh masters). Machine CPU: every CPU's busy time while "
         "it ran (/proc/stat: the client, and every sshd and process on the hosts, which share this machine). "
         "Peak RSS: ru_maxrss, the largest single "
         "process (n/a for the xargs floor). Per host: median wall / N.", ""]
    for part, names, title in (("fleet", MAIN, "Fleet: one command on N hosts"),
                               ("bastion", BASTION, "Through one bastion")):
        rs_part = [r for r in R if r["part"] == part]
        skipped = {k: v for k, v in b.skipped.items()} if part == "fleet" else {}
        if not rs_part and not skipped:
            continue
        ns = sorted({r["n"] for r in rs_part} | {n for _, n in skipped})
        present = [c for c in names if any(r["name"] == c for r in rs_part) or any(k[0] == c for k in skipped)]
        L.append(f"### {title}: wall time (s), median [min-max]")
        L.append("")
        if part == "bastion":
            L.append(f"Every host reached through one more sshd (`ssh -J` / `ssh.proxy_jump`), whose MaxStartups is "
                     f"{meta['bastion_max_startups']}. The floor runs each `ssh -J` under `sh -c` (so that a "
                     "failed one, exit 255, does not stop xargs) and counts the hosts that failed.")
            L.append("")
        L.append("| N | " + " | ".join(LABELS[c] for c in present) + " |")
        L.append("|---|" + "---|" * len(present))
        for n in ns:
            cells = []
            for c in present:
                rs = [r for r in rs_part if r["n"] == n and r["name"] == c]
                if (c, n) in skipped:
                    cells.append("skipped")
                elif rs:
                    cells.append(wall_cell(rs))
                else:
                    cells.append("-")
            L.append(f"| {n} | " + " | ".join(cells) + " |")
        L.append("")
        hdr = "| N | contender | wall (s) | per host (ms) | client CPU (s) | machine CPU (s) | peak RSS (MB) |"
        sep = "|---|---|---|---|---|---|---|"
        if part == "bastion":
            hdr += " bastion logins | refused/dropped | throttling episodes | hosts failed |"
            sep += "---|---|---|---|"
        L.append(hdr)
        L.append(sep)
        for n in ns:
            for c in present:
                rs = [r for r in rs_part if r["n"] == n and r["name"] == c]
                if not rs or (c, n) in skipped:
                    continue
                med = statistics.median(r["wall"] for r in rs)
                cpu = statistics.median(r["cpu"] for r in rs)
                all_cpu = statistics.median(r.get("machine_cpu", 0.0) for r in rs)
                rss = [r["rss_mb"] for r in rs if r["rss_mb"] is not None]
                head = f"| {n} | {LABELS[c]} | {wall_cell(rs)} | {med / n * 1000:.1f} | {cpu:.2f} | {all_cpu:.2f} |"
                row = head + (f" {statistics.median(rss):.0f} |" if rss else " n/a |")
                if part == "bastion":
                    def cnt(key):
                        v = [r["bastion"][key] for r in rs]
                        m = statistics.median(v)
                        return f"{m:g}" + (f" [{min(v)}-{max(v)}]" if min(v) != max(v) else "")
                    fh = [r["failed_hosts"] for r in rs if "failed_hosts" in r]
                    row += (f" {cnt('logins')} | {cnt('refused')} | {cnt('throttling')} | "
                            f"{(str(max(fh)) + ' (max)') if fh else '-'} |")
                L.append(row)
        L.append("")
        for (c, n), why in sorted(skipped.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            L.append(f"- {LABELS[c]}, N={n}: skipped: {why}")
        fails = [r for r in rs_part if not r["ok"] and r.get("why")]
        for r in fails:
            L.append(f"- {LABELS[r['name']]}, N={r['n']}, run {r['run']}: FAILED: {r['why']}")
        if skipped or fails:
            L.append("")
    if any(r["part"] == "bastion" for r in R):
        L.append("Bastion columns, from its sshd log (LogLevel VERBOSE), median [min-max] over the runs: "
                 "`Accepted publickey` lines; refused/dropped = `drop connection` and "
                 "`exceeded MaxStartups` lines; throttling episodes = `beginning MaxStartups throttling`.")
        L.append("")
    L.append("### The commands")
    L.append("")
    L.append("`$WORK` is the harness's scratch dir; `$WORK/ssh_config` names each host (`Host h001`: 127.0.0.1 and "
             "its port) and sets the client key and strict known_hosts for all. Largest N of each:")
    L.append("")
    L.append("```")
    seen = set()
    for r in sorted(R, key=lambda r: -r["n"]):
        if (r["part"], r["name"]) in seen:
            continue
        seen.add((r["part"], r["name"]))
        L.append(f"{r['part']}/{r['name']}: {r['cmd'].replace(b.work, '$WORK')}")
    L.append("```")
    return "\n".join(L) + "\n"


def write_benchmarks(text):
    path = os.path.join(ROOT, "BENCHMARKS.md")
    with open(path) as f:
        doc = f.read()
    section = (f"{BEGIN}\n## Fleet: 20 to 500 hosts, against the SSH floor, Ansible and pyinfra\n\n"
               "`sudo python3 bench/fleet.py` after `cargo build --release` (`--smoke` for the quick check, which CI "
               "does; `--hosts 20,100 --only floor,status,noop` for parts).\n\n"
               f"{text}{END}")
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + section + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(doc)
    log("BENCHMARKS.md: fleet section written")


def machine():
    nproc = len(os.sched_getaffinity(0))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    try:
        load = f"{os.getloadavg()[0]:.1f}"
    except OSError:
        load = "?"
    return (f"nproc {nproc}, {mem:.0f} GiB, kernel {platform.release()} ({platform.machine()}), "
            f"{deploy.version('ssh -V')}, load average {load} at the end")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shipit", default=os.path.join(ROOT, "target", "release", "shipit"),
                    help="the shipit binary (default: target/release/shipit; build it with cargo build --release)")
    ap.add_argument("--russh-floor", default=DEFAULT_RUSSH_FLOOR,
                    help="the russh floor (default: target/release/examples/russh-floor, built if missing)")
    ap.add_argument("--hosts", help="host counts, e.g. 20,100 (default 20,100,250,500)")
    ap.add_argument("--runs", type=int, help="timed runs per command and N (default 3)")
    ap.add_argument("--smoke", action="store_true", help="N=2,3, one run, no Ansible/pyinfra, bastion at N=2")
    ap.add_argument("--only", help="parts: " + ",".join(PARTS))
    ap.add_argument("--bastion-max-startups", default="10:30:100",
                    help="the bastion sshd's MaxStartups (default OpenSSH's 10:30:100; `testbed`: the testbed's 100)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    ap.add_argument("--write-benchmarks", action="store_true",
                    help="replace the fleet section of BENCHMARKS.md even for a partial run")
    a = ap.parse_args()
    full_run = not (a.smoke or a.only or a.hosts or a.runs is not None) or a.write_benchmarks
    if os.geteuid() != 0:
        sys.exit("fleet: run as root (the sshd hosts need it): sudo python3 bench/fleet.py")
    try:
        ns = [2, 3] if a.smoke else sorted({int(x) for x in (a.hosts or ",".join(map(str, DEFAULT_NS))).split(",")})
    except ValueError:
        sys.exit(f"fleet: bad --hosts {a.hosts!r}")
    if not ns or min(ns) < 1:
        sys.exit("fleet: host counts must be >= 1")
    a.runs = a.runs if a.runs is not None else (1 if a.smoke else 3)
    if a.runs < 1:
        sys.exit("fleet: --runs must be >= 1")
    a.parts = set((a.only or ",".join(PARTS)).split(","))
    unknown = a.parts - set(PARTS)
    if unknown:
        sys.exit(f"fleet: unknown --only parts: {', '.join(sorted(unknown))} (known: {','.join(PARTS)})")
    if len(TB_PREFIX) > 12 or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", TB_PREFIX):
        sys.exit("fleet: SHIPIT_BENCH_FLEET_TESTBED: at most 12 chars of a-z 0-9 -")
    a.shipit = os.path.abspath(a.shipit)
    a.russh_floor = os.path.abspath(a.russh_floor)
    if a.russh_floor == DEFAULT_RUSSH_FLOOR and "floor-russh" in a.parts and not os.path.isfile(a.russh_floor):
        log("building the russh floor (cargo build --release --locked --example russh-floor)")
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--example", "russh-floor"],
                       cwd=ROOT, check=True)
    if not (os.path.isfile(a.shipit) and os.access(a.shipit, os.X_OK)):
        sys.exit(f"fleet: no shipit binary at {a.shipit}: build it first (`cargo build --release`) or pass "
                 "--shipit PATH")
    for tool in ("ssh", "xargs", "sh"):
        if not shutil.which(tool):
            sys.exit(f"fleet: `{tool}` is not installed")
    if not os.access(SSHD_HOSTS, os.X_OK):
        sys.exit(f"fleet: {SSHD_HOSTS} is missing")
    signal.signal(signal.SIGTERM, deploy.on_signal)
    signal.signal(signal.SIGHUP, deploy.on_signal)
    nofile = raise_nofile()
    log(f"open-files limit: {nofile}")
    bastion_ns = ([min(ns)] if a.smoke else ns) if "bastion" in a.parts else []

    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="shipit-bench-fleet-", dir="/var/tmp")
    os.chmod(work, 0o755)
    b = Bench(a, a.shipit, work, a.out)
    t_start = time.time()
    versions = {"shipit": deploy.version(f"{shlex.quote(a.shipit)} --version"), "OpenSSH": deploy.version("ssh -V")}
    versions["Python"] = platform.python_version()
    error = None
    meta = {}
    started = []  # every testbed asked to come up, torn down in the end whatever happens

    def snapshot(kind):
        """fleet.json as it stands (also written after each N: a long run keeps its results)."""
        meta.update({
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "kind": kind,
            "argv": "python3 bench/fleet.py " + " ".join(sys.argv[1:]),
            "machine": machine(),
            "note": "the machine may be shared with other jobs; compare within one run, not across runs.",
            "runs": a.runs, "hosts": ns, "max_n": max(ns), "files": 20,
            "artifact_bytes": os.path.getsize(b.art_a) if b.art_a else None,
            "bastion_max_startups": b.fleet.bastion["max_startups"] if b.fleet and b.fleet.bastion else None,
            "release_a": b.a_id, "versions": versions, "seconds": round(time.time() - t_start),
            "open_files_limit": nofile,
        })
        with open(os.path.join(a.out, "fleet.json"), "w") as f:
            json.dump({"meta": meta, "results": b.results,
                       "skipped": [{"name": k[0], "n": k[1], "reason": v} for k, v in b.skipped.items()]},
                      f, indent=1)

    try:
        foreign_ns = [n for n in ns if n <= FOREIGN_MAX_N] if not a.smoke else []
        # The other tools first (minutes of pip on a first run), never fatal.
        if "ansible" in a.parts and foreign_ns:
            try:
                deploy.ensure_ansible(a.smoke)
                versions["ansible-core"] = deploy.version(f"{deploy.VENV}/bin/ansible --version")
            except Exception as e:  # noqa: BLE001 - reported as skipped
                b.unavailable["ansible"] = f"not installed ({deploy.ANSIBLE_CORE} into {deploy.VENV}): {e}"
                log(f"ansible: {b.unavailable['ansible']}")
        if "pyinfra" in a.parts and foreign_ns:
            try:
                versions["pyinfra"], b.pyinfra_flags = ensure_pyinfra(os.path.join(b.logs, "pyinfra-install.log"))
            except Exception as e:  # noqa: BLE001 - reported as skipped
                b.unavailable["pyinfra"] = f"not installed ({PYINFRA_SPEC} into {PYINFRA_VENV}): {e}"
                log(f"pyinfra: {b.unavailable['pyinfra']}")
        b.artifacts()
        b.fleet = Fleet(max(ns), work, bool(bastion_ns), a.bastion_max_startups, started)
        b.first_deploy(max(ns))
        for n in ns:
            log(f"--- N={n}")
            b.fleet_part(n)
            snapshot("partial, in progress")
        for n in bastion_ns:
            log(f"--- N={n} through the bastion")
            b.bastion_part(n)
            snapshot("partial, in progress")
    except BaseException as e:
        error = e
        raise
    finally:
        deploy.kill_children()
        b.stop_ansible_masters()
        for tb in reversed(started):
            tb.down()
        try:
            if b.a_id is not None:
                kind = "smoke run" if a.smoke else ("full run" if full_run and error is None else "partial run")
                if error is not None:
                    kind += f", stopped by {type(error).__name__}"
                snapshot(kind)
                text = report(b, meta)
                with open(os.path.join(a.out, "fleet.md"), "w") as f:
                    f.write(text)
                if error is None:
                    print(text)
                    if full_run:
                        write_benchmarks(text)
                    log(f"done in {time.time() - t_start:.0f} s; report in {os.path.relpath(a.out, ROOT)}/fleet.md")
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
