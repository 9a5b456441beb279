#!/usr/bin/env bash
# Failed requests and latency per deploy, with and without `proxy:`, under steady load.
#
# Boots a 1-host nspawn testbed (tests/testbed), deploys the example app (hello) N times
# in four setups, each under 200 requests/s of keep-alive load from Debian's `hey`
# (10 workers x 20/s) against the app's public port:
#   in-place          the app restarts in place on port 8080 (no proxy)
#   in-place-2s       the same, with an app that needs 2 s to start
#   proxy             blue/green slots behind HAProxy on port 80 (steps 10/50/100, 1 s each)
#   proxy-2s          the same, with the slow starter
# and prints, per setup: requests, failed (non-2xx + connection errors), p50/p99 latency.
#
#   bench/zero-downtime.sh [--deploys N] [--smoke]     (root; --smoke: 1 deploy each)
set -euo pipefail
cd "$(dirname "$0")/.."
N=5
while [ $# -gt 0 ]; do
  case $1 in
    --deploys) N=$2; shift 2 ;;
    --smoke) N=1; shift ;;
    *) echo "usage: $0 [--deploys N] [--smoke]" >&2; exit 2 ;;
  esac
done
command -v hey >/dev/null || { echo "hey is not installed: apt-get install hey" >&2; exit 1; }
cargo build -q --bin shipit --example hello
SHIPIT=$PWD/target/debug/shipit
NAME=bench-zd
tests/testbed/up.sh 1 --name "$NAME" >/dev/null
trap 'tests/testbed/down.sh --name "$NAME" >/dev/null 2>&1 || true' EXIT
STATE=/run/shipit-testbed/$NAME
NS=$(sed -n 's/.*"client_netns": "\([^"]*\)".*/\1/p' "$STATE/testbed.json")
IP=$(sed -n 's/.*"ip": "\([^"]*\)".*/\1/p' "$STATE/testbed.json" | head -n 1)
WORK=$(mktemp -d)
trap 'tests/testbed/down.sh --name "$NAME" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

project() { # project DIR PROXY(0|1) START_DELAY_MS
  local d=$1
  mkdir -p "$d/pkg/bin" "$d/deploy"
  cp target/debug/examples/hello "$d/pkg/bin/hello"
  echo 0 >"$d/pkg/VERSION"
  cp examples/hello/deploy/hello.service examples/hello/deploy/hello@.service "$d/deploy/"
  {
    echo "app: hello"
    echo "package: {root: pkg, include: [bin, VERSION]}"
    echo "ssh: {user: deploy, identity_files: [$STATE/client_key], known_hosts_file: $STATE/known_hosts}"
    echo "env:"
    echo "  HELLO_START_DELAY_MS: '$3'"
    if [ "$2" = 1 ]; then
      echo "service: {name: hello, unit_file: deploy/hello@.service, sudo: true}"
      echo "proxy: {listen: 80, watch: 1s, drain_timeout: 5s, steps: [10, 50, 100], analysis: {interval: 1s}}"
    else
      echo "  PORT: '8080'"
      echo "  HELLO_BIND: 0.0.0.0"
      echo "service: {name: hello, unit_file: deploy/hello.service, sudo: true}"
    fi
    echo "health: {http: {url: 'http://127.0.0.1:8080/healthz'}, timeout: 15s, interval: 100ms, settle: 500ms}"
    echo "hosts: [$IP]"
  } >"$d/deploy.yaml"
}

run() { # run SETUP PROXY DELAY
  local d=$WORK/$1 port=8080
  [ "$2" = 1 ] && port=80
  project "$d" "$2" "$3"
  (cd "$d" && ip netns exec "$NS" "$SHIPIT" deploy --app-version 0 >/dev/null 2>&1)
  ip netns exec "$NS" hey -z 1h -c 10 -q 20 -t 10 "http://$IP:$port/" >"$d/hey.txt" 2>&1 &
  local hey=$!
  sleep 2
  for i in $(seq 1 "$N"); do
    echo "$i" >"$d/pkg/VERSION"
    (cd "$d" && ip netns exec "$NS" "$SHIPIT" deploy --app-version "$i" >/dev/null 2>&1) || echo "deploy $i of $1 failed" >&2
  done
  sleep 2
  kill -INT "$hey"; wait "$hey" || true
  python3 - "$1" "$d/hey.txt" "$N" <<'EOF'
import re, sys
name, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = open(path).read()
codes = {int(c): int(k) for c, k in re.findall(r"\[(\d+)\]\s+(\d+) responses", t)}
errs = sum(int(k) for k in re.findall(r"\[(\d+)\]\s+Get ", t))
ok = sum(k for c, k in codes.items() if 200 <= c < 300)
total = sum(codes.values()) + errs
def pct(p):
    m = re.search(r"%d%% in ([0-9.]+) secs" % p, t)
    return float(m.group(1)) * 1000 if m else float("nan")
print(f"{name:<12} deploys {n:>3}  requests {total:>7}  failed {total - ok:>5}  "
      f"per deploy {(total - ok) / n:>6.1f}  p50 {pct(50):6.1f} ms  p99 {pct(99):7.1f} ms")
EOF
  # Leave the host clean for the next setup.
  tests/testbed/fault.sh --name "$NAME" exec host1 sh -c \
    'systemctl stop hello hello-proxy "hello@*" 2>/dev/null; systemctl disable hello-proxy "hello@*" 2>/dev/null; rm -rf /opt/hello; true' >/dev/null
}

run in-place 0 0
run proxy 1 0
run in-place-2s 0 2000
run proxy-2s 1 2000
