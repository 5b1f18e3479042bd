#!/bin/sh
# Back up the bundled fixture store (two users, Maildir++) and list the archive.
# Usage: ./demo.sh [ARCHIVE]   (default: /tmp/maildump-demo.mdump)
set -eu
cd "$(dirname "$0")"
out=${1:-/tmp/maildump-demo.mdump}
fixtures/set-mtimes.sh
cargo build --release --quiet
target/release/maildump backup --location 'maildir:~/Maildir' --home 'fixtures/store/%u' --all-users -o "$out"
target/release/maildump list "$out"
