#!/usr/bin/env bash
# fault.sh [--name TESTBED] COMMAND HOST [ARG...]
#
# Injects a fault into one host of a running nspawn testbed (made by up.sh):
#   link-down HOST         set the host's veth (vh<i>) down in the client namespace:
#                          connections to it time out
#   link-up HOST           undo link-down
#   stop-sshd HOST         `systemctl stop ssh` inside the host: connection refused
#   start-sshd HOST        `systemctl start ssh` inside the host
#   kill-host HOST         SIGKILL the host's nspawn and its container: host dead
#                          (down.sh still cleans it up)
#   small-opt HOST [SIZE]  mount an empty tmpfs of SIZE (default 20M) at /opt inside the
#                          host, owned by deploy (up.sh --small-opt does it from boot);
#                          on a tmpfs /opt it just resizes
#   fill-opt HOST          fill /opt to the last byte (only when /opt is a tmpfs)
#   unfill-opt HOST        remove what fill-opt wrote
#   restore-opt HOST       unmount a tmpfs /opt (the old /opt reappears); else no-op
#   regen-hostkey HOST     new ed25519 host key, sshd restarted; known_hosts is NOT
#                          updated; prints the new known_hosts line on stdout
#   exec HOST CMD...       run CMD as root inside the host (nsenter), e.g. to inspect it
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

usage() { sed -n '2,23s/^# \{0,1\}//p' "$0" >&2; exit 2; }

name=${TESTBED_NAME:-default}
case ${1:-} in
    --name) (($# >= 2)) || usage; name=$2; shift 2 ;;
    --name=*) name=${1#--name=}; shift ;;
esac
tb_set_name "$name"
(($# >= 2)) || usage
cmd=$1 h=$2
shift 2
tb_require_root
i=$(tb_host_index "$h")
[[ -d $(tb_host_dir "$h") ]] || tb_die "testbed '$TB_NAME' has no $h"

opt_is_tmpfs() { [[ $(tb_host_exec "$h" findmnt -n -o FSTYPE --target /opt) == tmpfs ]]; }

case $cmd in
    link-down) ip -n "$TB_CLIENT_NS" link set "vh$i" down ;;
    link-up) ip -n "$TB_CLIENT_NS" link set "vh$i" up ;;
    stop-sshd) tb_host_exec "$h" systemctl stop ssh.service ;;
    start-sshd) tb_host_exec "$h" systemctl start ssh.service ;;
    kill-host)
        pid=$(cat "$(tb_host_dir "$h")/pid")
        if ! tb_is_our_nspawn "$pid"; then tb_log "$h is already dead"; exit 0; fi
        leader=$(tb_leader_pid "$h")
        kill -KILL "$pid" "$leader"
        for _ in $(seq 50); do tb_alive "$pid" || tb_alive "$leader" || break; sleep 0.1; done
        ;;
    small-opt)
        size=${1:-20M}
        [[ $size =~ ^[0-9]+[KMG]?$ ]] || tb_die "bad size '$size'"
        if opt_is_tmpfs; then # again: just resize
            tb_host_exec "$h" mount -o "remount,size=$size" /opt
        else
            ids=$(tb_host_exec "$h" id -u deploy):$(tb_host_exec "$h" id -g deploy)
            tb_host_exec "$h" mount -t tmpfs -o "size=$size,mode=0755,uid=${ids%:*},gid=${ids#*:}" \
                testbed-opt /opt
        fi
        ;;
    fill-opt)
        opt_is_tmpfs || tb_die "$h: /opt is not a tmpfs (use small-opt first); refusing to fill a real disk"
        tb_host_exec "$h" sh -c 'dd if=/dev/zero of=/opt/.testbed-fill bs=64k 2>/dev/null; sync; df -h /opt' || true
        ;;
    unfill-opt) tb_host_exec "$h" rm -f /opt/.testbed-fill ;;
    restore-opt)
        if opt_is_tmpfs; then tb_host_exec "$h" umount /opt; fi
        ;;
    regen-hostkey)
        key=$(tb_host_dir "$h")/root/etc/ssh/ssh_host_ed25519_key
        rm -f "$key" "$key.pub"
        ssh-keygen -q -t ed25519 -N '' -C "root@$h" -f "$key"
        chmod 0600 "$key"
        tb_host_exec "$h" systemctl restart ssh.service
        printf '%s %s\n' "$(tb_host_ip "$h")" "$(cut -d' ' -f1,2 "$key.pub")"
        ;;
    exec)
        (($#)) || usage
        tb_host_exec "$h" "$@"
        ;;
    *) usage ;;
esac
