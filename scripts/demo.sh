#!/usr/bin/env bash
# The main job: build rustpx, install the "Rust (parallel)" kernelspec, and run the tour notebook
# end to end through a real Jupyter client (nbclient) with a local pool of engines, printing every
# output. Afterwards, open the same notebook in JupyterLab (the command is printed at the end).
#
#   bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

step "cargo build --release (the first build compiles evcxr and rust-analyzer: ~10 min on 2 cores)"
cargo build --release --workspace
step "install the kernelspec into $RUSTPX_VENV"
"$RUSTPX_BIN" install --sys-prefix
if ! python -c "import jupyterlab" 2>/dev/null; then
  step "install JupyterLab into the venv (to open the notebooks afterwards)"
  pip install --quiet --disable-pip-version-check jupyterlab
fi
step "run notebooks/01-tour.ipynb (it starts four local engines)"
RUSTPX_LOG="${RUSTPX_LOG:-warn}" python scripts/run_notebook.py notebooks/01-tour.ipynb --save /tmp/rustpx-tour-executed.ipynb
cat <<EOM

The executed notebook is in /tmp/rustpx-tour-executed.ipynb.
Open the tour in JupyterLab and pick "Rust (parallel)":
    $RUSTPX_VENV/bin/jupyter lab notebooks/
To use the kernel from your own Jupyter installation:
    $RUSTPX_BIN install --user
EOM
