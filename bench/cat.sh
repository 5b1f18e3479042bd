#!/usr/bin/env bash
# bench/cat.sh: `maildump cat` of single messages (issue 17), old binary against new.
#
#   bench/cat.sh OLD NEW ARCHIVE USER:MAILBOX:UID...
#
# For each message: bytes read (strace -e trace=read,pread64 -f, summed: the ELF loader's and
# /proc reads included) and one output check (both binaries give the same bytes), then
# RUNS (default 21) runs of each binary, alternating, timed from process start to exit:
# median and mean wall ms, median user+sys ms (getrusage of the child). Markdown on stdout.
# The archive is not modified; nothing is written but a scratch directory, removed at exit.
#
#   RUNS=41 bench/cat.sh target/old/maildump target/release/maildump /tmp/a.mdump user0:INBOX:287
set -euo pipefail
ME=cat.sh
die() { echo "$ME: error: $*" >&2; exit 1; }
(( $# >= 4 )) || die "usage: $ME OLD NEW ARCHIVE USER:MAILBOX:UID..."
OLD=$1 NEW=$2 ARCH=$3
shift 3
RUNS=${RUNS:-21}
for b in "$OLD" "$NEW"; do [[ -x $b ]] || die "$b: not an executable"; done
[[ -f $ARCH ]] || die "$ARCH: no such archive"
command -v strace > /dev/null || die "strace is needed to count the bytes read"
T=$(mktemp -d "${TMPDIR:-/tmp}/maildump-cat-bench.XXXXXX")
trap 'rm -rf -- "$T"' EXIT

# read_bytes BIN USER MAILBOX UID: bytes the process read (read + pread64 results).
read_bytes() {
    strace -f -qq -e trace=read,pread64 -o "$T/strace" "$1" cat "$ARCH" --user "$2" --mailbox "$3" --uid "$4" > /dev/null
    perl -ne '$s += $1 if /= (\d+)$/; END { print $s + 0 }' "$T/strace"
}

echo "## maildump cat: $(basename "$ARCH") ($(stat -c %s "$ARCH") bytes), $RUNS alternating runs each"
echo
echo "| message | binary | bytes read | wall median ms | wall mean ms | CPU median ms |"
echo "|---|---|---|---|---|---|"
for m in "$@"; do
    IFS=: read -r user mailbox uid <<< "$m"
    "$OLD" cat "$ARCH" --user "$user" --mailbox "$mailbox" --uid "$uid" > "$T/old.out"
    "$NEW" cat "$ARCH" --user "$user" --mailbox "$mailbox" --uid "$uid" > "$T/new.out"
    cmp -s "$T/old.out" "$T/new.out" || die "$m: the binaries give different bytes"
    rb_old=$(read_bytes "$OLD" "$user" "$mailbox" "$uid")
    rb_new=$(read_bytes "$NEW" "$user" "$mailbox" "$uid")
    python3 - "$RUNS" "$OLD" "$NEW" "$ARCH" "$user" "$mailbox" "$uid" "$rb_old" "$rb_new" "$m" <<'EOF'
import os, resource, statistics, subprocess, sys, time
runs, old, new, arch, user, mailbox, uid, rb_old, rb_new, name = sys.argv[1:]
args = ['cat', arch, '--user', user, '--mailbox', mailbox, '--uid', uid]
wall = {old: [], new: []}
cpu = {old: [], new: []}
devnull = open(os.devnull, 'wb')
for _ in range(2):  # warm the page cache and the binaries
    for b in (old, new):
        subprocess.run([b] + args, stdout=devnull, check=True)
for _ in range(int(runs)):
    for b in (old, new):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([b] + args, stdout=devnull, check=True)
        t1 = time.perf_counter()
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall[b].append((t1 - t0) * 1000)
        cpu[b].append((r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000)
for label, b, rb in (('old', old, rb_old), ('new', new, rb_new)):
    print(f"| {name} | {label} | {int(rb):,} | {statistics.median(wall[b]):.1f} | "
          f"{statistics.mean(wall[b]):.1f} | {statistics.median(cpu[b]):.1f} |")
EOF
done
