#!/usr/bin/env bash
# bench/s3.sh: archives in object storage (issue 18) against one Garage node on loopback:
# backup throughput to s3:// vs to a local file, and `cat` of one message from s3:// vs from
# the file (latency, requests, bytes fetched), each also encrypted (--encrypt-to, a fresh
# age key). A benchmark, not a test.
#
#   bench/s3.sh
#
# The node (GARAGE, default /var/cache/maildump-ci/garage/bin/garage, as .ci/run builds it)
# runs in WORK with its data on the same file system as the local archive. Backups alternate
# (file, s3, file, s3, ...: REPS rounds), each after removing its output and `sync`;
# `cat` alternates too (LAT_RUNS rounds after 2 warm-ups). Medians are reported, with CPU
# time (user+sys of maildump; Garage's own CPU is not counted) and every run's figures.
#
# Environment:
#   CORPUS    Maildir corpus (default /tmp/mdbench/corpus, users at CORPUS/USER/Maildir);
#             never modified, never generated here
#   WORK      scratch dir (default /tmp/mdbench/work-s3), emptied at the start
#   MAILDUMP  maildump binary (default target/release/maildump; built if absent)
#   REPS      backup rounds (default 3); LAT_RUNS cat rounds (default 11)
#   PICK_USER / PICK_UID  the message `cat` fetches (default: user0, INBOX, the middle UID)
#
# Output: Markdown on stdout. Exit 1 if a run fails or `cat` gives other bytes.
set -euo pipefail
ME=s3.sh
die() { echo "$ME: error: $*" >&2; exit 1; }
log() { echo "$ME: $*" >&2; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-/tmp/mdbench/corpus}
WORK=${WORK:-/tmp/mdbench/work-s3}
GARAGE=${GARAGE:-/var/cache/maildump-ci/garage/bin/garage}
REPS=${REPS:-3}
LAT_RUNS=${LAT_RUNS:-11}
PICK_USER=${PICK_USER:-user0}
PICK_UID=${PICK_UID:-}
[[ -d $CORPUS ]] || die "no corpus at $CORPUS (bench/compare.sh generates one)"
[[ -x $GARAGE ]] || die "no Garage at $GARAGE (cargo install garage --version 2.5.0 --locked --root ...)"
[[ -n $WORK && $WORK != / ]] || die "WORK must be a directory of its own"
if [[ -z ${MAILDUMP:-} ]]; then
    (cd "$REPO" && cargo build --release --locked >&2)
    MAILDUMP=$REPO/target/release/maildump
fi
mkdir -p "$WORK"
find "$WORK" -mindepth 1 -delete
GPID=
cleanup() { [[ -z $GPID ]] || { kill "$GPID" 2>/dev/null; wait "$GPID" 2>/dev/null || true; }; }
trap cleanup EXIT

# One node, a bucket and a key (tests/it/garage.rs does the same).
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
RPC=$(port) S3=$(port) ADMIN=$(port)
cat > "$WORK/garage.toml" <<EOF
metadata_dir = "$WORK/meta"
data_dir = "$WORK/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC"
rpc_public_addr = "127.0.0.1:$RPC"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$ADMIN"
admin_token = "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
EOF
g() { "$GARAGE" -c "$WORK/garage.toml" "$@"; }
RUST_LOG=warn "$GARAGE" -c "$WORK/garage.toml" server > "$WORK/garage.log" 2>&1 &
GPID=$!
until_ok() { local _i; for _i in $(seq 60); do "$@" > "$WORK/out" 2>&1 && return 0; sleep 0.5; done; cat "$WORK/out" >&2; die "$* kept failing"; }
until_ok g node id -q
NODE=$(cut -d@ -f1 < "$WORK/out")
until_ok g layout assign -z dc1 -c 10G "$NODE"
until_ok g layout apply --version 1
until_ok g bucket create bench
until_ok g key create bench
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
AWS_ACCESS_KEY_ID=$(awk '/^Key ID:/ {print $3}' "$WORK/out")
AWS_SECRET_ACCESS_KEY=$(awk '/^Secret key:/ {print $3}' "$WORK/out")
export AWS_REGION=garage AWS_ENDPOINT_URL=http://127.0.0.1:$S3
until_ok g bucket allow --read --write --owner bench --key bench
log "garage $(g --version 2>/dev/null | head -n1) at $AWS_ENDPOINT_URL"

BACKUP=("$MAILDUMP" backup --location 'maildir:~/Maildir' --home "$CORPUS/%u" --all-users --quiet)
FILE=$WORK/full.mdump OBJ=s3://bench/full.mdump ENC=s3://bench/full.enc.mdump
command -v age-keygen >/dev/null || die "missing age-keygen (apt-get install -y age)"
age-keygen -o "$WORK/key.txt" 2>/dev/null
RECIPIENT=$(age-keygen -y "$WORK/key.txt")
declare -A WALL CPU
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timed() { # NAME CMD...: append wall and user+sys seconds
    local name=$1 t0 t1; shift
    t0=$(now)
    /usr/bin/time -f '%U %S' -o "$WORK/time" "$@" > /dev/null 2> "$WORK/err" || { cat "$WORK/err" >&2; die "$name failed"; }
    t1=$(now)
    WALL[$name]+="$(secs "$t0" "$t1") "
    CPU[$name]+="$(awk '{printf "%.2f", $1 + $2}' "$WORK/time") "
}
for ((r = 1; r <= REPS; r++)); do
    rm -f "$FILE"; sync
    log "backup -o FILE ($r/$REPS)"; timed file "${BACKUP[@]}" -o "$FILE"
    sync
    log "backup -o s3:// ($r/$REPS)"; timed s3 "${BACKUP[@]}" -o "$OBJ"
    log "backup -o s3:// --encrypt-to ($r/$REPS)"; timed enc "${BACKUP[@]}" -o "$ENC" --encrypt-to "$RECIPIENT"
done
SIZE=$(stat -c %s "$FILE")

if [[ -z $PICK_UID ]]; then
    PICK_UID=$("$MAILDUMP" list "$FILE" --user "$PICK_USER" --mailbox INBOX | grep -v '^;' | cut -f3 \
        | awk '{u[NR] = $1} END {print u[int((NR + 1) / 2)]}')
fi
CAT=(--user "$PICK_USER" --mailbox INBOX --uid "$PICK_UID")
"$MAILDUMP" cat "$FILE" "${CAT[@]}" > "$WORK/m.file"
"$MAILDUMP" cat "$OBJ" "${CAT[@]}" --s3-stats > "$WORK/m.s3" 2> "$WORK/stats"
cmp -s "$WORK/m.file" "$WORK/m.s3" || die "cat from s3:// gave other bytes than from the file"
STATS=$(sed -n 's/^maildump: s3: //p' "$WORK/stats")
"$MAILDUMP" cat "$ENC" "${CAT[@]}" --identity "$WORK/key.txt" --s3-stats > "$WORK/m.enc" 2> "$WORK/stats.enc"
cmp -s "$WORK/m.file" "$WORK/m.enc" || die "cat from the encrypted s3:// archive gave other bytes"
ENC_STATS=$(sed -n 's/^maildump: s3: //p' "$WORK/stats.enc")
lat() { # NAME ARCHIVE: one cat, milliseconds
    local t0 t1; t0=$(now); "$MAILDUMP" cat "$2" "${CAT[@]}" --identity "$WORK/key.txt" > /dev/null; t1=$(now)
    LAT[$1]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e6 }') "
}
declare -A LAT
for _ in 1 2; do lat warm "$FILE"; lat warm "$OBJ"; lat warm "$ENC"; done
for ((r = 1; r <= LAT_RUNS; r++)); do lat file "$FILE"; lat s3 "$OBJ"; lat enc "$ENC"; done

# shellcheck disable=SC2086
{
echo "## Object storage (bench/s3.sh), $(date -u +%F), $(git -C "$REPO" describe --always --dirty 2>/dev/null)"
echo
echo "Corpus $CORPUS ($(du -sh "$CORPUS" | cut -f1)), archive $SIZE bytes; one Garage node on loopback"
echo "(data in $WORK); $REPS alternating backup rounds, $LAT_RUNS alternating cat rounds; load $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| | wall (median) | MB/s | CPU user+sys (median) | runs (wall s) |"
echo "|---|---|---|---|---|"
for n in file s3 enc; do
    w=$(median ${WALL[$n]}); c=$(median ${CPU[$n]})
    case $n in file) what=FILE ;; s3) what='s3://' ;; *) what='s3:// --encrypt-to' ;; esac
    echo "| backup -o $what | ${w} s | $(awk -v s="$SIZE" -v w="$w" 'BEGIN { printf "%.1f", s / w / 1e6 }') | ${c} s | ${WALL[$n]}|"
done
echo
echo "| cat $PICK_USER INBOX UID $PICK_UID ($(stat -c %s "$WORK/m.file") bytes) | median ms | runs (ms) |"
echo "|---|---|---|"
echo "| from FILE | $(median ${LAT[file]}) | ${LAT[file]}|"
echo "| from s3:// | $(median ${LAT[s3]}) | ${LAT[s3]}|"
echo "| from s3://, encrypted | $(median ${LAT[enc]}) | ${LAT[enc]}|"
echo
echo "cat from s3:// (--s3-stats): $STATS"
echo
echo "cat from the encrypted s3:// archive (--s3-stats): $ENC_STATS"
}
