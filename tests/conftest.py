"""Shared fixtures: a real rustpx kernel started from its installed kernelspec.

The kernelspec is installed into the test venv by tests/run.sh (`rustpx install --sys-prefix`),
so these tests drive exactly what a Jupyter user would start, over real ZeroMQ sockets.
"""
import atexit
import os
import queue
import re
import secrets
import shutil
import signal
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


# Every process this test session starts inherits this marker: kernels from jupyter_client,
# their engines and evcxr runtimes from the kernel, test_console's through a tmux server of its
# own. The end-of-session check below finds this session's leftovers by it and never another
# session's on a shared machine. Set once: a client script the tests run imports this module
# too, and keeps the value it inherited.
SESSION_MARKER = "RUSTPX_TEST_SESSION"
os.environ.setdefault(SESSION_MARKER, f"{os.getpid()}-{secrets.token_hex(8)}")
# evcxr compiles every cell with rustc; on a loaded 2-core machine a first cell can take a while.
CELL_TIMEOUT = float(os.environ.get("RUSTPX_TEST_CELL_TIMEOUT", "120"))


class Kernel:
    """A started kernel and a blocking client, with helpers that collect a cell's iopub output."""

    def __init__(self, **start_options):
        """`start_options` go to `KernelManager.start_kernel` (e.g. `env`)."""
        self.km, self.kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=120, **start_options)

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


def kernel_with_engines(n):
    """A started kernel whose first %px (or API call) starts a local pool of `n` engines."""
    os.environ["RUSTPX_ENGINES"] = str(n)
    try:
        return Kernel()
    finally:
        del os.environ["RUSTPX_ENGINES"]


def ok(k, code):
    """Runs a cell that must succeed; its iopub messages."""
    reply, msgs, _ = k.execute(code, timeout=600)
    assert reply["status"] == "ok", (code, reply, msgs)
    return msgs


def value(k, code):
    """The text/plain of a plain cell's execute_result."""
    msgs = ok(k, code)
    results = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "execute_result"]
    assert len(results) == 1, msgs
    return results[0]


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


def engine_pids(k):
    """The engines' pids by id, read off `%engines`' table."""
    reply, msgs, _ = k.execute("%engines")
    assert reply["status"] == "ok", (reply, msgs)
    table = "".join(
        m["content"]["text"] if m["msg_type"] == "stream" else m["content"]["data"].get("text/plain", "")
        for m in msgs
        if m["msg_type"] in ("stream", "execute_result", "display_data")
    )
    return parse_engine_pids(table)


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


def wait_for_stream(k, msg_id, text, timeout):
    """Reads `msg_id`'s iopub messages until a stream carries `text`; returns those read."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = k.kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        seen.append(msg)
        if msg["msg_type"] == "stream" and text in msg["content"]["text"]:
            return seen
    raise AssertionError(f"no stream with {text!r} within {timeout} s; got {seen}")


def stream_text(msgs, name="stdout"):
    return "".join(m["content"]["text"] for m in msgs if m["msg_type"] == "stream" and m["content"]["name"] == name)


def of_type(msgs, msg_type):
    return [m for m in msgs if m["msg_type"] == msg_type]


@pytest.fixture(scope="module")
def kernel():
    k = Kernel()
    yield k
    k.shutdown()


def kernel_with_runtime_dir(runtime_dir):
    """A kernel whose Jupyter runtime directory (its log, its engine connection file) is
    `runtime_dir`, so a test can read them; `k.runtime_dir` and `k.log` say where."""
    os.environ["JUPYTER_RUNTIME_DIR"] = str(runtime_dir)
    try:
        k = Kernel()
    finally:
        del os.environ["JUPYTER_RUNTIME_DIR"]
    k.runtime_dir = runtime_dir
    k.log = runtime_dir / f"rustpx-kernel-{k.km.provisioner.process.pid}.log"
    return k


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



# --- no process left behind ---

RUSTPX_PROGRAMS = {"rustpx", "rustpx-engine"}


def _ppid(pid):
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def descendants(root):
    """The pids of every living descendant of process `root`."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _ppid(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return [p for p in found if running(p)]


def program_of(pid):
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")).removesuffix(" (deleted)")
    except OSError:
        return None


def _has_marker(pid):
    try:
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return False
    return f"{SESSION_MARKER}={os.environ[SESSION_MARKER]}".encode() in environ


def leftover_processes():
    """This session's rustpx and rustpx-engine processes that are still alive: those that carry
    this session's marker, or descend from this pytest process (engines on test hosts started
    through sshd); never other sessions' processes."""
    mine = set(descendants(os.getpid()))
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        if program_of(pid) in RUSTPX_PROGRAMS and running(pid) and (pid in mine or _has_marker(pid)):
            found.append(pid)
    return sorted(found)


def command_line(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def pytest_sessionfinish(session, exitstatus):
    """Fails the run when a kernel or engine this session started outlived it: a leftover is a
    bug (a kernel that ignores its client's end, an engine that ignores its kernel's), and on a
    2-core machine it takes memory and CPU from whatever runs next. Leftovers are listed, then
    killed."""
    deadline = time.monotonic() + 5
    left = leftover_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = leftover_processes()
    if not left:
        return
    lines = [f"  {pid}: {command_line(pid)}" for pid in left]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    message = "rustpx processes this test session started were still running at its end (now killed):\n" + "\n".join(lines)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "processes left behind", red=True)
        reporter.write_line(message)
    else:
        print(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
