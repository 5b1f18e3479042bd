#!/usr/bin/env bash
# maildump side by side with tar+zstd, restic and borg (issue 17): full backup (wall, CPU,
# size, peak RSS), no-change second run next to a bare walk, one message out, and full
# restore into an empty directory with a check of every restored message file, then the
# issue's targets as met / not met. This is a benchmark, not a test.
#
# Usage:
#   bench/compare.sh [--quick] [--shared]
#
#   --quick   small corpus (3 users x 600 messages) to smoke-test the script;
#             figures are meaningless at that size.
#   --shared  the corpus with more shared attachments: a copy of the corpus where
#             bench/share_attachments.py (seeded) delivered copies of messages with an
#             attachment to 1..SHARE_MAX_COPIES other users each, until they add SHARE_GROW %
#             to the message bytes (same message, own trace headers: the attachment parts
#             are byte-identical). Made once, beside the corpus, and reused.
#
# Every measurement alternates: each of REPS rounds runs every tool once, in turn, each run
# after removing its output (untimed), `sync` and a re-read of its input (the corpus, the
# archive or the repository), so all read from a warm page cache and none pays for another's
# writeback. The report gives medians and every run's figures.
#   1. full backup: tar -cf - . | zstd -T0 -3; maildump backup -o - > FILE; restic backup
#      (fresh repository); borg create --compression zstd,3 (fresh repository);
#   2. no change: find ROOT -type f | wc -l (bare walk); the same walk with a stat of every
#      file; tar --listed-incremental (level 1) | zstd; maildump backup --base FULL -o INC;
#      another restic backup / borg create of the same tree (2nd, 3rd, ... snapshot);
#   3. one message (user0's INBOX, file #PICK_INDEX of cur/): tar --zstd -xOf; maildump cat;
#      restic dump; borg extract --stdout: each output compared with the corpus file (cmp),
#      then LAT_RUNS alternating rounds after 2 warm-up rounds;
#   4. full restore into an empty directory: tar --zstd -xf && sync -f; maildump restore (it
#      makes the files durable itself); restic restore && sync -f; borg extract && sync -f;
#      after every run, the SHA-256 of every message file (cur/, new/) with its path must
#      equal the corpus's. (`sync -f DIR` syncs the file system the tree is on, as
#      maildump's `syncfs` does, and not the writeback of the rest of the machine.)
#
# Environment:
#   REPS         rounds of every measurement but one-message retrieval (default 3)
#   LAT_RUNS     timed rounds of one-message retrieval (default 11)
#   TOOLS        tools to run beside tar+zstd, the baseline (default "maildump restic borg")
#   CORPUS       corpus root (default /tmp/mdbench/corpus, with --quick
#                /tmp/mdbench/corpus-quick); generated if absent, reused if present, never
#                modified. Must be outside the repository.
#   SHARED_CORPUS  the --shared corpus (default CORPUS-shared); SHARE_GROW (default 50) and
#                SHARE_MAX_COPIES (default 5) are share_attachments.py's --grow and
#                --max-copies
#   WORK         scratch dir (default /tmp/mdbench/work-compare): archives, repositories,
#                restored trees. Its contents are deleted at the start of every run.
#   MAILDUMP     maildump binary (default target/release/maildump, built with
#                `cargo build --release` first; no build if MAILDUMP is set)
#   GEN          corpus generator (default ../shared/tools/gen_maildir.py beside the repo)
#   PICK_INDEX   which file of USER/Maildir/cur (sorted) to retrieve (default 1000; the
#                middle file if cur has fewer files)
#
# Output: a Markdown report on stdout, also written to bench/results-latest.md (gitignored).
# Wall time: bash's EPOCHREALTIME around the command; CPU time: user + sys of the whole
# process tree and peak RSS: the largest process of the tree, both from /usr/bin/time
# (getrusage of the waited-for children). Exit status 1 if a tool fails or a check fails
# (retrieved message or restored tree not byte-identical); targets not met do not change it.
set -euo pipefail

ME=compare.sh
WORK_DEFAULT=/tmp/mdbench/work-compare
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
bench_setup "$@"
LAT_RUNS=${LAT_RUNS:-11}
[[ $LAT_RUNS =~ ^[1-9][0-9]*$ ]] || die "LAT_RUNS must be a positive integer"
ALL_TOOLS=(tar)
for t in ${TOOLS:-maildump restic borg}; do
    case "$t" in
        maildump|restic|borg) [[ " ${ALL_TOOLS[*]} " == *" $t "* ]] || ALL_TOOLS+=("$t") ;;
        tar) ;;
        *) die "TOOLS: unknown tool '$t' (maildump, restic, borg)" ;;
    esac
done
for t in "${ALL_TOOLS[@]}" zstd find du awk cmp sha256sum sort xargs sync; do
    [[ $t == maildump ]] || command -v "$t" >/dev/null || die "missing tool: $t"
done
has() { [[ " ${ALL_TOOLS[*]} " == *" $1 "* && -z ${BROKEN[$1]:-} ]]; }
declare -A BROKEN
has maildump && build_maildump
ROOT=$CORPUS
export LC_NUMERIC=C

TARZ=$WORK/full.tar.zst
TARINC=$WORK/inc.tar.zst
SNAR0=$WORK/full.snar
SNAR=$WORK/inc.snar
MDUMP=$WORK/full.mdump
MDINC=$WORK/inc.mdump
repo_env
MD_LOC="--location 'maildir:~/Maildir' --home $(q "$ROOT/%u") --all-users"

COMMANDS=()
FAIL=()
# Per measurement NAME: WALL[NAME] and CPU[NAME] hold every run's seconds (space-separated),
# RSS[NAME] the largest peak RSS (KiB), CMD_OF[NAME] the command.
declare -A WALL CPU RSS CMD_OF
size() { du -sb "$1" | cut -f1; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# warm_tree DIR: no writeback pending, every file of DIR in the page cache.
warm_tree() { sync; find "$1" -type f -print0 | xargs -0 -r cat > /dev/null; }
wipe_dir() { [[ -n $1 && $1 == "$WORK"/* ]] || die "wipe_dir: $1 not in WORK"; rm -rf "$1"; }

# run1 NAME CMD: one timed run of CMD (a bash string); appends to WALL[NAME] and CPU[NAME]
# and keeps the largest RSS[NAME]. A failure is named in FAIL and returns 1.
run1() {
    local name=$1 cmd=$2 t0 t1 rc=0 r
    [[ -n ${CMD_OF[$name]:-} ]] || CMD_OF[$name]=$cmd
    log "running [$name] ($rep/$REPS): $cmd"
    t0=$EPOCHREALTIME
    /usr/bin/time -f '%M %U %S' -o "$T/$name.time" bash -c "$cmd" 2> "$T/$name.err" || rc=$?
    t1=$EPOCHREALTIME
    if (( rc != 0 )); then
        cat "$T/$name.err" >&2
        FAIL+=("[$name] exited $rc: $(tail -n2 "$T/$name.err" | tr '\n' ' ')")
        return 1
    fi
    [[ ! -s $T/$name.err ]] || { log "[$name] said on stderr:"; cat "$T/$name.err" >&2; }
    WALL[$name]+="$(elapsed "$t0" "$t1") "
    CPU[$name]+="$(cpu_of "$T/$name.time") "
    r=$(tail -n1 "$T/$name.time" | cut -d' ' -f1)
    (( r > ${RSS[$name]:-0} )) && RSS[$name]=$r
    return 0
}
# med NAME / cpu NAME: median wall / CPU seconds of NAME's runs ("n/a" if none); the lists
# are split into words on purpose.
# shellcheck disable=SC2086
med() { [[ -n ${WALL[$1]:-} ]] && median ${WALL[$1]} || echo n/a; }
# shellcheck disable=SC2086
cpu() { [[ -n ${CPU[$1]:-} ]] && median ${CPU[$1]} || echo n/a; }

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
warm_tree "$ROOT"
CORPUS_BYTES=$(size "$ROOT")
NFILES=$(find "$ROOT" -type f | wc -l)
NMSGS=$(find "$ROOT" -type f \( -path '*/cur/*' -o -path '*/new/*' \) | wc -l)
if (( CORPUS_BYTES < MIN_BYTES )); then
    log "warning: corpus is only $CORPUS_BYTES bytes (< $MIN_BYTES)"
fi

# ---------------------------------------------------------------- 1. full backup
full_prepare() {
    case $1 in
        tar) fresh "$TARZ" ;;
        maildump) fresh "$MDUMP" ;;
        restic) wipe_dir "$RESTIC_REPOSITORY"; wipe_dir "$RESTIC_CACHE_DIR"; restic init --quiet >&2 ;;
        borg) wipe_dir "$BORG_REPO"; wipe_dir "$BORG_BASE_DIR"; borg init -e none "$BORG_REPO" >&2 ;;
    esac
}
full_cmd() {
    case $1 in
        tar) echo "tar -C $(q "$ROOT") -cf - . | zstd -T0 -3 -q -o $(q "$TARZ")" ;;
        maildump) echo "$(q "$MAILDUMP") backup $MD_LOC -o - --quiet > $(q "$MDUMP")" ;;
        restic) echo "restic backup --quiet $(q "$ROOT")" ;;
        borg) echo "borg create --compression zstd,3 ::full $(q "$ROOT")" ;;
    esac
}
COMMANDS+=("$RESTIC_ENV restic init --quiet   # untimed, before every full backup" \
    "$BORG_ENV borg init -e none $(q "$BORG_REPO")   # untimed, before every full backup")
declare -A SIZE
for ((rep = 1; rep <= REPS; rep++)); do
    for t in "${ALL_TOOLS[@]}"; do
        has "$t" || continue
        full_prepare "$t"
        warm_tree "$ROOT"
        run1 "full_$t" "$(full_cmd "$t")" || BROKEN[$t]=1
    done
done
has tar || die "tar+zstd, the baseline, failed: ${FAIL[*]}"
SIZE[tar]=$(size "$TARZ")
has maildump && SIZE[maildump]=$(size "$MDUMP")
has restic && SIZE[restic]=$(size "$RESTIC_REPOSITORY")
has borg && SIZE[borg]=$(size "$BORG_REPO")

# ---------------------------------------------------------------- 2. no change
# tar's level 0 snapshot file is written untimed with -f /dev/null (GNU tar then reads no
# file contents); each level 1 run starts from a copy of it.
tar -C "$ROOT" --listed-incremental="$SNAR0" -cf /dev/null .
COMMANDS+=("tar -C $(q "$ROOT") --listed-incremental=$(q "$SNAR0") -cf /dev/null .   # untimed; cp to $(q "$SNAR") before each run")
nochange_prepare() {
    case $1 in
        tar) fresh "$TARINC"; cp "$SNAR0" "$SNAR" ;;
        maildump) fresh "$MDINC" ;;
    esac
}
# shellcheck disable=SC2028 # the \n is find's -printf's
nochange_cmd() {
    case $1 in
        walk) echo "find $(q "$ROOT") -type f | wc -l > /dev/null" ;;
        walkstat) echo "find $(q "$ROOT") -type f -printf '%i %s %T@ %C@\n' | wc -l > /dev/null" ;;
        tar) echo "tar -C $(q "$ROOT") --listed-incremental=$(q "$SNAR") -cf - . | zstd -T0 -3 -q -o $(q "$TARINC")" ;;
        maildump) echo "$(q "$MAILDUMP") backup $MD_LOC --base $(q "$MDUMP") -o $(q "$MDINC") --quiet" ;;
        restic) echo "restic backup --quiet $(q "$ROOT")" ;;
        borg) echo "borg create --compression zstd,3 ::nochange$rep $(q "$ROOT")" ;;
    esac
}
has restic && SIZE[restic_before]=$(size "$RESTIC_REPOSITORY")
has borg && SIZE[borg_before]=$(size "$BORG_REPO")
for ((rep = 1; rep <= REPS; rep++)); do
    for t in walk walkstat "${ALL_TOOLS[@]}"; do
        [[ $t == walk* ]] || has "$t" || continue
        nochange_prepare "$t"
        warm_tree "$ROOT"
        run1 "nochange_$t" "$(nochange_cmd "$t")" || BROKEN[$t]=1
    done
done
has tar && SIZE[tar_inc]=$(size "$TARINC")
has maildump && SIZE[maildump_inc]=$(size "$MDINC")
has restic && SIZE[restic_inc]=$(( ($(size "$RESTIC_REPOSITORY") - SIZE[restic_before]) / REPS ))
has borg && SIZE[borg_inc]=$(( ($(size "$BORG_REPO") - SIZE[borg_before]) / REPS ))

# ---------------------------------------------------------------- 3. one message
pick_message "$ROOT"
PICK_ABS=$ROOT/${PICK_REL#./}
cat_cmd() {
    case $1 in
        tar) echo "tar --zstd -xOf $(q "$TARZ") $(q "$PICK_REL")" ;;
        maildump) echo "$(q "$MAILDUMP") cat $(q "$MDUMP") --user $(q "$PICK_USER") --mailbox INBOX --uid $PICK_UID" ;;
        restic) echo "restic dump --quiet latest $(q "$PICK_ABS")" ;;
        borg) echo "borg extract --stdout ::full $(q "${PICK_ABS#/}")" ;;
    esac
}
# First, untimed but under /usr/bin/time (peak RSS), each tool's output against the file.
declare -A CAT_OK LAT
for t in "${ALL_TOOLS[@]}"; do
    has "$t" || continue
    CMD_OF[cat_$t]="$(cat_cmd "$t") > /dev/null"
    if /usr/bin/time -f '%M %U %S' -o "$T/cat_$t.time" bash -c "$(cat_cmd "$t")" 2> "$T/cat_$t.err" \
            | cmp -s - "$PICK_PATH"; then
        CAT_OK[$t]="identical ($PICK_BYTES bytes)"
        RSS[cat_$t]=$(tail -n1 "$T/cat_$t.time" | cut -d' ' -f1)
    else
        CAT_OK[$t]="**differs or failed**"
        cat "$T/cat_$t.err" >&2
        FAIL+=("[cat_$t] output differs from $PICK_PATH or the command failed $(tail -n2 "$T/cat_$t.err" | tr '\n' ' ')")
    fi
done
# Then 2 warm-up rounds and LAT_RUNS timed rounds, every tool once per round.
for ((round = -1; round <= LAT_RUNS; round++)); do
    for t in "${ALL_TOOLS[@]}"; do
        [[ ${CAT_OK[$t]:-} == identical* ]] || continue
        t0=$EPOCHREALTIME
        eval "${CMD_OF[cat_$t]}" || { FAIL+=("[cat_$t] failed in round $round"); CAT_OK[$t]="**failed**"; }
        t1=$EPOCHREALTIME
        (( round > 0 )) && LAT[$t]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) * 1000 }') "
    done
done
log "one-message retrieval: ${LAT_RUNS} rounds done"

# ---------------------------------------------------------------- 4. full restore
# manifest DIR: "SHA-256  ./path" of every message file (cur/, new/) below DIR, sorted.
manifest() {
    (cd "$1" && find . -type f \( -path '*/cur/*' -o -path '*/new/*' \) -print0 \
        | LC_ALL=C sort -z | xargs -0 -r sha256sum)
}
# Every run restores into a directory of its own, and the restored trees are removed only
# after the last run: removing a tree of 20,000 files just before a run makes that run pay
# for it. ext4 without a journal (this project's VM) skips inodes freed in the last 5-35 s
# when it allocates one, at a buffer lookup each, and new directories land in the block
# groups the removal just emptied: a restore started right after removing the previous
# run's tree spent up to 27 s of system time allocating inodes, and which tool paid how
# much depended on the order of the runs. The trees need REPS x tools x the corpus's size.
dest_of() { echo "$WORK/restore-$1-$2"; }
# the corpus below DEST: restic and borg restore the absolute path they backed up
tree_of() { case $1 in restic|borg) echo "$(dest_of "$1" "$2")$ROOT" ;; *) dest_of "$1" "$2" ;; esac; }
restore_prepare() {
    local dest
    dest=$(dest_of "$1" "$2")
    [[ ! -e $dest ]] || wipe_dir "$dest"
    mkdir -p "$dest"
    case $1 in
        tar) warm_tree "$TARZ" ;;
        maildump) warm_tree "$MDUMP" ;;
        restic) warm_tree "$RESTIC_REPOSITORY" ;;
        borg) warm_tree "$BORG_REPO" ;;
    esac
}
restore_cmd() {
    local dest
    dest=$(q "$(dest_of "$1" "$2")")
    case $1 in
        tar) echo "tar --zstd -xf $(q "$TARZ") -C $dest && sync -f $dest" ;;
        maildump) echo "$(q "$MAILDUMP") restore $(q "$MDUMP") --location 'maildir:~/Maildir' --home $dest/%u --quiet" ;;
        restic) echo "restic restore --quiet latest --target $dest && sync -f $dest" ;;
        borg) echo "cd $dest && borg extract ::full && sync -f ." ;;
    esac
}
NTREES=0
for t in "${ALL_TOOLS[@]}"; do has "$t" && NTREES=$((NTREES + REPS)); done
NEED_KB=$(( $(du -sk "$ROOT" | cut -f1) * NTREES * 11 / 10 ))
FREE_KB=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
(( FREE_KB > NEED_KB )) || die "the restored trees need $((NEED_KB / 1048576)) GiB in $WORK ($NTREES trees), $((FREE_KB / 1048576)) GiB free"
log "checksums of the corpus's message files (untimed)"
manifest "$ROOT" > "$T/manifest.corpus"
NMANIFEST=$(wc -l < "$T/manifest.corpus")
declare -A TREE_OK
for ((rep = 1; rep <= REPS; rep++)); do
    for t in "${ALL_TOOLS[@]}"; do
        has "$t" || continue
        restore_prepare "$t" "$rep"
        if run1 "restore_$t" "$(restore_cmd "$t" "$rep")"; then
            manifest "$(tree_of "$t" "$rep")" > "$T/manifest.$t"
            if cmp -s "$T/manifest.corpus" "$T/manifest.$t"; then
                [[ -n ${TREE_OK[$t]:-} ]] || TREE_OK[$t]="identical"
            else
                diff "$T/manifest.corpus" "$T/manifest.$t" > "$T/manifest.$t.diff" || true
                TREE_OK[$t]="**differs** in run $rep: $(grep -c '^<' "$T/manifest.$t.diff") corpus lines missing, $(grep -c '^>' "$T/manifest.$t.diff") other"
                FAIL+=("[restore_$t] restored message files differ from the corpus (run $rep, $T/manifest.$t.diff)")
            fi
        else
            BROKEN[$t]=1
            TREE_OK[$t]="**failed**"
        fi
    done
done
for ((rep = 1; rep <= REPS; rep++)); do
    for t in "${ALL_TOOLS[@]}"; do
        [[ ! -e $(dest_of "$t" "$rep") ]] || wipe_dir "$(dest_of "$t" "$rep")"
    done
done

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- 5. report
trim() { echo "${1% }"; }
# rat A B: A / B with 2 decimals, n/a unless both are numbers.
rat() { [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] && ratio "$1" "$2" || echo n/a; }
mb()  { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
mib() { [[ -n ${1:-} ]] && awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }' || echo n/a; }
# check A OP B: "**met**" if A OP B holds (OP is <= or <), "**not met**", or "n/a".
check() {
    [[ $1 =~ ^[0-9.]+$ && $3 =~ ^[0-9.]+$ ]] || { echo n/a; return; }
    awk -v a="$1" -v b="$3" -v op="$2" \
        'BEGIN { ok = (op == "<") ? a < b : a <= b; print ok ? "**met**" : "**not met**" }'
}
label() { case $1 in tar) echo "tar + zstd -3 -T0" ;; borg) echo "borg, zstd,3" ;; *) echo "$1" ;; esac; }
# shellcheck disable=SC2086
lat_med() { [[ -n ${LAT[$1]:-} ]] && median ${LAT[$1]} || echo n/a; }

# restored CMD...: CMD's verdict, or "**not met**" if maildump's restored files differed.
restored() {
    if [[ ${TREE_OK[maildump]:-identical} == identical ]]; then "$@"; else echo "**not met** (restore check failed)"; fi
}

report_targets() {
    local full_r size_r md_rss=0 n r
    full_r=$(rat "$(med full_maildump)" "$(med full_tar)")
    size_r=$(rat "${SIZE[maildump]:-}" "${SIZE[tar]}")
    for n in full_maildump nochange_maildump restore_maildump cat_maildump; do
        r=${RSS[$n]:-0}
        (( r > md_rss )) && md_rss=$r
    done
    (( md_rss > 0 )) || md_rss=
    echo "## Targets (issue 17)"
    echo
    echo "| target | measured | |"
    echo "|---|---|---|"
    echo "| full backup ≤ 0.8× tar+zstd's time | $full_r× ($(med full_maildump) s against $(med full_tar) s; CPU $(rat "$(cpu full_maildump)" "$(cpu full_tar)")×) | $(check "$full_r" "<=" 0.8) |"
    echo "| size ≤ 0.85× tar+zstd's | $size_r× ($(mb "${SIZE[maildump]:-0}") MB against $(mb "${SIZE[tar]}") MB) | $(check "$size_r" "<=" 0.85) |"
    echo "| size ≤ borg's | $( [[ -n ${SIZE[borg]:-} ]] && echo "$(rat "${SIZE[maildump]:-}" "${SIZE[borg]}")× borg's ($(mb "${SIZE[borg]}") MB)" || echo "borg not run") | $(check "${SIZE[maildump]:-}" "<=" "${SIZE[borg]:-}") |"
    echo "| \`cat\` ≤ 10 ms | $(lat_med maildump) ms (median of $LAT_RUNS) | $(check "$(lat_med maildump)" "<=" 10) |"
    echo "| full restore ≤ \`tar -x && sync\` | $(med restore_maildump) s against $(med restore_tar) s ($(rat "$(med restore_maildump)" "$(med restore_tar)")×) | $(restored check "$(med restore_maildump)" "<=" "$(med restore_tar)") |"
    echo "| full restore faster than restic's | $(med restore_maildump) s against $(med restore_restic) s ($(rat "$(med restore_maildump)" "$(med restore_restic)")×) | $(restored check "$(med restore_maildump)" "<" "$(med restore_restic)") |"
    echo "| no-change incremental ≤ 2× the bare walk | $(rat "$(med nochange_maildump)" "$(med nochange_walk)")× ($(med nochange_maildump) s against $(med nochange_walk) s) | $(check "$(rat "$(med nochange_maildump)" "$(med nochange_walk)")" "<=" 2) |"
    echo "| peak RSS ≤ 256 MiB | $(mib "$md_rss") MiB (largest of maildump's backup, incremental, cat and restore) | $(check "${md_rss:-}" "<=" 262144) |"
    echo
    echo "Ratios of medians from this one invocation."
}

report_full() {
    local t
    echo "## Full backup"
    echo
    echo "Median of $REPS alternating runs; CPU = user + sys of all processes; sizes in MB = 10^6"
    echo "bytes (restic, borg: the repository); peak RSS of the largest process."
    echo
    echo "| tool | wall s | × tar | CPU s | × tar CPU | size MB | × tar size | peak RSS MiB |"
    echo "|---|---|---|---|---|---|---|---|"
    for t in "${ALL_TOOLS[@]}"; do
        echo "| $(label "$t") | $(med "full_$t") | $(rat "$(med "full_$t")" "$(med full_tar)") | $(cpu "full_$t") | $(rat "$(cpu "full_$t")" "$(cpu full_tar)") | $(mb "${SIZE[$t]:-0}") | $(rat "${SIZE[$t]:-}" "${SIZE[tar]}") | $(mib "${RSS[full_$t]:-}") |"
    done
    echo
    echo "maildump writes to stdout redirected to a file, as zstd writes its file: neither fsyncs."
    echo "restic and borg fsync their repositories."
}

report_nochange() {
    local t n label
    echo "## No-change second run"
    echo
    echo "The same tree again, median of $REPS alternating runs; growth: the incremental's size"
    echo "(tar, maildump) or the repository's growth per run (restic, borg)."
    echo
    echo "| what | wall s | × walk | CPU s | growth MB | peak RSS MiB |"
    echo "|---|---|---|---|---|---|"
    echo "| \`find ROOT -type f \| wc -l\` (bare walk) | $(med nochange_walk) | 1.00 | $(cpu nochange_walk) | – | – |"
    echo "| the same walk with a stat of every file | $(med nochange_walkstat) | $(rat "$(med nochange_walkstat)" "$(med nochange_walk)") | $(cpu nochange_walkstat) | – | – |"
    for t in "${ALL_TOOLS[@]}"; do
        n=nochange_$t
        case $t in
            tar) label='tar --listed-incremental (level 1) \| zstd' ;;
            maildump) label="maildump backup --base FULL -o INC" ;;
            restic) label="restic backup (2nd+ snapshot)" ;;
            borg) label="borg create (2nd+ archive)" ;;
        esac
        echo "| $label | $(med "$n") | $(rat "$(med "$n")" "$(med nochange_walk)") | $(cpu "$n") | $( [[ -n ${SIZE[${t}_inc]:-} ]] && mb "${SIZE[${t}_inc]}" || echo n/a) | $(mib "${RSS[$n]:-}") |"
    done
}

# range "LIST": "min–max" of a space-separated list of numbers, n/a if empty.
range() {
    [[ -n $1 ]] || { echo n/a; return; }
    tr ' ' '\n' <<< "$1" | grep . | sort -g | awk 'NR == 1 { a = $1 } END { print a "–" $1 }'
}

report_cat() {
    local t
    echo "## One message"
    echo
    echo "user \`$PICK_USER\`, INBOX, uid $PICK_UID, file #$PICK_N of ${#CUR_FILES[@]} in sorted cur/ ($PICK_BYTES bytes):"
    echo "\`$PICK_REL\`. $LAT_RUNS alternating rounds after 2 warm-up rounds."
    echo
    echo "| tool | median ms | min–max ms | × tar | output vs the corpus file | peak RSS MiB |"
    echo "|---|---|---|---|---|---|"
    for t in "${ALL_TOOLS[@]}"; do
        echo "| $(label "$t") | $(lat_med "$t") | $(range "${LAT[$t]:-}") | $(rat "$(lat_med "$t")" "$(lat_med tar)") | ${CAT_OK[$t]:-n/a} | $(mib "${RSS[cat_$t]:-}") |"
    done
}

report_restore() {
    local t
    echo "## Full restore"
    echo
    echo "Into an empty directory, median of $REPS alternating runs, each after a re-read of the"
    echo "archive or repository. Check: path and SHA-256 of each of the corpus's $NMANIFEST message"
    echo "files (cur/, new/) against the restored tree's, after every run."
    echo
    echo "| tool | wall s | × tar | CPU s | × tar CPU | peak RSS MiB | restored message files |"
    echo "|---|---|---|---|---|---|---|"
    for t in "${ALL_TOOLS[@]}"; do
        echo "| $(label "$t") | $(med "restore_$t") | $(rat "$(med "restore_$t")" "$(med restore_tar)") | $(cpu "restore_$t") | $(rat "$(cpu "restore_$t")" "$(cpu restore_tar)") | $(mib "${RSS[restore_$t]:-}") | ${TREE_OK[$t]:-n/a} |"
    done
}

# shellcheck disable=SC2016 # the backquotes are Markdown's
report_runs() {
    local n
    echo "## Every run"
    echo
    echo "| measurement | wall s, each run | CPU s, each run | command |"
    echo "|---|---|---|---|"
    for n in $(printf '%s\n' "${!CMD_OF[@]}" | LC_ALL=C sort); do
        [[ $n == cat_* ]] && continue
        printf '| %s | %s | %s | `%s` |\n' "$n" "$(trim "${WALL[$n]:-failed}")" "$(trim "${CPU[$n]:-}")" "${CMD_OF[$n]//|/\\|}"
    done
    for t in "${ALL_TOOLS[@]}"; do
        [[ -n ${LAT[$t]:-} ]] || continue
        printf '| cat_%s (ms) | %s | | `%s` |\n' "$t" "$(trim "${LAT[$t]}")" "${CMD_OF[cat_$t]//|/\\|}"
    done
}

REPORT=$REPO/bench/results-latest.md
{
    report_head "maildump side by side (bench/compare.sh)" "CHECK FAILED"
    echo "- corpus: \`$ROOT\`$( [[ $QUICK == 1 ]] && echo ' (--quick)')$( [[ $SHARED == 1 ]] && echo ' (--shared)'), $(mb "$CORPUS_BYTES") MB (du -sb $CORPUS_BYTES), $NFILES files ($NMSGS messages in cur/new)"
    echo "- corpus params: $( [[ -f $CORPUS.params ]] && cat "$CORPUS.params" || echo unknown)"
    echo "- maildump: $(has maildump || [[ -n ${BROKEN[maildump]:-} ]] && echo "\`$MAILDUMP\` ($(git_desc))" || echo "not run")"
    echo "- versions: $(tar --version | head -n1); zstd $(zstd -V | grep -o 'v[0-9.]*' | head -n1); $(restic version | cut -d' ' -f1-2); $(borg --version)"
    echo "- REPS=$REPS, LAT_RUNS=$LAT_RUNS; every run after \`sync\` and a re-read of its input; the whole script took $(( SECONDS / 60 )) min $(( SECONDS % 60 )) s"
    echo
    report_targets
    echo
    report_full
    echo
    report_nochange
    echo
    report_cat
    echo
    report_restore
    echo
    report_runs
    echo
    echo "Untimed steps and the environment of restic and borg:"
    echo
    for c in "${COMMANDS[@]}" "$RESTIC_ENV" "$BORG_ENV"; do echo "- \`$c\`"; done
} > "$REPORT"

cat "$REPORT"
log "report written to $REPORT"
if (( ${#FAIL[@]} > 0 )); then
    for f in "${FAIL[@]}"; do log "CHECK FAILED: $f"; done
    exit 1
fi
