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
if ! python -c "import jupyter_client, jupyter_kernel_test, pytest, nbclient, nbformat, jupyterlab, jupyter_console" 2>/dev/null; then
  step "install the Python test requirements"
  pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
