#!/bin/sh
# Runs every fuzz target for SECONDS (default 60) each, one after another, and prints each
# target's executions, coverage (edges) and corpus size, and whether it found a crash.
# usage: fuzz/run-all.sh [SECONDS] [TARGET...]   (from the repository root or fuzz/)
set -u
cd "$(dirname "$0")"
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-$(cargo fuzz list)}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
# `cargo fuzz build` takes one target or all of them.
for t in $targets; do
    cargo fuzz build -s none "$t" >/dev/null 2>&1 || cargo fuzz build -s none "$t" || exit 1
done
mkdir -p artifacts
status=0
printf '%-16s %12s %10s %8s %s\n' target executions coverage corpus result
for t in $targets; do
    log=artifacts/$t.log
    mkdir -p corpus/$t
    cargo fuzz run -s none "$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    # The last status line: "#N  DONE/pulse  cov: C ft: F corp: K/..."
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    corp=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    if [ $rc -eq 0 ]; then result=ok; else result="CRASH (see $log, artifacts/$t/)"; status=1; fi
    printf '%-16s %12s %10s %8s %s\n' "$t" "${runs:-?}" "${cov:-?}" "${corp:-?}" "$result"
done
exit $status
