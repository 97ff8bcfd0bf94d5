"""Issue 7: %push, %pull, %scatter and %gather between the kernel's context and 3 real engines.

One kernel serves the module (the first data magic builds serde and bincode in both contexts,
which takes a while); the tests run in file order and build on each other's variables.
"""
import os
import re

import pytest

from conftest import Kernel, px_values, stream_text

SERDE = ':dep serde = { version = "1", features = ["derive"] }'
POINT = "#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]\npub struct Point { pub x: f64, pub label: String }"


@pytest.fixture(scope="module")
def k(tmp_path_factory):
    os.environ["RUSTPX_ENGINES"] = "3"
    # The kernel's log (in its runtime directory) says when a generated cell ran again.
    runtime_dir = tmp_path_factory.mktemp("transfer-runtime")
    os.environ["JUPYTER_RUNTIME_DIR"] = str(runtime_dir)
    os.environ["RUSTPX_LOG"] = "warn,rustpx_kernel=info,rustpx_kernel::evaluator=debug"
    try:
        kernel = Kernel()
    finally:
        del os.environ["JUPYTER_RUNTIME_DIR"], os.environ["RUSTPX_LOG"]
    kernel.log = runtime_dir / f"rustpx-kernel-{kernel.km.provisioner.process.pid}.log"
    # A user struct defined on both sides, with serde, before any value: adding a crate makes
    # evcxr drop values of cell-defined types.
    ok(kernel, SERDE)
    ok(kernel, POINT)
    ok(kernel, "%%px\n" + SERDE + "\n" + POINT)
    yield kernel
    kernel.shutdown()


def reruns(k):
    """How many generated cells the kernel's context has run again from their compiled object."""
    return k.log.read_text().count("generated cell ran again")


def ok(k, code):
    reply, msgs, _ = k.execute(code, timeout=600)
    assert reply["status"] == "ok", (code, reply, msgs)
    return msgs


def error(k, code):
    reply, msgs, _ = k.execute(code, timeout=600)
    assert reply["status"] == "error", (code, msgs)
    return reply


def value(k, code):
    """The text/plain of a plain cell's execute_result."""
    msgs = ok(k, code)
    results = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "execute_result"]
    assert len(results) == 1, msgs
    return results[0]


def engine_values(k, code):
    return px_values(ok(k, code))


def test_push_copies_integers_strings_and_vectors_to_every_engine(k):
    ok(k, 'let n: u64 = 42;\nlet s = String::from("grüße");\nlet v: Vec<i32> = vec![3, 1, 2];')
    msgs = ok(k, "%push n s v")
    assert re.search(r"pushed n, s, v to engine 0, 1, 2 \(\d+\.\d\d s\)", stream_text(msgs)), msgs
    assert engine_values(k, "%px n + 1") == {0: "43", 1: "43", 2: "43"}
    assert engine_values(k, "%px s.clone()") == {i: '"grüße"' for i in range(3)}
    assert engine_values(k, "%px v.iter().sum::<i32>()") == {i: "6" for i in range(3)}


def test_push_with_targets_reaches_only_those_engines(k):
    ok(k, "let only: u8 = 7;")
    ok(k, "%push only -t 1")
    reply, msgs, _ = k.execute("%px only", timeout=600)
    assert reply["status"] == "error"
    assert reply["evalue"] == "2 errors", reply
    assert engine_values(k, "%%px -t 1\nonly") == {1: "7"}


def test_a_user_struct_crosses_both_ways(k):
    ok(k, 'let p = Point { x: 1.5, label: "kernel".into() };')
    ok(k, "%push p")
    assert engine_values(k, "%px p.x * 2.0") == {i: "3.0" for i in range(3)}
    ok(k, '%px let q = Point { x: rustpx::engine_id().unwrap() as f64, label: "engine".into() };')
    msgs = ok(k, "%pull q -o qs")
    assert "pulled q from engine 0, 1, 2 into qs: Vec<Point>" in stream_text(msgs)
    assert value(k, "qs.iter().map(|q| q.x).sum::<f64>()") == "3.0"
    assert value(k, "qs[2].label.clone()") == '"engine"'


def test_pull_from_one_engine_is_a_bare_value(k):
    ok(k, "%px let e: u32 = rustpx::engine_id().unwrap() * 10;")
    msgs = ok(k, "%pull e -t 2")
    assert "into e: u32" in stream_text(msgs)
    assert value(k, "e") == "20"
    ok(k, "%pull e -t 0,2 -o es")
    assert value(k, "es") == "[0, 20]"


def test_scatter_splits_in_target_order_and_gather_restores_it(k):
    ok(k, "let items: Vec<u64> = (0..10).collect();")
    msgs = ok(k, "%scatter items")
    assert "scattered items across engine 0, 1, 2" in stream_text(msgs)
    assert engine_values(k, "%px items.clone()") == {0: "[0, 1, 2, 3]", 1: "[4, 5, 6]", 2: "[7, 8, 9]"}
    ok(k, "%px let squares: Vec<u64> = items.iter().map(|i| i * i).collect();")
    ok(k, "%gather squares -o all_squares")
    assert value(k, "all_squares") == "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]"
    ok(k, "%scatter items -t 2,0")
    assert engine_values(k, "%%px -t 0,2\nitems.len()") == {2: "5", 0: "5"}
    ok(k, "%gather items -t 2,0 -o back")
    assert value(k, "back == items") == "true"


def test_pull_without_out_replaces_the_local_variable_with_one_value_per_engine(k):
    msgs = ok(k, "%pull n")
    assert "pulled n from engine 0, 1, 2 into n: Vec<u64>" in stream_text(msgs)
    assert value(k, "n") == "[42, 42, 42]"
    ok(k, "%pull n")
    assert value(k, "n.len()") == "3"


def test_a_type_without_serde_names_the_type_and_the_trait(k):
    ok(k, "struct Handle(u8);\nlet h = Handle(1);")
    reply = error(k, "%push h")
    assert reply["ename"] == "TransferError"
    assert "`Handle`" in reply["evalue"] and "serde::Serialize" in reply["evalue"], reply
    assert "#[derive(serde::Serialize, serde::Deserialize)]" in reply["evalue"]
    # Nothing was lost: the kernel and the engines keep their values.
    assert value(k, "n.len()") == "3"
    assert engine_values(k, "%px n") == {i: "42" for i in range(3)}


def test_a_type_missing_on_the_engines_says_where_to_define_it(k):
    ok(k, "#[derive(serde::Serialize, serde::Deserialize)]\npub struct OnlyHere { pub a: u8 }\nlet o = OnlyHere { a: 1 };")
    reply = error(k, "%push o")
    assert "the type `OnlyHere` is not defined on the engines" in reply["evalue"], reply
    assert "%%px" in reply["evalue"]


def test_bad_names_and_missing_variables_are_clear(k):
    assert error(k, "%push nowhere")["evalue"].startswith("name 'nowhere' is not defined in the kernel's context")
    assert error(k, "%pull nowhere")["evalue"] == "name 'nowhere' is not defined on engine 0, 1, 2"
    ok(k, "let scalar = 3u8;")
    assert "splits a Vec, and `scalar` is a `u8`" in error(k, "%scatter scalar")["evalue"]
    assert error(k, "%pull a b")["ename"] == "UsageError"
    ok(k, 'let borrowed = "text";')
    assert "`borrowed` is a reference" in error(k, "%push borrowed")["evalue"]
    assert error(k, "%push 9lives")["evalue"] == "argument NAME: '9lives' is not a valid name (letters, digits and _)"


def test_engines_that_disagree_on_a_type_are_named(k):
    ok(k, "%%px -t 0\nlet mixed: u8 = 1;")
    ok(k, "%%px -t 1,2\nlet mixed = String::new();")
    reply = error(k, "%pull mixed")
    assert "`mixed` has different types on the targets" in reply["evalue"], reply
    assert "u8 on engine 0" in reply["evalue"] and "String on engine 1, 2" in reply["evalue"]


def test_repeated_transfers_run_again_without_compiling_and_move_the_current_values(k):
    ok(k, "let mut counter: Vec<u64> = vec![0; 4];")
    before = reruns(k)
    for round in range(1, 5):
        ok(k, f"counter[0] = {round};")
        ok(k, "%push counter")
        assert engine_values(k, "%px counter[0]") == {i: str(round) for i in range(3)}
    for round in range(1, 4):
        ok(k, f"%px counter[1] = {round} * (rustpx::engine_id().unwrap() as u64 + 1);")
        ok(k, "%pull counter -o counters")
        assert value(k, "counters.iter().map(|c| c[1]).collect::<Vec<_>>()") == f"[{round}, {2 * round}, {3 * round}]"
    ok(k, "let spread: Vec<u64> = (0..9).collect();")
    for _ in range(3):
        ok(k, "%scatter spread")
        ok(k, "%px spread.iter_mut().for_each(|x| *x *= 2);")
        ok(k, "%gather spread -o doubled")
    assert value(k, "doubled") == "[0, 2, 4, 6, 8, 10, 12, 14, 16]"
    # The first push and pull compile (the pull also defines `counters`); the rest run again.
    assert reruns(k) - before >= 6, k.log.read_text()[-3000:]


def test_a_type_redefined_since_a_transfer_compiled_moves_as_the_new_type(k):
    old = "#[derive(serde::Serialize, serde::Deserialize)]\npub struct Shape { pub w: u32 }"
    new = "#[derive(serde::Serialize, serde::Deserialize)]\npub struct Shape { pub label: String, pub w: u32 }"
    ok(k, "%%px -t 0\n" + old)
    ok(k, "%%px -t 1,2\n" + new)
    ok(k, old + "\nlet shape = Shape { w: 3 };")
    before = reruns(k)
    ok(k, "%push shape -t 0")
    ok(k, "%push shape -t 0")
    assert reruns(k) == before + 1
    assert engine_values(k, "%%px -t 0\nshape.w") == {0: "3"}
    # Same name, same type name, another layout: the kept object must not write the new value
    # as the old type. evcxr drops a variable whose type was redefined when the next cell runs
    # (and, if that cell binds the name again, the new binding too), hence `1 + 1` first.
    ok(k, new)
    ok(k, "1 + 1")
    ok(k, 'let shape = Shape { label: "wide".into(), w: 9 };')
    before = reruns(k)
    ok(k, "%push shape -t 1,2")
    assert engine_values(k, '%%px -t 1,2\nformat!("{} {}", shape.label, shape.w)') == {1: '"wide 9"', 2: '"wide 9"'}
    # A cell that defines an item empties the kernel's re-run cache: the push compiled anew.
    assert reruns(k) == before


# --- %pxmap: the load-balanced map ---

MAP_FUNCTIONS = """%%px
fn square(x: u64) -> u64 { x * x }
fn picky(x: u64) -> u64 { if x % 100 == 7 { panic!("no {x}") } else { x } }
fn slow(x: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(4)); x + 1 }
fn to_point(x: u64) -> Point { Point { x: x as f64, label: format!("item {x}") } }"""


def test_pxmap_applies_an_engine_function_to_every_item_in_order(k):
    ok(k, MAP_FUNCTIONS)
    ok(k, "let xs: Vec<u64> = (0..1000).collect();")
    msgs = ok(k, "%pxmap square xs -o ys")
    assert re.search(r"mapped square over 1000 items of xs on engine 0, 1, 2 in \d+ chunks", stream_text(msgs)), msgs
    assert "into ys: Vec<u64>" in stream_text(msgs)
    assert value(k, "ys == xs.iter().map(|x| x * x).collect::<Vec<u64>>()") == "true"
    ok(k, "%pxmap square xs -o ones --chunksize 1 -t 0,2")
    assert value(k, "ones == ys") == "true"


def test_pxmap_results_of_a_user_struct(k):
    ok(k, "let few: Vec<u64> = vec![3, 1, 2];")
    msgs = ok(k, "%pxmap to_point few -o points")
    assert "into points: Vec<Point>" in stream_text(msgs)
    assert value(k, "points[0].label.clone()") == '"item 3"'


def test_a_panicking_item_names_its_index_and_engine_and_the_rest_complete(k):
    reply = error(k, "%pxmap picky xs -o picked")
    assert reply["ename"] == "MapError"
    assert reply["evalue"].startswith("10 of 1000 items panicked in picky: item 7 on engine ")
    assert ": no 7;" in reply["evalue"] and "--errors-in-place" in reply["evalue"]
    ok(k, "%pxmap picky xs -o picked --errors-in-place")
    assert value(k, "picked[7].clone()") == 'Err("no 7")'
    assert value(k, "picked.iter().filter(|r| r.is_ok()).count()") == "990"


def test_an_item_panicking_with_a_message_over_a_mib_fails_alone(k):
    """Issue 14: a panic message over 1 MiB desynchronised the map's frames, and the kernel
    aborted allocating a length read from the middle of the text."""
    ok(k, '%%px\nfn shouty(x: u64) -> u64 { if x == 3 { panic!("{}", "x".repeat(2 << 20)) } else { x } }')
    ok(k, "let few_more: Vec<u64> = (0..10).collect();")
    reply = error(k, "%pxmap shouty few_more -o loud")
    assert reply["ename"] == "MapError"
    assert reply["evalue"].startswith("1 of 10 items panicked in shouty: item 3 on engine ")
    ok(k, "%pxmap shouty few_more -o loud --errors-in-place")
    assert value(k, "loud.iter().filter(|r| r.is_ok()).count()") == "9"
    assert value(k, "loud[3].is_err()") == "true"


def test_pxmap_async_gives_a_handle_with_status_and_engine_ids(k):
    ok(k, "let work: Vec<u64> = (0..600).collect();")
    msgs = ok(k, "%pxmap slow work -o done -a --chunksize 20")
    results = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "execute_result"]
    assert results == ["<AsyncMapResult(%pxmap): pending>"]
    status = stream_text(ok(k, "%pxresult --status"))
    assert re.search(r"%pxmap slow over work: ready: (true|false), progress: \d+/600 items, elapsed: [\d.]+ s, serial_time: [\d.]+ s", status), status
    msgs = ok(k, "%pxresult")
    assert "into done: Vec<u64> and done_engines: Vec<u32>" in stream_text(msgs)
    assert value(k, "done.len()") == "600"
    assert value(k, "done_engines.iter().all(|e| *e < 3)") == "true"


def test_pxmap_of_an_unknown_function_says_where_to_define_it(k):
    reply = error(k, "%pxmap nowhere xs")
    assert "`nowhere` is not defined on engine" in reply["evalue"] and "%%px" in reply["evalue"], reply
    assert "%pxmap maps over a Vec" in error(k, "%pxmap square scalar")["evalue"]


def test_an_interrupt_stops_a_map_and_the_engines_keep_their_variables(k):
    import threading
    import time

    ok(k, "let long: Vec<u64> = (0..30_000).collect();")  # 30,000 x 4 ms on 3 engines: 40 s
    threading.Timer(2.5, k.km.interrupt_kernel).start()
    started = time.monotonic()
    reply, msgs, _ = k.execute("%pxmap slow long -o never --chunksize 10", timeout=600)
    took = time.monotonic() - started
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    assert re.match(r"%pxmap slow long interrupted after \d+ of 30000 items; never was not bound", reply["evalue"]), reply
    assert "Stopping %pxmap" in stream_text(msgs, "stderr")
    assert took < 20, f"the map went on for {took:.1f} s after the interrupt"
    assert engine_values(k, "%px p.x") == {i: "1.5" for i in range(3)}
    assert error(k, "never")["ename"] == "CompilationError"


def test_an_engine_killed_during_a_map_loses_no_item(k):
    import signal
    import threading
    import time

    from conftest import parse_engine_pids

    table = "".join(m["content"]["data"]["text/plain"] for m in ok(k, "%engines") if m["msg_type"] == "display_data")
    victim = parse_engine_pids(table)[1]
    ok(k, "let many: Vec<u64> = (0..1500).collect();")
    threading.Timer(1.5, lambda: os.kill(victim, signal.SIGKILL)).start()
    started = time.monotonic()
    msgs = ok(k, "%pxmap slow many -o survived --chunksize 10")
    assert "engine 1 stopped and its chunks ran elsewhere" in stream_text(msgs), (time.monotonic() - started, msgs)
    assert value(k, "survived == many.iter().map(|x| x + 1).collect::<Vec<u64>>()") == "true"
    ok(k, "%engines restart 1")
