#!/usr/bin/env bash
# Self-test of tests/support/amanda.sh and of the Amanda design in backup-software.md, with
# real Amanda (auth local, vtapes), the fixture store and the maildump binary (MAILDUMP,
# default target/debug/maildump) as the application (`maildump amanda ...`, installed as
# README's "Amanda" section says: a two-line wrapper in Amanda's application directory):
#   - the store is read as user backup through a read-only group (no root, no sudo): first
#     refused (amcheck reports it), then allowed, and Dovecot keeps new files group-readable;
#   - levels 0, 1, 2 and a second 1 with changes made through doveadm in between;
#   - restores: every image amfetchdump finds, oldest first, into `maildump restore`; one
#     user from the level 0 image piped (`amfetchdump -p | maildump restore -`); the chain
#     of levels 0 and 1 piped concatenated into `maildump restore -`; amfetchdump --extract
#     spooling images through the application; amcheckdump validating them; amrecover
#     listing the users, mailboxes and messages from the index lines;
#   - a failing backup (a config that does not exist): FAILED with its message in the report.
# Each restore is compared with what doveadm showed at dump time. Prints timings. As root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=mailstore.sh
. "$here/mailstore.sh"
AM=$here/amanda.sh
selftest_begin amanda
A=$W/amanda
AF=$W/amanda-fail
GROUP=mdt-mr-${W##*.}
GROUP=$(echo "$GROUP" | tr '[:upper:]' '[:lower:]')
cleanup() {
  "$AM" cleanup "$A" || true
  "$AM" cleanup "$AF" || true
  if getent group "$GROUP" >/dev/null; then
    gpasswd -d backup "$GROUP" >/dev/null 2>&1 || true
    groupdel "$GROUP" || true
  fi
  rm -rf -- "${W:?}"
}
trap cleanup EXIT
[ -z "${KEEP:-}" ] || trap - EXIT
# The application runs as backup: the binary must be reachable by it.
runuser -u backup -- test -x "$MAILDUMP" || fail "user backup cannot run $MAILDUMP"

mailstore_new "$W"
M=$W/mail
CONF=$W/dovecot.conf
# Dovecot's default modes: only the mail user can read the store.
find "$M" -type d -exec chmod 0700 {} +
find "$M" -type f -exec chmod 0600 {} +
# Restores compare UIDNEXT as it was (--uid-margin 0; by default a restore raises it by
# 100000, README).
mkdir -m 0700 "$W/mdstate"
chown backup:backup "$W/mdstate"
# README "Amanda": the application is a wrapper in Amanda's application directory
# (amanda.sh installs the file it is given there).
printf '#!/bin/sh\nexec %s amanda "$@"\n' "$MAILDUMP" > "$W/maildump-app"
chmod 0755 "$W/maildump-app"
t=$(now)
"$AM" setup "$A" "$M" "$W/maildump-app" \
  dovecot-config "$CONF" home "$M/%u" state-dir "$W/mdstate" > /dev/null
echo "time setup: $(since "$t") s"
t=$(now)
out=$("$AM" check "$A" 2>&1) && fail "amcheck passed on a store user backup cannot read: $out"
grep -q 'Permission denied' <<<"$out" || fail "amcheck did not name the permission problem: $out"
echo "ok   amcheck refuses a store with Dovecot's default modes (0700/0600), naming it ($(since "$t") s)"

# The arrangement: a read-only group; the mail root setgid so that Dovecot gives new
# files and directories that group and group read (it copies the directory's mode).
groupadd --system "$GROUP"
chgrp -R "$GROUP" "$M"
find "$M" -type d -exec chmod 2750 {} +
find "$M" -type f -exec chmod 0640 {} +
usermod -aG "$GROUP" backup
t=$(now)
"$AM" check "$A" > "$W/check.txt" 2>&1 || { cat "$W/check.txt" >&2; fail "amcheck"; }
grep -q '0 problems found' "$W/check.txt" || fail "amcheck: $(cat "$W/check.txt")"
echo "ok   amcheck with the group arrangement ($(since "$t") s)"

dump() { # LEVEL SNAPSHOT
  local t out
  t=$(now)
  out=$("$AM" dump "$A" "$1") || fail "dump $1: $out $(cat "$A/last-report.txt")"
  [ "$out" = "level=$1" ] || fail "asked for level $1, Amanda recorded $out"
  echo "ok   level $1 dump ($(since "$t") s)"
  mailstore_snapshot "$W" "$M" > "$W/$2.txt"
}
dump 0 s0
mailstore_deliver "$W" "$M" alice INBOX "after level 0"
mailstore_doveadm "$W" "$M" bob flags add '\Answered' mailbox INBOX uid 1
new=$(find "$M/alice/Maildir/new" -type f -newer "$W/s0.txt" | head -1)
[ "$(stat -c '%a %G' "$new")" = "640 $GROUP" ] || fail "Dovecot wrote $(stat -c '%a %G' "$new") for $new"
echo "ok   Dovecot keeps new messages group-readable (0640, group $GROUP)"
dump 1 s1
mailstore_doveadm "$W" "$M" alice expunge mailbox Work uid 1
mailstore_deliver "$W" "$M" bob Archive "after level 1"
dump 2 s2
mailstore_deliver "$W" "$M" alice Work/Sub "after level 2"
dump 1 s3

t=$(now)
"$AM" fetch "$A" "$W/images" > /dev/null 2>&1 || fail "amfetchdump"
echo "     amfetchdump: $(ls "$W/images" | tr '\n' ' ')($(since "$t") s)"
[ "$(ls "$W/images" | sed 's/.*\.//' | tr -d '\n')" = 0121 ] || fail "images $(ls "$W/images")"
# Every image of the DLE, oldest first: the superseded level 2 included.
"$MAILDUMP" restore "$W"/images/* --config "$CONF" --uid-margin 0 --home "$W/r-all/%u" 2> /dev/null
mailstore_snapshot "$W" "$W/r-all" > "$W/r-all.txt"
same "maildump restore of every fetched image = state at the last dump" "$W/s3.txt" "$W/r-all.txt"

"$AM" pipe "$A" 0 2> /dev/null |
  "$MAILDUMP" restore - --config "$CONF" --uid-margin 0 --home "$W/r-pipe/%u" --user alice 2> /dev/null
mailstore_snapshot "$W" "$W/r-pipe" alice > "$W/r-pipe.txt"
grep -n '' "$W/s0.txt" | sed -n '/== alice/,/== bob/p' | sed '$d' | cut -d: -f2- > "$W/s0-alice.txt"
same "amfetchdump -p (level 0) | maildump restore - --user alice" "$W/s0-alice.txt" "$W/r-pipe.txt"

# amfetchdump -p pipes the oldest image that matches: the newest level 1 by its datestamp.
newest1=$(ls "$W/images" | sed -n 's/.*\.\([0-9]*\)\.1$/\1/p' | sort | tail -1)
{ "$AM" pipe "$A" 0; "$AM" pipe "$A" 1 "$newest1"; } 2> /dev/null |
  "$MAILDUMP" restore - --config "$CONF" --uid-margin 0 --home "$W/r-chain/%u" 2> /dev/null
mailstore_snapshot "$W" "$W/r-chain" > "$W/r-chain.txt"
same "amfetchdump -p of levels 0 and 1, concatenated, | maildump restore -" "$W/s3.txt" "$W/r-chain.txt"

# One mailbox and one message of the last dump's state, from the same piped chain.
only() { # SNAPSHOT PATTERN: the fetch header and the message lines whose mailbox[+uid] match
  { printf 'mailbox\tuid\tguid\tflags\tdate.received\tsize.physical\n'
    grep -P "^$2\t" "$1" | awk -F'\t' 'NF == 6'; } | sort
}
grep -n '' "$W/s3.txt" | sed -n '/== alice/,/== bob/p' | sed '$d' | cut -d: -f2- > "$W/s3-alice.txt"
for sel in "Work/Sub" "INBOX 1"; do
  set -- $sel
  name=r-sel-${1//\//-}${2:+-$2}
  { "$AM" pipe "$A" 0; "$AM" pipe "$A" 1 "$newest1"; } 2> /dev/null |
    "$MAILDUMP" restore - --config "$CONF" --uid-margin 0 --home "$W/$name/%u" --user alice \
      --mailbox "$1" ${2:+--uid "$2"} 2> /dev/null
  mailstore_doveadm "$W" "$W/$name" alice -f tab fetch 'mailbox uid guid flags date.received size.physical' ALL |
    sed 's/ *\\Recent//' | sort > "$W/$name.txt"
  only "$W/s3-alice.txt" "$1${2:+\t$2}" > "$W/$name.want"
  [ "$(wc -l < "$W/$name.want")" -gt 1 ] || fail "no message of alice $sel in the state to compare with"
  same "amfetchdump -p of the chain | maildump restore - --user alice --mailbox $1${2:+ --uid $2}" "$W/$name.want" "$W/$name.txt"
done

mkdir -m 0700 "$W/extract"
chown backup "$W/extract"
t=$(now)
"$AM" extract "$A" "$W/extract" > /dev/null 2>&1 || fail "amfetchdump --extract"
echo "     amfetchdump --extract: $(ls "$W/extract" | wc -l) images spooled by the application ($(since "$t") s)"
mapfile -t spooled < <(ls "$W"/extract/maildump-amanda.*.mdump)  # arrival order
[ "$(printf '%s\n' "${spooled[@]}" | sed 's/.*level-//; s/\.mdump//' | tr -d '\n')" = 0121 ] ||
  fail "spooled ${spooled[*]}"
"$MAILDUMP" restore "${spooled[@]}" --config "$CONF" --uid-margin 0 --home "$W/r-extract/%u" 2> /dev/null
mailstore_snapshot "$W" "$W/r-extract" > "$W/r-extract.txt"
same "amfetchdump --extract, then maildump restore of the spooled images" "$W/s3.txt" "$W/r-extract.txt"

t=$(now)
"$AM" checkdump "$A" > "$W/checkdump.txt" 2>&1 || { cat "$W/checkdump.txt" >&2; fail "amcheckdump"; }
grep -q 'successfully validated' "$W/checkdump.txt" || fail "amcheckdump: $(cat "$W/checkdump.txt")"
echo "ok   amcheckdump validates through maildump verify - ($(since "$t") s)"

mkdir "$W/recover"
ls /var/log/amanda/amandad > "$W/amandad-logs-before" 2>/dev/null || true
(cd "$W/recover" && printf 'sethost localhost\nsetdisk %s\nls\ncd alice\nls\nquit\n' "$(cat "$A/config-name")" |
  timeout 60 amrecover "$(cat "$A/config-name")" -s localhost -t localhost) > "$W/amrecover.txt" 2>&1 || true
grep -q ' alice/$' "$W/amrecover.txt" && grep -q ' bob/$' "$W/amrecover.txt" && grep -q ' INBOX/$' "$W/amrecover.txt" ||
  fail "amrecover does not list users and mailboxes: $(cat "$W/amrecover.txt")"
echo "ok   amrecover browses users and mailboxes from the index lines"
# amrecover's amindexd session leaves an amandad debug log that names no config: remove ours.
for f in /var/log/amanda/amandad/*.debug; do
  [ -f "$f" ] || continue
  if ! grep -qxF "${f##*/}" "$W/amandad-logs-before" && grep -qF 'SERVICE amindexd' "$f"; then
    rm -f -- "$f"
  fi
done

mkdir -m 0700 "$W/mdstate-fail"
chown backup:backup "$W/mdstate-fail"
AMANDA_DTIMEOUT=${AMANDA_DTIMEOUT:-5} "$AM" setup "$AF" "$M" "$W/maildump-app" \
  dovecot-config "$W/missing.conf" state-dir "$W/mdstate-fail" > /dev/null
t=$(now)
"$AM" dump "$AF" 0 > /dev/null 2>&1 && fail "a failing backup command gave a good dump"
grep -q 'FAILED' "$AF/last-report.txt" || fail "report: $(cat "$AF/last-report.txt")"
# The estimate meets the missing config first: the planner reports its ERROR line and no
# dump runs (no wait for the dtimeout). A failure during the dump itself goes to fd 3 as
# `? maildump: error: ...` and `sendbackup: error [...]` (tests/it/amanda.rs).
grep -q 'FAILED.*ERROR maildump: level 0: estimate failed (exit 3): .*missing.conf' "$AF/last-report.txt" || fail "maildump's message not in the report"
echo "ok   a failing backup: dump FAILED, maildump's message in the report ($(since "$t") s)"

t=$(now)
"$AM" cleanup "$AF"
"$AM" cleanup "$A"
[ ! -e "/etc/amanda/$(cat "$A/config-name" 2>/dev/null || echo none)" ] || fail "config left in /etc/amanda"
echo "time cleanup: $(since "$t") s"
echo "selftest-amanda: all checks passed"
