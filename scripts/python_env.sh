# Sourced by the other scripts (after toolchain.sh): a project venv in .venv with the Python
# test and example dependencies, and joblet built from this tree and installed into it.
# Sets $PY to the venv's interpreter.
python_bin=${PYTHON:-python3}
if ! command -v "$python_bin" >/dev/null 2>&1; then
    echo "$python_bin not found: installing Debian's Python" >&2
    apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-dev >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    "$python_bin" -m venv .venv || {
        echo "could not create .venv: installing python3-venv" >&2
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        "$python_bin" -m venv .venv
    }
fi
PY="$PWD/.venv/bin/python"
# Installed once per venv; pip says nothing when they are already there.
"$PY" -m pip install -q --disable-pip-version-check \
    "maturin>=1.5,<2" "cloudpickle>=2.2" numpy pytest pytest-timeout "joblib==1.6.0" \
    "distributed>=2024.1"
# maturin develop reuses cargo's target/ between runs: a rebuild after a change is incremental.
VIRTUAL_ENV="$PWD/.venv" .venv/bin/maturin develop --release --quiet \
    --manifest-path crates/joblet-py/Cargo.toml >/dev/null
export PY
