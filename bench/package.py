#!/usr/bin/env python3
"""Benchmark: `shipit package` against `tar czf` (gzip -6) and `tar | pigz -1`.

Same tree, same run, contenders alternating, warm page cache. Reports median/min/max wall
time, CPU time and output size, and ratios against `pigz -1` (time) and gzip -6 (size).

  python3 bench/package.py            # the full run: ~100 MB, 5,000 files, 5 runs each
  python3 bench/package.py --smoke    # a small tree and one run: checks the harness works

Target (issue 2): no slower than `pigz -1` while as small as gzip -6.
"""
import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


def timed(cmd, cwd):
    """Wall and CPU seconds of a shell command (children included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, cwd=cwd, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def version(cmd):
    try:
        out = subprocess.run(cmd, shell=True, capture_output=True, text=True)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - a missing tool is reported, not fatal
        return "not found"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="small tree, one run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bin", help="a shipit binary (default: build the release one)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "package.md"))
    a = ap.parse_args()
    runs = 1 if a.smoke else a.runs

    if a.bin:
        shipit = os.path.abspath(a.bin)
    else:
        sh("cargo build --release --locked --quiet", cwd=ROOT)
        shipit = os.path.join(ROOT, "target", "release", "shipit")
    for tool in ("pigz", "tar", "gzip"):
        if not shutil.which(tool):
            sys.exit(f"bench: `{tool}` is not installed (apt-get install -y {tool})")

    work = tempfile.mkdtemp(prefix="shipit-bench-")
    try:
        tree = os.path.join(work, "tree")
        gen = [sys.executable, os.path.join(HERE, "gen-tree.py"), tree]
        if a.smoke:
            gen += ["--files", "500", "--large", "2", "--large-mb", "3"]
        subprocess.run(gen, check=True)
        with open(os.path.join(work, "deploy.yaml"), "w") as f:
            f.write("app: bench\npackage:\n  root: tree\n  include: [.]\n")
        env_prefix = "SOURCE_DATE_EPOCH=1700000000 "
        contenders = {
            "shipit package": f"{env_prefix}{shipit} -q package --no-build --app-version 1",
            "tar czf (gzip -6)": "tar czf out-gzip.tgz -C tree .",
            "tar | pigz -1": "tar cf - -C tree . | pigz -1 > out-pigz.tgz",
        }
        outputs = {
            "shipit package": "dist/bench-1.tar.gz",
            "tar czf (gzip -6)": "out-gzip.tgz",
            "tar | pigz -1": "out-pigz.tgz",
        }
        # Warm the page cache and check each contender works once.
        for cmd in contenders.values():
            timed(cmd, work)
        results = {name: [] for name in contenders}
        for _ in range(runs):
            for name, cmd in contenders.items():
                results[name].append(timed(cmd, work))
        input_bytes = int(subprocess.run(["du", "-sb", tree], capture_output=True, text=True).stdout.split()[0])
        files = sum(len(fs) for _, _, fs in os.walk(tree))
        sizes = {name: os.path.getsize(os.path.join(work, out)) for name, out in outputs.items()}

        pigz_median = statistics.median(w for w, _ in results["tar | pigz -1"])
        gzip_size = sizes["tar czf (gzip -6)"]
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
        lines = [
            f"## `shipit package` ({'smoke' if a.smoke else 'full'} run, {time.strftime('%Y-%m-%d', time.gmtime())})",
            "",
            f"Machine: {os.cpu_count()} cores, {mem_gib:.0f} GiB, {platform.platform()}. "
            f"Tree: {input_bytes / 1e6:.1f} MB in {files} files. {runs} timed run(s) per contender, alternating, warm cache.",
            "",
            f"Versions: {version(shipit + ' --version')}; {version('tar --version')}; "
            f"{version('gzip --version')}; {version('pigz --version')}",
            "",
            "| contender | wall median (s) | min | max | CPU median (s) | size (bytes) | time vs pigz -1 | size vs gzip -6 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in contenders:
            walls = [w for w, _ in results[name]]
            cpus = [c for _, c in results[name]]
            med = statistics.median(walls)
            lines.append(
                f"| {name.replace('|', chr(92) + '|')} | {med:.2f} | {min(walls):.2f} | {max(walls):.2f} | {statistics.median(cpus):.2f} "
                f"| {sizes[name]} | {med / pigz_median:.2f}x | {sizes[name] / gzip_size * 100 - 100:+.2f}% |"
            )
        report = "\n".join(lines) + "\n"
        print(report)
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(report)
        # The artifact must be a valid gzip'd tar whatever the figures say.
        sh(f"tar tzf {os.path.join(work, outputs['shipit package'])} > /dev/null")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
