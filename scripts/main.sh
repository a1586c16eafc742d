#!/usr/bin/env bash
# The main job: run the seed document's three examples, in Rust and in Python.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toolchain.sh
echo "== Rust: crates/joblet/examples/seed.rs"
cargo run --release -p joblet --example seed
source scripts/python_env.sh
for i in 1 2 3; do
    echo "== Python: examples/seed_$i.py (the seed's code, with import joblet as joblib)"
    "$PY" "examples/seed_$i.py"
done
