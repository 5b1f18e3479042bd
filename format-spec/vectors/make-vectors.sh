#!/bin/sh
# Rebuild the format test vectors from the fixture store, deterministically.
#   format-spec/vectors/make-vectors.sh MAILDUMP_BINARY OUT_DIR
# Writes OUT_DIR/fixture.mdump and OUT_DIR/fixture.list.jsonl. The store is copied, its
# file times are set from fixtures/store.mtimes, modes are normalised (0600 files, 0700
# directories) and ownership to 0:0 (so this must run as root), so the archive bytes do not
# depend on the checkout. tests/it/format_vectors.rs runs it and compares with v1/.
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
  --threads 1 --created 2026-01-01T00:00:00Z --archive-id 00000000-0000-4000-8000-000000000001 \
  --quiet -o "$out/fixture.mdump"
"$bin" list --json "$out/fixture.mdump" > "$out/fixture.list.jsonl"
