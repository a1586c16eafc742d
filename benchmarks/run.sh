#!/usr/bin/env bash
# Builds and runs one of joblet's benches in release mode and saves its output, with a header
# describing the machine, to benchmarks/runs/YYYY-MM-DD-<bench>-<label>.txt.
#
#   benchmarks/run.sh engine              # joblet's engine vs rayon vs a loop (crates/joblet/benches/engine.rs)
#   benchmarks/run.sh processes           # the process pool vs procspawn vs memcpy (benches/processes.rs)
#   benchmarks/run.sh BENCH --quick       # smoke run (small sizes); saved as ...-<bench>-<label>-quick.txt
#
# Environment:
#   BENCH_LABEL       the <label> in the file name (default: "<nproc>core", e.g. "2core")
#   CARGO_TARGET_DIR  where to build (default: cargo's; use a separate one, e.g.
#                     /work/target-bench, to avoid waiting on other builds' locks)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

usage() { echo "usage: $0 engine|processes [--quick]" >&2; exit 2; }
bench="${1:-}"
case "$bench" in
    engine) title="engine bench" ;;
    processes) title="process-pool bench" ;;
    *) usage ;;
esac
shift
quick=""
suffix=""
for arg in "$@"; do
    case "$arg" in
        --quick) quick="--quick"; suffix="-quick" ;;
        *) usage ;;
    esac
done

label="${BENCH_LABEL:-$(nproc)core}"
out="benchmarks/runs/$(date +%F)-${bench}-${label}${suffix}.txt"
mkdir -p benchmarks/runs

# Build first, so that compiler output stays out of the saved file.
cargo bench -p joblet --bench "$bench" --no-run

cpu_model="$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
    commit="$commit (working tree has uncommitted changes)"
fi

{
    echo "# joblet $title"
    echo "# date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "# host:    $(hostname 2>/dev/null || echo unknown) (label: $label)"
    echo "# nproc:   $(nproc)"
    echo "# cpu:     ${cpu_model:-unknown}"
    echo "# memory:  $(grep -m1 '^MemTotal' /proc/meminfo 2>/dev/null | awk '{printf "%.1f GiB", $2/1048576}')"
    echo "# kernel:  $(uname -sr)"
    echo "# rustc:   $(rustc --version)"
    if [ "$bench" = processes ]; then
        echo "# peer:    procspawn $(grep -A1 '^name = "procspawn"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')"
    fi
    echo "# commit:  $commit"
    echo "# load:    $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null) (1/5/15 min, before the run)"
    echo "# command: cargo bench -p joblet --bench $bench${quick:+ -- $quick}"
    echo
} > "$out"

cargo bench -p joblet --bench "$bench" -- $quick 2>&1 | grep -v -e '^ *Finished ' -e '^ *Running ' | tee -a "$out"

echo
echo "saved to $out"
