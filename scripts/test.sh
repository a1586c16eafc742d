#!/usr/bin/env bash
# Every check and test: formatting, lints (warnings are errors), the Rust test suites and
# doctests, then the Python package built into .venv and its pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toolchain.sh

echo "== rustfmt"
cargo fmt --all --check
echo "== clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    # Per-test timeouts live in .config/nextest.toml.
    cargo nextest run --workspace --all-features --no-fail-fast
else
    cargo test --workspace --all-features --lib --bins --tests --examples
fi
echo "== doctests"
cargo test --workspace --all-features --doc
echo "== python: build joblet into .venv"
source scripts/python_env.sh
echo "== pytest"
"$PY" -m pytest tests/python -q -p no:cacheprovider
