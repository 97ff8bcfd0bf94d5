"""Issue 13: "Run All" stops at a failing cell (stop_on_error), for plain and %px cells alike.

A client runs a notebook by sending every cell's execute_request at once. When one fails, the
requests queued behind it must be answered `aborted` and must not run; the next request sent after
that runs normally. The side effect of each queued cell is a file, so "did not run" is observed
directly, on the kernel's side and on the engines'.
"""
import os

import pytest

from conftest import Kernel


@pytest.fixture(scope="module")
def kernel():
    # The pool is left at its default size (one engine per CPU), whatever earlier modules set.
    os.environ.pop("RUSTPX_ENGINES", None)
    k = Kernel()
    yield k
    k.shutdown()


def replies_to(kernel, msg_ids, timeout=180):
    """The shell reply content for each of `msg_ids`, in order."""
    replies = {}
    while len(replies) < len(msg_ids):
        msg = kernel.kc.get_shell_msg(timeout=timeout)
        replies[msg["parent_header"]["msg_id"]] = msg["content"]
    return [replies[m] for m in msg_ids]


def touch(path, on_engines=False):
    code = f'std::fs::write({str(path)!r}, "ran").unwrap();'.replace("'", '"')
    return f"%px {code}" if on_engines else code


FAILURES = {
    "plain panic": 'panic!("the first cell fails");',
    "plain compile error": 'let n: u8 = "not a number";',
    "px panic": '%%px\npanic!("the first cell fails on every engine");',
    "px compile error": '%%px\nlet n: u8 = "not a number";',
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_cells_queued_behind_a_failure_are_aborted_and_do_not_run(kernel, tmp_path, failure):
    second, third = tmp_path / "second", tmp_path / "third"
    first_id = kernel.kc.execute(FAILURES[failure])
    second_id = kernel.kc.execute(touch(second))
    third_id = kernel.kc.execute(touch(third, on_engines=True))
    statuses = [r["status"] for r in replies_to(kernel, [first_id, second_id, third_id])]
    assert statuses == ["error", "aborted", "aborted"]
    assert not second.exists() and not third.exists()

    fourth = tmp_path / "fourth"
    reply, _, _ = kernel.collect(kernel.kc.execute(touch(fourth, on_engines=True)))
    assert reply["status"] == "ok", reply
    assert fourth.read_text() == "ran"


def test_a_cell_sent_after_the_first_aborted_reply_runs(kernel, tmp_path):
    """What is aborted is what had arrived when the cell failed (ipykernel's snapshot of its
    queue), not whatever arrives while the aborted replies go out: a client that reacts to the
    first `aborted` reply with a new request gets it run."""
    queued = [tmp_path / f"queued-{n}" for n in range(400)]
    first_id = kernel.kc.execute('panic!("the first cell fails");')
    queued_ids = [kernel.kc.execute(touch(path)) for path in queued]
    late = tmp_path / "late"
    late_id = None
    replies = {}
    while len(replies) < len(queued_ids) + 2:
        msg = kernel.kc.get_shell_msg(timeout=180)
        replies[msg["parent_header"]["msg_id"]] = msg["content"]["status"]
        if late_id is None and msg["content"]["status"] == "aborted":
            late_id = kernel.kc.execute(touch(late))
    assert replies[first_id] == "error"
    assert [replies[m] for m in queued_ids] == ["aborted"] * len(queued)
    assert replies[late_id] == "ok"
    assert late.read_text() == "ran"
    assert not any(path.exists() for path in queued)


def test_queued_cells_run_when_the_client_turns_stop_on_error_off(kernel, tmp_path):
    second = tmp_path / "second"
    first_id = kernel.kc.execute('panic!("fails");', stop_on_error=False)
    second_id = kernel.kc.execute(touch(second))
    statuses = [r["status"] for r in replies_to(kernel, [first_id, second_id])]
    assert statuses == ["error", "ok"]
    assert second.read_text() == "ran"


def test_an_aborted_request_still_gets_busy_and_idle(kernel, tmp_path):
    first_id = kernel.kc.execute('panic!("fails");')
    second_id = kernel.kc.execute(touch(tmp_path / "second"))
    replies_to(kernel, [first_id, second_id])
    states = []
    while "idle" not in states:
        msg = kernel.kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") == second_id and msg["msg_type"] == "status":
            states.append(msg["content"]["execution_state"])
    assert states == ["busy", "idle"]
