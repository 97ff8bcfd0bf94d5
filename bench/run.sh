#!/usr/bin/env bash
# The benchmark: builds rustpx, installs ipyparallel from PyPI into the venv, measures both on this
# machine in one run, and prints a table of medians and ratios (also written as JSON).
#
#   bash bench/run.sh                 # full run (about 10 minutes on 2 cores)
#   bash bench/run.sh --runs 5        # fewer repetitions
#   bash bench/run.sh --only api      # the Rust API (apply, map) against ipyparallel's apply_sync,
#                                     # apply_async + get and map_sync, 4 engines each
#   bash bench/run.sh --only transfer # only %push/%pull/%scatter/%gather against ipyparallel
#   bash bench/run.sh --only sent     # what sending cells over the engine link costs (engines
#                                     # that fetch every cell, as on other hosts, against local ones)
#   bash bench/run.sh --only scale    # pools of 64, 256 and 1024 engines: registration time and %px
#                                     # re-run, against ipyparallel's Cluster(n=64) (about 5 minutes)
#   bash bench/run.sh --only first-cell  # a new kernel's first plain cell, against evcxr_jupyter's
#                                        # (built once from crates.io: about 30 minutes on 2 cores)
#   bash bench/run.sh --only link --baseline-bin DIR
#                                     # the transport: shell round trip and the engine link, for
#                                     # this build and an older one (DIR holds its rustpx and
#                                     # rustpx-engine) in the same run
#   bash bench/run.sh --only deps     # `:dep rand = "0.8"` in the plain context and in %px, in a
#                                     # first kernel (empty crate cache) and after a restart,
#                                     # against evcxr_jupyter's own :dep in the same run
#   bash bench/run.sh --only runall [--baseline-bin DIR]
#                                     # notebooks/01-tour.ipynb: Run All in a first kernel, then
#                                     # restart + Run All with its compiled cells cached (and DIR's
#                                     # build, alternating)
#   bash bench/run.sh --only memory [--baseline-bin DIR]
#                                     # kernel RSS after two plain cells, against evcxr_jupyter,
#                                     # then the first %px (and DIR's build, alternating)
#   bash bench/run.sh --only structure --baseline-bin DIR
#                                     # before/after a change of the inside: plain and %px cells,
#                                     # a re-run, %push and %pxmap, this build against DIR's, in
#                                     # one run (builds alternate every round)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
step "cargo build --release"
cargo build --release --workspace
"$RUSTPX_BIN" install --sys-prefix >/dev/null
if ! python -c "import ipyparallel, ipykernel, numpy" 2>/dev/null; then
  step "install ipyparallel, ipykernel and numpy from PyPI (the baseline)"
  pip install --quiet --disable-pip-version-check ipyparallel ipykernel numpy
fi
python -m ipykernel install --sys-prefix --name python3 >/dev/null
# The first-cell baseline is evcxr_jupyter of the same evcxr release, built once from crates.io with
# the lock file it was published with (an unlocked build fails: salsa 0.28.5 breaks it).
if [[ " $* " != *" --only "* || " $* " == *" first-cell "* || " $* " == *" deps "* || " $* " == *" memory "* ]]; then
  tools="${RUSTPX_BENCH_TOOLS:-$HOME/.cache/rustpx/bench-tools}"
  if [ ! -x "$tools/bin/evcxr_jupyter" ]; then
    step "cargo install evcxr_jupyter 0.22.0 --locked (the first-cell baseline, built once)"
    cargo install --quiet evcxr_jupyter --version =0.22.0 --locked --root "$tools"
  fi
  spec="$RUSTPX_VENV/share/jupyter/kernels/evcxr-baseline"
  mkdir -p "$spec"
  printf '{"argv": ["%s", "--control_file", "{connection_file}"], "display_name": "Rust (evcxr_jupyter)", "language": "rust"}\n' \
    "$tools/bin/evcxr_jupyter" >"$spec/kernel.json"
  export RUSTPX_BENCH_EVCXR_KERNEL=evcxr-baseline
fi
# An older build to compare with (--baseline-bin DIR): installed as the kernel rustpx-baseline.
baseline=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [ "${args[$i]}" = "--baseline-bin" ]; then baseline="${args[$((i + 1))]:-}"; fi
done
if [ -n "$baseline" ]; then
  spec="$(python -c 'import sys; print(sys.prefix)')/share/jupyter/kernels/rustpx-baseline"
  mkdir -p "$spec"
  printf '{"argv": ["%s", "kernel", "--connection-file", "{connection_file}"], "display_name": "Rust (parallel, baseline)", "language": "rust", "interrupt_mode": "message"}\n' \
    "$(cd "$baseline" && pwd)/rustpx" >"$spec/kernel.json"
fi
mkdir -p bench/results
RUSTPX_LOG=error python bench/run.py --json bench/results/latest.json "$@"
