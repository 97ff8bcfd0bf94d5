"""Issue 8: the slurm launcher end to end, on a real single-node Slurm (tests/slurm_cluster.py).

The kernel runs inside an allocation (`salloc --no-shell`, its job id in $SLURM_JOB_ID, as a
kernel started inside `salloc` or `sbatch` would have), and `%engines start --launcher slurm`
runs one `srun` whose tasks become the engines, numbered by $SLURM_PROCID.
"""
import os
import re
import subprocess
import time

import slurm_cluster
from conftest import Kernel, px_values, stream_text


def test_slurm_launcher_starts_engines_as_the_tasks_of_one_srun(tmp_path):
    with slurm_cluster.single_node_slurm() as env:
        granted = subprocess.run(
            ["salloc", "--no-shell", "-N1", "-n2"], env=env, capture_output=True, text=True, timeout=60
        )
        found = re.search(r"Granted job allocation (\d+)", granted.stderr)
        assert found, granted.stderr
        job = found.group(1)
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env, SLURM_JOB_ID=job, JUPYTER_RUNTIME_DIR=str(tmp_path))
        try:
            k = Kernel()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        try:
            reply, msgs, _ = k.execute("%engines start --launcher slurm -n 2", timeout=120)
            assert reply["status"] == "ok", reply
            assert "started engines 0, 1" in stream_text(msgs)
            reply, msgs, _ = k.execute(
                '%px format!("{} {}", std::env::var("SLURM_PROCID").unwrap(), std::env::var("SLURM_JOB_ID").unwrap())'
            )
            assert px_values(msgs) == {0: f'"0 {job}"', 1: f'"1 {job}"'}
            steps = subprocess.run(["squeue", "-s", "-j", job, "-h", "-o", "%i %j"], env=env,
                                   capture_output=True, text=True).stdout
            assert "rustpx-engine" in steps, steps
            # Stopping one engine leaves the other task running (--kill-on-bad-exit=0).
            reply, _, _ = k.execute("%engines stop 1")
            assert reply["status"] == "ok"
            reply, msgs, _ = k.execute("%px 5")
            assert px_values(msgs) == {0: "5"}
            reply, _, _ = k.execute("%engines stop")
            assert reply["status"] == "ok"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                steps = subprocess.run(["squeue", "-s", "-j", job, "-h"], env=env,
                                       capture_output=True, text=True).stdout
                if "rustpx-e" not in steps:
                    break
                time.sleep(0.5)
            assert "rustpx-e" not in steps, f"the srun step outlived its engines: {steps}"
        finally:
            k.shutdown()
            subprocess.run(["scancel", job], env=env, timeout=30)
