"""Issue 16, first slice: the Rust API from plain cells (`rustpx::client()`, views, `apply`,
`map`, typed `AsyncResult`) against the real kernel, its px service and 2 real engines; and the
API's socket under attack (a wrong token, an oversized frame, a malformed request) with the
kernel going on.

One kernel serves the module; the tests run in file order and build on each other's state.
"""
import os
import re
import signal
import socket
import struct
import time

import pytest

from conftest import engine_pids, stream_text, wait_for_stream, kernel_with_engines, ok, value

FUNCTIONS = """%%px
fn square(x: u64) -> u64 { x * x }
fn picky(x: u64) -> u64 { if x == 7 { panic!("no {x}") } else { x } }
fn slow(x: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(20)); x + 1 }"""


@pytest.fixture(scope="module")
def k():
    kernel = kernel_with_engines(2)
    ok(kernel, FUNCTIONS)
    yield kernel
    kernel.shutdown()


def test_client_lists_the_engines(k):
    ok(k, "let rc = rustpx::client();")
    assert value(k, "rc.ids().unwrap()") == "[0, 1]"
    assert value(k, "rc.direct_view(1).ids().unwrap()") == "[1]"
    assert value(k, "rc.direct_view(vec![5]).ids().unwrap_err().to_string()") == (
        '"IndexError: No such engine: 5 (live engines: [0, 1])"'
    )


def test_apply_returns_the_engine_functions_value(k):
    ok(k, "let lview = rc.load_balanced_view();")
    assert value(k, 'lview.apply::<u64, u64>("square", 12).get().unwrap()') == "144"


def test_map_equals_the_local_result_in_input_order(k):
    ok(k, "let xs: Vec<u64> = (0..500).collect();")
    ok(k, 'let squares: Vec<u64> = lview.map::<u64, u64>("square", &xs).get().unwrap();')
    assert value(k, "squares == xs.iter().map(|x| x * x).collect::<Vec<u64>>()") == "true"
    assert value(k, 'lview.clone().chunk_size(1).map_sync::<u64, u64>("square", &xs[..20]).unwrap() == squares[..20]') == "true"


def test_a_large_map_comes_back_whole(k):
    # 300,000 items: the reply names each item's engine, a header over 1 MiB.
    ok(k, "let many: Vec<u64> = (0..300_000).collect();")
    assert value(k, 'lview.map_sync::<u64, u64>("square", &many).unwrap() == many.iter().map(|x| x * x).collect::<Vec<u64>>()') == "true"


def test_a_panicking_task_is_an_error_naming_its_item_and_engine(k):
    text = value(k, 'lview.map::<u64, u64>("picky", &xs[..10]).get().unwrap_err().to_string()')
    assert re.fullmatch(r'"CompositeError: 1 of 10 tasks failed\\n\[[01]:apply\] item 7: no 7"', text), text


def test_a_type_mismatch_names_both_types_and_decodes_nothing(k):
    text = value(k, 'lview.apply::<i32, u64>("square", 3).get().unwrap_err().to_string()')
    assert re.fullmatch(
        r'"TypeError: `square` on engine [01] takes `u64` and returns `u64`, but this call sends `i32` and expects `u64`; '
        r'call it with the engine\'s types \(e.g. ::<u64, u64>\)"',
        text,
    ), text


def test_an_unknown_function_says_where_to_define_it(k):
    text = value(k, 'lview.apply::<u64, u64>("nowhere", 3).get().unwrap_err().to_string()')
    assert text.startswith('"NameError: `nowhere` is not defined on engine '), text
    assert "define it with a %%px cell first" in text


def test_wait_then_get_and_the_results_state(k):
    ok(k, 'let slow_result = lview.map::<u64, u64>("slow", &xs[..40]);')
    assert value(k, "slow_result.wait(Some(std::time::Duration::from_secs(120)))") == "true"
    assert value(k, "slow_result.ready()") == "true"
    assert value(k, "slow_result.progress()") == "40"
    assert value(k, "slow_result.get().unwrap() == (1..41).collect::<Vec<u64>>()") == "true"
    # 40 items of 20 ms each: the engines were busy at least 0.8 s in all.
    assert value(k, "slow_result.serial_time() >= std::time::Duration::from_millis(800)") == "true"
    assert value(k, "slow_result.elapsed() > std::time::Duration::ZERO") == "true"


def test_a_wait_that_times_out_says_not_ready_and_the_result_stays(k):
    # Submitted and waited on in one cell: a second cell's compile could outlast the map.
    assert value(k, 'let later = lview.clone().chunk_size(1).map::<u64, u64>("slow", &xs[..100]);\n'
                    "later.wait(Some(std::time::Duration::from_millis(10)))") == "false"
    assert value(k, "later.get().unwrap().len()") == "100"


def test_execute_runs_a_cell_on_the_views_engines_with_per_engine_output(k):
    ok(k, 'let outs = rc.direct_view(..).execute_sync("let base: u64 = 40; println!(\\"ready on {}\\", std::env::var(\\"RUSTPX_ENGINE_ID\\").unwrap()); base + 2").unwrap();')
    assert value(k, "outs.iter().map(|o| (o.engine, o.stdout.clone(), o.value.clone())).collect::<Vec<_>>()") == (
        '[(0, "ready on 0\\n", Some("42")), (1, "ready on 1\\n", Some("42"))]'
    )
    # The engines kept the variable, as after %px.
    assert value(k, 'rc.direct_view(1).execute_sync("base * 2").unwrap()[0].value.clone().unwrap()') == '"80"'
    msgs = ok(k, 'rc.direct_view(0).execute("println!(\\"shown\\"); base").display_outputs().unwrap();')
    assert stream_text(msgs) == "[stdout:0] shown\nOut[0]: 40\n"


def test_execute_reports_each_failing_engines_error(k):
    text = value(k, 'rc.direct_view(..).execute("if base == 40 { panic!(\\"engine says no\\") }").get().unwrap_err().to_string()')
    assert text.startswith('"CompositeError: 2 of 2 tasks failed\\n[0:execute] '), text
    assert "engine says no" in text


def test_wait_interactive_draws_a_live_progress_bar_under_the_cell(k):
    msgs = ok(k, 'let bar = lview.clone().chunk_size(1).map::<u64, u64>("slow", &xs[..40]);\nbar.wait_interactive()')
    shown = [m for m in msgs if m["msg_type"] == "display_data"]
    updates = [m for m in msgs if m["msg_type"] == "update_display_data"]
    assert len(shown) == 1, msgs
    display_id = shown[0]["content"]["transient"]["display_id"]
    assert updates and all(m["content"]["transient"]["display_id"] == display_id for m in updates)
    final = updates[-1]["content"]["data"]
    assert re.fullmatch(r"map: 40/40 items \(\d+\.\d s\)", final["text/plain"]), final
    assert '<progress value="40" max="40"' in final["text/html"]
    # Drawn as the items came in, not only at the end.
    counts = [int(re.match(r"map: (\d+)/40", m["content"]["data"]["text/plain"]).group(1)) for m in shown + updates]
    assert counts == sorted(counts) and counts[0] < 40, counts
    assert [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "execute_result"] == ["true"]


def test_an_interrupt_during_get_ends_the_cell_and_keeps_its_variables_and_tasks(k):
    # 500 items of 20 ms on 2 engines: about 5 s, running from this cell on, while the next
    # cell compiles and waits.
    ok(k, 'let long_run = lview.clone().chunk_size(1).map::<u64, u64>("slow", &xs);')
    msg_id = k.kc.execute('println!("waiting"); long_run.get().unwrap().len()')
    wait_for_stream(k, msg_id, "waiting", timeout=120)
    time.sleep(0.3)
    started = time.monotonic()
    k.km.interrupt_kernel()
    reply, msgs, _ = k.collect(msg_id, timeout=60)
    # Within the escalation delay: the wait ended, the runtime child was not killed.
    assert time.monotonic() - started < 2, msgs
    assert reply["status"] == "error"
    assert "KeyboardInterrupt: the wait was interrupted" in stream_text(msgs, "stderr") + reply["evalue"], msgs
    # The plain context's variables are there, and the call ran on to the end.
    assert value(k, "xs.len()") == "500"
    assert value(k, "long_run.get().unwrap() == (1..501).collect::<Vec<u64>>()") == "true"


def test_an_interrupt_of_a_cell_that_handles_the_wait_error_still_fails_the_cell(k):
    # Submitted and waited for in one cell, which ends as usual (the cell handles the error), so
    # its variables are kept.
    msg_id = k.kc.execute(
        'let handled = lview.clone().chunk_size(1).map::<u64, u64>("slow", &xs[..150]);\n'
        'println!("waiting"); let outcome = handled.get(); outcome.is_err()'
    )
    wait_for_stream(k, msg_id, "waiting", timeout=120)
    time.sleep(0.3)
    k.km.interrupt_kernel()
    reply, msgs, _ = k.collect(msg_id, timeout=60)
    assert (reply["status"], reply.get("ename")) == ("error", "KeyboardInterrupt"), (reply, msgs)
    assert "the calls go on and the variables are kept" in reply["evalue"]
    assert value(k, "handled.get().unwrap().len()") == "150"


def test_pxresult_shows_the_last_api_result(k):
    ok(k, 'let kept = lview.map::<u64, u64>("square", &xs[..10]); kept.wait(None);')
    msgs = ok(k, "%pxresult")
    assert re.fullmatch(
        r"map `square`: 10/10 items done on engines? [01](, 1)? in \d+\.\d{3} s \(serial \d+\.\d{3} s\)\n",
        stream_text(msgs),
    ), msgs
    ok(k, 'let failing = lview.map::<u64, u64>("picky", &xs[..10]); failing.wait(None);')
    reply, msgs, _ = k.execute("%pxresult")
    assert (reply["status"], reply["ename"]) == ("error", "CompositeError"), reply
    assert re.fullmatch(r"1 of 10 tasks failed\n\[[01]:apply\] item 7: no 7", reply["evalue"]), reply
    # An execute's result is shown as a %px cell's.
    ok(k, 'let shown = rc.direct_view(0).execute("base + 2"); shown.wait(None);')
    msgs = ok(k, "%pxresult")
    shown = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "display_data"]
    assert len(shown) == 1 and re.fullmatch(r"(\x1b\[0;31m)?Out\[0:\d+\]: (\x1b\[0m)?42", shown[0]), msgs


# --- the API's socket under attack ---

def api_socket(k):
    """The API's socket path and token, from the plain context's runtime child's environment."""
    spec = value(k, 'std::env::var("RUSTPX_API").unwrap()').strip('"')
    path, token = spec.rsplit(" ", 1)
    return path, token


def received_before_close(sock):
    """The bytes a peer sent before it closed the connection (a close with our bytes unread
    arrives as a reset: still a close)."""
    sock.settimeout(10)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_a_wrong_token_an_oversized_frame_and_a_malformed_request_leave_the_kernel_serving(k):
    path, token = api_socket(k)
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700

    wrong = socket.socket(socket.AF_UNIX)
    wrong.connect(path)
    wrong.sendall(b"not-the-token\n" + struct.pack("<QI", 4, 0))
    assert received_before_close(wrong) == b""

    huge = socket.socket(socket.AF_UNIX)
    huge.connect(path)
    huge.sendall(token.encode() + b"\n" + struct.pack("<Q", 1 << 62))
    # Closed before anything is allocated for it.
    assert received_before_close(huge) == b""

    bad = socket.socket(socket.AF_UNIX)
    bad.connect(path)
    bad.sendall(token.encode() + b"\n" + struct.pack("<QI", 4 + 3, 3) + b"\xff\xff\xff")
    bad.settimeout(10)
    length = struct.unpack("<Q", bad.recv(8, socket.MSG_WAITALL))[0]
    reply = bad.recv(length, socket.MSG_WAITALL)
    assert b"rustpx API: a malformed request" in reply

    assert value(k, 'rustpx::client().load_balanced_view().apply::<u64, u64>("square", 9).get().unwrap()') == "81"


# --- an engine that dies mid-map (last: the module's kernel keeps one engine after it) ---

def test_a_map_survives_an_engine_dying_mid_map_and_nothing_is_lost(k):
    pids = engine_pids(k)
    assert sorted(pids) == [0, 1], pids
    msg_id = k.kc.execute(
        'let survived = lview.clone().chunk_size(1).map::<u64, u64>("slow", &xs[..400]).get().unwrap();'
    )
    time.sleep(1.5)  # 400 items of 20 ms on 2 engines: about 4 s of work, not half done
    os.kill(pids[1], signal.SIGKILL)
    reply, msgs, _ = k.collect(msg_id, timeout=600)
    assert reply["status"] == "ok", msgs
    assert value(k, "survived == (1..401).collect::<Vec<u64>>()") == "true"
    assert value(k, "rc.ids().unwrap()") == "[0]"
