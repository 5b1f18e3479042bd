#!/usr/bin/env bash
# A private Amanda (Debian 12: 3.5.1) configuration for tests: one config named
# mdt-<random> in /etc/amanda (Amanda compiles that directory in), virtual tapes (chg-disk)
# and all state (curinfo, logs, indexes) in a scratch directory, auth "local" (no amandad,
# no inetd), one disklist entry (host localhost, disk = the config name) backed up by an
# application. Amanda's tools refuse root:
# they run as user `backup`, and Amanda runs the application as `backup` with umask 077.
# Facts and design notes: tests/support/backup-software.md.
#
#   amanda.sh setup DIR DEVICE PLUGIN [PROPERTY VALUE]...
#       DIR: new scratch dir (made mode 0755, owned by backup); DEVICE: the disklist entry's
#       device (e.g. the mail root); PLUGIN: application executable (copied into Amanda's
#       application dir as mdt-<random>, since `plugin` names a file there); properties for
#       the application-tool. Prints the config name.
#   amanda.sh check DIR                amcheck (server and client side); output on stdout
#   amanda.sh dump DIR LEVEL           force LEVEL for the next run (0: `amadmin force`, 1:
#                                      `force-level-1`, N>1: `force-bump` after level N-1; `auto`:
#                                      let the planner choose, it then asks for several levels), then
#                                      amdump; prints the level Amanda recorded; exit 0 only for
#                                      a dump without FAILED/STRANGE
#   amanda.sh report DIR               amreport of the last run (text)
#   amanda.sh fetch DIR OUTDIR [LEVEL] amfetchdump the images a restore needs (newest level 0
#                                      and the newest of each level above it), or the one of
#                                      LEVEL, into OUTDIR (files HOST.DISK.DATE.LEVEL, no header)
#   amanda.sh pipe DIR LEVEL [DATE]    amfetchdump -p: one image of LEVEL (the oldest when
#                                      several match: give DATE, a datestamp, for another)
#   amanda.sh extract DIR TARGET       amfetchdump --extract --target TARGET: the application's
#                                      restore, once per level needed, oldest first
#   amanda.sh checkdump DIR            amcheckdump (reads every image back through `validate`)
#   amanda.sh admin DIR ARGS...        amadmin CONFIG ARGS...
#   amanda.sh cleanup DIR              removes the config, the plugin copy, Amanda's debug
#                                      logs for this config, and DIR
#
# Environment: AMANDA_DTIMEOUT (setup; default 120 s): Amanda 3.5.1 ends a FAILED dump only
# when the dumper's data timeout expires, and tries twice, so a failure costs 2x this.
set -euo pipefail

die() { echo "amanda.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "must run as root (it writes /etc/amanda and switches to user backup)"
for bin in amcheck amdump amfetchdump amcheckdump amadmin amreport runuser; do
  command -v "$bin" >/dev/null || [ -x "/usr/sbin/$bin" ] ||
    die "$bin not found: apt-get install amanda-server amanda-client"
done
PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
APPDIR=/usr/lib/amanda/application
[ -d "$APPDIR" ] || die "$APPDIR missing: apt-get install amanda-client"
getent passwd backup >/dev/null || die "user backup missing (Debian's base system has it)"

cmd=${1:-}; [ $# -ge 2 ] || die "usage: amanda.sh COMMAND DIR ... (see the header of this script)"
D=$(realpath -m -- "$2"); shift 2
case "$D" in /|/tmp|/var|/var/tmp|/root|/home|/etc|/etc/amanda) die "refusing scratch dir $D";; esac

as_backup() { (cd "$D" && runuser -u backup -- "$@" < /dev/null); }
load() {
  [ -f "$D/config-name" ] || die "$D is not set up (run: amanda.sh setup $D ...)"
  CONF=$(cat "$D/config-name")
  case "$CONF" in mdt-[a-z0-9]*) ;; *) die "bad config name in $D/config-name";; esac
}

setup() {
  [ $# -ge 2 ] || die "usage: setup DIR DEVICE PLUGIN [PROPERTY VALUE]..."
  local device=$1 plugin=$2 props="" slot
  shift 2
  [ -x "$plugin" ] || die "plugin $plugin is not executable"
  [ $(( $# % 2 )) = 0 ] || die "properties come in NAME VALUE pairs"
  if [ -d "$D" ] && [ -n "$(ls -A "$D")" ]; then die "$D is not empty"; fi
  CONF=mdt-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
  [ ! -e "/etc/amanda/$CONF" ] || die "/etc/amanda/$CONF exists"
  mkdir -p "$D"/{state/curinfo,state/log,state/index,vtapes,home}
  echo "$CONF" > "$D/config-name"
  for slot in 1 2 3 4 5 6 7 8 9 10; do mkdir -p "$D/vtapes/slot$slot"; done
  python3 -c 'import json, sys; a = sys.argv[1:]; print(json.dumps(dict(zip(a[0::2], a[1::2]))))' \
    "$@" > "$D/app-properties.json"
  while [ $# -gt 0 ]; do
    case "$1$2" in *$'\n'*) die "property $1: no newlines";; esac
    # amanda.conf strings take \\ and \" escapes
    local v=${2//\\/\\\\}
    v=${v//\"/\\\"}
    props="$props  property \"$1\" \"$v\""$'\n'
    shift 2
  done
  install -m 0755 -o root -g root "$plugin" "$APPDIR/$CONF"
  mkdir -m 0750 "/etc/amanda/$CONF"
  cat > "/etc/amanda/$CONF/amanda.conf" <<CONF
# written by tests/support/amanda.sh
org "$CONF"
mailto ""
dumpuser "backup"
inparallel 1
netusage 100000 Kbps
dumpcycle 7 days
runspercycle 7
tapecycle 10 tapes
runtapes 1
bumpsize 1 KB
bumppercent 0
bumpmult 1.0
bumpdays 1
etimeout 300
dtimeout ${AMANDA_DTIMEOUT:-120}
ctimeout 30
infofile "$D/state/curinfo"
logdir "$D/state/log"
indexdir "$D/state/index"
define tapetype VTAPE {
  length 1024 MB
}
tapetype "VTAPE"
define changer vtapes {
  tpchanger "chg-disk:$D/vtapes"
  property "num-slot" "10"
  property "auto-create-slot" "yes"
}
tpchanger "vtapes"
labelstr "^$CONF-[0-9][0-9]*\$"
autolabel "$CONF-%%" empty
define application-tool mdt-app {
  plugin "$CONF"
$props}
define dumptype mdt {
  program "APPLICATION"
  application "mdt-app"
  auth "local"
  compress none
  encrypt none
  index yes
  record yes
  estimate client
  holdingdisk never
}
CONF
  # Amanda 3.5.1's amfetchdump --extract and amcheckdump pass properties as "HASH(0x...)":
  # the harness application reads them from here instead (see amanda-app.py).
  mv "$D/app-properties.json" "/etc/amanda/$CONF/app-properties.json"
  printf 'localhost %s %s mdt\n' "$CONF" "$device" > "/etc/amanda/$CONF/disklist"
  # The client side (application, sendbackup) reads this one with auth local.
  printf 'auth "local"\nindex_server "localhost"\ntape_server "localhost"\n' \
    > "/etc/amanda/$CONF/amanda-client.conf"
  chown -R backup:backup "/etc/amanda/$CONF" "$D"
  chmod 0755 "$D"
  echo "$CONF"
}

level_of_last() {
  as_backup amadmin "$CONF" info localhost "$CONF" | awk '/^ *[0-9]+ +[0-9]+ +[0-9]{8}/ {print}' | head -1
}

dump() {
  [ $# -eq 1 ] || die "usage: dump DIR LEVEL"
  local level=$1 rc=0 report
  case "$level" in
    0) as_backup amadmin "$CONF" force localhost "$CONF" >/dev/null ;;
    1) as_backup amadmin "$CONF" force-level-1 localhost "$CONF" >/dev/null ;;
    [2-9]) as_backup amadmin "$CONF" force-bump localhost "$CONF" >/dev/null ;;
    auto) ;;
    *) die "level must be 0..9 or auto" ;;
  esac
  as_backup amdump "$CONF" || rc=$?
  as_backup amreport "$CONF" --text "$D/last-report.txt" >/dev/null 2>&1 || true
  report=$(cat "$D/last-report.txt" 2>/dev/null || echo "no report")
  as_backup amadmin "$CONF" find localhost "$CONF" | awk 'NR>1 && $1 ~ /^[0-9]/ {l=$5} END {print "level=" l}'
  [ "$rc" = 0 ] || { echo "amdump exit $rc (report: $D/last-report.txt)" >&2; return 1; }
  if grep -qE 'FAILED|STRANGE' <<<"$report"; then
    echo "dump not clean (report: $D/last-report.txt)" >&2; return 1
  fi
}

cleanup() {
  local logdir
  if [ -f "$D/config-name" ]; then
    load
    rm -rf -- "/etc/amanda/${CONF:?}"
    rm -f -- "$APPDIR/${CONF:?}"
    for logdir in server client amandad; do
      rm -rf -- "/var/log/amanda/$logdir/${CONF:?}"
    done
    # What Amanda keeps outside the config's own places, by disk name (= the config name):
    # amandad's debug logs, dumpers' error files, and sendbackup's amandates lines.
    grep -lF -- "config=$CONF;" /var/log/amanda/amandad/*.debug 2>/dev/null | xargs -r rm -f --
    rm -f -- /var/log/amanda/log.error/localhost."$CONF".*
    if [ -f /var/lib/amanda/amandates ]; then
      # rewritten in place: the file stays backup's
      grep -v "^$CONF " /var/lib/amanda/amandates > "$D/amandates" || true
      cat "$D/amandates" > /var/lib/amanda/amandates
    fi
  fi
  rm -rf -- "${D:?}"
}

case "$cmd" in
  setup) setup "$@" ;;
  check) load; as_backup amcheck "$CONF" ;;
  dump) load; dump "$@" ;;
  report) load; cat "$D/last-report.txt" ;;
  fetch) load; [ $# -ge 1 ] || die "usage: fetch DIR OUTDIR [LEVEL]"
    mkdir -p "$1"; chown backup:backup "$1"
    as_backup amfetchdump -a -O "$(realpath "$1")" "$CONF" localhost "$CONF" ${2:+0-9 "$2\$"} ;;
  pipe) load; [ $# -ge 1 ] && [ $# -le 2 ] || die "usage: pipe DIR LEVEL [DATESTAMP]"
    as_backup amfetchdump -p -a "$CONF" localhost "$CONF" "${2:-0-9}" "$1\$" ;;
  extract) load; [ $# -eq 1 ] || die "usage: extract DIR TARGET"
    as_backup amfetchdump -a --extract --target "$1" "$CONF" localhost "$CONF" ;;
  checkdump) load; as_backup amcheckdump "$CONF" ;;
  admin) load; as_backup amadmin "$CONF" "$@" ;;
  cleanup) cleanup ;;
  *) die "unknown command '$cmd' (see the header of this script)" ;;
esac
