#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: fuzz/run.sh [SECONDS per target, default 60]
#
# Needs the nightly toolchain and a C++ compiler (libFuzzer is built from source); not
# cargo-fuzz: this builds exactly as `cargo fuzz build --sanitizer none` does, with plain
# cargo, so a fresh machine installs nothing more (`cargo fuzz run TARGET` works too). No
# sanitizer: the targets are safe Rust, so ASan would only slow them down; panics and
# hangs (-timeout) are what we look for. A crashing input is saved in
# fuzz/artifacts/TARGET/, the grown corpus in fuzz/corpus/TARGET/ (both ignored by git);
# fix the crash and add the input to tests/shipit/hostile.rs. Exits non-zero on the first
# target that fails. SHIPIT_FUZZ_TARGET_DIR moves the build (default $CARGO_TARGET_DIR/fuzz).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
targets=(config_load host_parse interpolate known_hosts)
target_dir="$(realpath -m "${SHIPIT_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/fuzz}")"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 2
fi
triple="$(rustup run nightly rustc -vV | sed -n 's/^host: //p')"

# cargo-fuzz's flags for `--sanitizer none`: libFuzzer's coverage instrumentation,
# `cfg(fuzzing)`, debug assertions and overflow checks on in an optimized build. The
# explicit --target keeps these flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
start=$(date +%s)
cargo +nightly build --release --locked --manifest-path Cargo.toml --target "$triple" \
  --target-dir "$target_dir" --bins
echo "fuzz/run.sh: built in $(($(date +%s) - start))s"

for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="$target_dir/fuzz-$t.log"
  printf -- '--- fuzz %s for %ss\n' "$t" "$seconds"
  # -timeout: one input running longer than 5s is a hang. -max_len: the size of a real
  # config and then some. New inputs go to corpus/ (first directory); seeds/ is read only.
  if ! "$target_dir/$triple/release/$t" "corpus/$t" "seeds/$t" \
    -max_total_time="$seconds" -timeout=5 -max_len=8192 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz/run.sh: $t FAILED (the input is in fuzz/artifacts/$t/, the log in $log)" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$log" | tr '\n' ' '
  echo
done
echo "fuzz/run.sh: ${#targets[@]} targets, ${seconds}s each, no crash or hang"
