#!/usr/bin/env bash
# maildump estimate vs what the backup then reads (issue 15), on the bench corpus: a full,
# a no-change incremental, a 1%-change incremental and the same after a `chown -R` of the
# store (every ctime changes; the estimate must not). For each: the estimate's bytes and
# messages, the bytes the backup says it read (`read_bytes` of its done event), the difference in percent, and
# the wall time of the estimate and of the backup.
#
# Usage:
#   bench/estimate.sh [--quick] [--shared]
#
#   --quick   small corpus (3 users x 600 messages): a smoke test of the script.
#   --shared  the corpus with more shared attachments (see bench/compare.sh --help).
#
# Environment: REPS (ignored: one run each), CORPUS, WORK (default /tmp/mdbench/work-est,
# wiped at the start), MAILDUMP (default: target/release/maildump, built first), GEN,
# MUTATE_PCT (default 1.0): as in bench/bench-incremental.sh. The pristine corpus is never
# modified (a copy in WORK is). Exit status 1 when an estimate is more than 10% off.
set -euo pipefail

ME=estimate.sh
WORK_DEFAULT=/tmp/mdbench/work-est
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
bench_setup "$@"
MUTATE_PCT=${MUTATE_PCT:-1.0}
build_maildump

LIVE=$WORK/live
log "cp -a $CORPUS $LIVE"
cp -a "$CORPUS" "$LIVE"
STORE=(--location 'maildir:~/Maildir' --home "$LIVE/%u" --all-users)
FAIL=()
ROWS=()

# timed OUT ERR CMD...: run CMD with stdout in OUT and stderr in ERR; prints the seconds.
timed() {
    local out=$1 err=$2 t0 t1
    shift 2
    t0=$(date +%s%N)
    "$@" > "$out" 2> "$err"
    t1=$(date +%s%N)
    secs "$t0" "$t1"
}

# step NAME ARCHIVE [BASE]: estimate, then back up into ARCHIVE; one report row.
step() {
    local name=$1 archive=$2 base=${3:-} est_s bk_s json ebytes emsgs read summary pct
    local -a b=()
    [[ -z $base ]] || b=(--base "$base")
    sync
    est_s=$(timed "$T/$name.est" "$T/$name.est.err" "$MAILDUMP" estimate "${STORE[@]}" "${b[@]}" --json)
    json=$(cat "$T/$name.est")
    ebytes=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["bytes"])' "$json")
    emsgs=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["messages"])' "$json")
    sync
    bk_s=$(timed /dev/null "$T/$name.bk.err" "$MAILDUMP" backup "${STORE[@]}" "${b[@]}" -o "$archive" --progress json)
    # The done event's read_bytes: the message bytes the backup read from the store.
    read=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    try: e = json.loads(l)
    except ValueError: continue
    if e.get("event") == "done": print(e["read_bytes"])' "$T/$name.bk.err")
    [[ -n $read ]] || die "no done event in $T/$name.bk.err"
    pct=$(awk -v e="$ebytes" -v r="$read" 'BEGIN { if (r > 0) printf "%.2f", (e - r) * 100 / r; else print (e == 0 ? "0.00" : "inf") }')
    awk -v p="$pct" 'BEGIN { exit !(p == "inf" || p > 10 || p < -10) }' && FAIL+=("$name: estimate off by $pct%")
    ROWS+=("| $name | $emsgs | $ebytes | $read | $pct | $est_s | $bk_s |")
    log "$name: estimate $emsgs messages $ebytes bytes ($est_s s); backup read $read bytes ($bk_s s)"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
step full "$WORK/full.mdump"
step no-change "$WORK/inc0.mdump" "$WORK/full.mdump"
log "gen_maildir.py --mutate $MUTATE_PCT"
python3 "$GEN" --root "$LIVE" --users "$USERS" --messages-per-user "$MSGS" --seed "$SEED" --mutate "$MUTATE_PCT" >&2
step "change-$MUTATE_PCT%" "$WORK/inc1.mdump" "$WORK/full.mdump"
chown -R "$(stat -c %u:%g "$LIVE")" "$LIVE"
step "after-chown-R" "$WORK/inc2.mdump" "$WORK/inc1.mdump"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

report_head "maildump estimate vs backup reads" "ESTIMATE OFF BY MORE THAN 10%"
echo "- corpus: $CORPUS ($USERS users x $MSGS messages), $(git_desc), $MAILDUMP"
echo
echo "| run | estimate messages | estimate bytes | backup read bytes | off % | estimate s | backup s |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
find "${WORK:?}" -mindepth 1 -maxdepth 1 ! -name times ! -name .mdbench-work -exec rm -rf -- {} +
(( ${#FAIL[@]} == 0 ))
