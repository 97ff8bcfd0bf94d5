"""Issue 3: the parallel magics against real engines, through a real Jupyter client.

One kernel with 4 local engines, started before the first test, serves the tests that leave the
pool as they found it; each test stands alone and may run in any order. The tests of a new
kernel's first `%px`, and the ones that change the pool (interrupting, killing or adding
engines), get a kernel of their own.
"""
import os
import re
import time

import pytest

from conftest import Kernel, of_type, stream_text

ID = 'let id: u32 = std::env::var("RUSTPX_ENGINE_ID").unwrap().parse().unwrap();'


def four_engine_kernel():
    return Kernel(env=dict(os.environ, RUSTPX_ENGINES="4"))


@pytest.fixture(scope="module")
def px():
    k = four_engine_kernel()
    reply, _, _ = k.execute("%px 0")
    assert reply["status"] == "ok", reply
    yield k
    k.shutdown()


@pytest.fixture
def fresh():
    """A kernel of its own whose pool of 4 engines has not started yet."""
    k = four_engine_kernel()
    yield k
    k.shutdown()


@pytest.fixture
def own_pool(fresh):
    """A kernel of its own with its 4 engines running, for a test that changes the pool."""
    reply, _, _ = fresh.execute("%px 0")
    assert reply["status"] == "ok", reply
    return fresh


def displays(msgs):
    return [m["content"] for m in msgs if m["msg_type"] in ("display_data", "update_display_data")]


def plain_texts(msgs):
    return [d["data"].get("text/plain", "") for d in displays(msgs)]


def final_stream_displays(msgs):
    """The last text of every streamed (engine, stream) display, by display id."""
    last = {}
    for d in displays(msgs):
        display_id = d.get("transient", {}).get("display_id", "")
        if display_id.endswith("-stdout") or display_id.endswith("-stderr"):
            last[display_id] = d["data"]["text/plain"]
    return sorted(last.values())


def values(msgs):
    out = {}
    for text in plain_texts(msgs):
        m = re.match(r"\x1b\[0;31mOut\[(\d+):(\d+)\]: \x1b\[0m(.*)", text, re.S)
        if m:
            out[int(m.group(1))] = (int(m.group(2)), m.group(3))
    return out


def test_pxresult_before_any_px_is_a_usage_error(fresh):
    reply, _, _ = fresh.execute("%pxresult")
    assert reply["status"] == "error"
    assert reply["ename"] == "UsageError"
    assert reply["evalue"] == "%pxresult recalls last %px result, which has not yet been used."


def test_first_px_starts_the_pool_and_streams_per_engine(fresh):
    reply, msgs, _ = fresh.execute('%px println!("hello");')
    assert reply["status"] == "ok", reply
    assert any(t.startswith("starting 4 engines") for t in plain_texts(msgs))
    assert final_stream_displays(msgs) == [f"[stdout:{n}] hello\n" for n in range(4)]
    # Later chunks of one stream update its display rather than adding one.
    first = [d for d in displays(msgs) if d.get("transient", {}).get("display_id", "").endswith("-stdout")]
    assert all(d["transient"]["display_id"].count("-stdout") == 1 for d in first)


def test_streamed_output_updates_one_display_per_engine_and_stream(px):
    code = '%%px -t 0\nprintln!("a");\nstd::thread::sleep(std::time::Duration::from_millis(800));\nprintln!("b");\neprintln!("e");'
    reply, msgs, _ = px.execute(code)
    assert reply["status"] == "ok"
    kinds = [(m["msg_type"], m["content"]["data"]["text/plain"]) for m in msgs
             if m["msg_type"] in ("display_data", "update_display_data")
             and m["content"].get("transient", {}).get("display_id", "").endswith("stdout")]
    assert kinds[0] == ("display_data", "[stdout:0] a\n")
    assert kinds[-1] == ("update_display_data", "[stdout:0] a\nb\n")
    assert "[stderr:0] e\n" in final_stream_displays(msgs)


def test_a_long_line_without_a_newline_shows_while_the_cell_runs(px, tmp_path):
    """A cell printing dots with `print!` (a progress line) must show them as it runs, not keep
    them on the engine until a newline comes. The cell waits for a file the test writes only
    once it has seen the dots, so it ends in a minute if they never come."""
    go = tmp_path / "go"
    dots = 100_000
    # One block: no variable or item, so engine 0 stays in the same state as the others.
    code = ("%%px -t 0\n{\n"
            f'for _ in 0..{dots} {{ print!("."); }}\n'
            "std::io::Write::flush(&mut std::io::stdout()).unwrap();\n"
            f'let go = std::path::Path::new("{go}");\n'
            "for _ in 0..600 { if go.exists() { break; } std::thread::sleep(std::time::Duration::from_millis(100)); }\n"
            'println!("{}", if go.exists() { "end" } else { "never shown" });\n}')
    msg_id = px.kc.execute(code)
    seen = ""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        msg = px.kc.get_iopub_msg(timeout=300)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        stream = msg["content"].get("transient", {}).get("display_id", "").endswith("-stdout")
        if msg["msg_type"] in ("display_data", "update_display_data") and stream:
            seen = msg["content"]["data"].get("text/plain", "")
            if seen.count(".") >= 64 * 1024 and not go.exists():
                go.write_text("")
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    assert px.kc.get_shell_msg(timeout=60)["content"]["status"] == "ok"
    assert seen == "[stdout:0] " + "." * dots + "end\n", seen[-200:]


def test_values_are_out_n_c_with_each_engines_count(px):
    reply, msgs, _ = px.execute("%px 1")
    before = {engine: count for engine, (count, _) in values(msgs).items()}
    reply, _, _ = px.execute("%%px -t 0\n2")
    assert reply["status"] == "ok"
    reply, msgs, _ = px.execute("%px 6 * 7")
    assert reply["status"] == "ok"
    vals = values(msgs)
    assert sorted(vals) == [0, 1, 2, 3]
    assert all(v == "42" for _, v in vals.values())
    # Each engine counts its own cells: engine 0 ran one more (the -t 0 cell) than the others.
    assert {engine: count for engine, (count, _) in vals.items()} == {
        engine: before[engine] + (2 if engine == 0 else 1) for engine in range(4)}
    for d in displays(msgs):
        if "Out[" in d["data"]["text/plain"]:
            assert d["metadata"]["engine"] in range(4)


def test_multiline_values_start_on_a_new_line(px):
    # A value whose text has two lines (a String's Debug text would escape its newline).
    two_lines = ('struct TwoLines;\nimpl std::fmt::Debug for TwoLines {\n'
                 '    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result { write!(f, "a\\nb") }\n}\n')
    reply, msgs, _ = px.execute('%%px -t 1\n{\n' + two_lines + 'TwoLines\n}')
    assert reply["status"] == "ok", reply
    (count, text), = values(msgs).values()
    assert text == "\na\nb"


@pytest.mark.parametrize("targets,expected", [("1", [1]), ("::2", [0, 2]), ("1::2", [1, 3]), ("[0,1]", [0, 1]), ("2,0", [0, 2]), ("1:3", [1, 2]), ("all", [0, 1, 2, 3])])
def test_target_forms(px, targets, expected):
    reply, msgs, _ = px.execute(f"%%px -t {targets}\n{ID}\nprintln!(\"from {{id}}\");")
    assert reply["status"] == "ok", reply
    assert final_stream_displays(msgs) == [f"[stdout:{n}] from {n}\n" for n in expected]


def test_an_unknown_engine_fails_before_anything_is_sent(px):
    reply, msgs, _ = px.execute('%%px -t 99\nprintln!("never");')
    assert reply["status"] == "error"
    assert reply["ename"] == "IndexError"
    assert reply["evalue"] == "No such engine: 99"
    assert not final_stream_displays(msgs)


def test_usage_errors_name_the_option_and_choices(px):
    reply, msgs, _ = px.execute('%%px --group-outputs bogus\nprintln!("never");')
    assert reply["status"] == "error"
    assert reply["ename"] == "UsageError"
    assert reply["evalue"] == "argument --group-outputs: invalid choice: 'bogus' (choose from 'engine', 'order', 'type')"
    assert not final_stream_displays(msgs)
    reply, _, _ = px.execute("%%px -t\n1")
    assert reply["evalue"] == "argument -t/--targets: expected one argument"
    reply, _, _ = px.execute("%%px --frobnicate\n1")
    assert reply["evalue"] == "unrecognized arguments: --frobnicate"


def test_no_stream_prints_contiguous_blocks(px):
    reply, msgs, _ = px.execute(f"%%px --no-stream\n{ID}\nprintln!(\"{{id}}\");")
    assert reply["status"] == "ok"
    assert stream_text(msgs) == "[stdout:0] \n0\n[stdout:1] \n1\n[stdout:2] \n2\n[stdout:3] \n3\n"
    assert not final_stream_displays(msgs)


def test_group_outputs_engine_and_type(px):
    code = f"{ID}\nprintln!(\"o{{id}}\");\neprintln!(\"e{{id}}\");\nid"
    reply, msgs, _ = px.execute("%%px --no-stream -t 0,1 --group-outputs engine\n" + code)
    assert reply["status"] == "ok"
    seq = [(m["msg_type"], m["content"].get("text") or m["content"]["data"]["text/plain"]) for m in outputs(msgs)]
    assert [s[1] for s in seq] == [
        "[stdout:0] \no0\n", "[stderr:0] \ne0\n", "[output:0]", values_text(0, seq[3][1]),
        "[stdout:1] \no1\n", "[stderr:1] \ne1\n", "[output:1]", values_text(1, seq[7][1]),
    ]
    reply, msgs, _ = px.execute("%%px --no-stream -t 0,1\n" + code)
    seq = [m["content"].get("text") or m["content"]["data"]["text/plain"] for m in outputs(msgs)]
    assert seq[0] == "[stdout:0] \no0\n[stdout:1] \no1\n"
    assert seq[1] == "[stderr:0] \ne0\n[stderr:1] \ne1\n"
    assert "Out[0:" in seq[2] and "Out[1:" in seq[3]


def outputs(msgs):
    """The cell's streams and displays, without the progress bar a slow machine adds after
    --progress-after (2 s): it is not part of the output order under test."""
    return [m for m in msgs if m["msg_type"] in ("stream", "display_data")
            and not m["content"].get("transient", {}).get("display_id", "").endswith("-progress")]


def values_text(engine, text):
    assert f"Out[{engine}:" in text
    return text


def test_a_single_int_target_drops_headers_when_not_streamed(px):
    reply, msgs, _ = px.execute('%%px -t 2 --no-stream\nprintln!("solo");\n5')
    assert reply["status"] == "ok"
    assert stream_text(msgs) == "solo\n"
    assert list(values(msgs)) == [2]


def test_noblock_returns_at_once_then_pxresult(px):
    code = f"%%px -a\n{ID}\nstd::thread::sleep(std::time::Duration::from_millis(1500));\nprintln!(\"late {{id}}\");\nid * 10"
    started = time.monotonic()
    reply, msgs, _ = px.execute(code)
    assert reply["status"] == "ok"
    results = of_type(msgs, "execute_result")
    assert results[0]["content"]["data"]["text/plain"] == "<AsyncResult(%px): pending>"
    assert not final_stream_displays(msgs)
    # The compile takes a few hundred ms; the cell did not wait for the 1.5 s sleep.
    assert time.monotonic() - started < 1.4 + 5  # generous: compile on a loaded machine
    reply, msgs, _ = px.execute("%pxresult")
    assert reply["status"] == "ok"
    assert stream_text(msgs) == "".join(f"[stdout:{n}] \nlate {n}\n" for n in range(4))
    assert {k: v for k, (_, v) in values(msgs).items()} == {n: str(n * 10) for n in range(4)}
    # Repeatable, with another grouping.
    reply, msgs, _ = px.execute("%pxresult -e")
    seq = [m["content"].get("text") or m["content"]["data"]["text/plain"] for m in msgs
           if m["msg_type"] in ("stream", "display_data")]
    assert seq[0] == "[stdout:0] \nlate 0\n" and seq[1] == "[output:0]"


def test_named_results_and_the_status_view(px):
    reply, msgs, _ = px.execute("%%px -a -o squares\n" + ID + "\nid * id")
    assert reply["status"] == "ok"
    reply, msgs, _ = px.execute("%pxresult squares")
    assert {k: v for k, (_, v) in values(msgs).items()} == {0: "0", 1: "1", 2: "4", 3: "9"}
    reply, msgs, _ = px.execute("%pxresult squares --status")
    text = plain_texts(msgs)[0]
    for field in ("ready: true", "elapsed:", "progress: 4/4", "serial_time:", "wall_time:"):
        assert field in text, text
    assert re.search(r"^\s+3\s+ok\s+\d+", text, re.M), text
    reply, _, _ = px.execute("%pxresult nosuch")
    assert reply["ename"] == "UsageError"


def test_streamed_errors_then_a_count(px):
    code = f"%%px\n{ID}\nprintln!(\"before {{id}}\");\nif id == 1 || id == 2 {{ panic!(\"boom {{}}\", id); }}"
    reply, msgs, _ = px.execute(code)
    assert reply["status"] == "error"
    assert reply["ename"] == "AlreadyDisplayedError"
    assert reply["evalue"] == "2 errors"
    assert reply["traceback"] == ["2 errors"]
    err = stream_text(msgs, "stderr")
    assert "[1:execute]:\npanicked at" in err and "boom 1" in err
    assert "[2:execute]:" in err and "[0:execute]" not in err
    # The engines that did not fail still show their output.
    assert "[stdout:0] before 0\n" in final_stream_displays(msgs)
    assert "[stdout:3] before 3\n" in final_stream_displays(msgs)


def test_one_error_says_one_error(px):
    reply, _, _ = px.execute(f'%%px\n{ID}\nif id == 3 {{ panic!("only three"); }}')
    assert reply["evalue"] == "1 error"


def test_non_streamed_composite_error_shows_output_first(px):
    code = f"%%px --no-stream\n{ID}\nprintln!(\"out {{id}}\");\nif id % 2 == 1 {{ panic!(\"odd {{}}\", id); }}"
    reply, msgs, _ = px.execute(code)
    assert reply["ename"] == "CompositeError"
    assert reply["evalue"] == (
        "one or more exceptions raised in: %px\n[1:execute]Panic: odd 1\n[3:execute]Panic: odd 3"
    )
    tb = reply["traceback"]
    assert tb[0] == "[1:execute]:" and tb[1].startswith("panicked at")
    second = tb.index("[3:execute]:")
    assert tb[second - 1] == ""  # each engine's block ends with an empty line
    assert tb[-1] == ""
    kinds = [m["msg_type"] for m in msgs if m["msg_type"] in ("stream", "error")]
    assert kinds.index("stream") < kinds.index("error")
    assert "[stdout:0] \nout 0\n" in stream_text(msgs)


def test_a_single_int_target_raises_the_engines_own_error(px):
    reply, _, _ = px.execute('%%px -t 1\npanic!("solo failure");')
    assert reply["ename"] == "Panic"
    assert reply["evalue"] == "solo failure"


def test_extreme_magic_arguments_are_answered_and_the_kernel_goes_on(px):
    """A slice step at i64's limit used to overflow and kill the shell loop; an engine count of
    2^32-1 would build a 16 GiB id list."""
    reply, msgs, _ = px.execute('%%px -t 1::9223372036854775807\nprintln!("slice");')
    assert reply["status"] == "ok"
    assert final_stream_displays(msgs) == ["[stdout:1] slice\n"]
    reply, _, _ = px.execute("%engines start -n 4294967295")
    assert reply["ename"] == "UsageError"
    assert "more than one start may ask for (65536)" in reply["evalue"]
    reply, _, _ = px.execute("%px 1")
    assert reply["status"] == "ok"


def test_a_cached_compile_is_never_reused_for_a_diverged_engine(px):
    """Re-running a cell reuses its compiled object only on engines whose state it was built for."""
    px.execute("%px let shared = 1;")
    for _ in range(2):  # compiled, then re-run from the cache
        reply, msgs, _ = px.execute("%px shared + 1")
        assert {v for _, v in values(msgs).values()} == {"2"}
    reply, _, _ = px.execute('%%px -t 0\nlet shared = String::from("now a string");')
    assert reply["status"] == "ok"
    reply, msgs, _ = px.execute("%px shared + 1")
    assert reply["evalue"] == "1 error"
    assert "[0:execute]:" in stream_text(msgs, "stderr")
    assert {k: v for k, (_, v) in values(msgs).items()} == {1: "2", 2: "2", 3: "2"}
    reply, msgs, _ = px.execute("%px shared.clone()")
    assert values(msgs)[0][1] == '"now a string"'


def test_each_re_run_of_a_compiled_cell_runs_it_again_on_the_current_variables(px):
    """Engines keep a re-run cell's function once found (no dynamic loader call per run): each
    re-run must still run the cell anew, on the variables the previous run left."""
    reply, _, _ = px.execute("%px let mut ticks: u64 = 0;")
    assert reply["status"] == "ok", reply
    reply, msgs, _ = px.execute("%px :timing")
    assert stream_text(msgs) == "Timing: true\n"
    try:
        for expected in range(1, 5):  # the first run compiles; the others re-run its object
            reply, msgs, _ = px.execute("%px ticks += 1; ticks")
            assert reply["status"] == "ok", reply
            assert {k: v for k, (_, v) in values(msgs).items()} == {i: str(expected) for i in range(4)}
            assert ("compile: none (compiled before)" in stream_text(msgs)) == (expected > 1), stream_text(msgs)
    finally:
        reply, msgs, _ = px.execute("%px :timing")
        assert stream_text(msgs) == "Timing: false\n"
    reply, msgs, _ = px.execute("%px ticks")
    assert {k: v for k, (_, v) in values(msgs).items()} == {i: "4" for i in range(4)}


def test_rich_output_from_engines_is_tagged_with_its_engine(px):
    html = 'println!("EVCXR_BEGIN_CONTENT text/html\\n<b>engine {id}</b>\\nEVCXR_END_CONTENT");'
    code = f"{ID}\n{html}\nprintln!(\"after\");"
    reply, msgs, _ = px.execute("%%px --no-stream -t 0,1\n" + code)
    assert reply["status"] == "ok", reply
    shown = [(m["content"]["data"], m["content"]["metadata"]) for m in msgs
             if m["msg_type"] == "display_data" and "transient" not in m["content"]]
    assert shown[0][0]["text/plain"] == "[output:0]"
    assert shown[1] == ({"text/html": "<b>engine 0</b>"}, {"engine": 0})
    assert shown[2][0]["text/plain"] == "[output:1]"
    assert shown[3] == ({"text/html": "<b>engine 1</b>"}, {"engine": 1})
    assert stream_text(msgs) == "[stdout:0] \nafter\n[stdout:1] \nafter\n"


def test_local_runs_the_cell_in_the_kernel_too(px):
    reply, msgs, _ = px.execute('%%px --local -t 0\nprintln!("both places");')
    assert reply["status"] == "ok"
    assert "[stdout:0] both places\n" in final_stream_displays(msgs)
    assert stream_text(msgs) == "both places\n"


def test_a_panic_keeps_the_engines_usable(px):
    px.execute("%px let kept = 3;")
    reply, _, _ = px.execute('%px let lost = 1; panic!("p");')
    assert reply["status"] == "error"
    reply, msgs, _ = px.execute("%px kept")
    assert reply["status"] == "ok"
    assert {v for _, v in values(msgs).values()} == {"3"}


def test_per_cell_options_do_not_leak_and_pxconfig_persists(px):
    reply, msgs, _ = px.execute('%%px -t 1 --no-stream\npanic!("x");')
    assert reply["status"] == "error"
    reply, msgs, _ = px.execute('%px println!("all");')
    assert len(final_stream_displays(msgs)) == 4
    px.execute("%pxconfig -t 0,1 --no-stream")
    reply, msgs, _ = px.execute('%px println!("two");')
    assert stream_text(msgs) == "[stdout:0] \ntwo\n[stdout:1] \ntwo\n"
    px.execute("%pxconfig -t all --stream")
    reply, msgs, _ = px.execute('%px println!("back");')
    assert len(final_stream_displays(msgs)) == 4


def test_autopx_runs_plain_cells_on_the_engines(px):
    reply, msgs, _ = px.execute("%autopx")
    assert stream_text(msgs) == "%autopx enabled\n"
    reply, msgs, _ = px.execute('println!("auto");')
    assert reply["status"] == "ok"
    assert len(final_stream_displays(msgs)) == 4
    reply, msgs, _ = px.execute("%autopx")
    assert stream_text(msgs) == "%autopx disabled\n"
    reply, msgs, _ = px.execute('println!("local");')
    assert stream_text(msgs) == "local\n"


def test_progress_shows_after_progress_after(px):
    code = "%%px --progress-after 0.2\nstd::thread::sleep(std::time::Duration::from_millis(1500));"
    reply, msgs, _ = px.execute(code)
    assert reply["status"] == "ok"
    progress = [d for d in displays(msgs) if d.get("transient", {}).get("display_id", "").endswith("-progress")]
    assert progress, "no progress display"
    assert re.match(r"%px: \d/4 tasks", progress[0]["data"]["text/plain"])
    assert progress[-1]["data"]["text/plain"].startswith("%px: 4/4 tasks")
    assert "<progress" in progress[0]["data"]["text/html"]


def test_interrupt_signals_the_engines_and_they_come_back(own_pool):
    own_pool.execute("%px let survivor = 1;")
    msg_id = own_pool.kc.execute("%%px\nloop { std::thread::sleep(std::time::Duration::from_millis(100)); }")
    time.sleep(3)
    own_pool.km.interrupt_kernel()
    reply, msgs, _ = own_pool.collect(msg_id, timeout=60)
    assert reply["status"] == "ok"
    err = stream_text(msgs, "stderr")
    assert "Received Keyboard Interrupt. Sending signal SIGINT to engines...\n" in err
    assert "variables lost:" in err and "survivor" in err
    reply, msgs, _ = own_pool.execute("%px 2")
    assert reply["status"] == "ok"
    assert sorted(values(msgs)) == [0, 1, 2, 3]


def test_engines_lists_the_pool(px):
    reply, msgs, _ = px.execute("%engines")
    text = plain_texts(msgs)[0]
    assert "id" in text and "pid" in text and "state" in text and "queue" in text
    assert len([line for line in text.splitlines() if re.match(r"\s+\d+\s", line)]) == 4


def test_engine_death_is_reported_fast_and_survivors_work(own_pool):
    started = time.monotonic()
    reply, msgs, _ = own_pool.execute("%%px -t 2\nstd::process::abort();")
    assert reply["ename"] == "EngineError"
    assert re.match(r"Engine 2 died while running task '\w+'", reply["evalue"])
    assert time.monotonic() - started < 10
    reply, msgs, _ = own_pool.execute("%px 3")
    assert reply["status"] == "ok"
    assert sorted(values(msgs)) == [0, 1, 3]
    reply, msgs, _ = own_pool.execute("%engines restart 2")
    assert reply["status"] == "ok", reply
    assert "engine 2 restarted" in stream_text(msgs)
    reply, msgs, _ = own_pool.execute("%px 4")
    assert sorted(values(msgs)) == [0, 1, 2, 3]


def test_engines_that_join_later_count_in_all_and_tb_limit(own_pool):
    own_pool.execute("%pxconfig -t all")
    reply, msgs, _ = own_pool.execute("%engines start -n 2")
    assert reply["status"] == "ok"
    assert "started engines 4, 5" in stream_text(msgs)
    reply, msgs, _ = own_pool.execute('%%px --no-stream\npanic!("everywhere");')
    assert reply["ename"] == "CompositeError"
    assert reply["evalue"].count("[") == 6
    assert reply["traceback"][-1] == "... 2 more exceptions ..."
    assert sum(1 for line in reply["traceback"] if re.match(r"\[\d:execute\]:", line)) == 4
