"""Issue 13: a compile error is one error per compile, shown once for the engines that shared it.

A kernel of its own: the groups of engines that share a compiler state depend on every cell run
before, so these tests start from four engines in one group and split them themselves.
"""
import os

import pytest

from conftest import Kernel, stream_text
from test_px import values


@pytest.fixture(scope="module")
def px():
    os.environ["RUSTPX_ENGINES"] = "4"
    try:
        k = Kernel()
    finally:
        del os.environ["RUSTPX_ENGINES"]
    yield k
    k.shutdown()


def test_a_compile_error_is_shown_once_for_every_engine_of_the_compile(px):
    """One compile served the four engines, so its error is one error, labelled with all four;
    the final count still counts engines."""
    reply, msgs, _ = px.execute('%px let bad: u32 = "text";')
    assert reply["ename"] == "AlreadyDisplayedError"
    assert reply["evalue"] == "4 errors"
    err = stream_text(msgs, "stderr")
    assert err.startswith("[0-3:execute]:\n")
    assert err.count("mismatched types") == 1
    assert err.count(":execute]") == 1


def test_divergent_engines_get_a_clean_compile_error_not_a_crash(px):
    reply, _, _ = px.execute("%%px -t 0,1\nlet only_here = 7;")
    assert reply["status"] == "ok"
    reply, msgs, _ = px.execute("%%px --no-stream\nonly_here + 1")
    assert reply["ename"] == "CompositeError"
    assert {k: v for k, (_, v) in values(msgs).items()} == {0: "8", 1: "8"}
    assert "[2:execute]CompilationError" in reply["evalue"]
    assert "[3:execute]CompilationError" in reply["evalue"]
    # Engines 2 and 3 shared one compile: its diagnostics are drawn once, for both.
    assert reply["traceback"][0] == "[2,3:execute]:"
    assert [line for line in reply["traceback"] if line.endswith(":execute]:")] == ["[2,3:execute]:"]
    assert "only_here" in "\n".join(reply["traceback"])
    # No engine crashed: all four still answer.
    reply, msgs, _ = px.execute("%px 1")
    assert reply["status"] == "ok"
    assert sorted(values(msgs)) == [0, 1, 2, 3]
