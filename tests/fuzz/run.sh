#!/usr/bin/env bash
# Usage: ./run.sh TARGET [SECONDS]  (from tests/fuzz). Rebuilds, then fuzzes TARGET on one core.
set -euo pipefail
cd "$(dirname "$0")"
target=$1
secs=${2:-600}
cargo afl build --release -j1
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
mkdir -p out
# -t: a "hang" is an input over 2 s; -m: 4 GiB address space, so a huge allocation is a crash.
exec cargo afl fuzz -i "seeds/$target" -o "out/$target" -V "$secs" -t 2000 -m 4096 \
    "target/release/$target"
