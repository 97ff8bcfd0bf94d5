#!/usr/bin/env bash
# Runs every test of rustpx: formatting and lints, the Rust unit tests, then the integration
# suites that drive the real kernel binary through a real Jupyter client.
#
#   bash tests/run.sh            # everything
#   bash tests/run.sh -k panic   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

# The browser and terminal tests need Debian's chromium and tmux, and playwright-core from npm
# (pointed at that chromium: no browser download).
if ! command -v chromium >/dev/null || ! command -v tmux >/dev/null; then
  step "apt-get install chromium tmux"
  if [ "$(id -u)" -ne 0 ]; then
    echo "chromium and tmux are missing; install them with: sudo apt-get install chromium tmux" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium tmux fonts-dejavu-core >/dev/null
fi
# Installs Debian packages for the tests, as root, without starting their services: no init system
# runs in a container, and the tests start their own sshd and Slurm daemons. A policy-rc.d that
# denies service starts keeps the packages' postinst scripts from starting system ones. No
# recommends: mpich's would pull in gfortran and autotools.
apt_install_for_tests() {
  step "apt-get install $*"
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing test dependencies; install them with: sudo apt-get install $*" >&2
    exit 1
  fi
  (
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  )
}
# The multi-host tests (tests/netns.py: network namespaces as hosts, an sshd in each) need ip,
# unshare, sshd, ssh, ssh-keygen and MPICH's mpiexec.
if [ ! -x /usr/sbin/ip ] || ! command -v unshare >/dev/null || [ ! -x /usr/sbin/sshd ] \
  || ! command -v ssh >/dev/null || ! command -v ssh-keygen >/dev/null \
  || ! command -v mpiexec >/dev/null; then
  apt_install_for_tests iproute2 openssh-server openssh-client mpich util-linux
fi
# The slurm launcher's end-to-end test runs a single-node Slurm of its own (tests/slurm_cluster.py).
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v salloc >/dev/null; then
  apt_install_for_tests slurmctld slurmd slurm-client
fi
# The sge launcher's end-to-end test runs a single-node Grid Engine cell of its own
# (tests/sge_cluster.py); the packages' postinst initialises the default cell, which it leaves alone.
if [ ! -x /usr/lib/gridengine/sge_qmaster ] || [ ! -x /usr/lib/gridengine/sge_execd ] \
  || [ ! -x /usr/lib/gridengine/qsub ]; then
  apt_install_for_tests gridengine-master gridengine-exec gridengine-client
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  step "npm ci (playwright-core)"
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo build --release (first build of evcxr: tens of minutes on 2 cores)"
cargo build --release --workspace --all-targets
step "cargo clippy"
cargo clippy --release --workspace --all-targets -- -D warnings
step "cargo test (unit tests)"
cargo test --release --workspace
step "install the kernelspec into the test venv"
"$RUSTPX_BIN" install --sys-prefix
step "pytest (integration: real kernel, real engines, jupyter_client)"
python -m pytest tests -v --durations=15 "$@"
