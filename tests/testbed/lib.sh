# shellcheck shell=bash
# Shared functions of the shipit testbed (tests/testbed/*.sh). Source it; do not run it.
#
# Everything a testbed creates is named after the testbed name (--name, default "default"):
#   state dir        $TB_STATE_ROOT/<name>/            (default /run/shipit-testbed/<name>)
#   prefix           shipit-tb-<name>
#   client netns     shipit-tb-<name>-client            (bridge br0, 10.200.<k>.1/24)
#   host netns       shipit-tb-<name>-host<i>           (eth0, 10.200.<k>.<10+i>/24)
#   nspawn machine   shipit-tb-<name>-host<i>           (hostname inside: host<i>)
#   cgroups          /sys/fs/cgroup/{systemd,unified}/shipit-tb-<name>/host<i>
# Nothing is added to the root network namespace.

TB_STATE_ROOT=${TESTBED_STATE_ROOT:-/run/shipit-testbed}
TB_CACHE_DIR=${TESTBED_CACHE_DIR:-/var/tmp/shipit-testbed}
# The Debian mirror debootstrap uses: TESTBED_MIRROR, else this machine's own apt
# sources (tb_apt_mirror), looked up only when a base image is built.
TB_MIRROR=${TESTBED_MIRROR:-}
TB_SUITE=bookworm
TB_INCLUDE=systemd,systemd-sysv,dbus,libpam-systemd,openssh-server,sudo,python3,curl,iproute2,procps,busybox,ca-certificates,haproxy
TB_CG_HIERARCHIES=(systemd unified)
# Units whose failure does not make a host "not ready" (space separated, env override).
# shellcheck disable=SC2034 # used by up.sh
TB_HARMLESS_UNITS=${TESTBED_HARMLESS_UNITS:-}

tb_log() { printf '[testbed %s] %s\n' "$(date +%T.%3N)" "$*" >&2; }
tb_die() { tb_log "ERROR: $*"; exit 1; }

# tb_apt_mirror [FILE...]: the URI of the first Debian archive entry of apt's sources
# (default: /etc/apt/sources.list and sources.list.d/*.list, *.sources), one-line
# (`deb [options] URI SUITE COMPONENT...`) and deb822 (`Types:`/`URIs:`/`Suites:`)
# formats alike. An entry counts when it is a `deb` one whose suite is a Debian release
# (a codename, stable, testing...): not -security, -updates or -backports, not another
# vendor's repository. Prints nothing and fails when there is none.
tb_apt_mirror() {
    local files=("$@")
    if ((${#files[@]} == 0)); then
        files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    fi
    local f uri
    for f in "${files[@]}"; do
        [[ -f $f && -r $f ]] || continue
        uri=$(awk -v deb822="$([[ $f == *.sources ]] && echo 1 || echo 0)" '
            function debian(suite) {
                if (suite ~ /-(security|updates|backports|proposed-updates)$/) return 0
                return suite ~ /^(buzz|rex|bo|hamm|slink|potato|woody|sarge|etch|lenny|squeeze|wheezy|jessie|stretch|buster|bullseye|bookworm|trixie|forky|duke|sid|oldoldstable|oldstable|stable|testing|unstable|experimental)$/
            }
            function flush(   n, i, s, u) {
                if (types ~ /(^| )deb( |$)/ && enabled !~ /^(no|false)$/ && uris != "") {
                    split(uris, u, " ")
                    n = split(suites, s, " ")
                    for (i = 1; i <= n; i++) if (debian(s[i])) { print u[1]; found = 1; exit }
                }
                types = ""; uris = ""; suites = ""; enabled = ""
            }
            /^[ \t]*#/ { next }
            { sub(/#.*/, "") }
            deb822 == 1 {
                if ($0 ~ /^[ \t]*$/) { flush(); next }
                key = tolower($1); $1 = ""; sub(/^[ \t]+/, "")
                if (key == "types:") types = $0
                else if (key == "uris:") uris = $0
                else if (key == "suites:") suites = $0
                else if (key == "enabled:") enabled = tolower($0)
                next
            }
            $1 == "deb" {
                line = $0
                sub(/^[ \t]*deb[ \t]+/, "", line)
                if (line ~ /^\[/) sub(/^\[[^]]*\][ \t]*/, "", line)
                split(line, w, /[ \t]+/)
                if (w[1] != "" && debian(w[2])) { print w[1]; exit }
            }
            END { if (deb822 == 1 && !found) flush() }
        ' "$f")
        if [[ -n $uri ]]; then
            printf '%s\n' "${uri%/}"
            return 0
        fi
    done
    return 1
}

# tb_mirror: TB_MIRROR set, from TESTBED_MIRROR or this machine's apt sources, or die.
tb_mirror() {
    [[ -n $TB_MIRROR ]] && return 0
    TB_MIRROR=$(tb_apt_mirror) ||
        tb_die "no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/ \
(a deb entry of a Debian release); set TESTBED_MIRROR=http://<mirror>/debian"
}

tb_require_root() {
    [[ $(id -u) -eq 0 ]] || tb_die "must run as root"
}

# tb_set_name NAME: validate the name and derive every resource name from it.
tb_set_name() {
    local name=$1
    [[ $name =~ ^[a-z0-9][a-z0-9-]{0,19}$ ]] ||
        tb_die "bad testbed name '$name' (1-20 chars of a-z 0-9 -, starting with a letter or digit)"
    TB_NAME=$name
    TB_STATE=$TB_STATE_ROOT/$name
    TB_PREFIX=shipit-tb-$name
    TB_CLIENT_NS=$TB_PREFIX-client
    TB_CGROUP=$TB_PREFIX
}

# tb_parse_name "$@": consumes a leading/any --name NAME or --name=NAME (default
# $TESTBED_NAME or "default"); the other arguments are left in TB_ARGS.
tb_parse_name() {
    local name=${TESTBED_NAME:-default}
    TB_ARGS=()
    while (($#)); do
        case $1 in
            --name) (($# >= 2)) || tb_die "--name needs a value"; name=$2; shift 2 ;;
            --name=*) name=${1#--name=}; shift ;;
            *) TB_ARGS+=("$1"); shift ;;
        esac
    done
    tb_set_name "$name"
}

tb_host_ns() { printf '%s-%s' "$TB_PREFIX" "$1"; }      # host name -> netns name
tb_machine() { printf '%s-%s' "$TB_PREFIX" "$1"; }      # host name -> nspawn machine name
tb_host_dir() { printf '%s/hosts/%s' "$TB_STATE" "$1"; }
tb_host_index() { local h=$1; [[ $h =~ ^host([0-9]+)$ ]] || tb_die "bad host name '$h'"; printf '%s' "${BASH_REMATCH[1]}"; }
tb_subnet_k() { cat "$TB_STATE/subnet" 2>/dev/null || tb_die "testbed '$TB_NAME' is not up (no $TB_STATE/subnet)"; }
tb_host_ip() { printf '10.200.%s.%s' "$(tb_subnet_k)" "$((10 + $(tb_host_index "$1")))"; }

# ---------------------------------------------------------------- packages

# tb_ensure_packages CMD:PKG ...: apt-get install the packages whose command is missing.
tb_ensure_packages() {
    local pair cmd pkg missing=()
    for pair in "$@"; do
        cmd=${pair%%:*} pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    tb_log "installing packages: ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
}

tb_ensure_host_tools() {
    tb_ensure_packages systemd-nspawn:systemd-container debootstrap:debootstrap zstd:zstd \
        ssh:openssh-client ssh-keygen:openssh-client ip:iproute2 nsenter:util-linux \
        unshare:util-linux flock:util-linux setsid:util-linux
}

# ---------------------------------------------------------------- base image

# Everything done to the debootstrapped tree before it is cached. The cache key hashes
# this function's text, so editing it rebuilds the base automatically.
tb_customize_base() {
    local d=$1 u
    # Distinct servers: no shared host keys, no shared machine id.
    rm -f "$d"/etc/ssh/ssh_host_*
    : >"$d/etc/machine-id"
    rm -f "$d/var/lib/dbus/machine-id"
    mkdir -p "$d/var/lib/dbus"
    ln -s /etc/machine-id "$d/var/lib/dbus/machine-id"
    # Boot to multi-user, without the units that only add noise or work.
    ln -sfn /lib/systemd/system/multi-user.target "$d/etc/systemd/system/default.target"
    for u in getty@.service serial-getty@.service console-getty.service container-getty@.service \
        getty.target apt-daily.service apt-daily.timer apt-daily-upgrade.service \
        apt-daily-upgrade.timer e2scrub_all.service e2scrub_all.timer e2scrub_reap.service \
        dpkg-db-backup.service dpkg-db-backup.timer systemd-tmpfiles-clean.service \
        systemd-tmpfiles-clean.timer; do
        ln -sfn /dev/null "$d/etc/systemd/system/$u"
    done
    # HAProxy is there for shipit's zero-downtime mode, which runs its own unit per app:
    # the distribution's instance never runs.
    ln -sfn /dev/null "$d/etc/systemd/system/haproxy.service"
    mkdir -p "$d/etc/systemd/journald.conf.d"
    printf '[Journal]\nStorage=volatile\n' >"$d/etc/systemd/journald.conf.d/testbed.conf"
    # sshd: key only, fast, many parallel connections.
    mkdir -p "$d/etc/ssh/sshd_config.d"
    cat >"$d/etc/ssh/sshd_config.d/10-testbed.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
MaxStartups 100
MaxSessions 100
EOF
    # deploy user: NOPASSWD sudo, owns /opt; password field '*' (no password, not locked).
    chroot "$d" useradd --create-home --shell /bin/bash --user-group deploy
    chroot "$d" usermod --password '*' deploy
    printf 'deploy ALL=(ALL:ALL) NOPASSWD: ALL\n' >"$d/etc/sudoers.d/deploy"
    chmod 0440 "$d/etc/sudoers.d/deploy"
    mkdir -p "$d/opt"
    chroot "$d" chown deploy:deploy /opt
    install -d -m 0700 "$d/root/.ssh"
    chroot "$d" install -d -m 0700 -o deploy -g deploy /home/deploy/.ssh
    # Size: no package cache, lists, docs, man pages, locales.
    rm -rf "$d"/var/cache/apt/archives/*.deb "$d"/var/cache/apt/*.bin "$d"/var/lib/apt/lists/* \
        "$d"/usr/share/doc/* "$d"/usr/share/man/* "$d"/usr/share/info/* "$d"/usr/share/locale/* \
        "$d"/var/log/*.log "$d"/var/log/apt/*
}

tb_base_key() {
    { printf '%s\n%s\n' "$TB_SUITE" "$TB_INCLUDE"; declare -f tb_customize_base; } | sha256sum | cut -c1-12
}

# tb_ensure_base: sets TB_BASE to a ready base tree: the extracted tree if present, else
# restored from the .tar.zst cache, else built with debootstrap (then cached).
tb_ensure_base() {
    local key tar tmp
    key=$(tb_base_key)
    TB_BASE=$TB_CACHE_DIR/base-$TB_SUITE-$key
    tar=$TB_BASE.tar.zst
    mkdir -p "$TB_CACHE_DIR"
    chmod 0755 "$TB_CACHE_DIR"
    exec {lockfd}>"$TB_CACHE_DIR/.lock"
    flock "$lockfd"
    if [[ -f $TB_BASE/.testbed-complete ]]; then
        tb_log "base image: $TB_BASE (extracted cache)"
    else
        tmp=$TB_BASE.tmp
        tb_rm_tree "$tmp"
        mkdir -p "$tmp"
        if [[ -f $tar ]]; then
            tb_log "base image: restoring $tar"
            zstd -q -d -c "$tar" | tar -x --numeric-owner --xattrs --xattrs-include='*' -C "$tmp"
        else
            tb_mirror
            tb_log "base image: debootstrap $TB_SUITE from $TB_MIRROR (first run, takes 1-2 min)"
            if ! debootstrap --variant=minbase --include="$TB_INCLUDE" "$TB_SUITE" "$tmp" "$TB_MIRROR" \
                >"$TB_CACHE_DIR/debootstrap.log" 2>&1; then
                tail -n 30 "$TB_CACHE_DIR/debootstrap.log" >&2
                tb_rm_tree "$tmp"
                tb_die "debootstrap failed (log: $TB_CACHE_DIR/debootstrap.log)"
            fi
            tb_customize_base "$tmp"
            tb_log "base image: caching as $tar"
            tar -c --numeric-owner --xattrs --xattrs-include='*' -C "$tmp" . |
                zstd -q -T0 -6 -o "$tar.tmp"
            mv -f "$tar.tmp" "$tar"
        fi
        touch "$tmp/.testbed-complete"
        mv "$tmp" "$TB_BASE"
    fi
    tb_prune_stale_bases "$key"
    exec {lockfd}>&-
}

# Remove cached bases of other keys (changed recipe), unless an overlay still uses them.
tb_prune_stale_bases() {
    local key=$1 p
    for p in "$TB_CACHE_DIR"/base-*; do
        [[ -e $p ]] || continue
        case $p in *"-$key" | *"-$key.tar.zst") continue ;; esac
        if [[ -d $p ]] && grep -qF "lowerdir=$p" /proc/self/mountinfo; then continue; fi
        tb_log "removing stale base cache $p"
        tb_rm_tree "$p"
    done
}

# rm -rf that refuses to cross into mounts.
tb_rm_tree() {
    local p=$1
    [[ -e $p || -L $p ]] || return 0
    if tb_mounts_under "$p" | grep -q .; then
        tb_die "refusing to remove $p: mounts remain under it"
    fi
    rm -rf --one-file-system "$p"
}

# Mount points at or under a path, deepest first.
tb_mounts_under() {
    local p
    p=$(realpath -m "$1")
    awk -v p="$p" '{ m=$5; gsub(/\\040/, " ", m); if (m == p || index(m, p "/") == 1) print m }' \
        /proc/self/mountinfo | awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-
}

# ---------------------------------------------------------------- processes / cgroups

# True if PID exists and is not a zombie (PID 1 here may reap orphans late).
tb_alive() {
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1 # not $(<...): a failed one exits bash
    st=${st##*) } # the state follows "(comm) "
    st=${st%% *}
    [[ -n $st && $st != Z && $st != X ]]
}

# PIDs in the testbed's cgroup subtree (all hierarchies).
tb_cgroup_pids() {
    local hier
    for hier in "${TB_CG_HIERARCHIES[@]}"; do
        [[ -d /sys/fs/cgroup/$hier/$TB_CGROUP ]] || continue
        find "/sys/fs/cgroup/$hier/$TB_CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null
    done | sort -un
}

# True if PID is alive and is a systemd-nspawn in this testbed's cgroup (guards PID reuse).
tb_is_our_nspawn() {
    local pid=$1
    [[ -n $pid ]] && tb_alive "$pid" || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == systemd-nspawn ]] || return 1
    grep -q ":/$TB_CGROUP/" "/proc/$pid/cgroup" 2>/dev/null
}

# The container's PID 1 (as seen from outside) of a host, from its nspawn PID.
tb_leader_pid() {
    local h=$1 pid child
    pid=$(cat "$(tb_host_dir "$h")/pid" 2>/dev/null) || tb_die "$h: no pid file"
    tb_is_our_nspawn "$pid" || tb_die "$h: nspawn (pid $pid) is not running"
    for child in $(tr ' ' '\n' < <(cat /proc/"$pid"/task/*/children 2>/dev/null)); do
        if awk '/^NSpid:/ { exit !($NF == 1 && NF > 2) }' "/proc/$child/status" 2>/dev/null; then
            printf '%s' "$child"
            return 0
        fi
    done
    tb_die "$h: container init not found under nspawn pid $pid"
}

# tb_host_exec HOST CMD...: run CMD as root inside the container (all its namespaces).
tb_host_exec() {
    local h=$1 leader
    shift
    leader=$(tb_leader_pid "$h")
    nsenter --target "$leader" --mount --uts --ipc --net --pid --cgroup -- "$@"
}

# ---------------------------------------------------------------- teardown

# Tear down testbed $TB_NAME from whatever is left; idempotent, works on half-built ones.
tb_teardown() {
    local hd pid pids=() deadline left hier ns m
    # 0. The artifact store (store.sh), if one was started: its server is not in the
    #    testbed's cgroups and its netns is not a host's.
    tb_store_teardown
    # 1. SIGTERM every nspawn (clean poweroff of the container), by PID.
    for hd in "$TB_STATE"/hosts/*/; do
        [[ -f $hd/pid ]] || continue
        pid=$(cat "$hd/pid")
        tb_is_our_nspawn "$pid" && pids+=("$pid")
    done
    if ((${#pids[@]})); then
        tb_log "stopping ${#pids[@]} host(s): SIGTERM ${pids[*]}"
        kill -TERM "${pids[@]}" 2>/dev/null || true
        deadline=$((SECONDS + ${TESTBED_STOP_TIMEOUT:-10}))
        while ((SECONDS < deadline)); do
            left=()
            for pid in "${pids[@]}"; do tb_alive "$pid" && left+=("$pid"); done
            ((${#left[@]})) || break
            sleep 0.2
        done
        left=()
        for pid in "${pids[@]}"; do tb_is_our_nspawn "$pid" && left+=("$pid"); done
        if ((${#left[@]})); then
            tb_log "SIGKILL nspawn ${left[*]} (did not stop in time)"
            kill -KILL "${left[@]}" 2>/dev/null || true
        fi
    fi
    # 2. Anything else still in the testbed's cgroups (e.g. a container whose nspawn was
    #    SIGKILLed) is ours: SIGKILL, bounded wait.
    deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        mapfile -t left < <(tb_cgroup_pids)
        ((${#left[@]})) || break
        kill -KILL "${left[@]}" 2>/dev/null || true
        sleep 0.2
    done
    mapfile -t left < <(tb_cgroup_pids)
    ((${#left[@]} == 0)) || tb_log "WARNING: processes left in cgroup $TB_CGROUP: ${left[*]}"
    # 3. Unmount everything under the state dir (overlays, deepest first).
    if [[ -d $TB_STATE ]]; then
        while read -r m; do
            [[ -n $m ]] || continue
            umount "$m" 2>/dev/null || umount -l "$m" || tb_log "WARNING: cannot umount $m"
        done < <(tb_mounts_under "$TB_STATE")
    fi
    # 4. Remove the cgroup subtrees depth-first.
    for hier in /sys/fs/cgroup/*/; do
        [[ -d $hier$TB_CGROUP ]] || continue
        find "$hier$TB_CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null ||
            tb_log "WARNING: cannot remove cgroup $hier$TB_CGROUP"
    done
    # 5. Network namespaces (client and hosts).
    while read -r ns; do
        [[ $ns == "$TB_CLIENT_NS" || $ns =~ ^$TB_PREFIX-host[0-9]+$ ]] || continue
        ip netns delete "$ns" 2>/dev/null ||
            tb_log "WARNING: cannot delete netns $ns (if it is hidden under the /run/netns mount: with no testbed up, umount /run/netns; umount /run/netns/$ns; rm /run/netns/$ns)"
    done < <(ip netns list 2>/dev/null | awk '{ print $1 }')
    # 6. nspawn's per-machine dirs (propagate/<machine> etc.) and image lock files (left
    #    behind by a SIGKILLed nspawn).
    for hd in "$TB_STATE"/hosts/*/; do
        [[ -s $hd/nspawn-lock ]] || continue
        m=$(cat "$hd/nspawn-lock")
        [[ $m =~ ^inode-[0-9]+:[0-9]+$ ]] && rm -f "/run/systemd/nspawn/locks/$m"
    done
    for m in /run/systemd/nspawn/*/"$TB_PREFIX"-host*; do
        [[ -e $m ]] || continue
        [[ ${m##*/} =~ ^$TB_PREFIX-host[0-9]+$ ]] || continue
        tb_rm_tree "$m"
    done
    # 7. State. /run/netns stays a shared mount (see tb_netns_dir_ready): unmounting it
    #    while another testbed's up.sh is about to `ip netns add` reopens the race.
    tb_rm_tree "$TB_STATE"
    rmdir "$TB_STATE_ROOT" 2>/dev/null || true # only if no other testbed is left
}

# ---------------------------------------------------------------- artifact store (store.sh)

tb_store_ns() { printf '%s-store' "$TB_PREFIX"; }
tb_store_dir() { printf '%s/store' "$TB_STATE"; }

# Stop the store server (every process in the store netns: only store.sh puts any there;
# SIGTERM, bounded wait, SIGKILL), delete its veth and netns. Idempotent; no-op when there
# is no store.
tb_store_teardown() {
    local ns pids=() left deadline
    ns=$(tb_store_ns)
    if [[ -e /run/netns/$ns ]]; then
        mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
        if ((${#pids[@]})); then
            tb_log "stopping the artifact store: SIGTERM ${pids[*]}"
            kill -TERM "${pids[@]}" 2>/dev/null || true
            deadline=$((SECONDS + 5))
            while ((SECONDS < deadline)); do
                mapfile -t left < <(ip netns pids "$ns" 2>/dev/null)
                ((${#left[@]})) || break
                sleep 0.1
            done
            mapfile -t left < <(ip netns pids "$ns" 2>/dev/null)
            if ((${#left[@]})); then
                tb_log "SIGKILL store processes ${left[*]} (did not stop in time)"
                kill -KILL "${left[@]}" 2>/dev/null || true
            fi
        fi
        ip netns delete "$ns" 2>/dev/null || tb_log "WARNING: cannot delete netns $ns"
    fi
    # The veth's client end went with the store netns (its peer); remove it if left.
    if [[ -e /run/netns/$TB_CLIENT_NS ]] && ip -n "$TB_CLIENT_NS" link show vstore >/dev/null 2>&1; then
        ip -n "$TB_CLIENT_NS" link delete vstore 2>/dev/null || true
    fi
    rm -f "$(tb_store_dir)/pid" "$(tb_store_dir)/store.json"
}

# Make /run/netns a shared bind mount of itself, as `ip netns add` would, but once and
# under a lock, so parallel `ip netns add` never race to do it (the race leaves
# a netns mounted on the bare directory, hidden under the bind mount and undeletable; the
# teardown warning above says how to clear one).
tb_netns_dir_ready() {
    local fd
    mkdir -p /run/netns /run/lock
    # Its own lock on a fixed path: testbeds with another TESTBED_STATE_ROOT (another
    # subnet lock) share /run/netns all the same.
    exec {fd}>/run/lock/shipit-testbed-netns.lock
    flock "$fd"
    # Recursive, as iproute2 does (MS_BIND|MS_REC, MS_SHARED|MS_REC): a netns already
    # mounted in the bare directory stays visible.
    if ! mountpoint -q /run/netns; then
        mount --rbind /run/netns /run/netns
    fi
    mount --make-rshared /run/netns
    exec {fd}>&-
}

# ---------------------------------------------------------------- misc

tb_json_str() { # minimal JSON string escaping (our values are paths, names, keys)
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# SSH options for a strict, non-interactive client of testbed state dir $1.
tb_ssh_opts() {
    local st=$1
    printf '%s\n' -F /dev/null -i "$st/client_key" -o IdentitiesOnly=yes \
        -o UserKnownHostsFile="$st/known_hosts" -o GlobalKnownHostsFile=/dev/null \
        -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=2 -o LogLevel=ERROR
}
