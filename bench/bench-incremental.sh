#!/usr/bin/env bash
# maildump incremental benchmark (issue #3): full, no-change and 1%-change backups with
# maildump (--base), restic and borg side by side, against a bare metadata walk, plus a
# correctness spot-check (verify + restore of the chain, compared with the live tree).
# This is a benchmark, not a test. The full-backup benchmark is bench/bench.sh; both share
# the same pristine corpus and conventions.
#
# Usage:
#   bench/bench-incremental.sh [--quick] [--shared]
#
#   --quick   small corpus (3 users x 600 messages) to smoke-test the script;
#             figures are meaningless at that size.
#   --shared  the corpus with more shared attachments (see bench/compare.sh --help).
#
# Steps (all on LIVE, a fresh `cp -a` of the pristine corpus made at every run):
#   1. full: maildump backup -o FULL (REPS runs, median), restic and borg first backup;
#   2. no change: REPS rounds of { find LIVE -type f | wc -l; maildump backup --base FULL
#      -o INC0; restic backup; borg create } (medians); INC0 size vs FULL;
#   3. 1% change: gen_maildir.py --mutate 1.0 on LIVE (+1% new mail, 1% flag renames,
#      0.5% expunges), then maildump backup --base FULL -o INC1 (REPS runs, median) and
#      one restic / borg backup each (a repeat would be a no-change run); INC1 size vs
#      FULL, restic/borg repository growth;
#   4. check: maildump verify INC1, maildump verify FULL INC1 (chain), maildump restore
#      FULL INC1 into WORK/restore, then per mailbox the sorted message file names
#      (cur/ and new/) of the restored tree must equal those of LIVE.
#
# Re-running: the mutation only ever touches LIVE (inside WORK, rebuilt by `cp -a` at the
# start of every run), never the pristine CORPUS, which bench.sh uses as well.
#
# Environment:
#   REPS           timed runs per measurement where a repeat measures the same thing
#                  (median reported; default 3)
#   CORPUS         pristine corpus root (default /tmp/mdbench/corpus, with --quick
#                  /tmp/mdbench/corpus-quick); generated if absent, reused if present,
#                  never modified. Must be outside the repository.
#   WORK           scratch dir (default /tmp/mdbench/work-inc, distinct from bench.sh's
#                  WORK). Its contents are deleted at the start of every run. Holds LIVE
#                  (WORK/live), the archives, restic/borg repos and the restored tree.
#   MAILDUMP       maildump binary (default target/release/maildump, built with
#                  `cargo build --release` first; no build if MAILDUMP is set).
#   GEN            corpus generator (default ../shared/tools/gen_maildir.py beside the repo).
#   MUTATE_PCT     --mutate percentage for step 3 (default 1.0).
#
# Output: a Markdown report on stdout, also written to bench/results-incremental-latest.md
# (gitignored). Times are wall-clock seconds (date +%s%N around the command), peak RSS
# comes from /usr/bin/time -f %M. Every timed run is preceded by `sync` and a re-read of
# LIVE (page cache warm, no writeback of the previous run pending). Exit status 1 if the
# restore check or verify fails (the report says so in a banner).
set -euo pipefail

ME=bench-incremental.sh
WORK_DEFAULT=/tmp/mdbench/work-inc
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
bench_setup "$@"
MUTATE_PCT=${MUTATE_PCT:-1.0}
for t in restic borg find du awk sort diff cp python3; do
    command -v "$t" >/dev/null || die "missing tool: $t"
done
[[ -f $GEN ]] || die "corpus generator not found: $GEN"
build_maildump

# ---------------------------------------------------------------- live copy
# The pristine corpus is never modified: every run backs up and mutates a fresh copy.
LIVE=$WORK/live
log "cp -a $CORPUS $LIVE"
t0=$(date +%s%N)
cp -a "$CORPUS" "$LIVE"
t1=$(date +%s%N)
COPY_NS=$((t1 - t0))

COMMANDS=()
# warm: no pending writeback, every file of LIVE (and its inode) in the cache.
warm() { sync; find "$LIVE" -type f -print0 | xargs -0 cat > /dev/null; }

# run1 NAME CMD: warm, then run CMD (a bash string) once under /usr/bin/time; appends the
# wall time to TIMES_NAME (file) and keeps the largest peak RSS (KiB) in RSS[NAME].
# measure NAME: SECS[NAME] = median of the runs so far.
declare -A SECS RSS CMD_OF
run1() {
    local name=$1 cmd=$2 t0 t1 r rc=0
    [[ -n ${CMD_OF[$name]:-} ]] || { CMD_OF[$name]=$cmd; COMMANDS+=("$cmd"); }
    warm
    log "running [$name]: $cmd"
    t0=$(date +%s%N)
    /usr/bin/time -f '%M' -o "$T/$name.rss" bash -c "$cmd" || rc=$?
    t1=$(date +%s%N)
    printf '%s\n' "$(secs "$t0" "$t1")" >> "$T/$name.times"
    r=$(tail -n1 "$T/$name.rss" | tr -cd 0-9)
    (( ${r:-0} > ${RSS[$name]:-0} )) && RSS[$name]=$r
    (( rc == 0 )) || log "[$name] exited $rc"
    return $rc
}
measure() {
    local name=$1
    mapfile -t v < "$T/$name.times"
    SECS[$name]=$(median "${v[@]}")
    (( ${#v[@]} > 1 )) && COMMANDS+=("# [$name] ${#v[@]} runs: ${v[*]} (median ${SECS[$name]})")
    return 0
}
size() { du -sb "$1" | cut -f1; }

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
warm
CORPUS_BYTES=$(size "$LIVE")
NFILES=$(find "$LIVE" -type f | wc -l)
NMSGS=$(find "$LIVE" -type f \( -path '*/cur/*' -o -path '*/new/*' \) | wc -l)
if (( CORPUS_BYTES < MIN_BYTES )); then
    log "warning: corpus is only $CORPUS_BYTES bytes (< $MIN_BYTES)"
fi

MD_LOC="--location 'maildir:~/Maildir' --home $(q "$LIVE/%u") --all-users"
FULL=$WORK/full.mdump
INC0=$WORK/inc0.mdump
INC1=$WORK/inc1.mdump
repo_env
RESTIC_CMD="restic backup --quiet $(q "$LIVE")"
borg_cmd() { echo "borg create --compression zstd,3 $(q "$BORG_REPO")::$1 $(q "$LIVE")"; }

# ---------------------------------------------------------------- 1. full
# maildump writes with -o FILE (fsync before the file appears under its name); restic and
# borg fsync their repositories too.
MD_FULL="$(q "$MAILDUMP") backup $MD_LOC -o $(q "$FULL") --quiet"
for ((rep = 1; rep <= REPS; rep++)); do
    rm -f "$FULL"
    run1 md_full "$MD_FULL"
done
measure md_full
SIZE_full=$(size "$FULL")

restic init --quiet >&2
COMMANDS+=("$RESTIC_ENV restic init --quiet   # untimed")
run1 restic1 "$RESTIC_CMD"; measure restic1
SIZE_restic1=$(size "$RESTIC_REPOSITORY")
RESTIC_REPO_VERSION=$(restic cat config --quiet 2>/dev/null | awk -F'[:,]' '/"version"/{gsub(/ /,"",$2); print $2}')

borg init -e none "$BORG_REPO" >&2
COMMANDS+=("$BORG_ENV borg init -e none $(q "$BORG_REPO")   # untimed")
run1 borg1 "$(borg_cmd first)"; measure borg1
SIZE_borg1=$(size "$BORG_REPO")

# ---------------------------------------------------------------- 2. no change
# REPS rounds, each tool once per round (alternating, so drift hits all alike). Every
# restic/borg run here is another backup of the unchanged tree (2nd, 3rd, ... snapshot).
WALK_CMD="find $(q "$LIVE") -type f | wc -l > /dev/null"
WALKSTAT_CMD="find $(q "$LIVE") -type f -printf '%i %s %T@ %C@\n' | wc -l > /dev/null"
MD_INC0="$(q "$MAILDUMP") backup $MD_LOC --base $(q "$FULL") -o $(q "$INC0") --quiet"
for ((rep = 1; rep <= REPS; rep++)); do
    run1 walk "$WALK_CMD"
    run1 walkstat "$WALKSTAT_CMD"
    rm -f "$INC0"
    run1 md_inc0 "$MD_INC0"
    run1 restic2 "$RESTIC_CMD"
    run1 borg2 "$(borg_cmd "nochange$rep")"
done
for n in walk walkstat md_inc0 restic2 borg2; do measure "$n"; done
SIZE_inc0=$(size "$INC0")
SIZE_restic2=$(size "$RESTIC_REPOSITORY")
SIZE_borg2=$(size "$BORG_REPO")

# ---------------------------------------------------------------- 3. 1% change
# base name + size of every message file before the change (to size the new mail)
find "$LIVE" -type f \( -path '*/cur/*' -o -path '*/new/*' \) -printf '%f %s\n' \
    | sed 's/:[^ ]* / /' > "$T/bases.before"
MUTATE_CMD="python3 $(q "$GEN") --root $(q "$LIVE") --mutate $MUTATE_PCT --seed $SEED"
COMMANDS+=("$MUTATE_CMD   # untimed")
log "mutating LIVE: $MUTATE_CMD"
MUTATE_OUT=$(eval "$MUTATE_CMD")
log "mutation: $MUTATE_OUT"
MUT_ADDED=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["added"])' "$MUTATE_OUT")
MUT_RENAMED=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["renamed"])' "$MUTATE_OUT")
MUT_DELETED=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["deleted"])' "$MUTATE_OUT")
NMSGS1=$(find "$LIVE" -type f \( -path '*/cur/*' -o -path '*/new/*' \) | wc -l)
NEW_BYTES=$(find "$LIVE" -type f \( -path '*/cur/*' -o -path '*/new/*' \) -printf '%f %s\n' \
    | sed 's/:[^ ]* / /' | awk 'NR == FNR { old[$1] = 1; next } !($1 in old) { s += $2 } END { print s + 0 }' "$T/bases.before" -)

MD_INC1="$(q "$MAILDUMP") backup $MD_LOC --base $(q "$FULL") -o $(q "$INC1") --quiet"
for ((rep = 1; rep <= REPS; rep++)); do
    rm -f "$INC1"
    run1 md_inc1 "$MD_INC1"
done
measure md_inc1
SIZE_inc1=$(size "$INC1")
run1 restic3 "$RESTIC_CMD"; measure restic3
SIZE_restic3=$(size "$RESTIC_REPOSITORY")
run1 borg3 "$(borg_cmd changed)"; measure borg3
SIZE_borg3=$(size "$BORG_REPO")

# ---------------------------------------------------------------- 4. correctness check
FAIL=()
set +e
log "maildump verify $INC1"
"$MAILDUMP" verify "$INC1" > "$T/verify1.out" 2>&1; VERIFY1_RC=$?
log "maildump verify $FULL $INC1"
"$MAILDUMP" verify "$FULL" "$INC1" > "$T/verify2.out" 2>&1; VERIFY2_RC=$?
set -e
COMMANDS+=("$(q "$MAILDUMP") verify $(q "$INC1")   # untimed, exit $VERIFY1_RC")
COMMANDS+=("$(q "$MAILDUMP") verify $(q "$FULL") $(q "$INC1")   # untimed, exit $VERIFY2_RC")
(( VERIFY1_RC == 0 )) || FAIL+=("maildump verify INC1 exited $VERIFY1_RC: $(tail -n3 "$T/verify1.out" | tr '\n' ' ')")
(( VERIFY2_RC == 0 )) || FAIL+=("maildump verify FULL INC1 exited $VERIFY2_RC: $(tail -n3 "$T/verify2.out" | tr '\n' ' ')")

RESTORE=$WORK/restore
MD_RESTORE="$(q "$MAILDUMP") restore $(q "$FULL") $(q "$INC1") --location 'maildir:~/Maildir' --home $(q "$RESTORE/%u") --quiet"
set +e
run1 md_restore "$MD_RESTORE"
RESTORE_RC=$?
set -e
measure md_restore
(( RESTORE_RC == 0 )) || FAIL+=("maildump restore FULL INC1 exited $RESTORE_RC")

# names TREE: "user/mailbox-dir<TAB>file name" of every message file in cur/ or new/,
# sorted (mailbox-dir is "Maildir" for INBOX, "Maildir/.Sent" etc.). cur/ vs new/ is
# compared separately (names_sub).
names() {
    (cd "$1" && find . -type f \( -path '*/cur/*' -o -path '*/new/*' \) -printf '%h\t%f\n') \
        | sed -E 's#^\./##; s#/(cur|new)\t#\t#' | LC_ALL=C sort
}
names_sub() {
    (cd "$1" && find . -type f \( -path '*/cur/*' -o -path '*/new/*' \) -printf '%h/%f\n') \
        | sed -E 's#^\./##' | LC_ALL=C sort
}
CHECK_NAMES="not run"
CHECK_SUB="not run"
if [[ -d $RESTORE ]]; then
    names "$LIVE" > "$T/names.live"
    names "$RESTORE" > "$T/names.restore"
    NAMES_LIVE=$(wc -l < "$T/names.live")
    NAMES_RESTORE=$(wc -l < "$T/names.restore")
    MBOX_LIVE=$(cut -f1 "$T/names.live" | LC_ALL=C sort -u | wc -l)
    if diff "$T/names.live" "$T/names.restore" > "$T/names.diff"; then
        CHECK_NAMES="equal: $NAMES_LIVE message files in $MBOX_LIVE mailboxes"
    else
        CHECK_NAMES="MISMATCH: live $NAMES_LIVE, restored $NAMES_RESTORE files; $(grep -c '^<' "$T/names.diff") only live, $(grep -c '^>' "$T/names.diff") only restored (diff: $T/names.diff)"
        FAIL+=("restored message file names differ from LIVE: $CHECK_NAMES")
        head -n 20 "$T/names.diff" >&2
    fi
    names_sub "$LIVE" > "$T/sub.live"
    names_sub "$RESTORE" > "$T/sub.restore"
    if diff "$T/sub.live" "$T/sub.restore" > "$T/sub.diff"; then
        CHECK_SUB="equal (every file in the same cur/ or new/ as live)"
    else
        CHECK_SUB="differ in $(grep -c '^<' "$T/sub.diff") files (diff: $T/sub.diff; names per mailbox compared above)"
    fi
fi
COMMANDS+=("diff <(find LIVE ... cur|new names per mailbox | sort) <(find RESTORE ... | sort)   # untimed")

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- 5. report
mb()    { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
mib()   { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
pct()   { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f %%", 100 * a / b; else print "n/a" }'; }
verdict() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? "**met**" : "**missed**" }'; }

runs() { local n; n=$(wc -l < "$T/$1.times"); (( n > 1 )) && echo "median of $n" || echo "1 run"; }

REPORT=$REPO/bench/results-incremental-latest.md
{
    report_head "maildump incremental benchmark" "CORRECTNESS CHECK FAILED"
    echo "- corpus: \`$CORPUS\`$( [[ $QUICK == 1 ]] && echo ' (--quick)') copied (\`cp -a\`, $(secs 0 "$COPY_NS") s) to \`$LIVE\`: $(mb "$CORPUS_BYTES") MB (du -sb $CORPUS_BYTES), $NFILES files ($NMSGS messages in cur/new)"
    echo "- corpus params: $( [[ -f $CORPUS.params ]] && cat "$CORPUS.params" || echo unknown)"
    echo "- mutation (\`--mutate $MUTATE_PCT\`): +$MUT_ADDED new (in new/, $(mb "$NEW_BYTES") MB), $MUT_RENAMED flag renames, $MUT_DELETED expunged; now $NMSGS1 messages"
    echo "- maildump: \`$MAILDUMP\` ($(git_desc))"
    echo "- versions: $(restic version | cut -d' ' -f1-2) (repo v${RESTIC_REPO_VERSION:-?}); $(borg --version)"
    echo "- every timed run follows \`sync\` and a re-read of LIVE; REPS=$REPS"
    echo
    echo "## 1. Full backup"
    echo
    echo "| tool | time s | size MB | peak RSS MiB | runs |"
    echo "|---|---|---|---|---|"
    echo "| maildump backup -o FULL | ${SECS[md_full]} | $(mb "$SIZE_full") | $(mib "${RSS[md_full]}") | $(runs md_full) |"
    echo "| restic 1st backup (repo size) | ${SECS[restic1]} | $(mb "$SIZE_restic1") | $(mib "${RSS[restic1]}") | $(runs restic1) |"
    echo "| borg zstd,3 1st create (repo size) | ${SECS[borg1]} | $(mb "$SIZE_borg1") | $(mib "${RSS[borg1]}") | $(runs borg1) |"
    echo
    echo "## 2. No change"
    echo
    echo "Same tree again. Growth = archive size (maildump) or repository growth per backup (restic/borg)."
    echo
    echo "| what | time s | × walk | growth | peak RSS MiB | runs |"
    echo "|---|---|---|---|---|---|"
    echo "| \`find LIVE -type f \| wc -l\` (bare walk) | ${SECS[walk]} | 1.00 | – | – | $(runs walk) |"
    # shellcheck disable=SC2016
    printf '| `%s` (walk + stat) | %s | %s | – | – | %s |\n' "find LIVE -type f -printf '%i %s %T@ %C@\\n' \\| wc -l" "${SECS[walkstat]}" "$(ratio "${SECS[walkstat]}" "${SECS[walk]}")" "$(runs walkstat)"
    echo "| **maildump backup --base FULL -o INC0** | **${SECS[md_inc0]}** | **$(ratio "${SECS[md_inc0]}" "${SECS[walk]}")** | $(mb "$SIZE_inc0") MB = $(pct "$SIZE_inc0" "$SIZE_full") of FULL | $(mib "${RSS[md_inc0]}") | $(runs md_inc0) |"
    echo "| restic 2nd+ backup | ${SECS[restic2]} | $(ratio "${SECS[restic2]}" "${SECS[walk]}") | $(mb $(( (SIZE_restic2 - SIZE_restic1) / REPS ))) MB | $(mib "${RSS[restic2]}") | $(runs restic2) |"
    echo "| borg 2nd+ create | ${SECS[borg2]} | $(ratio "${SECS[borg2]}" "${SECS[walk]}") | $(mb $(( (SIZE_borg2 - SIZE_borg1) / REPS ))) MB | $(mib "${RSS[borg2]}") | $(runs borg2) |"
    echo
    echo "Targets: no-change incremental ≤ 2× the bare walk: $(ratio "${SECS[md_inc0]}" "${SECS[walk]}")× → $(verdict "${SECS[md_inc0]}" "$(awk -v w="${SECS[walk]}" 'BEGIN { print 2 * w }')")"
    echo "($(ratio "${SECS[md_inc0]}" "${SECS[walkstat]}")× the walk that also stats every file);"
    echo "faster than restic: $(ratio "${SECS[md_inc0]}" "${SECS[restic2]}")× restic's time → $(verdict "${SECS[md_inc0]}" "${SECS[restic2]}");"
    echo "faster than borg: $(ratio "${SECS[md_inc0]}" "${SECS[borg2]}")× borg's time → $(verdict "${SECS[md_inc0]}" "${SECS[borg2]}")."
    echo
    echo "## 3. After a ${MUTATE_PCT}% change"
    echo
    echo "| tool | time s | growth MB | growth vs its full | peak RSS MiB | runs |"
    echo "|---|---|---|---|---|---|"
    echo "| **maildump backup --base FULL -o INC1** | **${SECS[md_inc1]}** | $(mb "$SIZE_inc1") (archive) | **$(pct "$SIZE_inc1" "$SIZE_full")** of FULL | $(mib "${RSS[md_inc1]}") | $(runs md_inc1) |"
    echo "| restic backup | ${SECS[restic3]} | $(mb $((SIZE_restic3 - SIZE_restic2))) (repo) | $(pct $((SIZE_restic3 - SIZE_restic2)) "$SIZE_restic1") of 1st | $(mib "${RSS[restic3]}") | $(runs restic3) |"
    echo "| borg create | ${SECS[borg3]} | $(mb $((SIZE_borg3 - SIZE_borg2))) (repo) | $(pct $((SIZE_borg3 - SIZE_borg2)) "$SIZE_borg1") of 1st | $(mib "${RSS[borg3]}") | $(runs borg3) |"
    echo
    echo "Target: incremental after a ${MUTATE_PCT}% change < 3 % of the full: $(pct "$SIZE_inc1" "$SIZE_full") → $(verdict "$(awk -v a="$SIZE_inc1" -v b="$SIZE_full" 'BEGIN { print 100 * a / b }')" 3)."
    echo "(restic/borg: a single run each, the first backup after the change; maildump's runs all start from FULL.)"
    echo
    echo "## 4. Correctness spot-check"
    echo
    echo "| check | result |"
    echo "|---|---|"
    echo "| \`maildump verify INC1\` | exit $VERIFY1_RC$( (( VERIFY1_RC == 0 )) || echo ' **FAILED**'): $(grep -v '^$' "$T/verify1.out" | tail -n1 | tr '|' '/') |"
    echo "| \`maildump verify FULL INC1\` (chain) | exit $VERIFY2_RC$( (( VERIFY2_RC == 0 )) || echo ' **FAILED**'): $(grep -v '^$' "$T/verify2.out" | tail -n1 | tr '|' '/') |"
    echo "| \`maildump restore FULL INC1\` | exit $RESTORE_RC, ${SECS[md_restore]} s |"
    echo "| message file names per mailbox, restored vs LIVE | $( [[ $CHECK_NAMES == equal* ]] && echo "$CHECK_NAMES" || echo "**$CHECK_NAMES**") |"
    echo "| same cur/ or new/ placement | $CHECK_SUB |"
    echo
    echo "## Commands"
    echo
    echo '```sh'
    echo "$RESTIC_ENV   # restic env"
    echo "$BORG_ENV   # borg env"
    echo "cp -a $(q "$CORPUS") $(q "$LIVE")   # untimed"
    printf '%s\n' "${COMMANDS[@]}"
    echo '```'
} > "$REPORT"

cat "$REPORT"
log "report written to $REPORT"
if (( ${#FAIL[@]} > 0 )); then
    for f in "${FAIL[@]}"; do log "CORRECTNESS CHECK FAILED: $f"; done
    exit 1
fi
