# Shared by bench/bench.sh and bench/bench-incremental.sh (sourced, not run): messages,
# arguments, the corpus (generated once, shared, never modified), the scratch directory,
# the maildump build, and small arithmetic helpers. The sourcing script sets ME, and
# WORK_DEFAULT before calling bench_setup.

die() { echo "$ME: error: $*" >&2; exit 1; }
log() { echo "$ME: $*" >&2; }
q() { printf '%q' "$1"; }
# secs T0_NS T1_NS: elapsed seconds with ms resolution.
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
git_desc() {
    local rev
    rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null) || { echo "repo has no commits"; return; }
    git -C "$REPO" diff --quiet HEAD 2>/dev/null && echo "repo $rev" || echo "repo $rev + uncommitted changes"
}

# bench_setup ARGS...: parse --quick/--shared/--help, set REPO, USERS, MSGS, MIN_BYTES,
# CORPUS, WORK, GEN, SEED, REPS, QUICK and SHARED, check that CORPUS and WORK stay out of
# the repository and out of each other, generate the corpus if absent (with --shared also
# the shared-attachments corpus derived from it, which CORPUS then names), and wipe and
# recreate WORK (only one a bench script made) with its times directory T.
bench_setup() {
    QUICK=0
    SHARED=${SHARED:-0}
    REPS=${REPS:-3}
    local arg
    for arg in "$@"; do
        case "$arg" in
            --quick) QUICK=1 ;;
            --shared) SHARED=1 ;;
            -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
            *) die "unknown argument: $arg (try --help)" ;;
        esac
    done
    [[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer"
    [[ $SHARED == [01] ]] || die "SHARED must be 0 or 1"
    cd "$(dirname "$0")/.."
    REPO=$(pwd -P)
    if [[ $QUICK == 1 ]]; then
        USERS=3 MSGS=600 MIN_BYTES=0
        CORPUS=${CORPUS:-/tmp/mdbench/corpus-quick}
    else
        USERS=12 MSGS=1700 MIN_BYTES=1000000000
        CORPUS=${CORPUS:-/tmp/mdbench/corpus}
    fi
    WORK=${WORK:-$WORK_DEFAULT}
    GEN=${GEN:-$REPO/../shared/tools/gen_maildir.py}
    SEED=1
    [[ -x /usr/bin/time ]] || die "missing /usr/bin/time (apt-get install -y time)"

    CORPUS=$(realpath -m "$CORPUS")
    WORK=$(realpath -m "$WORK")
    SHARED_CORPUS=$(realpath -m "${SHARED_CORPUS:-$CORPUS-shared}")
    local p
    for p in "$CORPUS" "$WORK" "$SHARED_CORPUS"; do
        case "$p/" in
            "$REPO"/*) die "$p is inside the repository $REPO" ;;
            /|//) die "refusing to use / as CORPUS, SHARED_CORPUS or WORK" ;;
        esac
        [[ $p == "$WORK" ]] && continue
        case "$WORK/" in "$p"/*) die "WORK must not be inside $p" ;; esac
        case "$p/" in "$WORK"/*) die "$p must not be inside WORK (WORK is wiped)" ;; esac
    done

    PARAMS="users=$USERS messages-per-user=$MSGS seed=$SEED"
    if [[ ! -d $CORPUS ]]; then
        [[ -f $GEN ]] || die "corpus generator not found: $GEN"
        log "generating corpus in $CORPUS ($PARAMS), this takes a while..."
        rm -rf "$CORPUS.partial"
        mkdir -p "$(dirname "$CORPUS")"
        nice -n 10 python3 "$GEN" --root "$CORPUS.partial" --users "$USERS" \
            --messages-per-user "$MSGS" --seed "$SEED" >&2
        mv "$CORPUS.partial" "$CORPUS"
        echo "$PARAMS" > "$CORPUS.params"
    elif [[ -f $CORPUS.params && $(cat "$CORPUS.params") != "$PARAMS" ]]; then
        log "warning: reusing $CORPUS generated with '$(cat "$CORPUS.params")', not '$PARAMS'"
    fi
    [[ $SHARED == 1 ]] && shared_corpus

    # Only wipe a directory a bench script created (marker file) or an empty one.
    if [[ -d $WORK ]]; then
        if [[ ! -e $WORK/.mdbench-work && -n $(ls -A "$WORK") ]]; then
            die "$WORK is not empty and was not created by a bench script; refusing to wipe it"
        fi
        find "$WORK" -mindepth 1 -delete
    fi
    mkdir -p "$WORK"
    touch "$WORK/.mdbench-work"
    T=$WORK/times
    mkdir -p "$T"
}

# shared_corpus: make CORPUS name the shared-attachments corpus SHARED_CORPUS: a copy of
# CORPUS where bench/share_attachments.py (seeded) delivered copies of messages with an
# attachment to other users, until they add SHARE_GROW % (default 50) to the message bytes,
# each to 1..SHARE_MAX_COPIES (default 5) users. Made if absent, reused if present.
shared_corpus() {
    local grow=${SHARE_GROW:-50} copies=${SHARE_MAX_COPIES:-5} params
    [[ $grow =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SHARE_GROW must be a number (percent)"
    [[ $copies =~ ^[1-9][0-9]*$ ]] || die "SHARE_MAX_COPIES must be a positive integer"
    params="$PARAMS; shared: seed=$SEED grow=$grow% max-copies=$copies"
    if [[ ! -d $SHARED_CORPUS ]]; then
        log "making the shared-attachments corpus $SHARED_CORPUS from $CORPUS"
        rm -rf "$SHARED_CORPUS.partial"
        cp -a "$CORPUS" "$SHARED_CORPUS.partial"
        nice -n 10 python3 "$REPO/bench/share_attachments.py" --root "$SHARED_CORPUS.partial" \
            --seed "$SEED" --grow "$grow" --max-copies "$copies" >&2
        mv "$SHARED_CORPUS.partial" "$SHARED_CORPUS"
        echo "$params" > "$SHARED_CORPUS.params"
    elif [[ -f $SHARED_CORPUS.params && $(cat "$SHARED_CORPUS.params") != "$params" ]]; then
        log "warning: reusing $SHARED_CORPUS made with '$(cat "$SHARED_CORPUS.params")', not '$params'"
    fi
    CORPUS=$SHARED_CORPUS
}

# build_maildump: set MAILDUMP to an absolute path, building the release binary unless
# MAILDUMP was given.
build_maildump() {
    if [[ -z ${MAILDUMP:-} ]]; then
        log "cargo build --release"
        cargo build --release >&2
        MAILDUMP=$REPO/target/release/maildump
    fi
    [[ -x $MAILDUMP ]] || die "maildump binary not executable: $MAILDUMP"
    MAILDUMP=$(realpath "$MAILDUMP")
}

# report_head TITLE [FAIL_LABEL]: the first lines of a report: title, the failed checks
# (array FAIL) under FAIL_LABEL, host and load average (LOAD_START, LOAD_END).
report_head() {
    echo "# $1 – $(date -Iseconds)"
    echo
    if [[ -n ${2:-} ]] && (( ${#FAIL[@]} > 0 )); then
        echo "> **$2**"
        for f in "${FAIL[@]}"; do echo "> - $f"; done
        echo
    fi
    echo "- host: $(uname -srm), nproc $(nproc), $(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
    echo "- loadavg at start: $LOAD_START, at end: $LOAD_END"
}

# latency NAME CMD: median, mean and standard deviation (ms) of 10 runs of CMD after 2
# warm-ups (hyperfine when installed), into LAT_MED[NAME], LAT_MEAN[NAME], LAT_SD[NAME];
# the command goes to COMMANDS. Needs the scratch directory T.
declare -A LAT_MED LAT_MEAN LAT_SD
latency() {
    local name=$1 cmd=$2 json=$T/lat-$1.json t0 t1 med mean sd
    COMMANDS+=("$cmd   # 10 runs after 2 warm-ups")
    log "latency [$name]: $cmd"
    if command -v hyperfine >/dev/null; then
        hyperfine --shell=bash --warmup 2 --runs 10 --style none \
            --export-json "$json" "$cmd" >&2
        python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
print("%.1f %.1f %.1f" % (r["median"] * 1e3, r["mean"] * 1e3, r["stddev"] * 1e3))' "$json" > "$T/lat-$name"
    else
        for _ in 1 2; do bash -c "$cmd"; done
        for _ in $(seq 10); do
            t0=$(date +%s%N); bash -c "$cmd"; t1=$(date +%s%N)
            echo $(( (t1 - t0) / 1000 ))
        done | sort -n | awk '{ v[NR] = $1 / 1000; s += v[NR] }
            END { m = s / NR; for (i = 1; i <= NR; i++) d += (v[i] - m) ^ 2
                  printf "%.1f %.1f %.1f\n", (v[5] + v[6]) / 2, m, sqrt(d / (NR - 1)) }' > "$T/lat-$name"
    fi
    read -r med mean sd < "$T/lat-$name"
    LAT_MED[$name]=$med LAT_MEAN[$name]=$mean LAT_SD[$name]=$sd
}

# uid_of UIDLIST BASENAME: UID for a Maildir file (base = name up to first ':').
# dovecot-uidlist v3: header line, then "<uid> [ext...] :<base>".
uid_of() {
    awk -v base="${2%%:*}" 'NR > 1 {
        i = index($0, " :")
        if (i > 0 && substr($0, i + 2) == base) { print $1; found = 1; exit }
    } END { if (!found) exit 1 }' "$1"
}

# pick_message ROOT: the message that one-message retrieval fetches: file #PICK_INDEX
# (default 1000; the middle one if there are fewer) of the first user's sorted INBOX cur/.
# Sets PICK_USER, PICK_FILE, PICK_PATH, PICK_REL (./USER/Maildir/cur/FILE), PICK_UID,
# PICK_BYTES, PICK_N and CUR_FILES.
pick_message() {
    local root=$1 cur
    PICK_INDEX=${PICK_INDEX:-1000}
    [[ $PICK_INDEX =~ ^[1-9][0-9]*$ ]] || die "PICK_INDEX must be a positive integer"
    PICK_USER=$(find "$root" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | LC_ALL=C sort | head -n1)
    cur=$root/$PICK_USER/Maildir/cur
    mapfile -t CUR_FILES < <(find "$cur" -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort)
    (( ${#CUR_FILES[@]} > 0 )) || die "no files in $cur"
    if (( ${#CUR_FILES[@]} >= PICK_INDEX )); then
        PICK_N=$PICK_INDEX
    else
        PICK_N=$(( (${#CUR_FILES[@]} + 1) / 2 ))
    fi
    PICK_FILE=${CUR_FILES[PICK_N - 1]}
    PICK_PATH=$cur/$PICK_FILE
    PICK_REL=./$PICK_USER/Maildir/cur/$PICK_FILE
    PICK_UID=$(uid_of "$root/$PICK_USER/Maildir/dovecot-uidlist" "$PICK_FILE") \
        || die "no UID for $PICK_FILE in $root/$PICK_USER/Maildir/dovecot-uidlist"
    PICK_BYTES=$(stat -c %s "$PICK_PATH")
    log "retrieval target: user $PICK_USER INBOX uid $PICK_UID file #$PICK_N of ${#CUR_FILES[@]} ($PICK_BYTES bytes)"
}

# repo_env: restic's and borg's repositories in WORK (exported RESTIC_* and BORG_*
# variables), and RESTIC_ENV / BORG_ENV: the same settings as words for a report.
repo_env() {
    export RESTIC_PASSWORD=mdbench RESTIC_REPOSITORY=$WORK/restic-repo RESTIC_CACHE_DIR=$WORK/restic-cache
    export BORG_REPO=$WORK/borg-repo BORG_BASE_DIR=$WORK/borg-base
    export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
    RESTIC_ENV="RESTIC_REPOSITORY=$(q "$RESTIC_REPOSITORY") RESTIC_PASSWORD=mdbench RESTIC_CACHE_DIR=$(q "$RESTIC_CACHE_DIR")"
    BORG_ENV="BORG_REPO=$(q "$BORG_REPO") BORG_BASE_DIR=$(q "$BORG_BASE_DIR") BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes"
}

# fresh FILE: remove the output a timed run is about to write, untimed, and sync. (zstd -f
# removes an existing output itself, but a shell's `> FILE` truncates it: on ext4 that frees
# its blocks inside the timed run (with discards on a `discard` mount) and, at close, makes
# the writer flush the whole new file (ext4's auto_da_alloc for truncated files), which
# measures the file system, not the tool.)
fresh() { rm -f "$1"; sync; }

# cpu_of FILE...: user+sys seconds summed over /usr/bin/time -f '%M %U %S' outputs.
cpu_of() { tail -qn1 "$@" | awk '{c += $2 + $3} END {printf "%.2f", c}'; }

# alternate_runs SRC TARZ MD_CMD MD_OUT: REPS alternating timed runs of
# `tar -C SRC -cf - . | zstd -T0 -3` into TARZ and of MD_CMD (a bash string that writes
# MD_OUT; empty: tar only), each after `fresh` of its output and `warm` (which the caller
# defines). Sets TAR_TIMES MD_TIMES (wall s), TAR_CPUS MD_CPUS (user+sys s, all
# processes), RSS[tar] (tar + zstd peaks) and RSS[maildump] (largest peak KiB), and MD_RC:
# maildump's exit code; the runs stop at its first failure (stderr in $T/maildump.err).
alternate_runs() {
    local src=$1 tarz=$2 md_cmd=$3 md_out=$4 rep t0 t1 r
    TAR_TIMES=(); MD_TIMES=(); TAR_CPUS=(); MD_CPUS=(); RSS[tar]=0; RSS[maildump]=0; MD_RC=0
    for ((rep = 1; rep <= REPS; rep++)); do
        fresh "$tarz"; warm
        log "running [tar] ($rep/$REPS): tar -C $src -cf - . | zstd -T0 -3 -q -f -o $tarz"
        t0=$(date +%s%N)
        bash -c "/usr/bin/time -f '%M %U %S' -o $(q "$T/tar.tar") tar -C $(q "$src") -cf - . \
             | /usr/bin/time -f '%M %U %S' -o $(q "$T/tar.zstd") zstd -T0 -3 -q -f -o $(q "$tarz")"
        t1=$(date +%s%N)
        TAR_TIMES+=("$(secs "$t0" "$t1")")
        TAR_CPUS+=("$(cpu_of "$T/tar.tar" "$T/tar.zstd")")
        r=$(( $(tail -n1 "$T/tar.tar" | cut -d' ' -f1) + $(tail -n1 "$T/tar.zstd" | cut -d' ' -f1) ))
        (( r > RSS[tar] )) && RSS[tar]=$r
        [[ -n $md_cmd ]] || continue
        fresh "$md_out"; warm
        log "running [maildump] ($rep/$REPS): $md_cmd"
        t0=$(date +%s%N)
        /usr/bin/time -f '%M %U %S' -o "$T/maildump" bash -c "$md_cmd 2> $(q "$T/maildump.err")" || MD_RC=$?
        t1=$(date +%s%N)
        (( MD_RC == 0 )) || { cat "$T/maildump.err" >&2; return 0; }
        MD_TIMES+=("$(secs "$t0" "$t1")")
        MD_CPUS+=("$(cpu_of "$T/maildump")")
        r=$(tail -n1 "$T/maildump" | cut -d' ' -f1)
        (( r > RSS[maildump] )) && RSS[maildump]=$r
    done
    return 0
}
