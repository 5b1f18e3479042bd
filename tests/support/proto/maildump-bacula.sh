#!/usr/bin/env bash
# DESIGN PROTOTYPE, not the product: what `maildump bacula ...` is meant to do, written in
# shell to check the design of tests/support/backup-software.md with real Bacula daemons
# (selftest-bacula.sh). It keeps whole parent archives as state; the real agent keeps
# only what `--base` needs. Replace its uses by the subcommands once they exist.
#
#   maildump-bacula.sh MAILDUMP backup STATE JOBID LEVEL BACKUP-OPTS...   (bpipe reader)
#   maildump-bacula.sh MAILDUMP finish STATE JOBID                       (client RunScript After)
#   maildump-bacula.sh MAILDUMP receive SPOOL JOBID                      (bpipe writer, archives)
#   maildump-bacula.sh MAILDUMP restore SPOOL JOBID RESTORE-OPTS... ROOT [SELECTION...]
#                                                                        (bpipe writer, trigger;
#                                                                        ROOT and SELECTION come
#                                                                        from the restore's where)
set -uo pipefail
MD=$1 cmd=$2
shift 2
case $cmd in
backup)
  st=$1 id=$2 level=$3
  shift 3
  mkdir -p "$st/pending" "$st/committed"
  parent=""
  case $level in
    Full) ;;
    Incremental) parent=$(ls "$st/committed" | sed -n 's/\.level$//p' | sort -n | tail -1) ;;
    Differential) parent=$(grep -lx Full "$st"/committed/*.level 2>/dev/null | sed 's#.*/##; s/\.level$//' | sort -n | tail -1) ;;
    *) echo "maildump: unknown Bacula level '$level'" >&2; exit 2 ;;
  esac
  base=()
  if [ "$level" != Full ]; then
    [ -n "$parent" ] || { echo "maildump: no committed backup to base a $level on; run a Full" >&2; exit 8; }
    base=(--base "$st/committed/$parent.mdump")
  fi
  "$MD" backup "$@" "${base[@]}" -o - 2> >(tee "$st/pending/$id.err" >&2) | tee "$st/pending/$id.mdump"
  rc=${PIPESTATUS[0]}
  echo "$rc" > "$st/pending/$id.rc"
  echo "$level" > "$st/pending/$id.level"
  exit "$rc" ;;
finish)
  st=$1 id=$2
  rc=$(cat "$st/pending/$id.rc" 2>/dev/null || echo none)
  case $rc in
    0|1)
      mv "$st/pending/$id.mdump" "$st/committed/$id.mdump"
      mv "$st/pending/$id.level" "$st/committed/$id.level"
      rm -f "$st/pending/$id".*
      exit 0 ;;
    none) echo "maildump: job $id: the backup command did not run" >&2; exit 3 ;;
    *)
      echo "maildump: job $id failed (exit $rc): $(tail -1 "$st/pending/$id.err")" >&2
      rm -f "$st/pending/$id".*
      exit "$rc" ;;
  esac ;;
receive)
  mkdir -p "$1"
  cat > "$1/$2.mdump" ;;
restore)
  sp=$1 id=$2
  shift 2
  cat > /dev/null
  opts=()
  while [ $# -gt 0 ] && [ "${1#--}" != "$1" ]; do opts+=("$1" "$2"); shift 2; done
  root=$1
  shift
  chain=()
  for f in $(ls "$sp" | sort -n); do
    n=${f%%.*}
    [ "$n" -le "$id" ] && chain+=("$sp/$f")
  done
  "$MD" restore "${chain[@]}" "${opts[@]}" --home "$root/%u" "$@"
  rc=$?
  rm -f "${chain[@]}"
  exit "$rc" ;;
*) echo "maildump-bacula.sh: unknown command $cmd" >&2; exit 2 ;;
esac
