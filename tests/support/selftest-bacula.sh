#!/usr/bin/env bash
# Self-test of tests/support/bacula.sh and of the Bacula design in backup-software.md, with
# real daemons, the fixture store and the maildump binary (MAILDUMP, default
# target/debug/maildump): Full, Incremental, Differential, Incremental with changes made
# through doveadm in between; restores through bconsole alone of the newest state (`current
# select`), of an earlier state (`before=`), of one user, one mailbox and one message; a
# failing backup command failing the job with its message in the job log. Each restore is
# compared with what doveadm showed at backup time. Prints timings. As root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=mailstore.sh
. "$here/mailstore.sh"
BAC=$here/bacula.sh
selftest_begin bacula
B=$W/bacula
cleanup() { "$BAC" cleanup "$B" || true; rm -rf -- "${W:?}"; }
trap cleanup EXIT
[ -z "${KEEP:-}" ] || trap - EXIT

mailstore_new "$W"
M=$W/mail
CONF=$W/dovecot.conf
OPTS="--config $CONF --home $M/%%u --all-users"
"$BAC" setup "$B"
# A FileSet NAME with the PLUGIN lines and a Job NAME whose client RunScript After runs
# `maildump bacula finish` on STATE: it commits the job's state, or fails the job (status E).
mail_job() { # NAME STATE PLUGIN...
  local name=$1 state=$2 plugin
  shift 2
  printf 'FileSet {\n  Name = "%s"\n  Include {\n' "$name"
  for plugin in "$@"; do printf '    Plugin = "%s"\n' "$plugin"; done
  printf '  }\n}\n'
  cat <<CONF
Job {
  Name = "$name"
  Type = Backup
  Level = Incremental
  Client = mdt-fd
  FileSet = "$name"
  Storage = File
  Pool = Default
  Messages = Standard
  RunScript {
    RunsWhen = After
    RunsOnClient = yes
    FailJobOnError = yes
    Command = "$MAILDUMP bacula finish --job %i --state-dir $state"
  }
}
CONF
}
# The restores are compared exactly with what doveadm showed at backup time, so they keep
# UIDNEXT as it was (--uid-margin 0; by default a restore raises it by 100000, README).
# "|": the director runs /bin/echo and uses its output lines as plugin strings, with %i
# (JobId) and %l (the level, after any upgrade to Full) substituted; %% keeps a %.
{
  mail_job Mail "$W/state" \
    "|/bin/echo bpipe:/@maildump/mail.%i.%l.mdump:$MAILDUMP bacula backup --job %i --level %l --state-dir $W/state $OPTS:$MAILDUMP bacula receive --job %i --spool $W/spool" \
    "|/bin/echo bpipe:/@maildump/restore:/bin/true:$MAILDUMP bacula restore --job %i --spool $W/spool --config $CONF --uid-margin 0 -- %%w"
  mail_job MailBroken "$W/state-broken" \
    "|/bin/echo bpipe:/@maildump/broken.%i.%l.mdump:$MAILDUMP bacula backup --job %i --level %l --state-dir $W/state-broken --config $W/missing.conf --all-users:/bin/true"
} | "$BAC" add-conf "$B"
t=$(now); "$BAC" start "$B"; echo "time start: $(since "$t") s"

job() { # LEVEL SNAPSHOT-NAME
  local t out
  t=$(now)
  out=$("$BAC" run-job "$B" Mail "$1") || fail "$1 backup: $out; log: $("$BAC" job-log "$B" "${out%% *}")"
  echo "ok   $1 backup, job ${out%% *} ($(since "$t") s)"
  mailstore_snapshot "$W" "$M" > "$W/$2.txt"
  echo "${out%% *}" > "$W/$2.jobid"
}
job Full s0
mailstore_deliver "$W" "$M" alice INBOX "after the full"
mailstore_doveadm "$W" "$M" bob flags add '\Answered' mailbox INBOX uid 1
job Incremental s1
mailstore_doveadm "$W" "$M" alice expunge mailbox Work uid 1
mailstore_deliver "$W" "$M" bob Archive "after the first incremental"
job Differential s2
mailstore_deliver "$W" "$M" alice Work/Sub "after the differential"
job Incremental s3
# The agent's state keeps what later jobs are based on (the newest Full, the newest job);
# tests/it/bacula.rs checks that their message frames are punched out.
kept=$(cd "$W/state/committed" && echo *)
[ "$kept" = "$(cat "$W/s0.jobid").json $(cat "$W/s0.jobid").mdump $(cat "$W/s3.jobid").json $(cat "$W/s3.jobid").mdump" ] ||
  fail "state keeps $kept, expected the Full's and the last job's"
echo "ok   the state keeps the Full's and the last job's index"
levels=$("$BAC" sql "$B" "select group_concat(Level, '') from (select Level from Job where Name='Mail' order by JobId)")
[ "$levels" = FIDI ] || fail "job levels $levels, expected FIDI"

restore() { # NAME WHERE SELECTION...
  local name=$1 t out
  shift
  t=$(now)
  out=$("$BAC" restore-job "$B" "$@") || fail "restore $name: $out; log: $("$BAC" job-log "$B" "${out%% *}")"
  echo "     restore $name: job ${out%% *}, jobs $("$BAC" job-log "$B" "${out%% *}" | sed -n 's/.*Restoring files from JobId(s) //p') ($(since "$t") s)"
}
restore current "$W/r-current" fileset=Mail current select
mailstore_snapshot "$W" "$W/r-current" > "$W/r-current.txt"
same "restore current select = state at the last incremental" "$W/s3.txt" "$W/r-current.txt"

# before= selects jobs whose JobTDate (their end) is strictly earlier: one second after the end.
end1=$("$BAC" sql "$B" "select datetime(EndTime, '+1 second') from Job where JobId=$(cat "$W/s1.jobid")")
restore before "$W/r-s1" fileset=Mail "before=\"$end1\"" select
mailstore_snapshot "$W" "$W/r-s1" > "$W/r-s1.txt"
same "restore before=<end of the first incremental> = state then" "$W/s1.txt" "$W/r-s1.txt"

restore user "\"$W/r-alice --user alice\"" fileset=Mail current select
[ ! -e "$W/r-alice/bob" ] || fail "restore of alice also restored bob"
mailstore_snapshot "$W" "$W/r-alice" alice > "$W/r-alice.txt"
mailstore_snapshot "$W" "$M" alice > "$W/s3-alice.txt"
same "restore where=\"ROOT --user alice\" = alice at the last incremental" "$W/s3-alice.txt" "$W/r-alice.txt"

restore mailbox "\"$W/r-mbox --user alice --mailbox 'Work/Sub'\"" fileset=Mail current select
mailstore_doveadm "$W" "$W/r-mbox" alice -f tab fetch 'mailbox uid guid flags date.received size.physical' ALL |
  sed 's/ *\\Recent//' | sort > "$W/r-mbox.txt"
only() { # SNAPSHOT PATTERN: the fetch header and the message lines whose mailbox[+uid] match
  { printf 'mailbox\tuid\tguid\tflags\tdate.received\tsize.physical\n'
    grep -P "^$2\t" "$1" | awk -F'\t' 'NF == 6'; } | sort
}
only "$W/s3-alice.txt" 'Work/Sub' > "$W/s3-mbox.txt"
same "restore of one mailbox (Work/Sub)" "$W/s3-mbox.txt" "$W/r-mbox.txt"

restore message "\"$W/r-msg --user alice --mailbox INBOX --uid 6\"" fileset=Mail current select
mailstore_doveadm "$W" "$W/r-msg" alice -f tab fetch 'mailbox uid guid flags date.received size.physical' ALL |
  sed 's/ *\\Recent//' | sort > "$W/r-msg.txt"
only "$W/s3-alice.txt" 'INBOX\t6' > "$W/s3-msg.txt"
same "restore of one message (INBOX uid 6)" "$W/s3-msg.txt" "$W/r-msg.txt"

out=$("$BAC" run-job "$B" MailBroken Full) && fail "a failing backup command gave a good job: $out"
id=${out%% *}
[ "$(echo "$out" | cut -d' ' -f2)" = E ] || fail "failing backup command: job status $out, expected E"
"$BAC" job-log "$B" "$id" | grep -q "missing.conf: No such file" || fail "maildump's error is not in the job log"
"$BAC" job-log "$B" "$id" | grep -q '\*\*\* Backup Error \*\*\*' || fail "job log does not say Backup Error"
echo "ok   a failing backup command fails the job (status E) with maildump's message in the job log"

t=$(now); "$BAC" stop "$B"; echo "time stop: $(since "$t") s"
echo "selftest-bacula: all checks passed"
