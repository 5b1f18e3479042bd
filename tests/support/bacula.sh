#!/usr/bin/env bash
# A private Bacula (Debian 12: 9.6.7) for tests: director, storage daemon, file daemon and
# bconsole with their own configs, loopback ports, working/pid dirs, file volumes and sqlite
# catalog, all inside one scratch directory. Runs as root (the file daemon must read and
# restore mail stores of any owner). Facts and design notes: tests/support/backup-software.md.
#
#   bacula.sh setup   DIR                 write configs and catalog into DIR (new or empty)
#   bacula.sh add-conf DIR < TEXT         append director resources (FileSet, Job, ...) to DIR/etc/jobs.conf
#   bacula.sh add-bpipe-job DIR NAME PLUGIN [CLIENT_BEFORE_CMD]
#                                         a FileSet NAME with `Plugin = "PLUGIN"` and a backup Job NAME;
#                                         with CLIENT_BEFORE_CMD a client RunScript (Before, FailJobOnError)
#   bacula.sh start   DIR                 setup if needed, start the 3 daemons, wait until they listen
#   bacula.sh reload  DIR                 make a running director re-read its config (after add-*)
#   bacula.sh console DIR [CMD...]        bconsole commands (arguments, or stdin), output on stdout
#   bacula.sh run-job DIR JOB LEVEL       run a backup job, wait; prints "JOBID STATUS ERRORS" (status
#                                         T, W, f, E, ...; ERRORS the job's non-fatal error count);
#                                         exit 0 for T without errors, 1 for T with errors ("Backup OK
#                                         -- with warnings") or W, 2 otherwise (failed, canceled)
#   bacula.sh restore-job DIR WHERE SELECTION...
#                                         restore with where=WHERE; SELECTION are bconsole restore
#                                         keywords, e.g. `jobid=3`, `fileset=NAME current select` (the
#                                         newest Full + Differential + Incrementals), `fileset=NAME
#                                         before="YYYY-MM-DD HH:MM:SS" select` or
#                                         `jobid=1,2 file=/x`; all files of it are restored
#                                         (`all done yes` is added when no file= is given). Same output
#                                         and exit codes as run-job.
#   bacula.sh job-info DIR JOBID          status= level= bytes= files= errors= name= (from the catalog)
#   bacula.sh job-log DIR JOBID           the job log as the catalog holds it (what `list joblog` shows)
#   bacula.sh sql     DIR QUERY           a query on the catalog (sqlite3 -separator '|')
#   bacula.sh stop    DIR                 stop the daemons; fails if a process, pid file or port is left
#   bacula.sh cleanup DIR                 stop, then remove DIR
#
# Environment: BACULA_TIMEOUT (seconds a job may take, default 300).
set -euo pipefail

die() { echo "bacula.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "must run as root (the file daemon reads and writes stores of any owner)"
for bin in bacula-dir bacula-sd bacula-fd bconsole sqlite3 ss; do
  command -v "$bin" >/dev/null || [ -x "/usr/sbin/$bin" ] ||
    die "$bin not found: apt-get install bacula-director bacula-director-sqlite3 bacula-sd bacula-fd bacula-console sqlite3 iproute2"
done
PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
CATALOG_SQL=/usr/share/dbconfig-common/data/bacula-director-sqlite3/install/sqlite3
PLUGIN_DIR=/usr/lib/bacula
[ -f "$CATALOG_SQL" ] || die "$CATALOG_SQL missing: apt-get install bacula-director-sqlite3"
[ -f "$PLUGIN_DIR/bpipe-fd.so" ] || die "$PLUGIN_DIR/bpipe-fd.so missing: apt-get install bacula-fd"

cmd=${1:-}; [ $# -ge 2 ] || die "usage: bacula.sh COMMAND DIR ... (see the header of this script)"
D=$(realpath -m -- "$2"); shift 2
case "$D" in /|/tmp|/var|/var/tmp|/root|/home) die "refusing scratch dir $D";; esac
ETC=$D/etc RUN=$D/run
DAEMONS="sd fd dir"   # start order; stop is the reverse

port_free() { [ -z "$(ss -Hltn "sport = :$1")" ]; }

pick_ports() {
  local base
  for _ in $(seq 1 50); do
    base=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    if port_free "$base" && port_free $((base + 1)) && port_free $((base + 2)); then
      echo "$base"; return 0
    fi
  done
  die "no three free consecutive loopback ports found"
}

setup() {
  [ ! -e "$ETC/bacula-dir.conf" ] || return 0
  if [ -d "$D" ] && [ -n "$(ls -A "$D")" ]; then die "$D is not empty"; fi
  mkdir -p "$ETC" "$RUN" "$D/work/dir" "$D/work/sd" "$D/work/fd" "$D/volumes" "$D/log" "$D/restores"
  chmod 700 "$D/work" "$ETC"
  local base pw
  base=$(pick_ports)
  pw=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  printf 'DIR_PORT=%s\nSD_PORT=%s\nFD_PORT=%s\n' "$base" $((base + 1)) $((base + 2)) > "$ETC/ports"
  # shellcheck disable=SC1091
  . "$ETC/ports"
  cat > "$ETC/bacula-dir.conf" <<CONF
# written by tests/support/bacula.sh
Director {
  Name = mdt-dir
  DIRport = $DIR_PORT
  DirAddress = 127.0.0.1
  QueryFile = "/etc/bacula/scripts/query.sql"
  WorkingDirectory = "$D/work/dir"
  PidDirectory = "$RUN"
  Maximum Concurrent Jobs = 10
  Password = "$pw"
  Messages = Daemon
}
# sqlite: the catalog is WorkingDirectory/<dbname>.db
Catalog {
  Name = MyCatalog
  dbname = "bacula"; dbuser = ""; dbpassword = ""
}
Client {
  Name = mdt-fd
  Address = 127.0.0.1
  FDPort = $FD_PORT
  Catalog = MyCatalog
  Password = "$pw"
  File Retention = 1 year
  Job Retention = 1 year
  AutoPrune = no
}
Storage {
  Name = File
  Address = 127.0.0.1
  SDPort = $SD_PORT
  Password = "$pw"
  Device = FileStorage
  Media Type = File
}
Pool {
  Name = Default
  Pool Type = Backup
  Recycle = no
  AutoPrune = no
  Volume Retention = 1 year
  Label Format = "Vol-"
  Maximum Volume Bytes = 1G
}
Messages {
  Name = Standard
  console = all, !skipped, !saved
  append = "$D/log/bacula.log" = all, !skipped
  catalog = all, !skipped, !saved
}
Messages {
  Name = Daemon
  console = all, !skipped, !saved
  append = "$D/log/bacula.log" = all, !skipped
}
FileSet {
  Name = "None"
  Include {
    File = "$D/nonexistent"
  }
}
Job {
  Name = "Restore"
  Type = Restore
  Client = mdt-fd
  Storage = File
  FileSet = "None"
  Pool = Default
  Messages = Standard
  Where = "$D/restores"
}
@$ETC/jobs.conf
CONF
  : > "$ETC/jobs.conf"
  cat > "$ETC/bacula-sd.conf" <<CONF
# written by tests/support/bacula.sh
Storage {
  Name = mdt-sd
  SDPort = $SD_PORT
  SDAddress = 127.0.0.1
  WorkingDirectory = "$D/work/sd"
  PidDirectory = "$RUN"
  Maximum Concurrent Jobs = 5
}
Director {
  Name = mdt-dir
  Password = "$pw"
}
Device {
  Name = FileStorage
  Media Type = File
  Archive Device = "$D/volumes"
  LabelMedia = yes
  Random Access = yes
  AutomaticMount = yes
  RemovableMedia = no
  AlwaysOpen = no
}
Messages {
  Name = Standard
  director = mdt-dir = all
}
CONF
  cat > "$ETC/bacula-fd.conf" <<CONF
# written by tests/support/bacula.sh
Director {
  Name = mdt-dir
  Password = "$pw"
}
FileDaemon {
  Name = mdt-fd
  FDport = $FD_PORT
  FDAddress = 127.0.0.1
  WorkingDirectory = "$D/work/fd"
  PidDirectory = "$RUN"
  Plugin Directory = $PLUGIN_DIR
  Maximum Concurrent Jobs = 5
}
Messages {
  Name = Standard
  director = mdt-dir = all, !skipped, !restored
}
CONF
  cat > "$ETC/bconsole.conf" <<CONF
Director {
  Name = mdt-dir
  DIRport = $DIR_PORT
  Address = 127.0.0.1
  Password = "$pw"
}
CONF
  chmod 600 "$ETC"/*.conf
  # The catalog: Debian's own schema (what dbconfig-common loads for bacula-director-sqlite3).
  sqlite3 "$D/work/dir/bacula.db" < "$CATALOG_SQL" >/dev/null
}

load_ports() {
  [ -f "$ETC/ports" ] || die "$D is not set up (run: bacula.sh setup $D)"
  # shellcheck disable=SC1091
  . "$ETC/ports"
}
port_of() { case $1 in dir) echo "$DIR_PORT";; sd) echo "$SD_PORT";; fd) echo "$FD_PORT";; esac; }
conf_of() { echo "$ETC/bacula-$1.conf"; }
bin_of() { echo "bacula-$1"; }
pidfile_of() { echo "$RUN/bacula-$1.$(port_of "$1").pid"; }

# pid of our daemon $1 when it runs: from its pid file, and only if that process is the
# bacula daemon started with our config (never signal a recycled pid).
daemon_pid() {
  local pf pid
  pf=$(pidfile_of "$1")
  [ -f "$pf" ] || return 1
  pid=$(tr -dc 0-9 < "$pf")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$(conf_of "$1")" || return 1
  echo "$pid"
}

start() {
  setup
  load_ports
  local d i
  for d in $DAEMONS; do
    "$(bin_of "$d")" -t -c "$(conf_of "$d")" || die "bacula-$d rejects $(conf_of "$d")"
  done
  for d in $DAEMONS; do
    if daemon_pid "$d" >/dev/null; then continue; fi
    port_free "$(port_of "$d")" || die "port $(port_of "$d") for bacula-$d is taken"
    # Without -f the daemon forks into the background and writes its pid file.
    "$(bin_of "$d")" -c "$(conf_of "$d")" || die "bacula-$d did not start"
  done
  for d in $DAEMONS; do
    for i in $(seq 1 200); do
      if ! port_free "$(port_of "$d")" && daemon_pid "$d" >/dev/null; then break; fi
      [ "$i" -lt 200 ] || { stop || true; die "bacula-$d not listening on $(port_of "$d") after 10 s (log: $D/log/bacula.log)"; }
      sleep 0.05
    done
  done
}

stop() {
  [ -f "$ETC/ports" ] || return 0
  load_ports
  local d pid i pids="" left=""
  # All three at once: each daemon takes about 2 s to act on SIGTERM.
  for d in dir fd sd; do
    pid=$(daemon_pid "$d") || continue
    kill -TERM "$pid" 2>/dev/null || true
    pids="$pids $pid"
  done
  for pid in $pids; do
    for i in $(seq 1 300); do
      [ -d "/proc/$pid" ] || break
      sleep 0.05
    done
    if [ -d "/proc/$pid" ]; then
      echo "bacula.sh: pid $pid ignored SIGTERM for 15 s, killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  done
  for d in dir fd sd; do
    if daemon_pid "$d" >/dev/null; then left="$left bacula-$d(process)"; fi
    if [ -e "$(pidfile_of "$d")" ]; then left="$left $(pidfile_of "$d")"; fi
    port_free "$(port_of "$d")" || left="$left port:$(port_of "$d")"
  done
  [ -z "$left" ] || die "left behind after stop:$left"
}

console() {
  load_ports
  local input
  if [ $# -gt 0 ]; then input=$(printf '%s\n' "$@"); else input=$(cat); fi
  printf '%s\nquit\n' "$input" | timeout "${BACULA_TIMEOUT:-300}" bconsole -n -c "$ETC/bconsole.conf"
}

sql() { sqlite3 -separator '|' "$D/work/dir/bacula.db" "$1"; }

job_info() {
  local id=$1 row
  [[ "$id" =~ ^[0-9]+$ ]] || die "not a job id: $id"
  row=$(sql "select JobStatus, Level, JobBytes, JobFiles, JobErrors, Name from Job where JobId=$id")
  [ -n "$row" ] || die "no job $id in the catalog"
  IFS="|" read -r st lv by nf er nm <<<"$row"
  printf 'status=%s\nlevel=%s\nbytes=%s\nfiles=%s\nerrors=%s\nname=%s\n' "$st" "$lv" "$by" "$nf" "$er" "$nm"
}

# Waits for job $1 and prints "JOBID STATUS ERRORS"; exit status as documented in the header.
# A bpipe command that fails leaves JobStatus T with JobErrors 1 ("Backup OK -- with warnings").
wait_job() {
  local id=$1 st er
  console "wait jobid=$id" >/dev/null
  IFS='|' read -r st er <<<"$(sql "select JobStatus, JobErrors from Job where JobId=$id")"
  echo "$id $st $er"
  case "$st" in
    T) [ "$er" = 0 ] && return 0; return 1;;
    W) return 1;;
    *) return 2;;
  esac
}

queued_jobid() {
  local out=$1 id
  id=$(sed -n 's/.*Job queued\. JobId=\([0-9][0-9]*\).*/\1/p' <<<"$out" | tail -1)
  [ -n "$id" ] || { printf '%s\n' "$out" >&2; die "bconsole did not queue the job"; }
  echo "$id"
}

run_job() {
  [ $# -eq 2 ] || die "usage: run-job DIR JOB LEVEL"
  local out id
  out=$(console "run job=$1 level=$2 yes")
  id=$(queued_jobid "$out")
  wait_job "$id"
}

restore_job() {
  [ $# -ge 2 ] || die "usage: restore-job DIR WHERE SELECTION..."
  local where=$1 out id tail="all done yes"
  shift
  case " $* " in *" file="*) tail="yes";; esac
  out=$(console "restore client=mdt-fd restorejob=Restore where=$where $* $tail")
  id=$(queued_jobid "$out")
  wait_job "$id"
}

add_conf() {
  [ -f "$ETC/jobs.conf" ] || die "$D is not set up"
  cat >> "$ETC/jobs.conf"
}

add_bpipe_job() {
  [ $# -ge 2 ] || die "usage: add-bpipe-job DIR NAME PLUGIN [CLIENT_BEFORE_CMD]"
  local name=$1 plugin=$2 before=${3:-} q='"'
  case "$plugin$before" in *'"'*) die "a double quote cannot be written into a Bacula config string";; esac
  {
    printf 'FileSet {\n  Name = "%s"\n  Include {\n    Options {\n      signature = MD5\n    }\n' "$name"
    printf '    Plugin = "%s"\n  }\n}\n' "$plugin"
    printf 'Job {\n  Name = "%s"\n  Type = Backup\n  Level = Full\n  Client = mdt-fd\n' "$name"
    printf '  FileSet = "%s"\n  Storage = File\n  Pool = Default\n  Messages = Standard\n' "$name"
    printf '  Write Bootstrap = "%s/work/dir/%%n.bsr"\n' "$D"
    if [ -n "$before" ]; then
      printf '  RunScript {\n    RunsWhen = Before\n    RunsOnClient = yes\n    FailJobOnError = yes\n'
      printf '    Command = %s%s%s\n  }\n' "$q" "$before" "$q"
    fi
    printf '}\n'
  } | add_conf
}

case "$cmd" in
  setup) setup ;;
  start) start ;;
  stop) stop ;;
  cleanup) stop; rm -rf -- "${D:?}" ;;
  reload) console reload >/dev/null ;;
  console) console "$@" ;;
  run-job) run_job "$@" ;;
  restore-job) restore_job "$@" ;;
  job-info) job_info "$@" ;;
  job-log) sql "select LogText from Log where JobId=${1:?JOBID} order by Time, LogId" | sed '/^\\$/d' ;;
  sql) sql "$@" ;;
  add-conf) add_conf ;;
  add-bpipe-job) add_bpipe_job "$@" ;;
  *) die "unknown command '$cmd' (see the header of this script)" ;;
esac
