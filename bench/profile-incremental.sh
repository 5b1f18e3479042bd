#!/usr/bin/env bash
# Where does a no-change incremental spend its time? Samples one
# `maildump backup --base BASE -o -` with perf (DWARF call graphs) and attributes the
# samples of the main thread to phases by the functions on the stack.
#
# Usage:
#   bench/profile-incremental.sh
#
# Run after bench/bench-incremental.sh: at its end WORK/live holds exactly the state
# recorded in WORK/inc1.mdump, so a backup of WORK/live with --base WORK/inc1.mdump is a
# no-change incremental (of the same cost as the benchmark's INC0 run).
#
# Environment:
#   WORK      as for bench-incremental.sh (default /tmp/mdbench/work-inc)
#   BASE      base archive (default WORK/inc1.mdump)
#   MAILDUMP  binary (default target/release/maildump; not rebuilt)
#   FREQ      perf sampling frequency (default 4999)
#
# Output: phase table on stdout (CPU ms per phase and when it ran, relative to the first
# sample). Phases are matched in the order listed, so e.g. JSON decoding inside
# Bases::parent_catalogs and UserBase::from_parent count as "base: per-user catalogs". Samples whose stack perf could not
# unwind into maildump's code land in "other (unattributed)"; in practice they are mostly
# serde_json decoding and allocator work.
set -euo pipefail

die() { echo "profile-incremental.sh: error: $*" >&2; exit 1; }

cd "$(dirname "$0")/.."
REPO=$(pwd -P)
WORK=$(realpath -m "${WORK:-/tmp/mdbench/work-inc}")
BASE=${BASE:-$WORK/inc1.mdump}
MAILDUMP=${MAILDUMP:-$REPO/target/release/maildump}
FREQ=${FREQ:-4999}
LIVE=$WORK/live
command -v perf >/dev/null || die "perf not installed"
[[ -d $LIVE && -f $BASE ]] || die "run bench/bench-incremental.sh first ($LIVE, $BASE)"
[[ -x $MAILDUMP ]] || die "maildump binary not executable: $MAILDUMP"

P=$WORK/profile
rm -rf "$P"
mkdir -p "$P"
find "$LIVE" -type f -print0 | xargs -0 cat > /dev/null
sync
CMD=("$MAILDUMP" backup --location 'maildir:~/Maildir' --home "$LIVE/%u" --all-users --base "$BASE" -o - --quiet)
t0=$(date +%s%N)
"${CMD[@]}" > "$P/out.mdump"
t1=$(date +%s%N)
perf record -q -F "$FREQ" -g --call-graph dwarf -o "$P/perf.data" "${CMD[@]}" > "$P/out.mdump" 2> "$P/perf.err" \
    || { cat "$P/perf.err" >&2; die "perf record failed"; }
perf script -i "$P/perf.data" -F tid,time,ip,sym 2>/dev/null > "$P/perf.txt"

echo "# no-change incremental profile – $(date -Iseconds)"
echo
echo "- command: \`${CMD[*]} > FILE\`"
echo "- wall time without perf: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }') s; archive $(stat -c %s "$P/out.mdump") bytes"
python3 - "$P/perf.txt" "$FREQ" <<'EOF'
import collections, sys
path, freq = sys.argv[1], float(sys.argv[2])
samples, cur = [], None
for line in open(path, errors="replace"):
    if not line.strip():
        if cur: samples.append(cur)
        cur = None
    elif not line[0].isspace():
        p = line.split()
        cur = {"tid": p[0], "time": float(p[1].rstrip(":")), "stack": []}
    elif cur is not None:
        cur["stack"].append(line.strip())
if cur: samples.append(cur)
if not samples:
    sys.exit("no samples")
main = collections.Counter(s["tid"] for s in samples).most_common(1)[0][0]
PHASES = [
    ("Bases::open", "base: decode every catalog of every base (content map)"),
    ("Bases::parent_catalogs", "base: decode the parent's catalogs of each user again"),
    ("UserBase::from_parent", "base: index the parent's catalogs of each user"),
    ("deleted_since", "deleted-mail diff"),
    ("StoreReader>::scan", "store scan (readdir, stat per file, uidlist)"),
    ("write_mailbox_record", "write catalogs (serialize JSON + zstd)"),
    ("ArchiveWriter<W>::finish", "finish archive (index, trailer)"),
    ("backup_user", "rest of backup_user (lookups, clones, frees)"),
    ("maildump::ops::backup::backup", "rest of backup"),
    ("", "other (unattributed)"),
]
agg = collections.defaultdict(list)
for s in samples:
    st = " ".join(s["stack"])
    if s["tid"] != main:
        name = "helper threads (compression)" if "compress" in st else "helper threads (other)"
    else:
        name = next(n for k, n in PHASES if k in st)
    agg[name].append(s["time"])
t0 = min(s["time"] for s in samples)
t1 = max(s["time"] for s in samples)
ms = 1000.0 / freq
print(f"- perf: {len(samples)} samples at {freq:.0f} Hz over {t1 - t0:.3f} s (perf slows the run a little)")
print()
print("| phase | CPU ms | share of samples | from s | to s |")
print("|---|---|---|---|---|")
order = [n for _, n in PHASES] + ["helper threads (compression)", "helper threads (other)"]
for n in order:
    v = agg.get(n)
    if not v: continue
    print(f"| {n} | {len(v) * ms:.0f} | {100.0 * len(v) / len(samples):.0f} % | {min(v) - t0:.3f} | {max(v) - t0:.3f} |")
sc = sum(1 for s in samples if s["tid"] == main and any("statx" in f or "lstat" in f for f in s["stack"]))
print()
print(f"of which stat() of message files: {sc * ms:.0f} ms")
EOF
