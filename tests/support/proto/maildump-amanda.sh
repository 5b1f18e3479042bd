#!/usr/bin/env bash
# DESIGN PROTOTYPE, not the product: the level logic meant for `maildump amanda ...`,
# written in shell to check the design of tests/support/backup-software.md with real Amanda
# (selftest-amanda.sh, through tests/support/amanda-app.py). A level N dump is an
# incremental against the state of the newest level N-1 dump; only a dump run with
# --record (AMANDA_RECORD=1) becomes a parent, and it makes higher levels stale. It keeps
# whole archives as state; the real agent keeps only what `--base` needs.
#
#   maildump-amanda.sh MAILDUMP estimate STATE BACKUP-OPTS...   prints the image size in bytes
#   maildump-amanda.sh MAILDUMP backup   STATE BACKUP-OPTS...   the image on stdout
#   maildump-amanda.sh MAILDUMP index    STATE                  index lines /user/mailbox/uid
set -uo pipefail
MD=$1 mode=$2 st=$3
shift 3
L=${AMANDA_LEVEL:?}
base=()
if [ "$L" -gt 0 ]; then
  p=$st/level-$((L - 1)).mdump
  [ -f "$p" ] || { echo "maildump: no level $((L - 1)) dump recorded in $st: run a level 0 first" >&2; exit 8; }
  base=(--base "$p")
fi
case $mode in
estimate) "$MD" backup --quiet "$@" "${base[@]}" -o - | wc -c ;;
backup)
  "$MD" backup --quiet "$@" "${base[@]}" -o - | tee "$st/pending.$L.mdump"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -le 1 ] && [ "${AMANDA_RECORD:-0}" = 1 ]; then
    mv "$st/pending.$L.mdump" "$st/level-$L.mdump"
    for f in "$st"/level-*.mdump; do
      n=${f##*/level-}
      n=${n%.mdump}
      if [ "$n" -gt "$L" ]; then rm -f "$f"; fi
    done
  fi
  exit "$rc" ;;
index)
  f=$st/level-$L.mdump
  [ -f "$f" ] || f=$st/pending.$L.mdump
  "$MD" list "$f" | awk -F'\t' '!/^;/ {print "/" $1 "/" $2 "/" $3}' ;;
*) echo "maildump-amanda.sh: unknown mode $mode" >&2; exit 2 ;;
esac
