#!/usr/bin/env bash
# up.sh N [--name TESTBED] [--small-opt HOST:SIZE]... [--boot-timeout SECONDS]
#
# Boots N Debian hosts (host1..hostN) with real systemd under systemd-nspawn, each in its
# own network namespace, reachable from the testbed's client namespace. If a testbed of
# that name exists it is torn down first. Progress goes to stderr; the last (only) line on
# stdout is the state dir, which holds testbed.json, hosts.env, ssh_config, client_key and
# known_hosts. On any failure everything created is torn down (TESTBED_KEEP_ON_FAILURE=1
# keeps it for debugging; clean up with down.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

usage() { sed -n '2,9s/^# \{0,1\}//p' "$0" >&2; exit 2; }

tb_parse_name "$@"
set -- "${TB_ARGS[@]+"${TB_ARGS[@]}"}"
count=
boot_timeout=
declare -A small_opt=()
while (($#)); do
    case $1 in
        --small-opt) (($# >= 2)) || usage; [[ $2 =~ ^(host[0-9]+):([0-9]+[KMG]?)$ ]] || tb_die "bad --small-opt '$2' (want hostN:SIZE, e.g. host2:20M)"
            small_opt[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}; shift 2 ;;
        --boot-timeout) (($# >= 2)) || usage; boot_timeout=$2; shift 2 ;;
        -h | --help) usage ;;
        -*) tb_die "unknown option $1" ;;
        *) [[ -z $count && $1 =~ ^[0-9]+$ ]] || usage; count=$1; shift ;;
    esac
done
if [[ -z $count ]] || ((count < 1 || count > 240)); then usage; fi
boot_timeout=${boot_timeout:-$((60 + 3 * count))}
tb_require_root

exec 3>&1 1>&2 # stdout is only for the final state dir line
# Each host's systemd and its user managers take inotify instances; the kernel's default
# of 128 per user runs out at about 15 hosts (user@0.service fails: "degraded").
need_inotify=$((128 + 16 * count))
have_inotify=$(sysctl -n fs.inotify.max_user_instances 2>/dev/null || echo 0)
if ((have_inotify < need_inotify)); then
    sysctl -qw fs.inotify.max_user_instances="$need_inotify" ||
        tb_log "could not raise fs.inotify.max_user_instances to $need_inotify"
fi
t0=$SECONDS
started=$(date +%s.%N)

tb_ensure_host_tools

if [[ -e $TB_STATE ]] || ip netns list 2>/dev/null | grep -q "^$TB_CLIENT_NS\b" ||
    [[ -d /sys/fs/cgroup/systemd/$TB_CGROUP ]]; then
    tb_log "testbed '$TB_NAME' exists: tearing it down first"
    tb_teardown
fi

ok=0
on_exit() {
    local rc=$? hd
    ((ok)) && return 0
    trap - EXIT INT TERM
    tb_log "up.sh failed (rc=$rc)"
    for hd in "$TB_STATE"/hosts/*/; do
        [[ -s $hd/boot.status && $(head -n1 "$hd/boot.status") != ok ]] || continue
        tb_log "--- $(basename "$hd"): $(cat "$hd/boot.status")"
        [[ -f $hd/console.log ]] && tail -n 25 "$hd/console.log" >&2
    done
    if [[ ${TESTBED_KEEP_ON_FAILURE:-0} == 1 ]]; then
        tb_log "TESTBED_KEEP_ON_FAILURE=1: left as is; run down.sh --name $TB_NAME"
    else
        tb_teardown || true
    fi
    exit "$((rc ? rc : 1))"
}
trap on_exit EXIT
set -o errtrace
trap 'tb_log "command failed (line $LINENO): $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$TB_STATE_ROOT" "$TB_STATE/hosts"
chmod 0755 "$TB_STATE_ROOT" "$TB_STATE"

# Subnet 10.200.<k>.0/24: "default" -> 0, other names -> hash, moved on if another live
# testbed holds it.
exec {lk}<"$TB_STATE_ROOT"
flock "$lk"
if [[ $TB_NAME == default ]]; then k=0; else k=$(($(printf '%s' "$TB_NAME" | cksum | cut -d' ' -f1) % 250 + 1)); fi
used=" $(cat "$TB_STATE_ROOT"/*/subnet 2>/dev/null | tr '\n' ' ' || true) "
for _ in $(seq 0 251); do
    [[ $used == *" $k "* ]] || break
    k=$(((k + 1) % 251))
done
[[ $used != *" $k "* ]] || tb_die "no free subnet"
echo "$k" >"$TB_STATE/subnet"
# /run/netns must be a shared mount before any `ip netns add`, and stay one: when it was
# unmounted while another testbed's `ip netns add` ran (teardown used to unmount it once
# empty), that netns got mounted on the bare directory and then hidden under the next bind
# mount, where nothing can delete it and its name is stuck until `umount /run/netns`
# (CI, "Peer netns reference is invalid"). Done here, once, under a lock of its own;
# teardown leaves the mount in place.
tb_netns_dir_ready
exec {lk}>&-
net=10.200.$k

tb_ensure_base
deploy_ids=$(awk -F: '$1 == "deploy" { print $3 ":" $4 }' "$TB_BASE/etc/passwd")
[[ -n $deploy_ids ]] || tb_die "no deploy user in base image"

# Client key and client namespace (bridge br0 = the LAN of the hosts).
ssh-keygen -q -t ed25519 -N '' -C "shipit-testbed-$TB_NAME" -f "$TB_STATE/client_key"
chmod 0600 "$TB_STATE/client_key"
ip netns add "$TB_CLIENT_NS"
ip -n "$TB_CLIENT_NS" link set lo up
ip -n "$TB_CLIENT_NS" link add br0 type bridge
ip -n "$TB_CLIENT_NS" addr add "$net.1/24" dev br0
ip -n "$TB_CLIENT_NS" link set br0 up
: >"$TB_STATE/known_hosts"

hosts=()
for i in $(seq 1 "$count"); do
    h=host$i
    hosts+=("$h")
    ip=$net.$((10 + i))
    ns=$(tb_host_ns "$h")
    machine=$(tb_machine "$h")
    hd=$(tb_host_dir "$h")
    mkdir -p "$hd/upper" "$hd/work" "$hd/root"

    # Network: veth vh<i> (client ns, on br0) <-> eth0 (host ns).
    ip netns add "$ns"
    ip -n "$TB_CLIENT_NS" link add "vh$i" type veth peer name eth0 netns "$ns"
    ip -n "$TB_CLIENT_NS" link set "vh$i" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$net.1"

    # Root: overlay on the shared base, then what makes this host distinct.
    mount -t overlay overlay -o "lowerdir=$TB_BASE,upperdir=$hd/upper,workdir=$hd/work" "$hd/root"
    r=$hd/root
    stat -c 'inode-%d:%i' "$r" >"$hd/nspawn-lock" # nspawn's lock file name for this root
    echo "$h" >"$r/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$h" >"$r/etc/hosts"
    ssh-keygen -q -t ed25519 -N '' -C "root@$h" -f "$r/etc/ssh/ssh_host_ed25519_key"
    chmod 0600 "$r/etc/ssh/ssh_host_ed25519_key"
    printf '%s %s\n' "$ip" "$(cut -d' ' -f1,2 "$r/etc/ssh/ssh_host_ed25519_key.pub")" >>"$TB_STATE/known_hosts"
    install -m 0600 "$TB_STATE/client_key.pub" "$r/root/.ssh/authorized_keys"
    install -m 0600 -o "${deploy_ids%:*}" -g "${deploy_ids#*:}" "$TB_STATE/client_key.pub" \
        "$r/home/deploy/.ssh/authorized_keys"

    extra=()
    if [[ -n ${small_opt[$h]:-} ]]; then
        extra+=("--tmpfs=/opt:size=${small_opt[$h]},mode=0755,uid=${deploy_ids%:*},gid=${deploy_ids#*:}")
    fi

    # Launch from its own cgroup (needed with --keep-unit): the launcher writes its PID
    # into the cgroups, then execs nspawn; so the PID in the pid file is nspawn's. fd 3
    # (our stdout) is closed so that `$(up.sh ...)` does not wait for nspawn to exit.
    procs=()
    for hier in "${TB_CG_HIERARCHIES[@]}"; do
        mkdir -p "/sys/fs/cgroup/$hier/$TB_CGROUP/$h"
        procs+=("/sys/fs/cgroup/$hier/$TB_CGROUP/$h/cgroup.procs")
    done
    rm -f "$hd/pid"
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
    setsid bash -c 'echo $$ >"$1"; echo $$ >"$2"; echo $$ >"$3.tmp"; mv "$3.tmp" "$3"; shift 3; exec "$@"' \
        tb-launch "${procs[0]}" "${procs[1]}" "$hd/pid" \
        systemd-nspawn --quiet -D "$r" --boot --register=no --keep-unit \
        --machine="$machine" --hostname="$h" --network-namespace-path="/run/netns/$ns" \
        --console=read-only --link-journal=no --resolv-conf=off --timezone=off \
        "${extra[@]+"${extra[@]}"}" \
        </dev/null >"$hd/console.log" 2>&1 3>&- &
done
chmod 0644 "$TB_STATE/known_hosts"
for h in "${hosts[@]}"; do
    hd=$(tb_host_dir "$h")
    for _ in $(seq 100); do [[ -s $hd/pid ]] && break; sleep 0.05; done
    [[ -s $hd/pid ]] || tb_die "$h: launcher did not start"
done
tb_log "launched $count host(s) in $((SECONDS - t0)) s; waiting for ssh + systemd (timeout ${boot_timeout}s)"

# Wait, bounded: ssh answers and `systemctl is-system-running --wait` says running.
mapfile -t ssh_opts < <(tb_ssh_opts "$TB_STATE")
wait_host() {
    local h=$1 ip=$2 deadline=$3 hd pid out rc failed bad u
    hd=$(tb_host_dir "$h")
    pid=$(cat "$hd/pid")
    while :; do
        if ! tb_alive "$pid"; then echo "nspawn exited before the host was ready" >"$hd/boot.status"; return 1; fi
        if ((SECONDS >= deadline)); then echo "timeout: last answer '${out:-}' (ssh rc ${rc:-none}: $(tail -n1 "$hd/wait.err" 2>/dev/null || true))" >"$hd/boot.status"; return 1; fi
        rc=0
        out=$(ip netns exec "$TB_CLIENT_NS" timeout "$((deadline - SECONDS + 1))" ssh "${ssh_opts[@]}" \
            "root@$ip" 'systemctl is-system-running --wait' 2>"$hd/wait.err") || rc=$?
        out=$(tail -n1 <<<"$out")
        case $out in
            running) echo ok >"$hd/boot.status"; return 0 ;;
            degraded)
                failed=$(ip netns exec "$TB_CLIENT_NS" ssh "${ssh_opts[@]}" "root@$ip" \
                    'systemctl list-units --failed --plain --no-legend' | awk '{ print $1 }') || true
                bad=
                for u in $failed; do [[ " $TB_HARMLESS_UNITS " == *" $u "* ]] || bad+=" $u"; done
                if [[ -z $bad ]]; then echo ok >"$hd/boot.status"; return 0; fi
                { echo "degraded, failed units:$bad"
                  ip netns exec "$TB_CLIENT_NS" ssh "${ssh_opts[@]}" "root@$ip" \
                    "systemctl status --no-pager -n 10 $bad" || true; } >"$hd/boot.status"
                return 1 ;;
        esac
        # ssh could not connect yet (rc 255) or systemd answered oddly: retry.
        sleep 0.2
    done
}
deadline=$((SECONDS + boot_timeout))
waiters=()
for h in "${hosts[@]}"; do
    wait_host "$h" "$(tb_host_ip "$h")" "$deadline" &
    waiters+=("$!")
done
failed=0
for w in "${waiters[@]}"; do wait "$w" || failed=1; done
((failed == 0)) || tb_die "some hosts did not come up"
tb_log "all $count host(s) ready after $((SECONDS - t0)) s"

# Outputs: testbed.json (for tests), hosts.env (for shell), ssh_config (for humans).
{
    printf 'TB_NAME=%q\nTB_STATE=%q\nTB_SUBNET=%q\nTB_CLIENT_NETNS=%q\nTB_CLIENT_IP=%q\n' \
        "$TB_NAME" "$TB_STATE" "$net.0/24" "$TB_CLIENT_NS" "$net.1"
    printf 'TB_CLIENT_KEY=%q\nTB_KNOWN_HOSTS=%q\nTB_SSH_CONFIG=%q\nTB_HOSTS=%q\n' \
        "$TB_STATE/client_key" "$TB_STATE/known_hosts" "$TB_STATE/ssh_config" "${hosts[*]}"
    for h in "${hosts[@]}"; do printf 'TB_IP_%s=%q\n' "$h" "$(tb_host_ip "$h")"; done
} >"$TB_STATE/hosts.env"
{
    for h in "${hosts[@]}"; do printf 'Host %s\n    HostName %s\n' "$h" "$(tb_host_ip "$h")"; done
    printf 'Host *\n    IdentityFile %s\n    IdentitiesOnly yes\n    UserKnownHostsFile %s\n' \
        "$TB_STATE/client_key" "$TB_STATE/known_hosts"
    printf '    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n    BatchMode yes\n    ConnectTimeout 5\n'
} >"$TB_STATE/ssh_config"
{
    printf '{\n  "kind": "nspawn",\n  "name": %s,\n  "state_dir": %s,\n' "$(tb_json_str "$TB_NAME")" "$(tb_json_str "$TB_STATE")"
    printf '  "subnet": "%s.0/24",\n  "client_netns": %s,\n  "client_ip": "%s.1",\n' "$net" "$(tb_json_str "$TB_CLIENT_NS")" "$net"
    printf '  "client_key": %s,\n  "known_hosts": %s,\n  "ssh_config": %s,\n' "$(tb_json_str "$TB_STATE/client_key")" \
        "$(tb_json_str "$TB_STATE/known_hosts")" "$(tb_json_str "$TB_STATE/ssh_config")"
    printf '  "users": ["deploy", "root"],\n  "base_image": %s,\n  "hosts": [\n' "$(tb_json_str "$TB_BASE")"
    sep=
    for h in "${hosts[@]}"; do
        hd=$(tb_host_dir "$h")
        printf '%s    {"name": "%s", "ip": "%s", "port": 22, "pid": %s, "machine": %s, "netns": %s, "veth": "vh%s", "root": %s, "host_key": %s, "small_opt": %s}' \
            "$sep" "$h" "$(tb_host_ip "$h")" "$(cat "$hd/pid")" "$(tb_json_str "$(tb_machine "$h")")" \
            "$(tb_json_str "$(tb_host_ns "$h")")" "$(tb_host_index "$h")" "$(tb_json_str "$hd/root")" \
            "$(tb_json_str "$(cut -d' ' -f1,2 "$hd/root/etc/ssh/ssh_host_ed25519_key.pub")")" \
            "$(if [[ -n ${small_opt[$h]:-} ]]; then tb_json_str "${small_opt[$h]}"; else echo null; fi)"
        sep=$',\n'
    done
    printf '\n  ],\n  "started_at": %s\n}\n' "$started"
} >"$TB_STATE/testbed.json.tmp"
mv "$TB_STATE/testbed.json.tmp" "$TB_STATE/testbed.json"

ok=1
tb_log "testbed '$TB_NAME' up: $count host(s) on $net.0/24 in $((SECONDS - t0)) s"
echo "$TB_STATE" >&3
