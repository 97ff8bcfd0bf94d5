"""Issue 18 item 1: engines from a submitted batch job, on a real single-node Slurm
(tests/slurm_cluster.py) and a real single-node Grid Engine (tests/sge_cluster.py).

The kernel runs outside any allocation (no $SLURM_JOB_ID). `%engines start --launcher slurm
--submit` writes a job script into a private directory and submits it with `sbatch`; `--launcher
sge` does the same with `qsub`. The job's engines dial in with `--connect` on a 0600 file.
`%engines stop` cancels the job; a job cancelled from outside is reported as its engines
leaving, with the job named.
"""
import os
import re
import shutil
import stat
import subprocess
import time

import sge_cluster
import slurm_cluster
from conftest import Kernel, px_values, stream_text

ENGINE = shutil.which("rustpx-engine")


def kernel_in(env, tmp_path):
    """A kernel with the cluster's client environment, its runtime and job directories in
    `tmp_path`, and a known engine binary (so the printed script can be compared exactly)."""
    jobs = tmp_path / "jobs"
    env = dict(env, JUPYTER_RUNTIME_DIR=str(tmp_path), RUSTPX_JOB_DIR=str(jobs),
               RUSTPX_ENGINE_BIN=ENGINE)
    env = {k: v for k, v in env.items() if k != "SLURM_JOB_ID"}
    return Kernel(env=env), jobs


def table_row(k, engine_id):
    reply, msgs, _ = k.execute("%engines")
    assert reply["status"] == "ok", reply
    text = "".join(m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "display_data")
    return next((ln for ln in text.splitlines() if re.match(rf"\s*{engine_id}\s", ln)), "")


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def submitted_job(msgs, scheduler):
    found = re.search(rf"submitted {scheduler} job (\d+) for engines", stream_text(msgs))
    assert found, stream_text(msgs)
    return found.group(1)


def assert_private(jobs):
    assert stat.S_IMODE(os.stat(jobs).st_mode) == 0o700
    for name in os.listdir(jobs):
        if name.endswith((".sh", ".json")):
            assert stat.S_IMODE(os.stat(jobs / name).st_mode) == 0o600, name


def test_slurm_submit_print_run_stop_and_cancel_from_outside(tmp_path):
    with slurm_cluster.single_node_slurm() as env:
        k, jobs = kernel_in(env, tmp_path)
        try:
            reply, msgs, _ = k.execute(
                "%engines start --launcher slurm --submit -n 2 --queue debug --time 00:05:00 "
                "--resource --mem=100M --print")
            assert reply["status"] == "ok", reply
            assert stream_text(msgs) == f"""\
The slurm launcher would submit engines 0, 1 as a batch job:
  sbatch --parsable {jobs}/job-1.sh
{jobs}/job-1.sh (mode 0600; the engines read the hub's address and key from {jobs}/connection.json, mode 0600):
#!/bin/sh
#SBATCH --job-name=rustpx-engines
#SBATCH --ntasks=2
#SBATCH --output={jobs}/slurm-%j.out
#SBATCH --partition=debug
#SBATCH --time=00:05:00
#SBATCH --mem=100M
# rustpx engines 0-1: engine id = 0 + $SLURM_PROCID
srun --kill-on-bad-exit=0 {ENGINE} --connect {jobs}/connection.json --id-base 0
"""
            assert not jobs.exists(), "--print wrote files"

            reply, msgs, _ = k.execute(
                "%engines start --launcher slurm --submit -n 2 --queue debug --time 00:05:00",
                timeout=120)
            assert reply["status"] == "ok", reply
            job = submitted_job(msgs, "slurm")
            assert "started engines 0, 1" in stream_text(msgs)
            assert_private(jobs)
            reply, msgs, _ = k.execute(
                '%px format!("{} {}", std::env::var("SLURM_PROCID").unwrap(), std::env::var("SLURM_JOB_ID").unwrap())')
            assert px_values(msgs) == {0: f'"0 {job}"', 1: f'"1 {job}"'}

            reply, msgs, _ = k.execute("%engines stop")
            assert reply["status"] == "ok", reply
            assert stream_text(msgs) == f"stopped engines 0, 1\ncancelled slurm job {job}\n"
            squeue = ["squeue", "-h", "-j", job, "-t", "PD,R,CG", "-o", "%T"]
            wait_for(lambda: subprocess.run(squeue, env=env, capture_output=True, text=True).stdout.strip() == "",
                     20, f"slurm job {job} is still queued after %engines stop")

            # A job cancelled from outside: its engine is reported gone, naming the job.
            reply, msgs, _ = k.execute("%engines start --launcher slurm --submit -n 1", timeout=120)
            assert reply["status"] == "ok", reply
            second = submitted_job(msgs, "slurm")
            subprocess.run(["scancel", second], env=env, check=True, timeout=30)
            row = wait_for(lambda: (r := table_row(k, 0)) and "dead" in r and r, 20,
                           "the engine of a cancelled job is still listed alive")
            assert f"dead (slurm job {second}: " in row, row
        finally:
            k.shutdown()


def test_sge_submit_print_run_stop_and_delete_from_outside(tmp_path):
    with sge_cluster.single_node_sge() as env:
        k, jobs = kernel_in(env, tmp_path)
        try:
            reply, msgs, _ = k.execute(
                f"%engines start --launcher sge -n 2 --queue {sge_cluster.QUEUE} --time 00:05:00 "
                "--resource '-l h_vmem=1G' --print")
            assert reply["status"] == "ok", reply
            assert stream_text(msgs) == f"""\
The sge launcher would submit engines 0, 1 as a batch job:
  qsub -terse {jobs}/job-1.sh
{jobs}/job-1.sh (mode 0600; the engines read the hub's address and key from {jobs}/connection.json, mode 0600):
#!/bin/sh
#$ -N rustpx-engines
#$ -S /bin/sh
#$ -t 1-2
#$ -j y
#$ -o {jobs}/
#$ -q {sge_cluster.QUEUE}
#$ -l h_rt=00:05:00
#$ -l h_vmem=1G
# rustpx engines 0-1: engine id = 0 + $SGE_TASK_ID - 1
exec {ENGINE} --connect {jobs}/connection.json --id $((0 + SGE_TASK_ID - 1))
"""
            reply, msgs, _ = k.execute(
                f"%engines start --launcher sge -n 2 --queue {sge_cluster.QUEUE} --time 00:05:00",
                timeout=120)
            assert reply["status"] == "ok", reply
            job = submitted_job(msgs, "sge")
            assert "started engines 0, 1" in stream_text(msgs)
            assert_private(jobs)
            reply, msgs, _ = k.execute(
                '%px format!("{} {}", std::env::var("SGE_TASK_ID").unwrap(), std::env::var("JOB_ID").unwrap())')
            assert px_values(msgs) == {0: f'"1 {job}"', 1: f'"2 {job}"'}

            reply, msgs, _ = k.execute("%engines stop")
            assert reply["status"] == "ok", reply
            assert stream_text(msgs) == f"stopped engines 0, 1\ncancelled sge job {job}\n"
            wait_for(lambda: subprocess.run(["qstat", "-j", job], env=env, capture_output=True).returncode != 0,
                     30, f"sge job {job} is still known to qstat after %engines stop")

            reply, msgs, _ = k.execute(f"%engines start --launcher sge -n 1 --queue {sge_cluster.QUEUE}",
                                       timeout=120)
            assert reply["status"] == "ok", reply
            second = submitted_job(msgs, "sge")
            subprocess.run(["qdel", second], env=env, check=True, timeout=30, capture_output=True)
            row = wait_for(lambda: (r := table_row(k, 0)) and "dead" in r and r, 30,
                           "the engine of a deleted job is still listed alive")
            assert f"dead (sge job {second}: " in row, row
        finally:
            k.shutdown()
