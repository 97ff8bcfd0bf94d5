"""Issue 13: a kernel's life from a client's point of view: a clean session logs nothing alarming,
and a kernel does not outlive the client that started it."""
import json
import os
import re
import signal
import subprocess
import sys
import time

from conftest import Kernel, command_line, descendants, still_running

HERE = os.path.dirname(os.path.abspath(__file__))

# A tracing line's level comes after its timestamp; an engine's lines are relayed into the
# kernel's log behind `[where] `, perhaps with terminal colours.
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ALARM = re.compile(r"^(?:\[[^\]]*\] )?\S+\s+(ERROR|WARN)\s")


def test_a_clean_session_logs_no_error_or_warning(tmp_path):
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "RUSTPX_ENGINES": "2"}
    env.pop("RUSTPX_LOG", None)  # the default level, as a user runs it
    k = Kernel(env=env)
    kernel_pid = k.km.provisioner.process.pid
    try:
        for code in [
            "1 + 1",
            "let v = vec![1, 2, 3];",
            "let total: i32 = v.iter().sum();\ntotal",
            "%px 1 + 1",
            "%%px\nlet id: u64 = std::env::var(\"RUSTPX_ENGINE_ID\").unwrap().parse().unwrap();\nid * 2",
            "println!(\"{}\", total);",
        ]:
            reply, msgs, _ = k.execute(code)
            assert reply["status"] == "ok", (code, reply, msgs)
    finally:
        k.kc.stop_channels()
        k.km.shutdown_kernel()  # a shutdown request, as a client sends it
    assert still_running([kernel_pid]) == []
    log = tmp_path / f"rustpx-kernel-{kernel_pid}.log"
    text = log.read_text()
    assert "logging to" in text, f"not the kernel's log:\n{text}"
    alarms = [line for line in text.splitlines() if ALARM.match(ANSI.sub("", line))]
    assert alarms == [], "a clean session logged:\n" + "\n".join(alarms)


def test_a_kernel_and_its_engines_exit_when_their_client_is_killed():
    env = {**os.environ, "RUSTPX_ENGINES": "2"}
    client = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "lifecycle_client.py")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = client.stdout.readline()
        assert line, f"the client ended without starting a kernel (status {client.wait()})"
        started = json.loads(line)
        kernel, engines = started["kernel"], started["engines"]
        assert len(engines) == 2, started
        processes = [kernel, *descendants(kernel)]
        assert set(engines) <= set(processes), started
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait()
    killed = time.monotonic()
    left = still_running(processes, timeout=10)
    took = time.monotonic() - killed
    assert left == [], [command_line(p) for p in left]
    assert took < 3, f"the kernel took {took:.1f} s to notice its client was gone"
