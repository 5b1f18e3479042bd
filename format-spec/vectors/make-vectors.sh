#!/bin/sh
# Rebuild the format test vectors from the fixture store, deterministically.
#   format-spec/vectors/make-vectors.sh MAILDUMP_BINARY OUT_DIR
# Writes OUT_DIR/chain.mdump and OUT_DIR/chain.list.jsonl (a full backup), then changes the
# store copy the way Dovecot would (flag change = rename, expunge = unlink, delivery into
# new/, folder rename, folder delete, move = link + unlink) and writes two incrementals,
# chain.inc1.mdump and chain.inc2.mdump, each with its .list.jsonl (listed through the
# chain), and chain.deleted.jsonl (`list --deleted --json` of the chain), all format 1.1
# (--format-minor 1); sis.mdump (1.2, --format-minor 2) and modseq.mdump (1.3).
# (fixture.mdump, the 1.0 vector, was made by the 1.0 writer with the same store and
# options as chain.mdump; it is frozen, not rebuilt.) The store is copied, its
# file times are set from fixtures/store.mtimes, modes are normalised (0600 files, 0700
# directories) and ownership to 0:0 (so this must run as root), so the archive bytes do not
# depend on the checkout. Every archive is written at zstd level 3 (the default before it
# became 2), so the vectors do not change with the default. tests/it/format_vectors.rs runs
# it and compares with v1/.
set -eu
bin=$1
out=$2
repo=$(cd "$(dirname "$0")/../.." && pwd)
# A fixed path: the home template is recorded in the manifest.
work=/tmp/maildump-vectors
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
cp -a "$repo/fixtures/store" "$work/store"
"$repo/fixtures/set-mtimes.sh" "$work/store"
find "$work/store" -type f -exec chmod 0600 {} +
find "$work/store" -type d -exec chmod 0700 {} +
chown -R 0:0 "$work/store"
"$repo/fixtures/set-mtimes.sh" "$work/store"
mkdir -p "$out"
"$bin" backup --location 'maildir:~/Maildir' --home "$work/store/%u" --all-users \
  --threads 1 --level 3 --created 2026-01-01T00:00:00Z --archive-id 00000000-0000-4000-8000-000000000001 \
  --format-minor 1 --quiet -o "$out/chain.mdump"

"$bin" list --json "$out/chain.mdump" > "$out/chain.list.jsonl"

m="$work/store/alice/Maildir"
# inc1: a flag change, an expunge, a new delivery, a folder rename.
mv "$m/cur/1795888438.M825200P21940.vm,S=259,W=269:2,S" "$m/cur/1795888438.M825200P21940.vm,S=259,W=269:2,FS"
rm "$m/cur/1795888438.M825204P21940.vm,S=285,W=295:2,DSc"
mkdir -p "$m/new"
printf 'From: New Sender <new@example.net>\nTo: alice@example.org\nSubject: Delivered after the full\nMessage-ID: <fixture.alice.9@example.org>\n\nNew mail.\n' \
  > "$m/new/1767312000.M9P1.fixture"
chmod 0600 "$m/new/1767312000.M9P1.fixture"
touch -d @1767312000 "$m/new/1767312000.M9P1.fixture"
mv "$m/.Work" "$m/.Job"
mv "$m/.Work.Sub" "$m/.Job.Sub"
"$bin" backup --location 'maildir:~/Maildir' --home "$work/store/%u" --all-users \
  --threads 1 --level 3 --created 2026-01-02T00:00:00Z --archive-id 00000000-0000-4000-8000-000000000002 \
  --format-minor 1 --base "$out/chain.mdump" --quiet -o "$out/chain.inc1.mdump"
"$bin" list --json "$out/chain.mdump" "$out/chain.inc1.mdump" > "$out/chain.inc1.list.jsonl"

# inc2: a folder delete, a move between folders (bob), another flag change.
rm -r "$m/.&ANw-n&AO8- Box"
b="$work/store/bob/Maildir"
ln "$b/new/1795888439.M54752P21956.vm,S=253,W=263" "$b/.Archive/cur/1795888439.M54752P21956.vm,S=253,W=263:2,S"
rm "$b/new/1795888439.M54752P21956.vm,S=253,W=263"
# As Dovecot's move does: the next UID of the target, and the message GUID kept.
printf '3 V1700000002 N3 Gb0b00000000000000000000000000002\n1 G1590000000.M1P1.fixture :1795888439.M72939P21957.vm,S=252,W=262\n2 G1590100000.M2P1.fixture :1795888439.M54752P21956.vm,S=253,W=263\n' \
  > "$b/.Archive/dovecot-uidlist"
mv "$m/.Archive/cur/1795888438.M899698P21944.vm,S=259,W=269:2,S" "$m/.Archive/cur/1795888438.M899698P21944.vm,S=259,W=269:2,RS"
"$bin" backup --location 'maildir:~/Maildir' --home "$work/store/%u" --all-users \
  --threads 1 --level 3 --created 2026-01-03T00:00:00Z --archive-id 00000000-0000-4000-8000-000000000003 \
  --format-minor 1 --base "$out/chain.inc1.mdump" --quiet -o "$out/chain.inc2.mdump"
"$bin" list --json "$out/chain.mdump" "$out/chain.inc1.mdump" "$out/chain.inc2.mdump" \
  > "$out/chain.inc2.list.jsonl"

# inc3: no change at all: every catalog is copied from inc2 (or, through it, from the
# archive that wrote it), no file is read.
"$bin" backup --location 'maildir:~/Maildir' --home "$work/store/%u" --all-users \
  --threads 1 --level 3 --created 2026-01-04T00:00:00Z --archive-id 00000000-0000-4000-8000-000000000004 \
  --format-minor 1 --base "$out/chain.inc2.mdump" --quiet -o "$out/chain.inc3.mdump"
"$bin" list --json "$out/chain.mdump" "$out/chain.inc1.mdump" "$out/chain.inc2.mdump" \
  "$out/chain.inc3.mdump" > "$out/chain.inc3.list.jsonl"
"$bin" list --deleted --json "$out/chain.mdump" "$out/chain.inc1.mdump" "$out/chain.inc2.mdump" \
  "$out/chain.inc3.mdump" > "$out/chain.deleted.jsonl"

# sis (1.2): the sdbox store with single-instance attachments (fixtures/sdbox-store), its
# messages with attachments stored in parts, each attachment once as a blob.
cp -a "$repo/fixtures/sdbox-store" "$work/sdbox"
find "$work/sdbox" -type f -exec chmod 0600 {} +
find "$work/sdbox" -type d -exec chmod 0700 {} +
find "$work/sdbox" -exec touch -h -d @1767225600 {} +
chown -R 0:0 "$work/sdbox"
"$bin" backup --location 'sdbox:~/sdbox' --home "$work/sdbox/%u" --attachment-dir '~/attachments' \
  --all-users --threads 1 --level 3 --created 2026-01-05T00:00:00Z \
  --archive-id 00000000-0000-4000-8000-000000000005 --format-minor 2 --quiet -o "$out/sis.mdump"
"$bin" list --json "$out/sis.mdump" > "$out/sis.list.jsonl"

# modseq (1.3): a Maildir store whose Dovecot index holds what the files do not
# (fixtures/index-store): keywords beyond the 26 letters of dovecot-keywords, and modseqs.
cp -a "$repo/fixtures/index-store" "$work/index"
find "$work/index" -type f -exec chmod 0600 {} +
find "$work/index" -type d -exec chmod 0700 {} +
find "$work/index" -exec touch -h -d @1767312000 {} +
chown -R 0:0 "$work/index"
"$bin" backup --location 'maildir:~/Maildir' --home "$work/index/%u" --all-users --threads 1 --level 3 \
  --created 2026-01-06T00:00:00Z --archive-id 00000000-0000-4000-8000-000000000006 --quiet \
  --format-minor 3 -o "$out/modseq.mdump"
"$bin" list --json "$out/modseq.mdump" > "$out/modseq.list.jsonl"

# point (1.4): the sdbox store of sis.mdump again, with a POINT frame in pages of two
# entries and 512-byte data frames, so that every table of it has several pages; and
# point.inc1.mdump, an incremental with no change: its catalogs are copies, whose records
# a point reader finds on point.mdump's pages.
for n in 7 8; do
  case $n in 7) base= ;; 8) base="--base $out/point.mdump" ;; esac
  # shellcheck disable=SC2086 # $base is empty or two words
  "$bin" backup --location 'sdbox:~/sdbox' --home "$work/sdbox/%u" --attachment-dir '~/attachments' \
    --all-users --threads 1 --level 3 --created "2026-01-0${n}T00:00:00Z" \
    --archive-id "00000000-0000-4000-8000-00000000000$n" --page-entries 2 --frame-target 512 \
    $base --quiet -o "$out/point$([ "$n" = 8 ] && echo .inc1).mdump"
done
"$bin" list --json "$out/point.mdump" > "$out/point.list.jsonl"
"$bin" list --json "$out/point.mdump" "$out/point.inc1.mdump" > "$out/point.inc1.list.jsonl"

# Encrypted vectors (FORMAT.md "Encrypted archives"): fixture.mdump as age files, to the
# committed TEST-ONLY identities. age encryption is randomized: these are checked by
# decrypting (to fixture.mdump's bytes), never reproduced.
#   age-keygen (comment lines added)   > TEST-ONLY-identity.txt
#   ssh-keygen -t ed25519 -N '' -f TEST-ONLY-ssh-ed25519
#   age -r "$(grep -o 'age1[0-9a-z]*' TEST-ONLY-identity.txt)" -o fixture.age fixture.mdump
#   age -R TEST-ONLY-ssh-ed25519.pub -o fixture.ssh.age fixture.mdump
