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

# bench_setup ARGS...: parse --quick/--help, set REPO, USERS, MSGS, MIN_BYTES, CORPUS,
# WORK, GEN, SEED, REPS and QUICK, check that CORPUS and WORK stay out of the repository
# and out of each other, generate the corpus if absent, and wipe and recreate WORK (only
# one a bench script made) with its times directory T.
bench_setup() {
    QUICK=0
    REPS=${REPS:-3}
    local arg
    for arg in "$@"; do
        case "$arg" in
            --quick) QUICK=1 ;;
            -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
            *) die "unknown argument: $arg (try --help)" ;;
        esac
    done
    [[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer"
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
    local p
    for p in "$CORPUS" "$WORK"; do
        case "$p/" in
            "$REPO"/*) die "$p is inside the repository $REPO" ;;
            /|//) die "refusing to use / as CORPUS or WORK" ;;
        esac
    done
    case "$WORK/" in "$CORPUS"/*) die "WORK must not be inside CORPUS" ;; esac
    case "$CORPUS/" in "$WORK"/*) die "CORPUS must not be inside WORK (WORK is wiped)" ;; esac

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
