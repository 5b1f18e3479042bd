#!/usr/bin/env bash
# maildump benchmark: full backup of a generated Dovecot Maildir++ corpus with
# maildump, tar+zstd, restic and borg side by side, plus one-message retrieval
# latency (maildump cat vs tar -xO). This is a benchmark, not a test.
#
# Usage:
#   bench/bench.sh [--quick] [--shared]
#
#   --quick   small corpus (3 users x 600 messages) to smoke-test the script;
#             figures are meaningless at that size.
#   --shared  the corpus with more shared attachments (see bench/compare.sh --help).
#
# Environment:
#   REPS           runs of tar+zstd and of maildump backup (median reported; default 3)
#   CORPUS         corpus root (default /tmp/mdbench/corpus, with --quick
#                  /tmp/mdbench/corpus-quick). Generated if absent, reused if
#                  present. Must be outside the repository.
#   WORK           scratch dir for outputs/repos (default /tmp/mdbench/work).
#                  Its contents are deleted at the start of every run.
#   MAILDUMP       maildump binary (default target/release/maildump, built with
#                  `cargo build --release` first; no build if MAILDUMP is set).
#   SKIP_MAILDUMP  =1: skip all maildump steps (competitors only).
#   GEN            corpus generator (default ../shared/tools/gen_maildir.py beside the repo).
#   PICK_INDEX     which file of USER/Maildir/cur (sorted) to retrieve
#                  (default 1000; the middle file if cur has fewer files).
#
# Output: a Markdown report on stdout, also written to bench/results-latest.md
# (gitignored). Times are wall-clock seconds (date +%s%N around the command),
# peak RSS comes from /usr/bin/time -f %M. The machine is
# not isolated, so expect noise when something else is running (see loadavg in
# the report).
set -euo pipefail

ME=bench.sh
WORK_DEFAULT=/tmp/mdbench/work
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
bench_setup "$@"
SKIP_MAILDUMP=${SKIP_MAILDUMP:-0}
PICK_INDEX=${PICK_INDEX:-1000}
for t in tar zstd restic borg find du awk cmp; do
    command -v "$t" >/dev/null || die "missing tool: $t"
done
ROOT=$CORPUS

# ---------------------------------------------------------------- maildump build
MD_STATUS=skipped
if [[ $SKIP_MAILDUMP != 1 ]]; then
    build_maildump
    MD_STATUS=run
fi

COMMANDS=()
# timed NAME CMD: run CMD (a bash string) under /usr/bin/time; sets
# SECS[NAME] (wall s, ms resolution) and RSS[NAME] (peak RSS KiB of the
# largest process in CMD).
declare -A SECS RSS
timed() {
    local name=$1 cmd=$2 t0 t1
    COMMANDS+=("$cmd")
    sync
    log "running [$name]: $cmd"
    t0=$(date +%s%N)
    /usr/bin/time -f '%M' -o "$T/$name" bash -c "$cmd"
    t1=$(date +%s%N)
    SECS[$name]=$(secs "$t0" "$t1")
    RSS[$name]=$(tail -n1 "$T/$name")
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- 1. walk
# The first walk warms dentry/inode caches (and is reported); then the file
# contents are read once, untimed, so no tool pays for cold disk reads.
timed walk "find $(q "$ROOT") -type f | wc -l > $(q "$T/nfiles")"
NFILES=$(tr -d ' ' < "$T/nfiles")
timed walkstat "find $(q "$ROOT") -type f -printf '%i %s %T@ %C@\n' | wc -l > /dev/null"
log "warming page cache (untimed)"
find "$ROOT" -type f -print0 | xargs -0 cat > /dev/null
CORPUS_BYTES=$(du -sb "$ROOT" | cut -f1)
NMSGS=$(find "$ROOT" -type f \( -path '*/cur/*' -o -path '*/new/*' \) | wc -l)
if (( CORPUS_BYTES < MIN_BYTES )); then
    log "warning: corpus is only $CORPUS_BYTES bytes (< $MIN_BYTES)"
fi

# ---------------------------------------------------------------- 2+3. tar+zstd and maildump
# Both full backups run REPS times (default 3), alternating, each after a `sync` (so one
# run's output writeback does not slow the next) and a re-read of the corpus (this machine
# reclaims page cache proactively, so the run after a big write would otherwise read part
# of the corpus from disk); the report gives the median time and the largest peak RSS.
warm() { sync; find "$ROOT" -type f -print0 | xargs -0 cat > /dev/null; }
TARZ=$WORK/out.tar.zst
MDUMP=$WORK/out.mdump
TAR_CMD="tar -C $(q "$ROOT") -cf - . | zstd -T0 -3 -q -f -o $(q "$TARZ")"
# Like tar+zstd, the timed runs write to stdout redirected to a file (no fsync); one more
# run below writes with `-o FILE`, which fsyncs before the file appears under its name.
MD_CMD="$(q "$MAILDUMP") backup --location 'maildir:~/Maildir' --home $(q "$ROOT/%u") --all-users -o - --quiet > $(q "$MDUMP")"
COMMANDS+=("$TAR_CMD   # $REPS runs, median")
[[ $MD_STATUS == run ]] && COMMANDS+=("$MD_CMD   # $REPS runs, median")
alternate_runs "$ROOT" "$TARZ" "$( [[ $MD_STATUS == run ]] && echo "$MD_CMD")" "$MDUMP"
(( MD_RC == 0 )) || die "maildump backup failed (exit $MD_RC): $(tail -n3 "$T/maildump.err")"
SECS[tar]=$(median "${TAR_TIMES[@]}")
SIZE_tar=$(stat -c %s "$TARZ")
if [[ $MD_STATUS == run ]]; then
    SECS[maildump]=$(median "${MD_TIMES[@]}")
    SIZE_maildump=$(du -sb "$MDUMP" | cut -f1)
    log "tar times: ${TAR_TIMES[*]}; maildump times: ${MD_TIMES[*]}"
    log "tar CPU s: ${TAR_CPUS[*]}; maildump CPU s: ${MD_CPUS[*]}"
    fresh "$MDUMP"; warm
    timed maildump_fsync "$(q "$MAILDUMP") backup --location 'maildir:~/Maildir' --home $(q "$ROOT/%u") --all-users -o $(q "$MDUMP") --quiet"
fi

# ---------------------------------------------------------------- 4. restic
repo_env
restic init --quiet >&2
COMMANDS+=("$RESTIC_ENV restic init --quiet   # untimed")
timed restic  "restic backup --quiet $(q "$ROOT")"
timed restic2 "restic backup --quiet $(q "$ROOT")"
SIZE_restic=$(du -sb "$RESTIC_REPOSITORY" | cut -f1)
RESTIC_REPO_VERSION=$(restic cat config --quiet 2>/dev/null | awk -F'[:,]' '/"version"/{gsub(/ /,"",$2); print $2}')

# ---------------------------------------------------------------- 4. borg
borg init -e none "$BORG_REPO" >&2
COMMANDS+=("$BORG_ENV borg init -e none $(q "$BORG_REPO")   # untimed")
timed borg  "borg create --compression zstd,3 $(q "$BORG_REPO")::a $(q "$ROOT")"
timed borg2 "borg create --compression zstd,3 $(q "$BORG_REPO")::b $(q "$ROOT")"
SIZE_borg=$(du -sb "$BORG_REPO" | cut -f1)

# ---------------------------------------------------------------- 5. one message
pick_message "$ROOT"

# Sanity: tar extraction gives the same bytes.
tar --zstd -xOf "$TARZ" "$PICK_REL" | cmp -s - "$PICK_PATH" || die "tar -xO output differs from $PICK_PATH"

CAT_TAR="tar --zstd -xOf $(q "$TARZ") $(q "$PICK_REL") > /dev/null"
CAT_MD="$(q "${MAILDUMP:-maildump}") cat $(q "$MDUMP") --user $(q "$PICK_USER") --mailbox INBOX --uid $PICK_UID > /dev/null"


latency tar "$CAT_TAR"
CAT_CMP=skipped
if [[ $MD_STATUS == run ]]; then
    if "$MAILDUMP" cat "$MDUMP" --user "$PICK_USER" --mailbox INBOX --uid "$PICK_UID" | cmp - "$PICK_PATH" >&2; then
        CAT_CMP="identical ($PICK_BYTES bytes)"
    else
        CAT_CMP="MISMATCH"
    fi
    latency maildump "$CAT_MD"
fi

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- 6. report
mb()    { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
mib()   { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }

row() { # row LABEL KEY SIZE SECOND_RUN_KEY
    local label=$1 key=$2 size=$3 key2=${4:-}
    local second="–"
    [[ -n $key2 ]] && second=${SECS[$key2]}
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "${SECS[$key]}" \
        "$(ratio "${SECS[$key]}" "${SECS[tar]}")" "$(mb "$size")" \
        "$(ratio "$size" "$SIZE_tar")" "$(mib "${RSS[$key]}")" "$second"
}


REPORT=$REPO/bench/results-latest.md
{
    report_head "maildump benchmark"
    echo "- corpus: \`$ROOT\`$( [[ $QUICK == 1 ]] && echo ' (--quick)'), $(mb "$CORPUS_BYTES") MB (du -sb $CORPUS_BYTES), $NFILES files ($NMSGS messages in cur/new)"
    echo "- corpus params: $( [[ -f $CORPUS.params ]] && cat "$CORPUS.params" || echo unknown)"
    echo "- maildump: $( if [[ $MD_STATUS == run ]]; then echo "\`$MAILDUMP\` ($(git_desc))"; else echo skipped; fi)"
    echo "- versions: $(tar --version | head -n1); zstd $(zstd -V | grep -o 'v[0-9.]*' | head -n1); $(restic version | cut -d' ' -f1-2) (repo v${RESTIC_REPO_VERSION:-?}); $(borg --version)"
    echo
    echo "## Walk (page cache warm-up)"
    echo
    echo "| walk | time s |"
    echo "|---|---|"
    echo "| \`find ROOT -type f \| wc -l\` (first, warm-up) | ${SECS[walk]} |"
    # shellcheck disable=SC2016
    printf '| `%s` (warm, stats every file) | %s |\n' "find ROOT -type f -printf '%i %s %T@ %C@\\n' \\| wc -l" "${SECS[walkstat]}"
    echo
    echo "## Full backup"
    echo
    echo "Sizes in MB = 10^6 bytes; peak RSS in MiB (tar+zstd: sum of both processes);"
    echo "ratios relative to tar+zstd. '2nd run' = immediate re-run with no changes."
    echo
    echo "| tool | time s | × tar time | size MB | × tar size | peak RSS MiB | 2nd run s |"
    echo "|---|---|---|---|---|---|---|"
    row "tar + zstd -3 -T0" tar "$SIZE_tar"
    if [[ $MD_STATUS == run ]]; then
        row "maildump backup -o - > FILE" maildump "$SIZE_maildump"
        row "maildump backup -o FILE (fsync)" maildump_fsync "$SIZE_maildump"
    else
        echo "| maildump | skipped | | | | | |"
    fi
    row "restic (repo size)" restic "$SIZE_restic" restic2
    row "borg zstd,3 (repo size)" borg "$SIZE_borg" borg2
    echo
    echo "Alternating runs of tar+zstd and \`maildump backup -o - > FILE\` ($REPS each), wall"
    echo "time and CPU time (user + sys, all processes). On a shared VM, CPU time varies less"
    echo "than wall time; both tools keep both cores busy."
    echo
    echo "| tool | wall s, each run | CPU s, each run | median CPU s | × tar CPU |"
    echo "|---|---|---|---|---|"
    TAR_CPU_MED=$(median "${TAR_CPUS[@]}")
    echo "| tar + zstd -3 -T0 | ${TAR_TIMES[*]} | ${TAR_CPUS[*]} | $TAR_CPU_MED | 1.00 |"
    if [[ $MD_STATUS == run ]]; then
        MD_CPU_MED=$(median "${MD_CPUS[@]}")
        echo "| maildump | ${MD_TIMES[*]} | ${MD_CPUS[*]} | $MD_CPU_MED | $(ratio "$MD_CPU_MED" "$TAR_CPU_MED") |"
    fi
    echo
    echo "## One-message retrieval"
    echo
    echo "user \`$PICK_USER\`, INBOX, uid $PICK_UID, file #$PICK_N of ${#CUR_FILES[@]} in sorted cur/ ($PICK_BYTES bytes): \`$PICK_REL\`"
    echo
    echo "| tool | median ms | mean ± sd ms | × tar |"
    echo "|---|---|---|---|"
    echo "| tar --zstd -xO | ${LAT_MED[tar]} | ${LAT_MEAN[tar]} ± ${LAT_SD[tar]} | 1.00 |"
    if [[ $MD_STATUS == run ]]; then
        echo "| maildump cat | ${LAT_MED[maildump]} | ${LAT_MEAN[maildump]} ± ${LAT_SD[maildump]} | $(ratio "${LAT_MED[maildump]}" "${LAT_MED[tar]}") |"
    else
        echo "| maildump cat | skipped | | |"
    fi
    echo
    echo "maildump cat vs original file (cmp): $CAT_CMP"
    echo
    echo "## Commands"
    echo
    echo '```sh'
    echo "$RESTIC_ENV   # restic env"
    echo "$BORG_ENV   # borg env"
    printf '%s\n' "${COMMANDS[@]}"
    echo '```'
} > "$REPORT"

cat "$REPORT"
log "report written to $REPORT"
[[ $CAT_CMP != MISMATCH ]] || die "maildump cat output differs from $PICK_PATH"
