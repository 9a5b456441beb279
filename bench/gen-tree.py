#!/usr/bin/env python3
"""Generate the benchmark tree: about 100 MB in 5,000 files.

A few large incompressible files (like bundled media or compressed assets) and many small
text files (like source maps, templates, configs). Seeded, so every run gets the same bytes.
Usage: gen-tree.py DIR [--files N] [--large-mb M]
"""
import argparse
import os
import random

WORDS = ("deploy release health check rollback server artifact systemd socket "
         "config version commit manifest shared lock history canary batch "
         "the a of to and in is for on with as by at from").split()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--large", type=int, default=4, help="number of large incompressible files")
    ap.add_argument("--large-mb", type=int, default=15)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(a.dir, exist_ok=True)
    for i in range(a.large):
        path = os.path.join(a.dir, "media", f"blob{i}.bin")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(rng.randbytes(a.large_mb << 20))
    small = a.files - a.large
    for i in range(small):
        d = os.path.join(a.dir, "app", f"mod{i % 50:02d}", f"sub{i % 7}")
        os.makedirs(d, exist_ok=True)
        n = rng.randint(2000, 14000)
        words = []
        size = 0
        while size < n:
            w = rng.choice(WORDS)
            words.append(w)
            size += len(w) + 1
            if rng.random() < 0.08:
                words.append(f"{rng.randint(0, 1 << 30)}\n")
        with open(os.path.join(d, f"file{i:05d}.txt"), "w") as f:
            f.write(" ".join(words))
    os.makedirs(os.path.join(a.dir, "bin"), exist_ok=True)
    exe = os.path.join(a.dir, "bin", "app")
    with open(exe, "w") as f:
        f.write("#!/bin/sh\necho app\n")
    os.chmod(exe, 0o755)


if __name__ == "__main__":
    main()
