#!/usr/bin/env bash
# Long fuzzing campaigns: every target of maildump::fuzzing (or those named) under
# libFuzzer (cargo fuzz), RUNS executions each, starting from the checked-in seed corpus
# (fuzz/corpus/<target>/); inputs that find new coverage go to fuzz/corpus-run/<target>/,
# crashes to fuzz/artifacts/<target>/. Prints one table row per target: executions,
# seconds, crashes. Every crash found must become a regression test: copy the input into
# fuzz/corpus/<target>/ (the `fuzz` integration test runs every seed) and fix the bug.
#
#   fuzz/run.sh                          # every target, 10 million executions each
#   RUNS=100000 fuzz/run.sh uidlist      # one target, briefly
#   fuzz/run.sh --reproduce uidlist FILE # run one input (a crash) under the target
#
# Only the stable toolchain is needed: cargo fuzz is run with RUSTC_BOOTSTRAP=1 and
# --sanitizer none (libFuzzer's coverage guidance, no AddressSanitizer; maildump forbids
# unsafe code). Debug assertions are on, so an arithmetic overflow is a crash. cargo-fuzz
# is installed with `cargo install cargo-fuzz --locked` when missing. Runs at nice 19.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = "--reproduce" ]; then
    input=$(realpath "${3:?input file}")
fi
cd "$here"
RUNS="${RUNS:-10000000}"
MAX_LEN="${MAX_LEN:-65536}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz > /dev/null || cargo install cargo-fuzz --locked
all=$(sed -n 's/^name = "\([a-z0-9_]*\)"$/\1/p' Cargo.toml | grep -v '^maildump-fuzz$')
fuzz=(nice -n 19 cargo fuzz)
build=(--sanitizer none --debug-assertions)

if [ "${1:-}" = "--reproduce" ]; then
    t="${2:?target}"
    "${fuzz[@]}" run "${build[@]}" "$t" "$input"
    exit
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || read -r -a targets <<< "$(echo $all)"
"${fuzz[@]}" build "${build[@]}"
mkdir -p logs
printf '| target | executions | seconds | exec/s | crashes |\n|---|---|---|---|---|\n'
for t in "${targets[@]}"; do
    mkdir -p "corpus-run/$t" "artifacts/$t"
    log="logs/$t.log"
    start=$(date +%s)
    set +e
    "${fuzz[@]}" run "${build[@]}" "$t" "corpus-run/$t" "corpus/$t" -- \
        -runs="$RUNS" -max_len="$MAX_LEN" -timeout=60 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" > "$log" 2>&1
    rc=$?
    set -e
    secs=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    crashes=$(find "artifacts/$t" -type f | wc -l)
    [ "$rc" -eq 0 ] || [ "$crashes" -gt 0 ] || crashes="run failed (exit $rc, see fuzz/$log)"
    printf '| %s | %s | %s | %s | %s |\n' "$t" "${execs:-?}" "$secs" \
        "$(( ${execs:-0} / (secs > 0 ? secs : 1) ))" "$crashes"
done
