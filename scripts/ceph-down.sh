#!/usr/bin/env bash
# Stop the Ceph cluster that scripts/ceph-up.sh started in DIR, and remove DIR.
#
#   scripts/ceph-down.sh DIR
#
# Only the processes whose pids ceph-up.sh recorded in DIR/pids/ are signalled, and only while
# their command line still names DIR's ceph.conf (a recycled pid is left alone).
set -uo pipefail

DIR="${1:?usage: ceph-down.sh DIR}"
[[ -d "$DIR" ]] || exit 0
DIR="$(cd "$DIR" && pwd)"

ours() {
    local pid="$1"
    [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$DIR/ceph.conf"
}

pids=()
for file in "$DIR"/pids/*.pid; do
    [[ -f "$file" ]] || continue
    pid="$(cat "$file")"
    if ours "$pid"; then
        pids+=("$pid")
    fi
done

# All at once: memstore keeps nothing worth an orderly shutdown.
for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null
done
for _ in $(seq 1 30); do
    alive=0
    for pid in "${pids[@]}"; do
        ours "$pid" && alive=1
    done
    ((alive)) || break
    sleep 0.1
done
for pid in "${pids[@]}"; do
    ours "$pid" && kill -KILL "$pid" 2>/dev/null
done
rm -rf "$DIR"
