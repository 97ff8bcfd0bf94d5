# Sourced by the project's scripts: a Python venv with the Jupyter clients, the release binaries on
# PATH. Creates the venv on first use; everything comes from PyPI by package name.
: "${RUSTPX_VENV:=$PWD/.venv}"
export CARGO_TERM_COLOR=never
RUSTPX_TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
export RUSTPX_BIN="$RUSTPX_TARGET/release/rustpx"
export RUSTPX_ENGINE_BIN="$RUSTPX_TARGET/release/rustpx-engine"
export PATH="$RUSTPX_TARGET/release:$PATH"

step() { printf '\n=== %s (%s)\n' "$*" "$(date +%H:%M:%S)"; }

if [ ! -x "$RUSTPX_VENV/bin/python" ]; then
  step "create the Python venv $RUSTPX_VENV"
  python3 -m venv "$RUSTPX_VENV"
fi
# shellcheck disable=SC1091
source "$RUSTPX_VENV/bin/activate"
if ! python -c "import jupyter_client, jupyter_kernel_test, pytest, nbclient, nbformat, jupyterlab, jupyter_console, cryptography" 2>/dev/null; then
  step "install the Python test requirements"
  pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
# evcxr's type inference reads std's sources (rustup's rust-src component). A kernel installs
# them itself when they are missing, but a download inside a cell's first run costs that cell
# seconds to minutes, so the scripts install them up front, once.
if command -v rustc >/dev/null && [ ! -d "$(rustc --print sysroot)/lib/rustlib/src/rust/library" ]; then
  step "rustup component add rust-src (std's sources, for evcxr's type inference)"
  rustup component add rust-src || echo "could not install rust-src: kernels will try again at start" >&2
fi
