#!/usr/bin/env bash
# bench/crypt.sh: what encryption at rest (--encrypt-to, issue 18) costs, on the bench
# corpus: backup, verify, a one-user restore and `cat` of one message, each plain and
# encrypted, alternating in one invocation. Markdown on stdout. A benchmark, not a test.
#
#   bench/crypt.sh [--quick]
#
#   --quick   the small corpus (3 users x 600 messages) to smoke-test the script.
#
# Environment: MAILDUMP (binary; default: cargo build --release), CORPUS (default
# /tmp/mdbench/corpus, made by bench/bench.sh's generator when missing), WORK (scratch,
# default /tmp/mdbench/crypt-work, removed at exit), REPS (default 3: backup, verify and
# restore runs of each kind), RUNS (default 21: cat runs of each kind). Medians of wall
# time and of CPU time (user+sys); for cat also the bytes read (strace, read + pread64).
set -euo pipefail
ME=crypt.sh
WORK_DEFAULT=/tmp/mdbench/crypt-work
source "$(dirname "$0")/lib.sh"
bench_setup "$@"
RUNS=${RUNS:-21}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
command -v age-keygen > /dev/null || die "age-keygen is needed (apt-get install -y age)"
command -v strace > /dev/null || die "strace is needed to count the bytes cat reads"
[[ -d $CORPUS && -e $CORPUS.done ]] || die "no corpus at $CORPUS: run bench/bench.sh once (it generates it)"
build_maildump
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$WORK"
T=$(mktemp -d "$WORK/run.XXXXXX")
trap 'rm -rf -- "$T"' EXIT
warm() { :; }

age-keygen -o "$T/key.txt" 2> /dev/null
PUB=$(age-keygen -y "$T/key.txt")
STORE=(--location 'maildir:~/Maildir' --home "$CORPUS/%u" --all-users --quiet)
declare -A WALL CPU

# timed NAME CMD...: one run of CMD, wall and user+sys seconds appended to WALL[NAME],
# CPU[NAME].
timed() {
    local name=$1 t0 t1
    shift
    t0=$(date +%s%N)
    /usr/bin/time -f '%U %S' -o "$T/time" "$@"
    t1=$(date +%s%N)
    WALL[$name]+="$(secs "$t0" "$t1") "
    CPU[$name]+="$(awk '{printf "%.2f", $1 + $2}' "$T/time") "
}

pick_message "$CORPUS"
for ((rep = 1; rep <= REPS; rep++)); do
    for kind in plain encrypted; do
        enc=(); [[ $kind == encrypted ]] && enc=(--encrypt-to "$PUB")
        log "backup [$kind] ($rep/$REPS)"
        fresh "$T/$kind.mdump"
        timed "backup-$kind" "$MAILDUMP" backup "${STORE[@]}" "${enc[@]}" -o "$T/$kind.mdump"
    done
    for kind in plain encrypted; do
        log "verify [$kind] ($rep/$REPS)"
        timed "verify-$kind" "$MAILDUMP" verify "$T/$kind.mdump" --identity "$T/key.txt" --quiet
        log "restore --user $PICK_USER [$kind] ($rep/$REPS)"
        rm -rf -- "$T/r"
        timed "restore-$kind" "$MAILDUMP" restore "$T/$kind.mdump" --identity "$T/key.txt" \
            --location 'maildir:~/Maildir' --home "$T/r/%u" --user "$PICK_USER" --quiet
    done
done
rm -rf -- "$T/r"

CAT=(cat --user "$PICK_USER" --mailbox INBOX --uid "$PICK_UID" --identity "$T/key.txt")
"$MAILDUMP" "${CAT[@]}" "$T/plain.mdump" > "$T/plain.eml"
"$MAILDUMP" "${CAT[@]}" "$T/encrypted.mdump" > "$T/encrypted.eml"
cmp -s "$T/plain.eml" "$T/encrypted.eml" || die "cat gives different bytes plain and encrypted"
cmp -s "$T/plain.eml" "$PICK_PATH" || die "cat differs from the message file"
declare -A READ
for kind in plain encrypted; do
    strace -f -qq -e trace=read,pread64 -o "$T/strace" "$MAILDUMP" "${CAT[@]}" "$T/$kind.mdump" > /dev/null
    READ[$kind]=$(perl -ne '$s += $1 if /= (\d+)$/; END { print $s + 0 }' "$T/strace")
done
for ((i = 1; i <= RUNS; i++)); do
    for kind in plain encrypted; do
        timed "cat-$kind" bash -c "$(q "$MAILDUMP") $(printf '%q ' "${CAT[@]}") $(q "$T/$kind.mdump") > /dev/null"
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

FAIL=()
report_head "maildump encryption at rest ($(git_desc))"
echo "- corpus: $CORPUS ($(du -sb "$CORPUS" | cut -f1) bytes); archives: plain $(stat -c %s "$T/plain.mdump") bytes, encrypted $(stat -c %s "$T/encrypted.mdump") bytes"
echo "- $REPS alternating runs of backup, verify and restore --user $PICK_USER; $RUNS of cat (user $PICK_USER INBOX UID $PICK_UID, $PICK_BYTES bytes)"
echo
echo "| operation | plain wall s | encrypted wall s | ratio | plain CPU s | encrypted CPU s |"
echo "|---|---|---|---|---|---|"
for op in backup verify restore cat; do
    # shellcheck disable=SC2086
    pw=$(median ${WALL[$op-plain]}) ew=$(median ${WALL[$op-encrypted]})
    # shellcheck disable=SC2086
    pc=$(median ${CPU[$op-plain]}) ec=$(median ${CPU[$op-encrypted]})
    echo "| $op | $pw | $ew | $(ratio "$ew" "$pw") | $pc | $ec |"
done
echo
echo "cat bytes read (strace, whole process): plain ${READ[plain]}, encrypted ${READ[encrypted]}"
