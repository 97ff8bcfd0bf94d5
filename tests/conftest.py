"""Shared fixtures: a real rustpx kernel started from its installed kernelspec.

The kernelspec is installed into the test venv by tests/run.sh (`rustpx install --sys-prefix`),
so these tests drive exactly what a Jupyter user would start, over real ZeroMQ sockets.
"""
import atexit
import os
import queue
import re
import shutil
import subprocess
import tempfile
import time

import pytest
from jupyter_client.manager import start_new_kernel

KERNEL_NAME = os.environ.get("RUSTPX_KERNEL_NAME", "rustpx")
# Kernels started by the tests keep their input history in a file of this run, not the user's.
if not os.environ.get("RUSTPX_HISTORY_FILE"):
    _history_dir = tempfile.mkdtemp(prefix="rustpx-test-history-")
    atexit.register(shutil.rmtree, _history_dir, ignore_errors=True)
    os.environ["RUSTPX_HISTORY_FILE"] = os.path.join(_history_dir, "history.sqlite")

# evcxr compiles every cell with rustc; on a loaded 2-core machine a first cell can take a while.
CELL_TIMEOUT = float(os.environ.get("RUSTPX_TEST_CELL_TIMEOUT", "120"))


class Kernel:
    """A started kernel and a blocking client, with helpers that collect a cell's iopub output."""

    def __init__(self):
        self.km, self.kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=120)

    def execute(self, code, timeout=CELL_TIMEOUT, stop_on_error=True):
        """Runs `code`; returns (reply content, [(arrival time, iopub msg)]) up to its idle."""
        msg_id = self.kc.execute(code, stop_on_error=stop_on_error)
        return self.collect(msg_id, timeout)

    def collect(self, msg_id, timeout=CELL_TIMEOUT):
        outputs = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no idle for {msg_id} within {timeout}s; got {outputs}"
            try:
                msg = self.kc.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            outputs.append((time.monotonic(), msg))
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        reply = self.kc.get_shell_msg(timeout=timeout)
        assert reply["parent_header"]["msg_id"] == msg_id
        return reply["content"], [m for _, m in outputs], [t for t, _ in outputs]

    def shutdown(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


ENGINE_ROW = re.compile(r"^\s*(\d+)\s+\S+\s+(\d+)\s", re.M)


def parse_engine_pids(table):
    """Engine id to pid, from the text of `%engines`."""
    return {int(m.group(1)): int(m.group(2)) for m in ENGINE_ROW.finditer(table)}


def running(pid):
    """Whether process `pid` exists and is not a zombie."""
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except OSError:
        return False


def still_running(pids, timeout=10):
    """The pids still running after waiting up to `timeout` seconds for them to end."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in pids if running(p)]
    return alive


def processes_matching(pattern):
    """The pids whose command line matches `pattern` (an extended regex, as `pgrep -f` takes)."""
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def stream_text(msgs, name="stdout"):
    return "".join(m["content"]["text"] for m in msgs if m["msg_type"] == "stream" and m["content"]["name"] == name)


def of_type(msgs, msg_type):
    return [m for m in msgs if m["msg_type"] == msg_type]


@pytest.fixture(scope="module")
def kernel():
    k = Kernel()
    yield k
    k.shutdown()


PX_VALUE = re.compile(r"\x1b\[0;31mOut\[(\d+):\d+\]: \x1b\[0m(.*)", re.S)


def px_values(msgs):
    """Engine id to the text of its `Out[N:C]` value, from a %px cell's outputs."""
    out = {}
    for m in msgs:
        if m["msg_type"] in ("display_data", "execute_result"):
            found = PX_VALUE.match(m["content"]["data"].get("text/plain", ""))
            if found:
                out[int(found.group(1))] = found.group(2)
    return out

