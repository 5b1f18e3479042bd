#!/usr/bin/env bash
# bench/s3-cluster.sh: archives in object storage when a node of the store fails: a backup to
# s3:// against a three-node Garage cluster on loopback (replication factor 3, one node per
# zone, so a write needs 2 of the 3 nodes), in three cases. A benchmark, not a test.
#
#   bench/s3-cluster.sh
#
#   1. all nodes up: backup, then `maildump verify` and `list` of the object;
#   2. node 3 killed (SIGKILL) mid-upload, once KILL_AT_PARTS parts of the multipart upload
#      are stored (polled every 0.05 s with ListMultipartUploads and ListParts on node 1,
#      not a fixed sleep): with two nodes of three the write quorum holds, so the backup
#      should complete; then `verify` and `list` with only two nodes up. Had it failed, the
#      report gives the exit code, the error line and whether anything is under the key;
#   3. (QUORUM_CASE=1) node 3 still down, node 2 killed mid-upload the same way: one node of
#      three, the quorum is lost, so the backup must fail (exit 3, after maildump's retries)
#      and no object may appear under the key; nodes 2 and 3 are then restarted and the
#      bucket listed with the whole cluster up (with the parts of the upload maildump could
#      not abort). The time from the kill to the exit is bimodal: ~6 s of retries (5 tries
#      of the part, 5 of the abort, Garage answering 503 at once), or ~126 s when the part
#      in flight at the kill is never answered by Garage and maildump's 120 s response
#      timeout ends it.
# maildump talks to node 1 only (its S3 endpoint), which is never stopped. "Object visible"
# is whether a ListObjectsV2 of the bucket (by curl, SigV4) shows the key.
#
# Environment:
#   CORPUS    Maildir corpus (default /tmp/mdbench/corpus, users at CORPUS/USER/Maildir);
#             never modified, never generated here. Its archive must span more than
#             KILL_AT_PARTS parts of 8 MiB (else the node would be killed too late: exit 1).
#             A small one for a smoke test: python3 ../shared/tools/gen_maildir.py
#             --root /tmp/mdbench/small --users 4 --messages-per-user 300 --seed 1
#   WORK      scratch dir (default /tmp/mdbench/work-s3-cluster): the nodes' configs,
#             metadata, data and logs; emptied at the start and at the end
#   GARAGE    Garage binary (default /var/cache/maildump-ci/garage/bin/garage, 2.5.0)
#   MAILDUMP  maildump binary (default target/release/maildump, built with
#             `cargo build --release --locked` first; no build if MAILDUMP is set)
#   KILL_AT_PARTS  parts stored before a node is killed (default 2)
#   QUORUM_CASE    1 (default) runs case 3, 0 skips it
#
# Output: Markdown on stdout: a table of the cases (exit code, wall and CPU seconds of the
# backup, object visible, verify result) and every run's raw figures (archive size, MB/s,
# parts stored when a node was killed, seconds from the kill to the exit, maildump's
# --s3-stats line, its error line; for case 3 the seconds until the restarted cluster is
# healthy and the unfinished uploads left in the bucket). Wall time: date around the command; CPU: user+sys of
# maildump from /usr/bin/time (Garage's own CPU is not counted). Progress on stderr.
# Exit 1 if the cluster cannot be set up, or a case ends otherwise than expected: case 1
# not exit 0 with a verified object; case 2 an object visible that fails `verify`, or a
# failure leaving an object visible; case 3 not exit 3, or an object visible.
set -euo pipefail
ME=s3-cluster.sh
die() { echo "$ME: error: $*" >&2; exit 1; }
log() { echo "$ME: $*" >&2; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-/tmp/mdbench/corpus}
WORK=${WORK:-/tmp/mdbench/work-s3-cluster}
GARAGE=${GARAGE:-/var/cache/maildump-ci/garage/bin/garage}
KILL_AT_PARTS=${KILL_AT_PARTS:-2}
QUORUM_CASE=${QUORUM_CASE:-1}
[[ -d $CORPUS ]] || die "no corpus at $CORPUS (bench/compare.sh generates one; see the header for a small one)"
[[ -x $GARAGE ]] || die "no Garage at $GARAGE (cargo install garage --version 2.5.0 --locked --root ...)"
[[ -n $WORK && $WORK != / ]] || die "WORK must be a directory of its own"
[[ $KILL_AT_PARTS =~ ^[1-9][0-9]*$ ]] || die "KILL_AT_PARTS must be a positive integer"
[[ $QUORUM_CASE == [01] ]] || die "QUORUM_CASE must be 0 or 1"
for t in curl jq python3 /usr/bin/time; do command -v "$t" > /dev/null || die "missing tool: $t"; done
if [[ -z ${MAILDUMP:-} ]]; then
    (cd "$REPO" && cargo build --release --locked >&2)
    MAILDUMP=$REPO/target/release/maildump
fi
[[ -x $MAILDUMP ]] || die "no maildump at $MAILDUMP"
mkdir -p "$WORK"
find "$WORK" -mindepth 1 -delete

# The nodes: 1..3, each with its own config, metadata, data, log and three ports.
NODES=(1 2 3)
declare -a PID=("" "" "" "") RPC S3 ADMIN
BPID=
cleanup() {
    local rc=$? i
    [[ -z $BPID ]] || { kill -KILL "$BPID" 2>/dev/null; wait "$BPID" 2>/dev/null || true; }
    for i in "${NODES[@]}"; do
        [[ -z ${PID[i]} ]] || { kill -KILL "${PID[i]}" 2>/dev/null; wait "${PID[i]}" 2>/dev/null || true; }
    done
    if ((rc != 0)); then
        for i in "${NODES[@]}"; do
            [[ -s $WORK/n$i/log ]] && { echo "$ME: node $i log (tail):" >&2; tail -n 5 "$WORK/n$i/log" | sed 's/\x1b\[[0-9;]*m//g' >&2; }
        done
    fi
    find "$WORK" -mindepth 1 -delete 2>/dev/null || true
}
trap cleanup EXIT

# All nine ports bound at once, so none is given twice.
read -r -a PORTS <<< "$(python3 -c '
import socket
ss = [socket.socket() for _ in range(9)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
SECRET=$(hex 32) TOKEN=$(hex 16)
for i in "${NODES[@]}"; do
    RPC[i]=${PORTS[3 * i - 3]} S3[i]=${PORTS[3 * i - 2]} ADMIN[i]=${PORTS[3 * i - 1]}
    mkdir -p "$WORK/n$i"
    cat > "$WORK/n$i/garage.toml" <<EOF
metadata_dir = "$WORK/n$i/meta"
data_dir = "$WORK/n$i/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:${RPC[i]}"
rpc_public_addr = "127.0.0.1:${RPC[i]}"
rpc_secret = "$SECRET"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:${S3[i]}"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:${ADMIN[i]}"
admin_token = "$TOKEN"
EOF
done
g() { local i=$1; shift; "$GARAGE" -c "$WORK/n$i/garage.toml" "$@"; }
start_node() { RUST_LOG=warn "$GARAGE" -c "$WORK/n$1/garage.toml" server >> "$WORK/n$1/log" 2>&1 & PID[$1]=$!; }
kill_node() { kill -KILL "${PID[$1]}"; wait "${PID[$1]}" 2>/dev/null || true; PID[$1]=; }
admin() { curl -sSf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:${ADMIN[1]}/v2/$1"; }
until_ok() { local _i; for _i in $(seq 60); do "$@" > "$WORK/out" 2>&1 && return 0; sleep 0.5; done; cat "$WORK/out" >&2; die "$* kept failing"; }
healthy() { # node 1 sees all three nodes up and every partition with all its copies
    admin GetClusterHealth | jq -e '.status == "healthy" and .connectedNodes == 3 and .partitionsAllOk == .partitions' > /dev/null
}
for i in "${NODES[@]}"; do start_node "$i"; done
declare -a ID
for i in "${NODES[@]}"; do until_ok g "$i" node id -q; ID[i]=$(cut -d@ -f1 < "$WORK/out"); done
for i in 2 3; do until_ok g 1 node connect "${ID[i]}@127.0.0.1:${RPC[i]}"; done
for i in "${NODES[@]}"; do until_ok g 1 layout assign -z "dc$i" -c 1G "${ID[i]}"; done
until_ok g 1 layout apply --version 1
until_ok healthy
until_ok g 1 bucket create bench
until_ok g 1 key create bench
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
AWS_ACCESS_KEY_ID=$(awk '/^Key ID:/ {print $3}' "$WORK/out")
AWS_SECRET_ACCESS_KEY=$(awk '/^Secret key:/ {print $3}' "$WORK/out")
export AWS_REGION=garage
EP=http://127.0.0.1:${S3[1]}
until_ok g 1 bucket allow --read --write --owner bench --key bench
log "garage $(g 1 --version 2>/dev/null | head -n1): 3 nodes, replication 3, S3 endpoint $EP (node 1)"

MD=("$MAILDUMP" --s3-endpoint "$EP")
BACKUP=("${MD[@]}" backup --location 'maildir:~/Maildir' --home "$CORPUS/%u" --all-users --quiet --s3-stats)
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }
s3get() { # PATH?QUERY: a signed GET in the bucket (query parameters in alphabetical order,
    # or the signature is refused)
    curl -sSf --aws-sigv4 "aws:amz:garage:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$EP/bench$1"
}
visible() { # KEY: yes/no from a listing of the bucket, with the size; "unknown" if it fails
    local xml
    xml=$(s3get "?list-type=2&prefix=$1") || { echo "unknown (listing failed)"; return; }
    if grep -q "<Key>$1</Key>" <<< "$xml"; then
        echo "yes ($(sed -n "s|.*<Key>$1</Key>.*<Size>\([0-9]*\)</Size>.*|\1|p" <<< "$xml") bytes)"
    else
        echo "no ($(grep -o '<KeyCount>[0-9]*' <<< "$xml" | cut -d'>' -f2) keys in the bucket)"
    fi
}
parts() { # KEY: how many parts of KEY's multipart upload are stored (ListMultipartUploads,
    # then ListParts, which lists a part once it is written); 0 before the upload starts
    local xml id
    xml=$(s3get "?prefix=$1&uploads=") || xml=
    id=$(sed -n 's|.*<UploadId>\([^<]*\)</UploadId>.*|\1|p' <<< "$xml")
    [[ -n $id ]] && xml=$(s3get "/$1?uploadId=$id") || xml=
    awk -F'<PartNumber>' '{ n += NF - 1 } END { print n + 0 }' <<< "$xml"
}
unfinished() { # bytes and parts of unfinished multipart uploads in the bucket
    admin "GetBucketInfo?globalAlias=bench" | jq -r '"\(.unfinishedMultipartUploadBytes) \(.unfinishedMultipartUploadParts)"'
}

declare -A EXIT WALL CPU VIS VERIFY RAW
backup() { # CASE KEY [NODE...]: back up to s3://bench/KEY, killing each NODE in turn once
    # KILL_AT_PARTS parts are stored
    local c=$1 key=$2 t0 t1 tk=, n p rc=0 killed=; shift 2
    log "case $c: backup -o s3://bench/$key${*:+, killing node(s) $* mid-upload}"
    sync
    t0=$(now)
    /usr/bin/time -f '%U %S' -o "$WORK/time" "${BACKUP[@]}" -o "s3://bench/$key" > /dev/null 2> "$WORK/err" &
    BPID=$!
    for n in "$@"; do
        while :; do
            p=$(parts "$key")
            ((p >= KILL_AT_PARTS)) && break
            kill -0 "$BPID" 2>/dev/null || { cat "$WORK/err" >&2; die "case $c: the backup ended before $KILL_AT_PARTS parts were stored (a bigger CORPUS is needed)"; }
            sleep 0.05
        done
        kill_node "$n"; tk=$(now)
        killed+="node $n killed at $(secs "$t0" "$tk") s, $p parts of 8 MiB stored; "
        log "case $c: node $n killed ($p parts stored)"
    done
    wait "$BPID" || rc=$?
    BPID=
    t1=$(now)
    EXIT[$c]=$rc WALL[$c]=$(secs "$t0" "$t1")
    CPU[$c]=$(tail -n 1 "$WORK/time" | awk '{printf "%.2f", $1 + $2}')
    RAW[$c]="exit $rc, wall ${WALL[$c]} s, CPU ${CPU[$c]} s; ${killed}"
    [[ $tk == , ]] || RAW[$c]+="kill to exit $(secs "$tk" "$t1") s; "
    RAW[$c]+="$(sed -n 's/^maildump: s3: //p' "$WORK/err")"
    if ((rc != 0)); then
        RAW[$c]+="; error: $(grep -v '^maildump: s3: ' "$WORK/err" | grep . | tail -n 1)"
    fi
    log "case $c: exit $rc after ${WALL[$c]} s"
}
check() { # CASE KEY: whether the object is visible; if it is, verify and list it
    local c=$1 key=$2 size rc=0 lines
    VIS[$c]=$(visible "$key")
    VERIFY[$c]=—
    [[ ${VIS[$c]} == yes* ]] || return 0
    size=$(sed 's/^yes (\([0-9]*\).*/\1/' <<< "${VIS[$c]}")
    RAW[$c]+="; archive $size bytes, $(awk -v s="$size" -v w="${WALL[$c]}" 'BEGIN { printf "%.1f", s / w / 1e6 }') MB/s"
    "${MD[@]}" verify "s3://bench/$key" > "$WORK/verify" 2>&1 || rc=$?
    if ((rc == 0)); then VERIFY[$c]=ok; else VERIFY[$c]="FAILED (exit $rc)"; fi
    RAW[$c]+="; verify exit $rc: $(grep . "$WORK/verify" | tail -n 1)"
    rc=0
    lines=$("${MD[@]}" list "s3://bench/$key" 2> "$WORK/list" | grep -vc '^;') || rc=$?
    RAW[$c]+="; list exit $rc, $lines messages"
    LISTED[$c]=$lines
}
declare -A LISTED
FAIL=()

# 1. All three nodes up.
backup 1 full1.mdump
check 1 full1.mdump
[[ ${EXIT[1]} == 0 && ${VERIFY[1]} == ok ]] || FAIL+=("case 1: exit ${EXIT[1]}, verify ${VERIFY[1]}")

# 2. Node 3 killed mid-upload; verify and list with two nodes up.
backup 2 full2.mdump 3
check 2 full2.mdump
RAW[2]+="; cluster then: $(admin GetClusterHealth | jq -r '"\(.status), \(.connectedNodes) of \(.knownNodes) nodes connected"')"
if [[ ${VIS[2]} == yes* ]]; then
    [[ ${VERIFY[2]} == ok ]] || FAIL+=("case 2: object visible but verify ${VERIFY[2]}")
    [[ ${LISTED[2]:-} == "${LISTED[1]:-}" ]] || FAIL+=("case 2: list gives ${LISTED[2]:-?} messages, case 1 ${LISTED[1]:-?}")
    [[ ${EXIT[2]} == 0 ]] || FAIL+=("case 2: exit ${EXIT[2]} but an object is visible")
else
    [[ ${EXIT[2]} != 0 ]] || FAIL+=("case 2: exit 0 but no object visible (${VIS[2]})")
    [[ ${VIS[2]} == no* ]] || FAIL+=("case 2: failed, and the bucket could not be listed (${VIS[2]})")
fi

# 3. Node 3 still down, node 2 killed mid-upload: quorum lost. Then the whole cluster again.
if ((QUORUM_CASE)); then
    backup 3 full3.mdump 2
    t0=$(now)
    for i in 2 3; do start_node "$i"; done
    until_ok healthy
    RESTART=$(secs "$t0" "$(now)")
    read -r bytes parts < <(unfinished)
    check 3 full3.mdump
    RAW[3]+="; nodes 2 and 3 restarted, cluster healthy again after $RESTART s: object visible: ${VIS[3]}, unfinished uploads in the bucket: $parts parts, $bytes bytes"
    [[ ${EXIT[3]} == 3 ]] || FAIL+=("case 3: exit ${EXIT[3]}, expected 3")
    [[ ${VIS[3]} == no* ]] || FAIL+=("case 3: object visible: ${VIS[3]}")
fi

CASES=(1 2)
((QUORUM_CASE)) && CASES+=(3)
NAME=([1]="all 3 nodes up" [2]="node 3 killed mid-upload (2 of 3 up)" [3]="node 2 killed mid-upload too (1 of 3 up)")
{
echo "## Object storage, a node failing (bench/s3-cluster.sh), $(date -u +%F), $(git -C "$REPO" describe --always --dirty 2>/dev/null)"
echo
echo "Corpus $CORPUS ($(du -sh "$CORPUS" | cut -f1)); Garage $("$GARAGE" --version 2>/dev/null | awk '{print $2; exit}'), three nodes"
echo "on loopback, replication factor 3 (zones dc1..dc3), maildump writing to node 1; a node is killed"
echo "(SIGKILL) once $KILL_AT_PARTS parts of 8 MiB are stored; load $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| case | exit | wall s | CPU s | object visible | verify |"
echo "|---|---|---|---|---|---|"
for c in "${CASES[@]}"; do
    echo "| $c. ${NAME[$c]} | ${EXIT[$c]} | ${WALL[$c]} | ${CPU[$c]} | ${VIS[$c]} | ${VERIFY[$c]} |"
done
echo
for c in "${CASES[@]}"; do echo "- case $c: ${RAW[$c]}"; done
}
((${#FAIL[@]} == 0)) || { printf '%s\n' "${FAIL[@]/#/$ME: error: }" >&2; exit 1; }
