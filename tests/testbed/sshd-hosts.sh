#!/usr/bin/env bash
# sshd-hosts.sh [--name TESTBED] up N | down
#
# Lighter hosts, no systemd: N plain `sshd -f CONFIG` processes on 127.0.0.1, distinct
# ports, each with its own /opt (`unshare --mount` + bind mount of a per-host directory),
# so SSH-level tests (auth, host keys, fan-out, uploads) run in ~0.1 s per host. Never use
# them for service-manager tests. Must run as root.
#
# Users: root, and a real local user `deploy` (created if missing, with password field
# '*', removed again by the last `down` if this script created it). Both log in with the
# testbed's client key only (AuthorizedKeysFile in the state dir); each host's /opt is
# owned by deploy. deploy has no sudo here. UsePAM is off, so a pre-existing deploy user
# whose password is locked ('!') cannot log in.
#
# State: /run/shipit-sshd-hosts/<name>/ with the same files as up.sh (testbed.json with
# "kind": "sshd", hosts.env, ssh_config, client_key, known_hosts with [127.0.0.1]:PORT
# entries). `up` prints the state dir as the last line on stdout; an existing testbed of
# that name is torn down first. `down` kills by PID (and every process left in the hosts'
# private mount namespaces); idempotent. TESTBED_SSHD_LOG_LEVEL (default INFO) sets the
# sshds' LogLevel, e.g. DEBUG1 to count channels in hosts/hostI/sshd.log (bench/deploy.py).
# TESTBED_SSHD_OPT_TMPFS=SIZE (e.g. 2g; default unset) gives each host a tmpfs /opt of that
# size in its mount namespace instead of the bind mount; testbed.json's "opt" is then
# /proc/PID/root/opt. It goes away with the host's processes.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

usage() { sed -n '2,24s/^# \{0,1\}//p' "$0" >&2; exit 2; }

tb_parse_name "$@"
set -- "${TB_ARGS[@]+"${TB_ARGS[@]}"}"
ROOT=${TESTBED_SSHD_STATE_ROOT:-/run/shipit-sshd-hosts}
ST=$ROOT/$TB_NAME
PORT_BASE=${TESTBED_SSHD_PORT_BASE:-22200}
LOG_LEVEL=${TESTBED_SSHD_LOG_LEVEL:-INFO}
[[ $LOG_LEVEL =~ ^(QUIET|FATAL|ERROR|INFO|VERBOSE|DEBUG[123]?)$ ]] || { echo "sshd-hosts.sh: bad TESTBED_SSHD_LOG_LEVEL=$LOG_LEVEL" >&2; exit 2; }
OPT_TMPFS=${TESTBED_SSHD_OPT_TMPFS:-}
[[ -z $OPT_TMPFS || $OPT_TMPFS =~ ^[0-9]+[kmg]?$ ]] || { echo "sshd-hosts.sh: bad TESTBED_SSHD_OPT_TMPFS=$OPT_TMPFS" >&2; exit 2; }
SSHD=/usr/sbin/sshd # absolute path: sshd refuses to re-exec otherwise

# Kill every process of this testbed: the sshd PIDs, then anything still in their private
# mount namespaces (sessions). Remove the state; the last testbed also undoes the shared
# setup it made (deploy user, /run/sshd).
teardown() {
    local pids=() pid f ns nss=() left deadline p
    for f in "$ST"/hosts/*/pid; do
        [[ -s $f ]] || continue
        pid=$(cat "$f")
        if ! tb_alive "$pid" || [[ $(cat "/proc/$pid/comm" 2>/dev/null) != sshd ]]; then continue; fi
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-f $ST/" || continue
        pids+=("$pid")
    done
    for f in "$ST"/hosts/*/mntns; do [[ -s $f ]] && nss+=("$(cat "$f")"); done
    if ((${#pids[@]})); then
        tb_log "stopping ${#pids[@]} sshd(s): SIGTERM ${pids[*]}"
        kill -TERM "${pids[@]}" 2>/dev/null || true
    fi
    deadline=$((SECONDS + 5))
    for pid in "${pids[@]+"${pids[@]}"}"; do
        while tb_alive "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
    done
    # Then SIGKILL whatever is left: sshds that did not stop, and sessions still running
    # in the hosts' private mount namespaces.
    deadline=$((SECONDS + 10))
    while :; do
        left=()
        for pid in "${pids[@]+"${pids[@]}"}"; do tb_alive "$pid" && left+=("$pid"); done
        if ((${#nss[@]})); then
            while read -r p ns; do
                [[ " ${nss[*]} " == *" $ns "* ]] && left+=("$p")
            done < <(find /proc/[0-9]*/ns/mnt -maxdepth 0 -printf '%p %l\n' 2>/dev/null |
                sed -n 's|^/proc/\([0-9]*\)/ns/mnt |\1 |p')
        fi
        ((${#left[@]})) || break
        if ((SECONDS >= deadline)); then tb_log "WARNING: processes left: ${left[*]}"; break; fi
        kill -KILL "${left[@]}" 2>/dev/null || true
        sleep 0.1
    done
    tb_rm_tree "$ST"
    exec {lk}<"$ROOT"
    flock "$lk"
    if [[ -z $(find "$ROOT" -mindepth 1 -maxdepth 1 -type d) ]]; then
        if [[ -f $ROOT/.created-deploy-user ]]; then
            # Zombies (reaped late by PID 1 here) do not count as the user's processes.
            # shellcheck disable=SC2009 # pgrep cannot filter out zombies
            if ps -u deploy -o stat= 2>/dev/null | grep -qv '^Z'; then
                tb_log "WARNING: local user deploy still has processes; not removed"
            else
                userdel -r deploy >/dev/null 2>&1 || userdel deploy || true
                id deploy >/dev/null 2>&1 || rm -f "$ROOT/.created-deploy-user"
                tb_log "removed local user deploy (created by sshd-hosts.sh)"
            fi
        fi
        if [[ -f $ROOT/.created-run-sshd ]]; then rmdir /run/sshd 2>/dev/null || true; fi
        rm -f "$ROOT/.created-run-sshd"
        rmdir "$ROOT" 2>/dev/null || true # kept while .created-deploy-user is pending
    fi
    exec {lk}<&-
}

cmd=${1:-}
case $cmd in
    up)
        if (($# != 2)) || [[ ! $2 =~ ^[0-9]+$ ]] || (($2 < 1 || $2 > 200)); then usage; fi
        count=$2 ;;
    down) (($# == 1)) || usage ;;
    *) usage ;;
esac
tb_require_root

if [[ $cmd == down ]]; then
    [[ -d $ROOT ]] || { tb_log "sshd testbed '$TB_NAME' is down"; exit 0; }
    teardown
    tb_log "sshd testbed '$TB_NAME' is down"
    exit 0
fi

exec 3>&1 1>&2
t0=$(date +%s%N)
tb_ensure_packages ssh:openssh-client ssh-keygen:openssh-client unshare:util-linux flock:util-linux ss:iproute2
[[ -x $SSHD ]] || tb_die "$SSHD missing: apt-get install openssh-server (keep its own service stopped)"
mkdir -p "$ROOT"
chmod 0755 "$ROOT"
if [[ -e $ST ]]; then tb_log "sshd testbed '$TB_NAME' exists: tearing it down first"; teardown; mkdir -p "$ROOT"; fi

ok=0
on_exit() {
    local rc=$?
    ((ok)) && return 0
    trap - EXIT
    tb_log "sshd-hosts.sh up failed (rc=$rc)"
    for f in "$ST"/hosts/*/sshd.log; do [[ -s $f ]] && { tb_log "--- $f"; tail -n 5 "$f" >&2; }; done
    teardown || true
    exit "$((rc ? rc : 1))"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Shared setup and port allocation, under the lock.
exec {lk}<"$ROOT"
flock "$lk"
mkdir -p "$ST/hosts"
chmod 0755 "$ST"
if ! id deploy >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash --user-group --password '*' deploy
    touch "$ROOT/.created-deploy-user"
    tb_log "created local user deploy"
fi
if [[ ! -d /run/sshd ]]; then install -d -m 0755 /run/sshd; touch "$ROOT/.created-run-sshd"; fi
claimed=" $(cat "$ROOT"/*/ports 2>/dev/null | tr '\n' ' ' || true) "
listening=" $(ss -Hltn | awk '{ n = split($4, a, ":"); printf "%s ", a[n] }') "
ports=()
p=$PORT_BASE
while ((${#ports[@]} < count)); do
    ((p < 65000)) || tb_die "no free ports"
    [[ $claimed == *" $p "* || $listening == *" $p "* ]] || ports+=("$p")
    p=$((p + 1))
done
printf '%s\n' "${ports[@]}" >"$ST/ports"
exec {lk}<&-

ssh-keygen -q -t ed25519 -N '' -C "shipit-sshd-hosts-$TB_NAME" -f "$ST/client_key"
chmod 0600 "$ST/client_key"
install -m 0644 "$ST/client_key.pub" "$ST/authorized_keys"
install -d -m 0700 "$ST/keys" # host keys: not in a world-writable dir (StrictModes)
: >"$ST/known_hosts"
hosts=()
for i in $(seq 1 "$count"); do
    h=host$i port=${ports[$((i - 1))]} hd=$ST/hosts/host$i
    hosts+=("$h")
    mkdir -p "$hd/opt"
    chown deploy:deploy "$hd/opt"
    install -d -m 0700 "$ST/keys/$h"
    ssh-keygen -q -t ed25519 -N '' -C "root@$h" -f "$ST/keys/$h/ssh_host_ed25519_key"
    printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "$ST/keys/$h/ssh_host_ed25519_key.pub")" >>"$ST/known_hosts"
    cat >"$hd/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $ST/keys/$h/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile $ST/authorized_keys
AllowUsers root deploy
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
UseDNS no
StrictModes yes
MaxStartups 100
MaxSessions 100
Subsystem sftp internal-sftp
LogLevel $LOG_LEVEL
EOF
    echo "$port" >"$hd/port"
    # unshare execs bash, which writes its PID and execs sshd: the PID file holds sshd's PID.
    # shellcheck disable=SC2016 # $$ belongs to the inner shell
    setsid unshare --mount --propagation private -- bash -c \
        'if [ -n "$4" ]; then mount -t tmpfs -o "size=$4,mode=0755,uid=$(id -u deploy),gid=$(id -g deploy)" sshd-host-opt /opt; else mount --bind "$1" /opt; fi &&
         readlink /proc/self/ns/mnt >"$2/mntns" && echo $$ >"$2/pid" && exec "$3" -D -e -f "$2/sshd_config"' \
        sshd-launch "$hd/opt" "$hd" "$SSHD" "$OPT_TMPFS" </dev/null >"$hd/sshd.log" 2>&1 3>&- &
done
chmod 0644 "$ST/known_hosts"

mapfile -t ssh_opts < <(tb_ssh_opts "$ST")
deadline=$((SECONDS + 30))
wait_host() { # ready = both users log in
    local i=$1 port=$2 pidf=$ST/hosts/host$1/pid
    until ssh "${ssh_opts[@]}" -p "$port" root@127.0.0.1 true 2>/dev/null &&
        ssh "${ssh_opts[@]}" -p "$port" deploy@127.0.0.1 true 2>/dev/null; do
        ((SECONDS < deadline)) || { tb_log "host$i (port $port) did not answer ssh"; return 1; }
        [[ ! -s $pidf ]] || tb_alive "$(cat "$pidf")" || { tb_log "host$i: sshd exited"; return 1; }
        sleep 0.05
    done
}
waiters=()
for i in $(seq 1 "$count"); do
    wait_host "$i" "${ports[$((i - 1))]}" &
    waiters+=("$!")
done
failed=0
for w in "${waiters[@]}"; do wait "$w" || failed=1; done
((failed == 0)) || tb_die "some sshd hosts did not come up"

{
    printf 'TB_NAME=%q\nTB_STATE=%q\nTB_CLIENT_NETNS=\nTB_CLIENT_KEY=%q\nTB_KNOWN_HOSTS=%q\nTB_SSH_CONFIG=%q\nTB_HOSTS=%q\n' \
        "$TB_NAME" "$ST" "$ST/client_key" "$ST/known_hosts" "$ST/ssh_config" "${hosts[*]}"
    for i in $(seq 1 "$count"); do printf 'TB_IP_host%s=127.0.0.1\nTB_PORT_host%s=%s\n' "$i" "$i" "${ports[$((i - 1))]}"; done
} >"$ST/hosts.env"
{
    for i in $(seq 1 "$count"); do printf 'Host host%s\n    HostName 127.0.0.1\n    Port %s\n' "$i" "${ports[$((i - 1))]}"; done
    printf 'Host *\n    IdentityFile %s\n    IdentitiesOnly yes\n    UserKnownHostsFile %s\n' "$ST/client_key" "$ST/known_hosts"
    printf '    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n    BatchMode yes\n    ConnectTimeout 5\n'
} >"$ST/ssh_config"
{
    printf '{\n  "kind": "sshd",\n  "name": %s,\n  "state_dir": %s,\n  "client_netns": null,\n  "client_ip": "127.0.0.1",\n' \
        "$(tb_json_str "$TB_NAME")" "$(tb_json_str "$ST")"
    printf '  "client_key": %s,\n  "known_hosts": %s,\n  "ssh_config": %s,\n  "users": ["deploy", "root"],\n  "hosts": [\n' \
        "$(tb_json_str "$ST/client_key")" "$(tb_json_str "$ST/known_hosts")" "$(tb_json_str "$ST/ssh_config")"
    sep=
    for i in $(seq 1 "$count"); do
        hd=$ST/hosts/host$i opt=$ST/hosts/host$i/opt
        [[ -z $OPT_TMPFS ]] || opt=/proc/$(cat "$hd/pid")/root/opt
        printf '%s    {"name": "host%s", "ip": "127.0.0.1", "port": %s, "pid": %s, "opt": %s, "root": null, "host_key": %s}' \
            "$sep" "$i" "${ports[$((i - 1))]}" "$(cat "$hd/pid")" "$(tb_json_str "$opt")" \
            "$(tb_json_str "$(cut -d' ' -f1,2 "$ST/keys/host$i/ssh_host_ed25519_key.pub")")"
        sep=$',\n'
    done
    printf '\n  ]\n}\n'
} >"$ST/testbed.json.tmp"
mv "$ST/testbed.json.tmp" "$ST/testbed.json"
ok=1
tb_log "sshd testbed '$TB_NAME' up: $count host(s) on ports ${ports[*]} in $((($(date +%s%N) - t0) / 1000000)) ms"
echo "$ST" >&3
