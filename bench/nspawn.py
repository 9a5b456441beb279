#!/usr/bin/env python3
"""The deploy benchmark on real servers: 10 nspawn hosts (systemd as PID 1, real sshd and
sudo) running the example app under systemd, deployed by shipit with its HTTP health
check. Complements bench/deploy.py, whose plain sshd hosts have no service manager.

  sudo python3 bench/nspawn.py              # 10 hosts, 3 rounds
  sudo python3 bench/nspawn.py --smoke      # 2 hosts, 1 round: checks the harness

Timed, on every host at once: a first deploy (the whole artifact), then per round a deploy
of a new version (a delta against the live release), a no-op redeploy of the same
artifact, and a rollback. Every run must end with every host `done` (checked from
`--json`). Writes bench/out/nspawn.md and, for a full run, the nspawn section of
BENCHMARKS.md. Boots its own testbed (tests/testbed/up.sh) and always tears it down.
"""
import argparse
import json
import os
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
NAME = os.environ.get("SHIPIT_BENCH_NSPAWN", "bench-nspawn")
BEGIN = "<!-- bench/nspawn.py: begin -->"
END = "<!-- bench/nspawn.py: end -->"


def log(msg):
    print(f"[nspawn {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def config(state, ips):
    return f"""app: hello
deploy_to: /opt/hello
keep_releases: 5
package: {{root: pkg, include: [bin, VERSION]}}
ssh:
  user: deploy
  identity_files: [{state['client_key']}]
  known_hosts_file: {state['known_hosts']}
  connect_timeout: 5s
shared: {{dirs: [log]}}
env:
  PORT: '8080'
  MESSAGE: hello
service: {{name: hello, unit_file: deploy/hello.service, sudo: true}}
health:
  http: {{url: 'http://127.0.0.1:8080/healthz', contains: ok}}
  timeout: 15s
  interval: 250ms
  settle: 1s
rollout: {{parallel: {len(ips)}, canary: 1}}
hosts: [{', '.join(ips)}]
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="2 hosts, 1 round")
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bin", help="a shipit binary (default: cargo build --release --locked)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    a = ap.parse_args()
    n, rounds = (2, 1) if a.smoke else (a.hosts, a.rounds)
    if os.geteuid() != 0:
        sys.exit("bench/nspawn.py boots systemd-nspawn hosts: run it as root")

    build = ["cargo", "build", "--release", "--locked", "--example", "hello"]
    if not a.bin:
        build += ["--bin", "shipit"]
    log("building the example app" + ("" if a.bin else " and shipit"))
    subprocess.run(build, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    shipit = os.path.abspath(a.bin or os.path.join(ROOT, "target", "release", "shipit"))
    hello = os.path.join(ROOT, "target", "release", "examples", "hello")
    version = subprocess.run([shipit, "--version"], capture_output=True, text=True).stdout.strip()

    # SIGTERM (e.g. from bench/deploy.py on Ctrl-C) still runs the teardown below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench/nspawn.py: terminated"))
    work = tempfile.mkdtemp(prefix="shipit-bench-nspawn-")
    results = {"deploy": [], "delta": [], "noop": [], "rollback": []}
    try:
        log(f"booting {n} nspawn host(s) (testbed {NAME})")
        up = subprocess.run([os.path.join(TESTBED, "up.sh"), str(n), "--name", NAME],
                            check=True, capture_output=True, text=True)
        state_dir = up.stdout.strip().splitlines()[-1]
        with open(os.path.join(state_dir, "testbed.json")) as f:
            state = json.load(f)
        os.makedirs(os.path.join(work, "pkg", "bin"))
        os.makedirs(os.path.join(work, "deploy"))
        shutil.copy(hello, os.path.join(work, "pkg", "bin", "hello"))
        shutil.copy(os.path.join(ROOT, "examples", "hello", "deploy", "hello.service"),
                    os.path.join(work, "deploy", "hello.service"))
        with open(os.path.join(work, "deploy.yaml"), "w") as f:
            f.write(config(state, [h["ip"] for h in state["hosts"]]))

        def run(kind, *args):
            cmd = [os.path.join(TESTBED, "client.sh"), "--name", NAME, shipit, *args, "--json"]
            start = time.perf_counter()
            out = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
            wall = time.perf_counter() - start
            summary = json.loads(out.stdout or "{}")
            hosts = summary.get("hosts", [])
            want = "skipped" if kind == "noop" else "done"
            if out.returncode != 0 or len(hosts) != n or any(h["result"] != want for h in hosts):
                raise SystemExit(f"{kind}: exit {out.returncode}, expected every host {want}:\n"
                                 f"{out.stdout}\n{out.stderr}")
            sent = sum(h.get("uploaded_bytes", 0) for h in hosts)
            results[kind].append({"wall": wall, "sent": sent})
            log(f"{kind}: {wall:.2f} s, {sent / 1024:,.0f} KiB sent in all")

        with open(os.path.join(work, "pkg", "VERSION"), "w") as f:
            f.write("1\n")
        run("deploy", "deploy", "--app-version", "1.0")
        for r in range(rounds):
            v = f"{r + 2}.0"
            with open(os.path.join(work, "pkg", "VERSION"), "w") as f:
                f.write(f"{v}\n")
            # Release ids have one-second resolution.
            time.sleep(1.1)
            run("delta", "deploy", "--app-version", v)
            run("noop", "deploy", "--app-version", v)
            run("rollback", "rollback")
    finally:
        log("tearing the testbed down")
        subprocess.run([os.path.join(TESTBED, "down.sh"), "--name", NAME],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)

    def cell(kind):
        xs = [x["wall"] for x in results[kind]]
        if not xs:
            return "-", "-"
        kib = statistics.median(x["sent"] for x in results[kind]) / 1024
        return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}] ({len(xs)} runs)", f"{kib:,.0f}"

    lines = [
        f"{n} nspawn hosts (Debian bookworm, systemd as PID 1, real sshd and sudo), the example "
        f"app (`examples/hello`) under systemd, its HTTP health check with a 1 s settle window, "
        f"`rollout: {{parallel: {n}, canary: 1}}`. {version}. "
        f"Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f"{' (smoke run)' if a.smoke else ''}.",
        "",
        "| command | wall, median [min-max] (s) | KiB sent, all hosts (median) |",
        "|---|---|---|",
    ]
    for kind, label in (("deploy", "first deploy (whole artifact)"),
                        ("delta", "deploy of a changed version (delta)"),
                        ("noop", "no-op redeploy"),
                        ("rollback", "rollback")):
        t, mb = cell(kind)
        lines.append(f"| {label} | {t} | {mb} |")
    text = "\n".join(lines) + "\n"
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "nspawn.md"), "w") as f:
        f.write(text)
    if not a.smoke:
        path = os.path.join(ROOT, "BENCHMARKS.md")
        with open(path) as f:
            doc = f.read()
        section = f"{BEGIN}\n{text}{END}"
        if BEGIN in doc and END in doc:
            doc = doc[:doc.index(BEGIN)] + section + doc[doc.index(END) + len(END):]
        else:
            doc += f"\n## On real servers: {n} nspawn hosts with systemd\n\n{section}\n"
        with open(path, "w") as f:
            f.write(doc)
    print(text)


if __name__ == "__main__":
    main()
