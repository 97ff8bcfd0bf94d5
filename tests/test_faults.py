"""Issue 5: engine faults during %%px on 4 engines, injected for real.

Each fault hits engine 1 while engines 0, 2 and 3 do their normal work. For every fault: it is
reported on engine 1 with a clear message within a bound, the other engines' results are shown,
the kernel stays responsive, and `%engines restart 1` brings the pool back to four. The measured
report times are written to tests/artifacts/fault-times.json for the record.
"""
import json
import os
import pathlib
import re
import signal
import threading
import time

import pytest

from conftest import Kernel, engine_pids, px_values, stream_text

ID = 'let id: u32 = std::env::var("RUSTPX_ENGINE_ID").unwrap().parse().unwrap();'
ARTIFACTS = pathlib.Path(__file__).parent / "artifacts"
TIMES = {}


@pytest.fixture(scope="module")
def px():
    os.environ["RUSTPX_ENGINES"] = "4"
    k = Kernel()
    reply, _, _ = k.execute("%px 0")
    assert reply["status"] == "ok"
    yield k
    k.shutdown()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fault-times.json").write_text(json.dumps(TIMES, indent=2))


values = px_values


def recover(px):
    """Engine 1 comes back with `%engines restart 1` (dead or alive) and all four answer."""
    reply, msgs, _ = px.execute("%engines restart 1")
    assert reply["status"] == "ok", reply
    assert "engine 1 restarted" in stream_text(msgs)
    reply, msgs, _ = px.execute("%px 7")
    assert reply["status"] == "ok"
    assert sorted(values(msgs)) == [0, 1, 2, 3]


FAULTS = {
    # name: (code run on engine 1, expected ename, expected text in the error, bound in seconds)
    "panic": ('panic!("injected panic");', "Panic", "injected panic", 10),
    "abort": ("std::process::abort();", "EngineError", "SIGABRT", 10),
    "segfault": ("unsafe { std::ptr::null_mut::<u64>().write_volatile(7); }", "EngineError", "SIGSEGV", 10),
    "exit(3)": ("std::process::exit(3);", "EngineError", "exited with status 3", 10),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_a_fault_on_one_engine(px, name):
    code, ename, text, bound = FAULTS[name]
    cell = f"%%px --no-stream\n{ID}\nif id == 1 {{ {code} }}\nid * 10"
    started = time.monotonic()
    reply, msgs, _ = px.execute(cell)
    elapsed = time.monotonic() - started
    TIMES[name] = round(elapsed, 3)
    assert reply["status"] == "error"
    assert reply["ename"] == "CompositeError"
    assert f"[1:execute]{ename}" in reply["evalue"], reply["evalue"]
    assert text in "\n".join(reply["traceback"]) + reply["evalue"]
    assert values(msgs) == {0: "0", 2: "20", 3: "30"}
    assert elapsed < bound
    recover(px)


def inside(marker):
    """Code with which engine 1 says it is inside the cell: it writes `marker`."""
    return f'std::fs::write("{marker}", "").unwrap();'


def run_then(px, cell, action, marker):
    """Starts `cell`, runs `action` once engine 1 is inside it (it wrote `marker`: on a loaded
    machine a fixed delay can act before the cell reached the engine), returns (reply, msgs,
    seconds to idle after action)."""
    msg_id = px.kc.execute(cell)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert time.monotonic() < deadline, "engine 1 did not start the cell within 120 s"
        time.sleep(0.05)
    time.sleep(0.2)
    acted = time.monotonic()
    action()
    reply, msgs, times = px.collect(msg_id, timeout=120)
    return reply, msgs, times[-1] - acted


def test_sigkill_from_outside(px, tmp_path):
    pid = engine_pids(px)[1]
    marker = tmp_path / "inside"
    cell = f"%%px --no-stream\n{ID}\nif id == 1 {{ {inside(marker)} std::thread::sleep(std::time::Duration::from_secs(60)); }}\nid * 10"
    reply, msgs, after = run_then(px, cell, lambda: os.kill(pid, signal.SIGKILL), marker)
    TIMES["SIGKILL from outside"] = round(after, 3)
    assert reply["ename"] == "CompositeError"
    assert "[1:execute]EngineError: Engine 1 died while running task" in reply["evalue"]
    assert "SIGKILL" in "\n".join(reply["traceback"])
    assert values(msgs) == {0: "0", 2: "20", 3: "30"}
    assert after < 5
    recover(px)


def test_sigstop_is_found_by_the_heartbeat(px, tmp_path):
    pid = engine_pids(px)[1]
    marker = tmp_path / "inside"
    cell = f"%%px --no-stream\n{ID}\nif id == 1 {{ {inside(marker)} std::thread::sleep(std::time::Duration::from_secs(60)); }}\nid * 10"
    reply, msgs, after = run_then(px, cell, lambda: os.kill(pid, signal.SIGSTOP), marker)
    TIMES["SIGSTOP (heartbeat lost)"] = round(after, 3)
    assert reply["ename"] == "CompositeError"
    assert "[1:execute]EngineError" in reply["evalue"]
    assert "no heartbeat" in "\n".join(reply["traceback"])
    assert values(msgs) == {0: "0", 2: "20", 3: "30"}
    # 5 s without heartbeats, checked every 250 ms.
    assert after < 15
    recover(px)


def test_a_busy_loop_stopped_by_an_interrupt(px, tmp_path):
    marker = tmp_path / "inside"
    cell = f"%%px\n{ID}\nif id == 1 {{ {inside(marker)} loop {{ std::hint::spin_loop(); }} }}\nid * 10"
    reply, msgs, after = run_then(px, cell, px.km.interrupt_kernel, marker)
    TIMES["busy loop + interrupt"] = round(after, 3)
    assert reply["status"] == "ok"
    err = stream_text(msgs, "stderr")
    assert "Received Keyboard Interrupt. Sending signal SIGINT to engines..." in err
    assert "engine 1 was restarted" in err
    assert values(msgs) == {0: "0", 2: "20", 3: "30"}
    assert after < 15
    reply, msgs, _ = px.execute("%px 7")
    assert sorted(values(msgs)) == [0, 1, 2, 3]


def test_the_kernel_answers_while_engines_fail(px):
    """kernel_info on shell is answered while a faulty cell is still running elsewhere."""
    pid = engine_pids(px)[1]
    cell = f"%%px\n{ID}\nif id == 1 {{ std::thread::sleep(std::time::Duration::from_secs(3)); std::process::abort(); }}"
    msg_id = px.kc.execute(cell)
    time.sleep(0.5)
    answered = threading.Event()

    def ask():
        # control is served while shell is busy with the cell
        px.kc.control_channel.send(px.kc.session.msg("kernel_info_request", {}))
        msg = px.kc.control_channel.get_msg(timeout=10)
        if msg["msg_type"] == "kernel_info_reply":
            answered.set()

    ask()
    assert answered.is_set()
    reply, msgs, _ = px.collect(msg_id, timeout=60)
    assert reply["status"] == "error"
    _, msgs, _ = px.execute("%engines")
    table = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "display_data"][0]
    row = next(line for line in table.splitlines() if re.match(rf"\s*1\s+\S+\s+{pid}\s", line))
    assert "dead (killed by signal 6" in row
    recover(px)
