# shellcheck shell=bash
# Sourced by the backup-software self-tests: a copy of the fixture store with its own
# doveadm-only Dovecot config, changes made through doveadm, and Dovecot's view of a store
# as sorted text (what the tests compare before backup and after restore).
#
#   mailstore_new DIR          copies fixtures/store to DIR/mail (mail uid/gid 5000, mtimes
#                              put back) and writes DIR/dovecot.conf; DIR must exist
#   mailstore_doveadm DIR ROOT USER ARGS...   doveadm for USER whose home is ROOT/USER
#   mailstore_deliver DIR ROOT USER MAILBOX SUBJECT
#   mailstore_snapshot DIR ROOT [USER...]     mailboxes (messages, uidnext, uidvalidity,
#                              guid) and messages (uid, guid, flags but \Recent, received,
#                              size) as doveadm reports them; users default to alice bob
# and the self-tests' helpers: selftest_begin NAME (sets MAILDUMP, the binary, default
# target/debug/maildump, and W, a new 0755 scratch dir /tmp/selftest-NAME.XXXXXX),
# fail MESSAGE, now, since START (seconds, 2 decimals),
# same NAME EXPECTED ACTUAL (diff of two snapshots, or fail; uses $W for the diff).
MAILSTORE_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MAILSTORE_UID=5000

mailstore_new() {
  local dir=${1:?}
  cp -a "$MAILSTORE_REPO/fixtures/store" "$dir/mail"
  "$MAILSTORE_REPO/fixtures/set-mtimes.sh" "$dir/mail"
  chown -R "$MAILSTORE_UID:$MAILSTORE_UID" "$dir/mail"
  # shellcheck source=../../fixtures/dovecot-conf.sh
  . "$MAILSTORE_REPO/fixtures/dovecot-conf.sh"
  dovecot_conf "$dir/dovecot.conf" "$dir/dovecot" 'maildir:~/Maildir' "$MAILSTORE_UID" "$MAILSTORE_UID"
  chmod -R a+rX "$dir/dovecot" "$dir/dovecot.conf"
}

mailstore_doveadm() {
  local dir=${1:?} root=${2:?} user=${3:?}
  shift 3
  USER=$user HOME=$root/$user doveadm -c "$dir/dovecot.conf" "$@"
}

mailstore_deliver() {
  printf 'From: sender@example.net\nTo: %s@example.org\nSubject: %s\n\n%s body\n' "$3" "$5" "$5" |
    mailstore_doveadm "$1" "$2" "$3" save -m "$4"
}

mailstore_snapshot() {
  local dir=${1:?} root=${2:?} user
  shift 2
  [ $# -gt 0 ] || set -- alice bob
  for user in "$@"; do
    echo "== $user"
    mailstore_doveadm "$dir" "$root" "$user" -f tab mailbox status 'messages uidnext uidvalidity guid' '*' 2>&1 | sort
    mailstore_doveadm "$dir" "$root" "$user" -f tab fetch 'mailbox uid guid flags date.received size.physical' ALL 2>&1 |
      sed 's/ *\\Recent//' | sort
  done
}

selftest_begin() {
  MAILDUMP=$(realpath "${MAILDUMP:-$MAILSTORE_REPO/target/debug/maildump}")
  [ -x "$MAILDUMP" ] || { echo "no maildump binary at $MAILDUMP (cargo build)" >&2; exit 2; }
  W=$(mktemp -d "/tmp/selftest-$1.XXXXXX")
  chmod 755 "$W"
}
fail() { echo "FAIL: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { printf '%.2f' "$(echo "$(now) - $1" | bc)"; }
same() { # NAME EXPECTED ACTUAL
  diff -u "$2" "$3" > "${W:?}/diff" || { cat "$W/diff" >&2; fail "$1: doveadm shows a different store"; }
  echo "ok   $1"
}
