# Sourced by the other scripts: makes sure cargo (Rust >= 1.88), rustfmt and clippy are there.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: installing Debian's Rust toolchain" >&2
    apt-get update -qq && apt-get install -y -qq cargo rustfmt rust-clippy >/dev/null
fi
rust_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if [ "${rust_minor:-0}" -lt 88 ]; then
    echo "joblet needs Rust 1.88 or newer; this machine has $(rustc --version)." >&2
    echo "Install a newer toolchain (rustup update stable) and run this again." >&2
    exit 1
fi
for tool in fmt clippy; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            rustup component add "$([ "$tool" = fmt ] && echo rustfmt || echo clippy)" >&2
        else
            echo "cargo $tool is missing and rustup is not installed" >&2
            exit 1
        fi
    fi
done
