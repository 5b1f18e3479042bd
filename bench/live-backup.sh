#!/usr/bin/env bash
# Long campaign of tests/it/live_backup.rs: backups of Maildir, sdbox and mdbox stores while
# a mutator delivers, renames, deletes (and through doveadm saves, flags, expunges, purges).
# Reports, per format, the rounds run, the rounds that lost a message present from start to
# end (or named one that stayed as expunged, or exited non-zero) and the messages lost.
#
#   ROUNDS=1000 bench/live-backup.sh            # all three formats, one after the other
#   ROUNDS=200 FORMATS="maildir" bench/live-backup.sh
set -u
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-1000}
FORMATS=${FORMATS:-"maildir sdbox mdbox"}
LOG=$(mktemp -d)
trap 'rm -rf "${LOG:?}"' EXIT
cargo build --locked --tests --quiet || exit 1
for f in $FORMATS; do
    start=$(date +%s)
    MAILDUMP_LIVE_ROUNDS=$ROUNDS cargo test --locked --quiet --test it \
        "live_backup::${f}_backup_under_changes_loses_nothing" -- --exact --nocapture \
        >"$LOG/$f.log" 2>&1 || true
    secs=$(( $(date +%s) - start ))
    rounds=$(grep -c "^[a-z:~/]*${f}[a-z:~/]* round [0-9]*: [0-9]* problems" "$LOG/$f.log" || true)
    bad=$(grep "^[a-z:~/]*${f}[a-z:~/]* round [0-9]*: [0-9]* problems" "$LOG/$f.log" | grep -vc ": 0 problems" || true)
    lost=$({ grep -o '[^"]*: missing"\|UID [0-9]* missing' "$LOG/$f.log" || true; } | wc -l)
    backups=$(grep -o "round [0-9]*: [0-9]* backups" "$LOG/$f.log" | awk '{s+=$3} END {print s+0}')
    if [ "$f" = maildir ]; then backups=$rounds; fi
    echo "$f: $rounds rounds, $backups backups under changes, $bad rounds with a problem, $lost stable messages lost, ${secs}s"
    grep "problems \[.\+\]" "$LOG/$f.log" | head -5 || true
done
