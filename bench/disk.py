#!/usr/bin/env python3
"""Full deploys on disk-backed hosts against the stream floor (issue 18).

The hosts are nspawn containers (tests/testbed/up.sh) whose files live on this machine's
disk (the testbed's overlay under /run/shipit-testbed, which is disk here, not tmpfs), so
what a deploy writes is paid for in writeback, unlike the sshd hosts of bench/deploy.py
with a tmpfs /opt. Timed, every host at once, a fresh deploy dir per run:

  floor   one `ssh host 'mkdir ...; tar xzf - -C releases/R; switch current' < artifact`
          per host, all at once (inside the testbed's client namespace)
  shipit  `shipit deploy --artifact A` with `delta: off`, `service.manager: none`
  shipit-b  the same with a second binary (--bin-b), to compare two builds in one run

Contenders alternate round by round (each round starts one further on), `sync` before
every run; medians, min-max, and the ratio of the median to the floor's.

  sudo python3 bench/disk.py                       # N = 1,5,10,20, 5 runs, ~60 MB / 5,000 files
  sudo python3 bench/disk.py --smoke               # N = 1,2, small tree, 1 run
  sudo python3 bench/disk.py --bin-b /tmp/shipit-old --hosts 10

Writes bench/out/disk.md and bench/out/disk.json; a full run (no --smoke, --hosts, --runs,
--bin-b) also replaces the disk section of BENCHMARKS.md. Boots its own testbed and always
tears it down. Must run as root.
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
NAME = os.environ.get("SHIPIT_BENCH_DISK", "bench-disk")
BEGIN = "<!-- bench/disk.py: begin -->"
END = "<!-- bench/disk.py: end -->"

FLOOR = r"""#!/bin/bash
# floor.sh SSH_CONFIG ARTIFACT DEPLOY_TO RELEASE HOST...: one ssh per host streaming the
# artifact into `tar xz` in releases/RELEASE and switching `current`, all hosts at once.
set -euo pipefail
cfg=$1 art=$2 d=$3 r=$4; shift 4
pids=()
for h in "$@"; do
  ssh -F "$cfg" "deploy@$h" "set -e; mkdir -p $d/releases/$r; tar xzf - -C $d/releases/$r; \
ln -sfn releases/$r $d/.current.tmp; mv -T $d/.current.tmp $d/current" <"$art" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
"""


def log(msg):
    print(f"[disk {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*cmd, **kw):
    return subprocess.run(list(cmd), check=True, **kw)


def config(state, hosts, deploy_to, tree):
    return f"""app: bench
deploy_to: {deploy_to}
keep_releases: 2
delta: off
package: {{root: {tree}, include: [.]}}
ssh:
  user: deploy
  identity_files: [{state['client_key']}]
  known_hosts_file: {state['known_hosts']}
  connect_timeout: 10s
service: {{manager: none}}
rollout: {{parallel: {len(hosts)}, canary: 0}}
hosts: [{', '.join(h['ip'] for h in hosts)}]
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--hosts", help="host counts (default 1,5,10,20)")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--bin", help="shipit binary (default: cargo build --release --locked)")
    ap.add_argument("--bin-b", action="append", default=[],
                    help="another shipit binary, timed as `shipit-b`, `shipit-c`, ... (repeatable)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/disk.py boots systemd-nspawn hosts: run it as root")
    ns = [int(x) for x in (a.hosts or ("1,2" if a.smoke else "1,5,10,20")).split(",")]
    runs = a.runs or (1 if a.smoke else 5)
    full = not (a.smoke or a.hosts or a.runs or a.bin_b)
    if not a.bin:
        log("building shipit (release)")
        sh("cargo", "build", "--release", "--locked", "--bin", "shipit", cwd=ROOT, stdout=subprocess.DEVNULL)
    shipit = os.path.abspath(a.bin or os.path.join(ROOT, "target", "release", "shipit"))
    contenders = {"floor": None, "shipit": shipit}
    for i, b in enumerate(a.bin_b):
        contenders[f"shipit-{chr(ord('b') + i)}"] = os.path.abspath(b)
    version = subprocess.run([shipit, "--version"], capture_output=True, text=True).stdout.strip()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench/disk.py: terminated"))
    work = tempfile.mkdtemp(prefix="shipit-bench-disk-")
    results = []
    try:
        tree = os.path.join(work, "tree")
        gen = [sys.executable, os.path.join(HERE, "gen-tree.py"), tree]
        gen += ["--files", "300", "--large", "1", "--large-mb", "2"] if a.smoke else \
            ["--files", "5000", "--large", "3", "--large-mb", "15"]
        sh(*gen)
        pkg = os.path.join(work, "pkg")
        os.makedirs(pkg)
        with open(os.path.join(pkg, "deploy.yaml"), "w") as f:
            f.write(f"app: bench\npackage: {{root: {tree}, include: [.]}}\n")
        env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
        out = sh(shipit, "-q", "package", "--no-build", "--app-version", "1", cwd=pkg, env=env,
                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
        art = out if os.path.isabs(out) else os.path.join(pkg, out)
        size_mb = os.path.getsize(art) / 1e6
        log(f"artifact {size_mb:.1f} MB")
        floor = os.path.join(work, "floor.sh")
        with open(floor, "w") as f:
            f.write(FLOOR)
        os.chmod(floor, 0o755)

        maxn = max(ns)
        log(f"booting {maxn} nspawn host(s) (testbed {NAME})")
        up = sh(os.path.join(TESTBED, "up.sh"), str(maxn), "--name", NAME, capture_output=True, text=True)
        state_dir = up.stdout.strip().splitlines()[-1]
        with open(os.path.join(state_dir, "testbed.json")) as f:
            state = json.load(f)
        client = [os.path.join(TESTBED, "client.sh"), "--name", NAME]

        def wipe(hosts, d):
            for h in hosts:
                sh(os.path.join(TESTBED, "fault.sh"), "--name", NAME, "exec", h["name"],
                   "rm", "-rf", d, stdout=subprocess.DEVNULL)

        seq = 0
        for n in ns:
            hosts = state["hosts"][:n]
            names = list(contenders)
            for r in range(runs):
                k = r % len(names)
                for name in names[k:] + names[:k]:
                    seq += 1
                    d = f"/opt/disk-{name}"
                    wipe(hosts, d)
                    if name == "floor":
                        cmd = client + [floor, state["ssh_config"], art, d, f"r{seq}"] + \
                            [h["name"] for h in hosts]
                    else:
                        cfg = os.path.join(work, f"{name}-{n}.yaml")
                        with open(cfg, "w") as f:
                            f.write(config(state, hosts, d, tree))
                        cmd = client + [contenders[name], "-q", "-c", cfg, "deploy", "--artifact", art, "--json"]
                    os.sync()
                    t0 = time.perf_counter()
                    p = subprocess.run(cmd, capture_output=True, text=True)
                    wall = time.perf_counter() - t0
                    if p.returncode != 0:
                        raise SystemExit(f"{name} N={n}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
                    results.append({"n": n, "name": name, "run": r + 1, "wall": wall})
                    log(f"N={n} {name} run {r + 1}: {wall:.2f} s")
                    wipe(hosts, d)
    finally:
        log("tearing the testbed down")
        subprocess.run([os.path.join(TESTBED, "down.sh"), "--name", NAME],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)

    def walls(n, name):
        return [x["wall"] for x in results if x["n"] == n and x["name"] == name]

    lines = [
        f"Full deploys (`delta: off`, `service.manager: none`) of a {size_mb:.0f} MB artifact "
        f"to nspawn hosts whose files are on this machine's disk, every host at once, a fresh "
        f"deploy dir per run, `sync` before each run, contenders alternating; {runs} run(s) each. "
        f"{version}. Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f"{' (smoke run)' if a.smoke else ''}.",
        "",
        "| hosts | " + " | ".join(f"{c}: median [min-max] (s)" for c in contenders) + " | "
        + " | ".join(f"{c} / floor" for c in contenders if c != "floor") + " |",
        "|---" * (1 + 2 * len(contenders) - 1) + "|",
    ]
    for n in ns:
        cells, ratios = [], []
        f_med = statistics.median(walls(n, "floor"))
        for c in contenders:
            xs = walls(n, c)
            cells.append(f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]")
            if c != "floor":
                ratios.append(f"{statistics.median(xs) / f_med:.2f}x")
        lines.append(f"| {n} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    text = "\n".join(lines) + "\n"
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "disk.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "disk.json"), "w") as f:
        json.dump(results, f, indent=1)
    if full:
        path = os.path.join(ROOT, "BENCHMARKS.md")
        with open(path) as f:
            doc = f.read()
        section = f"{BEGIN}\n{text}{END}"
        if BEGIN in doc and END in doc:
            doc = doc[:doc.index(BEGIN)] + section + doc[doc.index(END) + len(END):]
        else:
            doc += f"\n## Full deploys on disk-backed hosts against the stream floor\n\n{section}\n"
        with open(path, "w") as f:
            f.write(doc)
    print(text)


if __name__ == "__main__":
    main()
