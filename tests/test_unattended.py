"""Issue 18, items 4 and 5: runs nobody watches (`--timeout`, `%pxconfig --restart-dead`) and
evcxr's commands in `%px` cells (`:opt`, `:timing`, `:vars`), against a real kernel with two
real engines, through a real Jupyter client.

Each test has a kernel of its own: a timeout and a kill change the pool, and `:vars` shows
every variable a group holds.
"""
import os
import re
import signal
import time

import pytest

from conftest import Kernel, parse_engine_pids, px_values, stream_text

ID = 'let id: u32 = std::env::var("RUSTPX_ENGINE_ID").unwrap().parse().unwrap();'
ENGINE_ID = 'std::env::var("RUSTPX_ENGINE_ID").unwrap()'


@pytest.fixture
def two():
    """A kernel of its own with two engines running."""
    k = Kernel(env=dict(os.environ, RUSTPX_ENGINES="2"))
    reply, _, _ = k.execute("%px 0")
    assert reply["status"] == "ok", reply
    yield k
    k.shutdown()


def streamed(msgs):
    """The last text of each engine's live stdout display."""
    last = {}
    for m in msgs:
        if m["msg_type"] in ("display_data", "update_display_data"):
            display_id = m["content"].get("transient", {}).get("display_id", "")
            if display_id.endswith("-stdout"):
                last[display_id] = m["content"]["data"]["text/plain"]
    return sorted(last.values())


def engine_table(k):
    reply, msgs, _ = k.execute("%engines")
    assert reply["status"] == "ok", reply
    table = "".join(
        m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "display_data"
        and "hub:" in m["content"]["data"].get("text/plain", "")
    )
    return table, stream_text(msgs, "stderr")


def test_a_cell_past_its_timeout_names_the_stuck_engine_and_shows_the_others(two):
    reply, _, _ = two.execute("%%px\nlet kept: u8 = 5;")
    assert reply["status"] == "ok", reply
    # Without the timeout this cell never ends: the client's own limit (30 s) fails the test.
    reply, msgs, _ = two.execute(
        f'%%px --timeout 2\n{ID}\nif id == 1 {{ loop {{}} }}\nprintln!("engine {{id}} done");',
        timeout=30,
    )
    assert reply["status"] == "error"
    assert reply["ename"] == "TimeoutError"
    assert reply["evalue"] == "Engine 1 still running %px after 2 s was interrupted"
    assert streamed(msgs) == ["[stdout:0] engine 0 done\n"]
    assert re.search(r"\[1:execute\] task '\w+' timed out \(variables lost: kept\)", "\n".join(reply["traceback"]))
    assert "[1:execute] still running after 2 s: interrupted; engine 1 was restarted (variables lost: kept)" in stream_text(msgs, "stderr")
    reply, msgs, _ = two.execute(f"%px {ENGINE_ID}")
    assert reply["status"] == "ok", reply
    assert px_values(msgs) == {0: '"0"', 1: '"1"'}


def test_pxconfig_timeout_is_the_default_of_later_cells(two):
    reply, _, _ = two.execute("%pxconfig --timeout 1")
    assert reply["status"] == "ok", reply
    reply, msgs, _ = two.execute(f"%%px -t 0\nloop {{}}", timeout=30)
    assert (reply["ename"], reply["evalue"]) == ("TimeoutError", "Engine 0 still running %px after 1 s was interrupted")


def wait_for_a_new_engine_1(k, old):
    """Polls `%engines` (up to 60 s) until engine 1 runs in a process other than `old` and is
    idle; returns the last table and everything the polls printed on stderr."""
    said = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        table, stderr = engine_table(k)
        said += stderr
        pid = parse_engine_pids(table).get(1)
        if pid not in (None, old) and re.search(r"^\s*1\s+\S+\s+\d+\s+\d+\s+\S+\s+idle", table, re.M):
            break
        time.sleep(0.2)
    return table, said


def test_a_killed_engine_comes_back_under_restart_dead_and_the_next_px_runs_on_all(two):
    reply, msgs, _ = two.execute("%pxconfig --restart-dead")
    assert reply["status"] == "ok", reply
    assert stream_text(msgs) == "engines that die are restarted up to 3 times each, with the same id\n"
    table, _ = engine_table(two)
    old = parse_engine_pids(table)[1]
    os.kill(old, signal.SIGKILL)
    # The kernel sees the exit within milliseconds; until it does, the table shows the old pid.
    table, said = wait_for_a_new_engine_1(two, old)
    assert said == "engine 1 died (killed by signal 9 (SIGKILL); it held no variables): restarted it with the same id (restart 1 of 3, --restart-dead)\n"
    reply, msgs, _ = two.execute(f"%px ({ENGINE_ID}, std::process::id())")
    assert reply["status"] == "ok", reply
    values = px_values(msgs)
    assert sorted(values) == [0, 1]
    assert values[1] == f'("1", {parse_engine_pids(table)[1]})'


def test_an_engine_that_stops_answering_heartbeats_comes_back_under_restart_dead(two):
    """A hung engine (SIGSTOP: its process is alive, the pool sees no exit) is declared dead
    after 5 s without a heartbeat, killed, and started again like one that died."""
    reply, msgs, _ = two.execute("%pxconfig --restart-dead 1")
    assert reply["status"] == "ok", reply
    reply, _, _ = two.execute("%%px -t 1\nlet kept = 7;")
    assert reply["status"] == "ok", reply
    table, _ = engine_table(two)
    old = parse_engine_pids(table)[1]
    os.kill(old, signal.SIGSTOP)
    table, said = wait_for_a_new_engine_1(two, old)
    assert re.fullmatch(
        r"engine 1 died \(no heartbeat for [5-9]\.\d s; the process is hung or stopped, or its host is "
        r"unreachable; variables lost: kept\): restarted it with the same id \(restart 1 of 1, --restart-dead\)\n",
        said,
    ), said
    assert not os.path.exists(f"/proc/{old}") or open(f"/proc/{old}/stat").read().split()[2] == "Z"
    reply, msgs, _ = two.execute(f"%px ({ENGINE_ID}, std::process::id())")
    assert reply["status"] == "ok", reply
    values = px_values(msgs)
    assert values[1] == f'("1", {parse_engine_pids(table)[1]})'
    assert sorted(values) == [0, 1]


def seconds(text):
    """`312 ms` or `1.52 s` as seconds."""
    number, unit = text.split()
    return float(number) / (1000 if unit == "ms" else 1)


def test_opt_sets_the_build_of_each_group(two):
    reply, msgs, _ = two.execute("%%px\n:opt 0")
    assert reply["status"] == "ok", reply
    assert stream_text(msgs) == "[0,1:opt] Optimization: 0\n"
    reply, msgs, _ = two.execute("%%px\n:opt 2\n1 + 1")
    assert reply["status"] == "ok", reply
    assert stream_text(msgs) == "[0,1:opt] Optimization: 2\n"
    assert px_values(msgs) == {0: "2", 1: "2"}


def test_vars_lists_each_groups_variables(two):
    reply, _, _ = two.execute("%%px\nlet shared: u8 = 1;")
    assert reply["status"] == "ok", reply
    reply, _, _ = two.execute('%%px -t 1\nlet only_one = String::from("one");')
    assert reply["status"] == "ok", reply
    reply, msgs, _ = two.execute("%px :vars")
    assert reply["status"] == "ok", reply
    assert stream_text(msgs) == "[0:vars]\nshared: u8\n[1:vars]\nonly_one: String\nshared: u8\n"


def test_timing_shows_the_compile_and_each_engines_run(two):
    reply, msgs, _ = two.execute("%px :timing")
    assert reply["status"] == "ok", reply
    assert stream_text(msgs) == "Timing: true\n"
    reply, msgs, _ = two.execute("%px std::thread::sleep(std::time::Duration::from_millis(300));")
    assert reply["status"] == "ok", reply
    text = stream_text(msgs)
    found = re.fullmatch(
        r"\[0,1:timing\] compile: \d+(\.\d+)? m?s\n\[0:timing\] run: (.+)\n\[1:timing\] run: (.+)\n", text
    )
    assert found, text
    # Each engine's run holds the cell's 300 ms sleep.
    assert all(seconds(found.group(n)) >= 0.3 for n in (2, 3)), text
    reply, msgs, _ = two.execute("%px :timing")
    assert stream_text(msgs) == "Timing: false\n"


def test_other_evcxr_commands_are_refused_by_name(two):
    reply, _, _ = two.execute("%px :type x")
    assert (reply["ename"], reply["evalue"]) == (
        "UsageError",
        "`:type x`: %px cells take the evcxr commands :dep, :opt, :timing and :vars; other evcxr commands act on the kernel's own context, so run them in a plain cell",
    )
