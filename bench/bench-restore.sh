#!/usr/bin/env bash
# maildump restore benchmark (issue 17): a full restore of the bench corpus's archive into
# an empty directory, against extracting a plain tar+zstd of the same tree followed by
# `sync`, and restic's restore (followed by `sync`) when restic is installed. This is a
# benchmark, not a test.
#
# Usage:
#   bench/bench-restore.sh [--quick]
#
#   --quick   small corpus (3 users x 600 messages) to smoke-test the script;
#             figures are meaningless at that size.
#
# Untimed preparation: `maildump backup -o WORK/a.mdump` of the corpus (with MAILDUMP),
# `tar -C CORPUS -cf - . | zstd -T0 -3 > WORK/a.tar.zst`, a restic repository holding one
# snapshot of the corpus. Then REPS rounds, each running every tool once, in turn:
#   tar        tar -I zstd -xf WORK/a.tar.zst -C OUT && sync
#   maildump   MAILDUMP restore WORK/a.mdump --location 'maildir:~/Maildir' --home OUT/%u
#              (durable when it returns: one syncfs per user before its root appears)
#   old        the same with MAILDUMP_OLD, when given (before/after in one invocation)
#   restic     restic restore latest --target OUT && sync
# Every run restores into an OUT of its own (WORK/out-TOOL-ROUND), and the trees are removed
# only after the last run: a run started right after removing the previous run's tree pays
# for that removal (ext4 without a journal skips recently freed inodes when it allocates
# one; bench/compare.sh says more), which made the order of the runs decide the figures.
# They need REPS x tools x the corpus's size. Before each run `sync` and one read of the
# tool's input (untimed), so every run starts with a warm input and a clean disk queue
# (drop_caches is not available on a shared VM). The report gives each run's wall time and CPU time
# (user + sys of all processes), their medians and the largest peak RSS. Every restored
# tree is checked once: the message files under cur/ and new/ (names and bytes) must be
# those of the corpus.
#
# Environment:
#   REPS         rounds (default 3)
#   CORPUS       corpus root (default /tmp/mdbench/corpus, with --quick
#                /tmp/mdbench/corpus-quick); generated if absent, never modified.
#   WORK         scratch dir (default /tmp/mdbench/work-restore); its contents are deleted
#                at the start of every run.
#   MAILDUMP     maildump binary (default target/release/maildump, built first).
#   MAILDUMP_OLD a second maildump binary to time the same way (e.g. the main branch's).
#   JOBS         --jobs for maildump restore (default: its own default).
#   SKIP_RESTIC  =1: no restic runs.
set -euo pipefail

ME=bench-restore.sh
WORK_DEFAULT=/tmp/mdbench/work-restore
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
bench_setup "$@"
build_maildump
MAILDUMP_OLD=${MAILDUMP_OLD:-}
[[ -z $MAILDUMP_OLD || -x $MAILDUMP_OLD ]] || die "MAILDUMP_OLD not executable: $MAILDUMP_OLD"
SKIP_RESTIC=${SKIP_RESTIC:-0}
command -v restic >/dev/null || SKIP_RESTIC=1
for t in tar zstd find sha256sum; do
    command -v "$t" >/dev/null || die "missing tool: $t"
done
JOBS_ARG=()
[[ -n ${JOBS:-} ]] && JOBS_ARG=(--jobs "$JOBS")

# @OUT@ in a command: the run's own output directory.
out_of() { echo "$WORK/out-$1-$2"; }
ARCHIVE=$WORK/a.mdump
TARZ=$WORK/a.tar.zst
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- preparation (untimed)
log "preparing: maildump archive, tar+zstd, restic repository (untimed)"
"$MAILDUMP" backup --location 'maildir:~/Maildir' --home "$CORPUS/%u" --all-users \
    -o "$ARCHIVE" --quiet
tar -C "$CORPUS" -cf - . | zstd -T0 -3 -q -o "$TARZ"
if [[ $SKIP_RESTIC != 1 ]]; then
    export RESTIC_PASSWORD=mdbench RESTIC_REPOSITORY=$WORK/restic-repo RESTIC_CACHE_DIR=$WORK/restic-cache
    restic init --quiet >&2
    # From inside the corpus, so that `restore --target OUT` gives OUT/<user>/... as tar.
    (cd "$CORPUS" && restic backup --quiet .) >&2
fi

# The message files (cur/ and new/) below $1, names and bytes, as one digest.
messages_digest() {
    (cd "$1" && find . -path '*/cur/*' -type f -o -path '*/new/*' -type f | LC_ALL=C sort \
        | tr '\n' '\0' | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}
WANT=$(messages_digest "$CORPUS")
NMSGS=$(find "$CORPUS" -path '*/cur/*' -type f -o -path '*/new/*' -type f | wc -l)
CORPUS_BYTES=$(du -sb "$CORPUS" | cut -f1)

declare -A CMD WALLS CPUS RSS CHECK
CMD[tar]="tar -I zstd -xf $(q "$TARZ") -C @OUT@ && sync"
CMD[maildump]="$(q "$MAILDUMP") restore $(q "$ARCHIVE") --location 'maildir:~/Maildir' --home @OUT@/%u --quiet ${JOBS_ARG[*]}"
TOOLS=(tar maildump)
if [[ -n $MAILDUMP_OLD ]]; then
    CMD[old]="$(q "$MAILDUMP_OLD") restore $(q "$ARCHIVE") --location 'maildir:~/Maildir' --home @OUT@/%u --quiet"
    TOOLS+=(old)
fi
if [[ $SKIP_RESTIC != 1 ]]; then
    CMD[restic]="restic restore latest --quiet --target @OUT@ && sync"
    TOOLS+=(restic)
fi
input_of() { case $1 in tar) echo "$TARZ" ;; restic) echo "$WORK/restic-repo" ;; *) echo "$ARCHIVE" ;; esac; }

for ((rep = 1; rep <= REPS; rep++)); do
    for tool in "${TOOLS[@]}"; do
        OUT=$(out_of "$tool" "$rep")
        [[ -d $OUT ]] && find "$OUT" -mindepth 1 -delete
        mkdir -p "$OUT"
        sync
        find "$(input_of "$tool")" -type f -exec cat {} + > /dev/null
        cmd=${CMD[$tool]//@OUT@/$(q "$OUT")}
        log "running [$tool] ($rep/$REPS): $cmd"
        t0=$(date +%s%N)
        /usr/bin/time -f '%M %U %S' -o "$T/$tool" bash -c "$cmd" \
            || die "$tool failed (exit $?)"
        t1=$(date +%s%N)
        WALLS[$tool]+="$(secs "$t0" "$t1") "
        CPUS[$tool]+="$(cpu_of "$T/$tool") "
        r=$(tail -n1 "$T/$tool" | cut -d' ' -f1)
        (( r > ${RSS[$tool]:-0} )) && RSS[$tool]=$r
        if [[ -z ${CHECK[$tool]:-} ]]; then
            got=$(messages_digest "$OUT")
            if [[ $got == "$WANT" ]]; then CHECK[$tool]=same; else CHECK[$tool]=DIFFERENT; fi
        fi
    done
done
for ((rep = 1; rep <= REPS; rep++)); do
    for tool in "${TOOLS[@]}"; do
        OUT=$(out_of "$tool" "$rep")
        [[ ! -d $OUT ]] || find "$OUT" -mindepth 1 -delete
        [[ ! -d $OUT ]] || rmdir "$OUT"
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
REPORT=$REPO/bench/results-restore-latest.md
{
    report_head "maildump restore benchmark"
    echo "- corpus: \`$CORPUS\`$( [[ $QUICK == 1 ]] && echo ' (--quick)'), $CORPUS_BYTES bytes, $NMSGS messages; archive $(stat -c %s "$ARCHIVE") bytes, tar.zst $(stat -c %s "$TARZ") bytes"
    echo "- maildump: \`$MAILDUMP\` ($(git_desc))${MAILDUMP_OLD:+; old: \`$MAILDUMP_OLD\`}"
    echo "- $REPS rounds, tools alternating; wall and CPU (user+sys) seconds; peak RSS MiB"
    echo
    echo "| tool | median wall s | × tar | median CPU s | peak RSS MiB | wall s, each run | CPU s, each run | messages |"
    echo "|---|---|---|---|---|---|---|---|"
    read -ra tw <<< "${WALLS[tar]}"
    TAR_MED=$(median "${tw[@]}")
    for tool in "${TOOLS[@]}"; do
        read -ra w <<< "${WALLS[$tool]}"
        read -ra c <<< "${CPUS[$tool]}"
        med=$(median "${w[@]}")
        printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$tool" "$med" "$(ratio "$med" "$TAR_MED")" \
            "$(median "${c[@]}")" "$(( RSS[$tool] / 1024 ))" "${w[*]}" "${c[*]}" "${CHECK[$tool]}"
    done
    echo
    echo '```sh'
    for tool in "${TOOLS[@]}"; do echo "${CMD[$tool]//@OUT@/OUT}"; done
    echo '```'
} > "$REPORT"
cat "$REPORT"
log "report written to $REPORT"
for tool in "${TOOLS[@]}"; do
    [[ ${CHECK[$tool]} == same ]] || die "$tool restored other message files than the corpus holds"
done
