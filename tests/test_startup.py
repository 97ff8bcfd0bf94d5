"""What a kernel starts, and when: the px compiler's evcxr context (a second rust-analyzer, hundreds
of MB) exists only once engines do, so a notebook without `%px` holds one context, as
evcxr_jupyter does. Observed on the real kernel's process tree (each evcxr context has one child
process: the plain context's runtime, the px compiler's bridge to the engines) and its log.
Memory itself is measured by the bench (`bench/run.sh --only memory`), not asserted here.
"""
import os
import time

from conftest import descendants, kernel_with_runtime_dir, ok, px_values, value

PLAIN_RUNTIME_ENV = b"RUSTPX_PLAIN_RUNTIME="
BRIDGE_ENV = b"RUSTPX_PX_BRIDGE="
COMPILER_READY = "px compiler ready"
# How long the kernel is watched for a px context nobody asked for. The old kernel started it as
# soon as the plain context was idle, and its bridge process appeared within a second or two.
WATCH_S = 12


def environ(pid):
    try:
        return open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return []


def context_children(kernel_pid):
    """(plain runtimes, px bridges) below the kernel, told apart by the variable each gets."""
    plain, bridges = [], []
    for pid in descendants(kernel_pid):
        env = environ(pid)
        if any(v.startswith(PLAIN_RUNTIME_ENV) for v in env):
            plain.append(pid)
        if any(v.startswith(BRIDGE_ENV) for v in env):
            bridges.append(pid)
    return plain, bridges


def wait_for_bridge(kernel_pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, bridges = context_children(kernel_pid)
        if bridges:
            return bridges
        time.sleep(0.2)
    return []


def one_engine_kernel(tmp_path):
    """A kernel whose pool, once started, has one engine."""
    os.environ["RUSTPX_ENGINES"] = "1"
    try:
        return kernel_with_runtime_dir(tmp_path)
    finally:
        del os.environ["RUSTPX_ENGINES"]


def test_the_px_context_starts_with_the_engines_not_with_the_kernel(tmp_path):
    k = one_engine_kernel(tmp_path)
    try:
        pid = k.km.provisioner.process.pid
        assert value(k, "1 + 1") == "2"
        ok(k, "let v = vec![1, 2, 3];")
        assert value(k, "v.len()") == "3"
        # Plain cells only, then idle: one evcxr context, and never a second one.
        deadline = time.monotonic() + WATCH_S
        while time.monotonic() < deadline:
            plain, bridges = context_children(pid)
            assert len(plain) == 1 and bridges == [], (plain, bridges)
            time.sleep(0.2)
        assert COMPILER_READY not in k.log.read_text()

        # Starting engines starts the px context too, before any %px needs it.
        ok(k, "%engines start -n 1")
        assert wait_for_bridge(pid, timeout=120), "no px bridge process after %engines start"

        # And the first %px runs on it.
        assert px_values(ok(k, "%px 40 + 2")) == {0: "42"}
        plain, bridges = context_children(pid)
        assert len(plain) == 1 and len(bridges) == 1, (plain, bridges)
        assert k.log.read_text().count(COMPILER_READY) == 1
    finally:
        k.shutdown()


def test_the_first_px_without_engines_starts_the_px_context_and_runs(tmp_path):
    k = one_engine_kernel(tmp_path)
    try:
        pid = k.km.provisioner.process.pid
        assert value(k, "2 * 3") == "6"
        assert context_children(pid)[1] == []
        ok(k, "%%px\nlet w = vec![5u8, 6];")
        assert px_values(ok(k, "%px w.len()")) == {0: "2"}
        assert len(context_children(pid)[1]) == 1
        assert COMPILER_READY in k.log.read_text()
    finally:
        k.shutdown()


def test_a_queued_px_cell_starts_the_px_context_while_an_earlier_cell_runs(tmp_path):
    """Run All sends every cell at once: the kernel reads the queued requests while the first
    runs, and a `%px` among them starts the px context beside it, not after it. Without the
    read-ahead, no bridge exists until the sleeping cell has replied."""
    k = one_engine_kernel(tmp_path)
    try:
        pid = k.km.provisioner.process.pid
        assert value(k, "1 + 1") == "2"
        sleeper = k.kc.execute("std::thread::sleep(std::time::Duration::from_secs(8));")
        queued = k.kc.execute("%px 40 + 2")
        bridges = wait_for_bridge(pid, timeout=6)
        replied = []
        while len(replied) < 2:
            msg = k.kc.get_shell_msg(timeout=300)
            replied.append((msg["parent_header"]["msg_id"], msg["content"]["status"]))
        assert bridges, "no px bridge while the first queued cell still ran"
        assert replied == [(sleeper, "ok"), (queued, "ok")], "served in order"
        assert k.log.read_text().count(COMPILER_READY) == 1
    finally:
        k.shutdown()
