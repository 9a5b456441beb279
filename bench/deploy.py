#!/usr/bin/env python3
"""The deploy benchmark (issue 7): shipit against the usual ways of doing the same job.

Every contender uploads the same artifact, unpacks it into a new release dir and switches
`current` atomically, on the same plain sshd hosts (tests/testbed/sshd-hosts.sh: one port
each on 127.0.0.1, a private /opt per host, `service.manager: none` for shipit). Timed in
the same run, contenders alternating within a round, fresh deploy dir each run, warm
page cache; medians, min/max, ratios against the floor (one `ssh ... tar xz` per host,
all at once). Exec channels per host are counted from the sshds' own logs (LogLevel
DEBUG1: `server_input_channel_open: ctype session` lines), per command.

  sudo python3 bench/deploy.py             # full run: N = 1,5,10,20, 3 runs, ~100 MB tree
  sudo python3 bench/deploy.py --smoke     # N = 1,2, small tree, one run: checks the harness
  sudo python3 bench/deploy.py --hosts 1,5 --only floor,shipit --runs 5
  sudo python3 bench/deploy.py --only delta   # just the delta-deploy scenario (20 hosts)

Parts (--only, comma separated; default all): contenders (classic, parallel, ansible,
floor, shipit), ops (shipit no-op redeploy and rollback on the largest N), delta (1% of
files changed, 20 hosts: shipit with delta off|copy|hardlink against rsync), package
(bench/package.py), nspawn (bench/nspawn.py: 10 nspawn hosts with systemd and the
example app, after the sshd hosts are stopped). Raw results: bench/out/deploy.json, the report: bench/out/deploy.md;
a full run (not --smoke, no --only/--hosts/--runs) also replaces the deploy section of
BENCHMARKS.md. Must run as root (the sshd hosts need it). The Ansible venv is cached in
/var/tmp/shipit-bench-ansible (SHIPIT_BENCH_VENV). Everything the harness starts is
stopped by PID on exit, also on failure or Ctrl-C.
"""
import argparse
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
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTBED = os.path.join(ROOT, "tests", "testbed")
ANSIBLE_CORE = "ansible-core==2.19.14"
VENV = os.environ.get("SHIPIT_BENCH_VENV", "/var/tmp/shipit-bench-ansible")
TB_NAME = os.environ.get("SHIPIT_BENCH_TESTBED", "bench-deploy")
CONTENDERS = ["classic", "parallel", "ansible", "floor", "shipit"]
LABELS = {
    "classic": "1. scp + ssh, host by host",
    "parallel": "2. scp + ssh, xargs -P N",
    "ansible": "3. Ansible (copy, unarchive, file)",
    "floor": "4. floor: ssh < artifact, tar xz",
    "shipit": "5. shipit deploy --artifact",
}
BEGIN = "<!-- bench/deploy.py: begin -->"
END = "<!-- bench/deploy.py: end -->"

# What a per-host sshd log line means (LogLevel DEBUG1, OpenSSH 9.x).
COUNTERS = {
    "conns": re.compile(r"Accepted publickey for deploy "),
    "channels": re.compile(r"server_input_channel_open: ctype session "),
    "exec": re.compile(r"session_input_channel_req: session \d+ req exec"),
    "subsystem": re.compile(r"session_input_channel_req: session \d+ req subsystem"),
}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- processes: everything started is tracked and stopped by PID --------------------------

CHILDREN = set()  # Popen objects running now (each leads its own process group)


def run(cmd, *, log_to=None, check=True, env=None, cwd=None, capture=False, shell=False):
    """Run a command in its own process group; killed (by PID/PGID) if we are interrupted."""
    out = subprocess.PIPE if capture else (open(log_to, "ab") if log_to else subprocess.DEVNULL)
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if not capture else subprocess.PIPE,
                         stdin=subprocess.DEVNULL, env=env, cwd=cwd, shell=shell,
                         start_new_session=True)
    CHILDREN.add(p)
    try:
        so, se = p.communicate()
    finally:
        CHILDREN.discard(p)
        if log_to and not capture:
            out.close()
    if check and p.returncode != 0:
        tail = ""
        if log_to:
            with open(log_to, "rb") as f:
                tail = f.read()[-3000:].decode(errors="replace")
        if capture:
            tail = (so or b"").decode(errors="replace")[-1500:] + (se or b"").decode(errors="replace")[-1500:]
        raise RuntimeError(f"command failed (exit {p.returncode}): {cmd if isinstance(cmd, str) else shlex.join(cmd)}\n{tail}")
    if capture:
        return p.returncode, so.decode(errors="replace"), se.decode(errors="replace")
    return p.returncode


def kill_children():
    for p in list(CHILDREN):
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 5
    for p in list(CHILDREN):
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def version(cmd):
    try:
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30)
        lines = (p.stdout.strip() or p.stderr.strip()).splitlines()
        return lines[0].strip() if lines else "unknown"
    except Exception:  # noqa: BLE001 - a missing tool is reported, not fatal
        return "not found"


# --- the hosts ------------------------------------------------------------------------------


class Hosts:
    """N plain sshd hosts (sshd-hosts.sh) with LogLevel DEBUG1 for the channel counts."""

    def __init__(self, count, opt_tmpfs=None):
        env = dict(os.environ, TESTBED_SSHD_LOG_LEVEL="DEBUG1")
        if opt_tmpfs:
            env["TESTBED_SSHD_OPT_TMPFS"] = opt_tmpfs
        log(f"starting {count} sshd host(s) (testbed {TB_NAME})")
        self.name = TB_NAME
        self.up = True
        _, so, _ = run([os.path.join(TESTBED, "sshd-hosts.sh"), "--name", TB_NAME, "up", str(count)],
                       env=env, capture=True)
        self.state = so.strip().splitlines()[-1]
        with open(os.path.join(self.state, "testbed.json")) as f:
            tb = json.load(f)
        self.hosts = tb["hosts"]
        self.ssh_config = tb["ssh_config"]
        self.client_key = tb["client_key"]
        self.known_hosts = tb["known_hosts"]
        self.pids = [h["pid"] for h in self.hosts]

    def down(self):
        if self.up:
            self.up = False
            log(f"stopping the sshd hosts (testbed {TB_NAME})")
            run([os.path.join(TESTBED, "sshd-hosts.sh"), "--name", TB_NAME, "down"], check=False)

    def sshd_log(self, i):
        return os.path.join(self.state, "hosts", self.hosts[i]["name"], "sshd.log")

    def opt(self, i):
        return self.hosts[i]["opt"]

    def offsets(self, n):
        return [os.path.getsize(self.sshd_log(i)) for i in range(n)]

    def counts_since(self, offsets):
        """Per host: connections, session channels, exec and subsystem requests since offsets."""
        per_host = []
        for i, off in enumerate(offsets):
            with open(self.sshd_log(i), "rb") as f:
                f.seek(off)
                text = f.read().decode(errors="replace")
            per_host.append({k: len(rx.findall(text)) for k, rx in COUNTERS.items()})
        return per_host

    def settle(self, n, timeout=5.0):
        """Wait (bounded) until the first n sshds have reaped every session."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            busy = False
            for pid in self.pids[:n]:
                for t in glob.glob(f"/proc/{pid}/task/*/children"):
                    with open(t) as f:
                        if f.read().strip():
                            busy = True
            if not busy:
                return
            time.sleep(0.02)

    def wipe(self, n, subdir):
        """Untimed: remove a contender's deploy dir on hosts 0..n-1 (directly, as root)."""
        for i in range(n):
            shutil.rmtree(os.path.join(self.opt(i), subdir), ignore_errors=True)


# --- contenders -----------------------------------------------------------------------------

PER_HOST = r"""#!/bin/bash
# deploy-one.sh HOST ARTIFACT DEPLOY_TO RELEASE UPLOAD_DIR: the classic deploy.sh way for one
# host: scp the tarball, then one ssh that unpacks into releases/RELEASE and switches
# `current` atomically (symlink beside it, then rename over it).
set -euo pipefail
h=$1 art=$2 d=$3 ts=$4 up=$5
tmp=$up/classic-$h.tar.gz
scp -q -F "$SSH_CONFIG" "$art" "deploy@$h:$tmp" </dev/null
ssh -F "$SSH_CONFIG" "deploy@$h" "set -e; mkdir -p $d/releases/$ts; tar xzf $tmp -C $d/releases/$ts; \
ln -sfn releases/$ts $d/.current.tmp; mv -T $d/.current.tmp $d/current; rm -f $tmp" </dev/null
"""

CLASSIC = r"""#!/bin/bash
# classic.sh HOSTS_FILE ARTIFACT DEPLOY_TO RELEASE UPLOAD_DIR: deploy-one.sh host by host.
set -euo pipefail
while read -r h; do "$(dirname "$0")/deploy-one.sh" "$h" "$2" "$3" "$4" "$5"; done <"$1"
"""

PARALLEL = r"""#!/bin/bash
# parallel.sh HOSTS_FILE ARTIFACT DEPLOY_TO RELEASE UPLOAD_DIR N: deploy-one.sh, N hosts at once.
set -euo pipefail
xargs -P "$6" -I{} "$(dirname "$0")/deploy-one.sh" {} "$2" "$3" "$4" "$5" <"$1"
"""

FLOOR = r"""#!/bin/bash
# floor.sh HOSTS_FILE ARTIFACT DEPLOY_TO RELEASE: one ssh per host streaming the artifact
# into `tar xz` in releases/RELEASE and switching `current`, all hosts at once.
set -euo pipefail
pids=()
while read -r h; do
  ssh -F "$SSH_CONFIG" "deploy@$h" "set -e; mkdir -p $3/releases/$4; tar xzf - -C $3/releases/$4; \
ln -sfn releases/$4 $3/.current.tmp; mv -T $3/.current.tmp $3/current" <"$2" &
  pids+=($!)
done <"$1"
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
"""

RSYNC = r"""#!/bin/bash
# rsync.sh HOSTS_FILE BUILD_DIR DEPLOY_TO RELEASE MODE [BASIS]: per host, all at once, rsync
# the build dir into releases/RELEASE (MODE link: --link-dest=../BASIS, copy:
# --copy-dest=../BASIS, plain: no basis), then one ssh to switch `current`.
set -euo pipefail
basis=()
case $5 in
  link) basis=(--link-dest="../$6") ;;
  copy) basis=(--copy-dest="../$6") ;;
  plain) ;;
esac
one() {
  rsync -a -e "ssh -F $SSH_CONFIG" --rsync-path="mkdir -p $3/releases && rsync" "${basis[@]}" \
    "$2/" "deploy@$1:$3/releases/$4/"
  ssh -F "$SSH_CONFIG" "deploy@$1" "ln -sfn releases/$4 $3/.current.tmp && mv -T $3/.current.tmp $3/current"
}
pids=()
while read -r h; do one "$h" "$2" "$3" "$4" </dev/null & pids+=($!); done <"$1"
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
"""

PLAYBOOK = """\
# The same job in Ansible: copy the artifact, unarchive it into a new release dir, switch
# `current` (the file module makes the link beside it and renames it over: atomic).
- hosts: all
  gather_facts: false
  tasks:
    - name: release dir
      ansible.builtin.file: {path: "{{ d }}/releases/{{ ts }}", state: directory}
    - name: upload
      ansible.builtin.copy: {src: "{{ art }}", dest: "{{ up }}/ansible-{{ inventory_hostname }}.tar.gz"}
    - name: unpack
      ansible.builtin.unarchive:
        src: "{{ up }}/ansible-{{ inventory_hostname }}.tar.gz"
        dest: "{{ d }}/releases/{{ ts }}"
        remote_src: true
    - name: switch
      ansible.builtin.file: {src: "releases/{{ ts }}", dest: "{{ d }}/current", state: link, force: true}
"""


class Bench:
    def __init__(self, a, shipit, work, out_dir):
        self.a = a
        self.shipit = shipit
        self.work = work
        self.out = out_dir
        self.logs = os.path.join(out_dir, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.hosts = None
        self.results = []  # dicts: part, n, name, run, wall, counts
        self.seq = 0
        self.scripts = os.path.join(work, "scripts")
        os.makedirs(self.scripts)
        for name, text in (("deploy-one.sh", PER_HOST), ("classic.sh", CLASSIC), ("parallel.sh", PARALLEL),
                           ("floor.sh", FLOOR), ("rsync.sh", RSYNC)):
            path = os.path.join(self.scripts, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
        # Uploads of contenders 1-3 land here: per host names, shared by all hosts (/tmp-like).
        self.up = os.path.join(work, "up")
        os.makedirs(self.up)
        shutil.chown(self.up, "deploy", "deploy") if _user_exists("deploy") else None
        self.cp_dir = os.path.join(work, "ansible-cp")
        os.makedirs(self.cp_dir)

    # -- setup per host count --

    def hosts_file(self, n):
        path = os.path.join(self.work, f"hosts-{n}")
        with open(path, "w") as f:
            f.write("".join(h["name"] + "\n" for h in self.hosts.hosts[:n]))
        return path

    def shipit_project(self, tag, n, extra=""):
        d = os.path.join(self.work, f"shipit-{tag}-{n}")
        os.makedirs(d, exist_ok=True)
        hosts = "".join(f"  - {{host: 127.0.0.1, port: {h['port']}, name: {h['name']}}}\n"
                        for h in self.hosts.hosts[:n])
        cfg = (f"app: bench\ndeploy_to: /opt/{tag}\nkeep_releases: 2\n{extra}"
               f"package:\n  root: {self.work}/tree\n  include: [.]\n"
               f"ssh:\n  user: deploy\n  identity_files: [{self.hosts.client_key}]\n"
               f"  known_hosts: strict\n  known_hosts_file: {self.hosts.known_hosts}\n"
               f"service:\n  manager: none\n"
               f"rollout:\n  parallel: {n}\n  canary: 0\n"
               f"hosts:\n{hosts}")
        path = os.path.join(d, "deploy.yaml")
        with open(path, "w") as f:
            f.write(cfg)
        run([self.shipit, "-c", path, "config"], capture=True)  # validates
        return path

    def ansible_files(self, n):
        inv = os.path.join(self.work, f"inventory-{n}.ini")
        with open(inv, "w") as f:
            f.write("[bench]\n" + "".join(h["name"] + "\n" for h in self.hosts.hosts[:n]))
            f.write(f"[bench:vars]\nansible_user=deploy\nansible_ssh_common_args=-F {self.hosts.ssh_config}\n"
                    "ansible_python_interpreter=/usr/bin/python3\n")
        cfg = os.path.join(self.work, "ansible.cfg")
        with open(cfg, "w") as f:
            f.write("[defaults]\nhost_key_checking = True\ngathering = explicit\nretry_files_enabled = False\n"
                    f"local_tmp = {self.work}/ansible-local\n"
                    "[ssh_connection]\npipelining = True\n"
                    "ssh_args = -o ControlMaster=auto -o ControlPersist=60s\n"
                    f"control_path_dir = {self.cp_dir}\n")
        pb = os.path.join(self.work, "deploy.yml")
        with open(pb, "w") as f:
            f.write(PLAYBOOK)
        return inv, cfg, pb

    def stop_ansible_masters(self):
        """Untimed: ssh ControlPersist masters Ansible left behind, stopped by their PID."""
        for sock in glob.glob(os.path.join(self.cp_dir, "*")):
            p = subprocess.run(["ssh", "-O", "check", "-o", f"ControlPath={sock}", "x"],
                               capture_output=True, text=True)
            m = re.search(r"pid=(\d+)", p.stderr + p.stdout)
            if m:
                pid = int(m.group(1))
                try:
                    os.kill(pid, signal.SIGTERM)
                    for _ in range(100):
                        os.kill(pid, 0)
                        time.sleep(0.02)
                except ProcessLookupError:
                    pass
            try:
                os.unlink(sock)
            except FileNotFoundError:
                pass

    # -- measuring --

    def command(self, name, n, art, d, rel):
        """The timed command of contender `name` for n hosts: (argv, env)."""
        env = dict(os.environ, SSH_CONFIG=self.hosts.ssh_config)
        hf = self.hosts_file(n)
        s = self.scripts
        if name == "classic":
            return [f"{s}/classic.sh", hf, art, d, rel, self.up], env
        if name == "parallel":
            return [f"{s}/parallel.sh", hf, art, d, rel, self.up, str(n)], env
        if name == "floor":
            return [f"{s}/floor.sh", hf, art, d, rel], env
        if name == "ansible":
            inv, cfg, pb = self.ansible_files(n)
            env["ANSIBLE_CONFIG"] = cfg
            return [f"{VENV}/bin/ansible-playbook", "-i", inv, "-f", str(n), pb,
                    "-e", f"d={d} ts={rel} art={art} up={self.up}"], env
        if name == "shipit":
            return [self.shipit, "-c", self.shipit_project("shipit", n), "deploy", "--artifact", art], env
        raise ValueError(name)

    def timed(self, part, n, name, argv, env, run_no, label=None):
        self.seq += 1
        logf = os.path.join(self.logs, f"{self.seq:04d}-{part}-{name}-n{n}-r{run_no}.log")
        with open(logf, "w") as f:
            f.write(f"$ {shlex.join(argv)}\n")
        self.hosts.settle(n)
        offs = self.hosts.offsets(n)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        run(argv, log_to=logf, env=env)
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if name == "ansible":  # its ControlPersist masters hold the host-side sessions open
            self.stop_ansible_masters()
        self.hosts.settle(n)
        ccpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        counts = self.hosts.counts_since(offs)
        r = {"part": part, "n": n, "name": name, "label": label or LABELS.get(name, name), "run": run_no,
             "wall": wall, "client_cpu": ccpu, "counts": counts, "cmd": shlex.join(argv), "log": os.path.relpath(logf, ROOT)}
        self.results.append(r)
        log(f"{part} N={n} {name} run {run_no}: {wall:.2f} s (client CPU {ccpu:.2f} s); per host: "
            f"{_fmt_counts(counts)}")
        return r

    def verify(self, n, d, expect_file, expect_size):
        """The release `current` points to holds the artifact's files (checked on disk)."""
        for i in range(n):
            cur = os.path.join(self.hosts.opt(i), d.removeprefix("/opt/"), "current")
            target = os.readlink(cur)
            if target.startswith("/opt/"):  # an absolute link means the host's /opt
                base = os.path.join(self.hosts.opt(i), target.removeprefix("/opt/"))
            else:
                base = os.path.join(os.path.dirname(cur), target)
            f = os.path.join(base, expect_file)
            if os.path.getsize(f) != expect_size:
                raise RuntimeError(f"{cur} -> {target}: {expect_file} has the wrong size")

    def contenders(self, ns, art, check_file, check_size):
        names = [c for c in CONTENDERS if c in self.a.only_contenders]
        for n in ns:
            for run_no in range(1, self.a.runs + 1):
                # Alternate: each round starts one contender further on.
                k = (run_no - 1) % len(names)
                for name in names[k:] + names[:k]:
                    sub = f"c-{name}"
                    self.hosts.wipe(n, sub)
                    argv, env = self.command(name, n, art, f"/opt/{sub}", f"r{run_no}-{int(time.time())}")
                    if name == "shipit":  # its deploy_to is fixed in deploy.yaml
                        self.hosts.wipe(n, "shipit")
                    self.timed("deploy", n, name, argv, env, run_no)
                    self.verify(n, "/opt/shipit" if name == "shipit" else f"/opt/{sub}", check_file, check_size)
                    self.hosts.wipe(n, sub)
                    for f in glob.glob(os.path.join(self.up, "*")):
                        os.unlink(f)
            self.hosts.wipe(n, "shipit")

    def ops(self, n, art):
        """shipit no-op redeploy and rollback on n hosts."""
        cfg = self.shipit_project("ops", n)
        base = [self.shipit, "-c", cfg]
        env = dict(os.environ)
        for run_no in range(1, self.a.runs + 1):
            self.hosts.wipe(n, "ops")
            run(base + ["deploy", "--artifact", art], log_to=os.path.join(self.logs, "ops-setup.log"))
            self.timed("ops", n, "noop", base + ["deploy", "--artifact", art], env, run_no,
                       label="shipit deploy, same artifact again (no-op)")
            before = os.readlink(os.path.join(self.hosts.opt(0), "ops", "current"))
            # Release ids are <UTC second>-<sha>: a forced redeploy of the same artifact in
            # the same second collides with the live release (a shipit defect, reported),
            # so start it in the next second.
            t = int(time.time())
            while int(time.time()) == t:
                time.sleep(0.05)
            run(base + ["deploy", "--force", "--artifact", art], log_to=os.path.join(self.logs, "ops-setup.log"))
            self.timed("ops", n, "rollback", base + ["rollback"], env, run_no, label="shipit rollback")
            after = os.readlink(os.path.join(self.hosts.opt(0), "ops", "current"))
            if after != before:
                raise RuntimeError(f"rollback left current at {after}, expected {before}")
        self.hosts.wipe(n, "ops")

    def delta(self, n, tree1, tree2, art1, art2, changed_file, changed_size):
        """1% of files changed: shipit delta off|copy|hardlink against rsync, n hosts."""
        hf = self.hosts_file(n)
        env = dict(os.environ, SSH_CONFIG=self.hosts.ssh_config)
        modes = ["off", "copy", "hardlink"]
        cfgs = {m: self.shipit_project(f"delta-{m}", n, extra=f"delta: {m}\n") for m in modes}
        names = [f"shipit-{m}" for m in modes] + ["rsync-link", "rsync-copy", "rsync-plain"]
        labels = {
            "shipit-off": "shipit deploy, delta: off (full)",
            "shipit-copy": "shipit deploy, delta: copy",
            "shipit-hardlink": "shipit deploy, delta: hardlink",
            "rsync-link": "rsync --link-dest=prev",
            "rsync-copy": "rsync --copy-dest=prev",
            "rsync-plain": "rsync, no basis (full)",
        }
        for run_no in range(1, self.a.delta_runs + 1):
            k = (run_no - 1) % len(names)
            for name in names[k:] + names[:k]:
                sub = f"delta-{name.split('-', 1)[1]}" if name.startswith("shipit") else name
                self.hosts.wipe(n, sub)
                setup_log = os.path.join(self.logs, "delta-setup.log")
                if name.startswith("shipit"):
                    m = name.split("-", 1)[1]
                    run([self.shipit, "-c", cfgs[m], "deploy", "--artifact", art1], log_to=setup_log)
                    argv = [self.shipit, "-c", cfgs[m], "deploy", "--artifact", art2]
                else:
                    mode = name.split("-", 1)[1]
                    run([f"{self.scripts}/rsync.sh", hf, tree1, f"/opt/{sub}", "r1", "plain"],
                        log_to=setup_log, env=env)
                    argv = [f"{self.scripts}/rsync.sh", hf, tree2, f"/opt/{sub}", "r2", mode, "r1"]
                self.timed("delta", n, name, argv, env, run_no, label=labels[name])
                self.verify(n, f"/opt/{sub}", changed_file, changed_size)
                self.hosts.wipe(n, sub)

    def profile(self, n, art):
        """One untimed-for-the-table shipit deploy with --log-format json -v: per-host phases."""
        cfg = self.shipit_project("profile", n)
        self.hosts.wipe(n, "profile")
        logf = os.path.join(self.out, f"profile-shipit-n{n}.jsonl")
        if os.path.exists(logf):
            os.unlink(logf)
        t0 = time.perf_counter()
        run([self.shipit, "-c", cfg, "--log-format", "json", "-v", "deploy", "--artifact", art], log_to=logf)
        wall = time.perf_counter() - t0
        self.hosts.wipe(n, "profile")
        return logf, wall


def _user_exists(name):
    try:
        import pwd
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _fmt_counts(counts):
    keys = ("conns", "channels", "exec", "subsystem")
    out = []
    for k in keys:
        vals = [c[k] for c in counts]
        lo, hi = min(vals), max(vals)
        out.append(f"{k} {lo}" if lo == hi else f"{k} {lo}-{hi}")
    return ", ".join(out)


# --- trees and artifacts ----------------------------------------------------------------------


def make_trees(work, smoke):
    tree1 = os.path.join(work, "tree")
    gen = [sys.executable, os.path.join(HERE, "gen-tree.py"), tree1]
    if smoke:
        gen += ["--files", "300", "--large", "2", "--large-mb", "2"]
    log("generating the tree")
    subprocess.run(gen, check=True)
    # The delta scenario's second build: 1% of the files (every 100th of the small text
    # files, in sorted order) changed, as a typical code change does; hard links are not
    # used, so the first tree stays as it was. The large media files stay unchanged: one
    # changed 15 MB blob would be 15% of the bytes, which every contender has to send
    # (rsync only its changed blocks), and it is not what "1% of the files" means here.
    tree2 = os.path.join(work, "tree2")
    subprocess.run(["cp", "-a", tree1, tree2], check=True)
    files = sorted(os.path.relpath(os.path.join(dp, f), tree2)
                   for dp, _, fs in os.walk(tree2) for f in fs)
    small = [f for f in files if not f.startswith("media/")]
    changed = small[::100]
    for rel in changed:
        with open(os.path.join(tree2, rel), "ab") as f:
            f.write(b"\nchanged in build 2\n")
    return tree1, tree2, len(files), changed


def package(shipit, work, tree, version):
    proj = os.path.join(work, f"pkg-{version}")
    os.makedirs(proj, exist_ok=True)
    with open(os.path.join(proj, "deploy.yaml"), "w") as f:
        f.write(f"app: bench\npackage:\n  root: {tree}\n  include: [.]\n")
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
    _, so, _ = run([shipit, "-q", "package", "--no-build", "--app-version", version], cwd=proj, env=env,
                   capture=True)
    path = so.strip().splitlines()[-1]
    return path if os.path.isabs(path) else os.path.join(proj, path)


def ensure_ansible(smoke):
    bin_ = os.path.join(VENV, "bin", "ansible-playbook")
    if os.path.exists(bin_):
        p = subprocess.run([os.path.join(VENV, "bin", "pip"), "show", "ansible-core"], capture_output=True, text=True)
        if f"Version: {ANSIBLE_CORE.split('==')[1]}" in p.stdout:
            return
    log(f"creating the Ansible venv in {VENV} ({ANSIBLE_CORE} from PyPI)")
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", "--disable-pip-version-check", ANSIBLE_CORE],
                   check=True)


# --- the report -------------------------------------------------------------------------------


def stats(walls):
    return statistics.median(walls), min(walls), max(walls)


def count_cell(rs, key):
    vals = [c[key] for r in rs for c in r["counts"]]
    lo, hi = min(vals), max(vals)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def cpu_cell(rs):
    return f"{statistics.median(r['client_cpu'] for r in rs):.2f}"


def report(b, meta):
    R = b.results
    L = []
    L.append(f"Run of {meta['date']} ({meta['kind']}), `{meta['argv']}`. "
             f"Machine: {meta['machine']}. **Indicative**: {meta['note']}")
    L.append("")
    L.append(f"Artifact: {meta['artifact_bytes'] / 1e6:.1f} MB tar.gz of {meta['tree_bytes'] / 1e6:.1f} MB in "
             f"{meta['files']} files (`bench/gen-tree.py`), packaged once by `shipit package`; every "
             f"contender deploys that same file. {meta['runs']} timed run(s) per contender and N, "
             "contenders alternating within each round (each round starts one further on), each run "
             "into a wiped deploy dir (so no contender finds a previous release or a cached upload), "
             "warm page cache (tree and artifact read before).")
    L.append("")
    L.append("Versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()))
    L.append("")
    dep = [r for r in R if r["part"] == "deploy"]
    if dep:
        L.append("### Full deploy: wall time (s), median [min-max], and against the floor")
        L.append("")
        ns = sorted({r["n"] for r in dep})
        names = [c for c in CONTENDERS if any(r["name"] == c for r in dep)]
        L.append("| contender | " + " | ".join(f"N={n}" for n in ns) + " |")
        L.append("|---|" + "---|" * len(ns))
        floor = {n: stats([r["wall"] for r in dep if r["n"] == n and r["name"] == "floor"])[0]
                 for n in ns if any(r["n"] == n and r["name"] == "floor" for r in dep)}
        for name in names:
            cells = []
            for n in ns:
                rs = [r["wall"] for r in dep if r["n"] == n and r["name"] == name]
                if not rs:
                    cells.append("-")
                    continue
                med, lo, hi = stats(rs)
                ratio = f", {med / floor[n]:.2f}x" if n in floor else ""
                cells.append(f"{med:.2f} [{lo:.2f}-{hi:.2f}]{ratio}")
            L.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
        L.append("")
        L.append("Client-side CPU seconds per deploy, median (the contender's own processes, from "
                 "`getrusage(RUSAGE_CHILDREN)`; for Ansible without its ControlPersist ssh masters, "
                 "which are not its children). Host-side CPU is not measured: sshd does not reap its "
                 "sessions (they are reparented), so the sshds' cutime misses them:")
        L.append("")
        L.append("| contender | " + " | ".join(f"N={n}" for n in ns) + " |")
        L.append("|---|" + "---|" * len(ns))
        for name in names:
            cells = []
            for n in ns:
                rs = [r for r in dep if r["n"] == n and r["name"] == name]
                if not rs:
                    cells.append("-")
                    continue
                cells.append(f"{statistics.median(r['client_cpu'] for r in rs):.2f}")
            L.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
        L.append("")
        L.append("SSH use per host and deploy (counted in each host's sshd log, LogLevel DEBUG1: "
                 "`Accepted publickey` = connections, `server_input_channel_open: ctype session` = "
                 "session channels, `req exec` / `req subsystem` = what each channel ran; range over "
                 "hosts and runs):")
        L.append("")
        L.append("| contender | connections | session channels | exec | subsystem (sftp) |")
        L.append("|---|---|---|---|---|")
        for name in names:
            rs = [r for r in dep if r["name"] == name]
            L.append(f"| {LABELS[name]} | " + " | ".join(count_cell(rs, k) for k in
                                                         ("conns", "channels", "exec", "subsystem")) + " |")
        L.append("")
        L.append("Targets: shipit within 1.1x of the floor at every N, faster than contenders 1-3 at "
                 "every N, at most 4 exec channels per host:")
        L.append("")
        for n in ns:
            def med(name):
                rs = [r["wall"] for r in dep if r["n"] == n and r["name"] == name]
                return statistics.median(rs) if rs else None
            s = med("shipit")
            if s is None:
                continue
            parts = []
            if n in floor:
                parts.append(f"{s / floor[n]:.2f}x the floor ({'met' if s <= 1.1 * floor[n] else 'MISSED'})")
            others = [(c, med(c)) for c in ("classic", "parallel", "ansible") if med(c) is not None]
            slower = [LABELS[c].split(' ', 1)[1] for c, m in others if m <= s]
            if others:
                parts.append("faster than contenders 1-3" if not slower else "NOT faster than " + ", ".join(slower))
            L.append(f"- N={n}: " + "; ".join(parts))
        ex = max((c["exec"] for r in dep if r["name"] == "shipit" for c in r["counts"]), default=None)
        if ex is not None:
            L.append(f"- exec channels per host for a full deploy: {ex} ({'met' if ex <= 4 else 'MISSED'}: target 4)")
        L.append("")
    ops = [r for r in R if r["part"] == "ops"]
    if ops:
        n = ops[0]["n"]
        L.append(f"### shipit no-op redeploy and rollback, {n} hosts, `service.manager: none`")
        L.append("")
        L.append("| command | wall median (s) | min | max | client CPU (s) | connections/host | session channels/host | exec/host | target |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for name in ("noop", "rollback"):
            rs = [r for r in ops if r["name"] == name]
            if not rs:
                continue
            med, lo, hi = stats([r["wall"] for r in rs])
            L.append(f"| {rs[0]['label']} | {med:.2f} | {lo:.2f} | {hi:.2f} | {cpu_cell(rs)} | {count_cell(rs, 'conns')} | "
                     f"{count_cell(rs, 'channels')} | {count_cell(rs, 'exec')} | "
                     f"< 1 s: {'met' if med < 1 else 'MISSED'} |")
        L.append("")
    dl = [r for r in R if r["part"] == "delta"]
    if dl:
        n = dl[0]["n"]
        L.append(f"### Delta deploy: 1% of files changed ({meta['changed']} of {meta['files']}), {n} hosts")
        L.append("")
        L.append("Each run: a wiped deploy dir, build 1 deployed untimed (shipit: `deploy --artifact` of "
                 "build 1; rsync: plain rsync of build 1 into `releases/r1`), then build 2 timed. "
                 "rsync runs per host, all hosts at once, over the same ssh config, no `-z`.")
        L.append("")
        L.append("| contender | wall median (s) | min | max | vs shipit full | client CPU (s) | connections/host | exec/host |")
        L.append("|---|---|---|---|---|---|---|---|")
        full = [r["wall"] for r in dl if r["name"] == "shipit-off"]
        fmed = statistics.median(full) if full else None
        order = ["shipit-off", "shipit-copy", "shipit-hardlink", "rsync-plain", "rsync-copy", "rsync-link"]
        meds = {}
        for name in order:
            rs = [r for r in dl if r["name"] == name]
            if not rs:
                continue
            med, lo, hi = stats([r["wall"] for r in rs])
            meds[name] = med
            vs = f"{med / fmed * 100:.0f}%" if fmed else "-"
            L.append(f"| {rs[0]['label']} | {med:.2f} | {lo:.2f} | {hi:.2f} | {vs} | {cpu_cell(rs)} | {count_cell(rs, 'conns')} | "
                     f"{count_cell(rs, 'exec')} |")
        L.append("")
        if {"shipit-hardlink", "shipit-off", "rsync-link"} <= meds.keys():
            h = meds["shipit-hardlink"]
            L.append(f"- `delta: hardlink`: {h / meds['shipit-off'] * 100:.0f}% of the full deploy (target <= 15%: "
                     f"{'met' if h <= 0.15 * meds['shipit-off'] else 'MISSED'}); "
                     f"{'faster' if h < meds['rsync-link'] else 'NOT faster'} than rsync --link-dest.")
        if {"shipit-copy", "shipit-off", "rsync-plain"} <= meds.keys():
            c = meds["shipit-copy"]
            L.append(f"- `delta: copy`: {'faster' if c < meds['shipit-off'] else 'NOT faster'} than the full deploy, "
                     f"{'faster' if c < meds['rsync-plain'] else 'NOT faster'} than rsync without --link-dest"
                     + (f", {'faster' if c < meds['rsync-copy'] else 'NOT faster'} than rsync --copy-dest."
                        if "rsync-copy" in meds else "."))
        L.append("")
    if meta.get("profile"):
        L.append("### Where shipit's time goes")
        L.append("")
        L.extend(meta["profile"])
        L.append("")
    L.append("### The commands")
    L.append("")
    L.append("Scripts are written by `bench/deploy.py` (see `PER_HOST`, `FLOOR`, `RSYNC`, `PLAYBOOK` there); "
             "`$SSH_CONFIG` is the testbed's ssh_config (`Host hostI` -> 127.0.0.1:port, the client key, "
             "strict known_hosts). One logged command line per contender (N = largest):")
    L.append("")
    L.append("```")
    seen = set()
    for r in sorted(R, key=lambda r: -r["n"]):
        key = (r["part"], r["name"])
        if key in seen:
            continue
        seen.add(key)
        cmd = r["cmd"].replace(b.work, "$WORK")
        L.append(f"{r['part']}/{r['name']}: {cmd}")
    L.append("```")
    return "\n".join(L) + "\n"


def profile_summary(logf, wall, n):
    """Per-host phase times from shipit's JSON log: each event's `elapsed_ms` per host, and
    the time since that host's previous event (what the step before the event took)."""
    per = {}  # event -> [(at, since previous) per host]
    order = {}
    last = {}
    with open(logf, errors="replace") as f:
        for line in f:
            if not line.startswith("{"):
                continue
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            host, ms, msg = e.get("host"), e.get("elapsed_ms"), e.get("message", "")
            if host is None or ms is None:
                continue
            key = re.sub(r"\d{8}T\d{6}Z-[0-9a-f]+", "<release>", msg)
            key = re.sub(r"\d+(\.\d+)?", "#", key)[:70]
            prev = last.get(host, 0)
            last[host] = ms
            per.setdefault(key, []).append((ms / 1000, (ms - prev) / 1000))
            order.setdefault(key, len(order))
    lines = [f"`shipit --log-format json -v deploy --artifact ...` on {n} hosts, once, outside the timed "
             f"runs: {wall:.2f} s (log: `{os.path.relpath(logf, ROOT)}`). Per host, from shipit's events "
             "(`elapsed_ms`): when the event came, and the time since that host's previous event, i.e. "
             "what the step before it took (the first event's includes connect, survey and lock):", "",
             "| event (numbers as #) | hosts | at, median s | at, max s | step, median s | step, max s |",
             "|---|---|---|---|---|---|"]
    for key in sorted(per, key=order.get):
        v = per[key]
        at = [x for x, _ in v]
        st = [y for _, y in v]
        lines.append(f"| {key.replace('|', '/')} | {len(v)} | {statistics.median(at):.2f} | {max(at):.2f} | "
                     f"{statistics.median(st):.2f} | {max(st):.2f} |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="N=1,2, small tree, one run, everything")
    ap.add_argument("--hosts", help="host counts, e.g. 1,5 (default 1,5,10,20)")
    ap.add_argument("--runs", type=int, help="timed runs per contender (default 3)")
    ap.add_argument("--only", help="parts/contenders: classic,parallel,ansible,floor,shipit,ops,delta,package,profile")
    ap.add_argument("--ops-hosts", type=int, help="hosts for no-op/rollback (default 20)")
    ap.add_argument("--delta-hosts", type=int, help="hosts for the delta scenario (default 20)")
    ap.add_argument("--delta-runs", type=int, help="timed runs in the delta scenario (default: --runs)")
    ap.add_argument("--disk", action="store_true",
                    help="hosts' /opt on disk instead of a tmpfs each (default: tmpfs, so the disk "
                         "and the untimed deletes between runs do not dominate)")
    ap.add_argument("--tmpfs-size", default="1g", help="size limit of each host's tmpfs /opt")
    ap.add_argument("--bin", help="a shipit binary (default: cargo build --release --locked)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    ap.add_argument("--write-benchmarks", action="store_true",
                    help="replace the deploy section of BENCHMARKS.md even for a partial run")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (the sshd hosts need it)")
    ns = [1, 2] if a.smoke else [int(x) for x in (a.hosts or "1,5,10,20").split(",")]
    a.runs = a.runs or (1 if a.smoke else 3)
    a.delta_runs = a.delta_runs or a.runs
    parts = set((a.only or "classic,parallel,ansible,floor,shipit,ops,delta,package,profile,nspawn").split(","))
    unknown = parts - set(CONTENDERS) - {"ops", "delta", "package", "profile", "contenders", "nspawn"}
    if unknown:
        sys.exit(f"bench: unknown --only parts: {', '.join(sorted(unknown))}")
    if "contenders" in parts:
        parts |= set(CONTENDERS)
    a.only_contenders = [c for c in CONTENDERS if c in parts]
    ops_n = a.ops_hosts or (2 if a.smoke else 20)
    delta_n = a.delta_hosts or (2 if a.smoke else 20)
    full_run = not (a.smoke or a.only or a.hosts or a.runs != 3) or a.write_benchmarks
    for tool in ("ssh", "scp", "tar", "gzip", "pigz", "rsync", "xargs", "unshare"):
        if not shutil.which(tool):
            sys.exit(f"bench: `{tool}` is not installed (apt-get install -y rsync pigz openssh-client ...)")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    if a.bin:
        shipit = os.path.abspath(a.bin)
    else:
        log("building shipit (cargo build --release --locked)")
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
        tdir = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        shipit = os.path.join(tdir, "release", "shipit")
    if "ansible" in parts:
        ensure_ansible(a.smoke)

    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="shipit-bench-deploy-", dir="/var/tmp")
    os.chmod(work, 0o755)
    b = None
    hosts = None
    t_start = time.time()
    try:
        tree1, tree2, nfiles, changed = make_trees(work, a.smoke)
        art = package(shipit, work, tree1, "1")
        art2 = package(shipit, work, tree2, "2") if "delta" in parts else None
        # Warm the page cache.
        subprocess.run(f"tar cf - -C {shlex.quote(work)} tree tree2 | cat > /dev/null; cat {shlex.quote(art)} > /dev/null",
                       shell=True, check=True)
        maxn = max(ns + ([ops_n] if "ops" in parts else []) + ([delta_n] if "delta" in parts else []))
        hosts = Hosts(maxn, None if a.disk else a.tmpfs_size)
        b = Bench(a, shipit, work, a.out)
        b.hosts = hosts
        shutil.chown(b.up, "deploy", "deploy")
        os.chmod(work, 0o755)
        check_file = "media/blob0.bin"
        check_size = os.path.getsize(os.path.join(tree1, check_file))
        if a.only_contenders:
            if not a.smoke:  # one untimed round at N=1: Ansible's and ssh's first-use costs
                log("warm-up round (untimed)")
                saved, a.runs = a.runs, 1
                b.contenders([1], art, check_file, check_size)
                b.results.clear()
                a.runs = saved
            b.contenders(ns, art, check_file, check_size)
        if "ops" in parts:
            b.ops(ops_n, art)
        if "delta" in parts:
            rel = changed[0]
            b.delta(delta_n, tree1, tree2, art, art2, rel, os.path.getsize(os.path.join(tree2, rel)))
        profile = None
        if "profile" in parts:
            pn = max(ns)
            logf, wall = b.profile(pn, art)
            profile = profile_summary(logf, wall, pn)
        if "package" in parts and not a.smoke:
            log("package benchmark (bench/package.py)")
            run([sys.executable, os.path.join(HERE, "package.py"), "--bin", shipit,
                 "--out", os.path.join(a.out, "package.md")], log_to=os.path.join(a.out, "logs", "package.log"))
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = -1
        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "kind": "smoke run" if a.smoke else ("full run" if full_run else "partial run"),
            "argv": "python3 bench/deploy.py " + " ".join(sys.argv[1:]),
            "machine": f"{os.cpu_count()} cores, {mem:.0f} GiB, {platform.platform()}, load average "
                       f"{load:.1f} at the end",
            "note": "the machine is shared with other jobs; the lead reruns this on a quiet machine.",
            "runs": a.runs,
            "files": nfiles,
            "changed": len(changed),
            "tree_bytes": int(subprocess.run(["du", "-sb", tree1], capture_output=True, text=True).stdout.split()[0]),
            "artifact_bytes": os.path.getsize(art),
            "versions": {
                "shipit": version(f"{shlex.quote(shipit)} --version"),
                "OpenSSH": version("ssh -V"),
                "ansible-core": version(f"{VENV}/bin/ansible --version") if "ansible" in parts else "not run",
                "rsync": version("rsync --version"),
                "tar": version("tar --version"),
                "gzip": version("gzip --version"),
                "pigz": version("pigz --version"),
                "Python": platform.python_version(),
            },
            "profile": profile,
            "seconds": round(time.time() - t_start),
        }
        text = report(b, meta)
        with open(os.path.join(a.out, "deploy.md"), "w") as f:
            f.write(text)
        with open(os.path.join(a.out, "deploy.json"), "w") as f:
            json.dump({"meta": meta, "results": b.results}, f, indent=1)
        print(text)
        if full_run:
            write_benchmarks(text, os.path.join(a.out, "package.md") if "package" in parts else None)
        if "nspawn" in parts:
            # The run on real servers: 10 nspawn hosts, systemd, the example app.
            if hosts is not None:
                hosts.down()
                hosts = None
            log("nspawn hosts with systemd (bench/nspawn.py)")
            run([sys.executable, os.path.join(HERE, "nspawn.py"), "--bin", shipit, "--out", a.out]
                + (["--smoke"] if a.smoke else []),
                log_to=os.path.join(a.out, "logs", "nspawn.log"))
        log(f"done in {time.time() - t_start:.0f} s; report in {os.path.relpath(a.out, ROOT)}/deploy.md")
    finally:
        kill_children()
        if b is not None:
            b.stop_ansible_masters()
        if hosts is not None:
            hosts.down()
        shutil.rmtree(work, ignore_errors=True)


def package_text(package_md):
    """bench/package.py's figures of this run, as a subsection (the package section above
    keeps the quiet machine's)."""
    if not package_md or not os.path.exists(package_md):
        return ""
    with open(package_md) as f:
        body = f.read().split("\n", 1)[1]
    return "\n### `shipit package` in the same run (bench/package.py)\n" + body


def write_benchmarks(text, package_md):
    path = os.path.join(ROOT, "BENCHMARKS.md")
    with open(path) as f:
        doc = f.read()
    section = (f"{BEGIN}\n## Deploy: shipit against scp+ssh, Ansible and the floor\n\n"
               "`sudo python3 bench/deploy.py` (the whole run: about 35 minutes on a busy 2-core machine; `--smoke` for a "
               "one-minute check, which CI does; `--hosts 1,5 --only floor,shipit` for parts).\n\n"
               f"{text}{package_text(package_md)}{END}")
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + section + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(doc)
    log("BENCHMARKS.md: deploy section written")


if __name__ == "__main__":
    main()
