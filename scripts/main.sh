#!/usr/bin/env bash
# The main job: run the seed document's three examples (Rust front).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toolchain.sh
cargo run --release -p joblet --example seed
