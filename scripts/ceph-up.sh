#!/usr/bin/env bash
# A throwaway Ceph cluster on 127.0.0.1 for tests: one monitor, one OSD on the memstore object
# store (RAM only), and two RGW gateways (beast frontend) that share its data.
#
#   scripts/ceph-up.sh [DIR]          start everything in DIR (default: a new temp dir)
#   scripts/ceph-up.sh --rgw N DIR    start gateway N (0 or 1) of the cluster in DIR again
#   scripts/ceph-down.sh DIR          stop every daemon started here and remove DIR
#
# With S3KIT_CEPH_WATCH_PID=PID in the environment, a watcher stops the cluster (ceph-down.sh)
# once process PID is gone, so a test run that dies never leaves daemons behind.
#
# Prints KEY=VALUE lines on stdout: DIR, RGW0_URL, RGW1_URL, RGW0_PID, RGW1_PID, ACCESS_KEY,
# SECRET_KEY (an S3 user created with radosgw-admin). Everything else goes to DIR/log/.
# Needs the Debian packages radosgw ceph-mon ceph-osd ceph-common (make ceph installs them).
# No authentication between daemons (auth none), pool size 1, short paxos intervals: the whole
# cluster is up in about 10 s. Every port is a free port on 127.0.0.1, nothing else is bound.
set -euo pipefail

RGW_ONLY=""
if [[ "${1:-}" == "--rgw" ]]; then
    RGW_ONLY="$2"
    shift 2
fi
DIR="${1:-$(mktemp -d "${TMPDIR:-/tmp}/s3kit-ceph-XXXXXX")}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
CONF="$DIR/ceph.conf"
ACCESS_KEY="s3kit-ceph-access"
SECRET_KEY="s3kit-ceph-secret-0123456789"

for tool in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool ceph-authtool; do
    command -v "$tool" >/dev/null || {
        echo "ceph-up.sh: $tool not found; install radosgw ceph-mon ceph-osd ceph-common" >&2
        exit 3
    }
done

log() { echo "ceph-up.sh: $*" >&2; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for SECONDS WHAT COMMAND...: retry COMMAND until it succeeds or the time is up.
wait_for() {
    local seconds="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${seconds}s waiting for $what; logs in $DIR/log"
            tail -n 30 "$DIR"/log/*.log >&2 || true
            exit 1
        fi
        sleep 0.2
    done
}

# start_daemon NAME COMMAND...: run COMMAND detached (own session, no inherited pipes).
start_daemon() {
    local name="$1"
    shift
    setsid "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 &
    echo $! >"$DIR/pids/$name.pid"
}

answers_http() {
    python3 - "$1" <<'EOF'
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    sys.exit(0 if s.recv(5) == b"HTTP/" else 1)
EOF
}

start_rgw() {
    local n="$1" port
    port="$(cat "$DIR/rgw$n.port")"
    start_daemon "rgw$n" radosgw -f -c "$CONF" -n "client.rgw$n" \
        --rgw-frontends "beast endpoint=127.0.0.1:$port"
    wait_for 90 "gateway $n on port $port" answers_http "$port"
    echo "RGW${n}_URL=http://127.0.0.1:$port"
    echo "RGW${n}_PID=$(cat "$DIR/pids/rgw$n.pid")"
}

if [[ -n "$RGW_ONLY" ]]; then
    [[ -f "$CONF" ]] || { log "no cluster in $DIR"; exit 2; }
    start_rgw "$RGW_ONLY"
    exit 0
fi

mkdir -p "$DIR/log" "$DIR/pids" "$DIR/run" "$DIR/mon.a" "$DIR/osd.0" "$DIR/rgw0" "$DIR/rgw1"
FSID="$(python3 -c 'import uuid; print(uuid.uuid4())')"
MON_PORT="$(free_port)"
free_port >"$DIR/rgw0.port"
free_port >"$DIR/rgw1.port"

cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
ms mon client mode = crc
ms mon service mode = crc
ms mon cluster mode = crc
ms client mode = crc
ms service mode = crc
ms cluster mode = crc
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
mon cluster log file = $DIR/log/cluster.log
keyring = $DIR/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
paxos propose interval = 0.01
paxos min wait = 0.01
mon osd report timeout = 900
osd heartbeat grace = 60
osd objectstore = memstore
memstore device bytes = 4294967296
osd data = $DIR/osd.0
mon data = $DIR/mon.\$id
rgw data = $DIR/\$name
EOF

ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring" \
    >>"$DIR/log/mkfs.out" 2>&1
start_daemon mon.a ceph-mon -f -c "$CONF" -i a
wait_for 60 "the monitor" ceph -c "$CONF" --connect-timeout 2 mon stat

OSD_UUID="$(python3 -c 'import uuid; print(uuid.uuid4())')"
OSD_ID="$(ceph -c "$CONF" osd new "$OSD_UUID")"
ceph-osd -c "$CONF" -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" >>"$DIR/log/mkfs.out" 2>&1
start_daemon "osd.$OSD_ID" ceph-osd -f -c "$CONF" -i "$OSD_ID"
osd_up() { ceph -c "$CONF" osd dump 2>/dev/null | grep -q "^osd.$OSD_ID up"; }
wait_for 60 "osd.$OSD_ID" osd_up

if [[ -n "${S3KIT_CEPH_WATCH_PID:-}" ]]; then
    DOWN="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ceph-down.sh"
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && [[ -d "$2" ]]; do sleep 1; done
        [[ -d "$2" ]] && bash "$3" "$2"' watcher "$S3KIT_CEPH_WATCH_PID" "$DIR" "$DOWN" \
        </dev/null >/dev/null 2>&1 &
fi

start_rgw 0
radosgw-admin -c "$CONF" -n client.rgw0 user create --uid=s3kit --display-name="s3kit tests" \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >>"$DIR/log/admin.out" 2>&1
start_rgw 1
echo "DIR=$DIR"
echo "ACCESS_KEY=$ACCESS_KEY"
echo "SECRET_KEY=$SECRET_KEY"
