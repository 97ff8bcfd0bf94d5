"""Issue 13, item 3: the input history, kept in SQLite, over `history_request` and in a console.

Each test points RUSTPX_HISTORY_FILE at its own temporary file, so the numbers it checks (session 1,
then 2 after a restart) are the file's own.
"""
import os
import sqlite3
import stat
import sys
import time

import pytest
from jupyter_client.manager import start_new_kernel

from conftest import KERNEL_NAME, Kernel
from test_console import screen, tmux, type_line, wait_for


class HistoryKernel(Kernel):
    """A kernel whose history lives in `path`."""

    def __init__(self, path):
        env = {**os.environ, "RUSTPX_HISTORY_FILE": str(path), "RUSTPX_ENGINES": "1"}
        self.km, self.kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=120, env=env)

    def history(self, **request):
        msg_id = self.kc.history(**request)
        reply = self.kc.get_shell_msg(timeout=30)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["msg_type"] == "history_reply"
        return reply["content"]

    def run(self, code, **options):
        msg_id = self.kc.execute(code, **options)
        reply, _, _ = self.collect(msg_id)
        assert reply["status"] == "ok", reply
        return reply["execution_count"]


# What the first session runs, by line (execution count); a silent cell and one that is not to be
# stored run in between and must not appear.
FIRST = {
    1: "let a = 20;",
    2: "a + 1",
    3: '%%px\nprintln!("on an engine");',
    4: "a + 1",
}


@pytest.fixture(scope="module")
def history_file(tmp_path_factory):
    return tmp_path_factory.mktemp("history") / "history.sqlite"


@pytest.fixture(scope="module")
def kernel(history_file):
    k = HistoryKernel(history_file)
    for line, code in FIRST.items():
        assert k.run(code) == line
        if line == 2:
            k.run('println!("silent");', silent=True)
            k.run("let hidden = 1;", store_history=False)
    yield k
    k.shutdown()


def triples(session, lines):
    return [[session, line, FIRST[line]] for line in lines]


def test_tail_returns_the_last_cells_oldest_first(kernel):
    content = kernel.history(hist_access_type="tail", n=3)
    assert content == {"status": "ok", "history": triples(1, [2, 3, 4])}


def test_range_of_the_current_session(kernel):
    assert kernel.history(hist_access_type="range", session=0, start=2, stop=4)["history"] == triples(1, [2, 3])
    # jupyter_client's default request: the whole current session.
    assert kernel.history()["history"] == triples(1, [1, 2, 3, 4])


def test_range_with_outputs_pairs_each_input_with_null(kernel):
    content = kernel.history(hist_access_type="range", session=1, start=1, stop=2, output=True)
    assert content["history"] == [[1, 1, ["let a = 20;", None]]]


def test_search_matches_a_glob_over_whole_inputs(kernel):
    content = kernel.history(hist_access_type="search", pattern="a*")
    assert content["history"] == triples(1, [2, 4])
    content = kernel.history(hist_access_type="search", pattern="%%px*")
    assert content["history"] == triples(1, [3])


def test_search_unique_keeps_only_the_latest_of_equal_inputs(kernel):
    content = kernel.history(hist_access_type="search", pattern="*", unique=True)
    assert content["history"] == triples(1, [1, 3, 4])
    content = kernel.history(hist_access_type="search", pattern="*", unique=True, n=2)
    assert content["history"] == triples(1, [3, 4])


def test_a_malformed_request_gets_an_error_reply_naming_the_problem(kernel):
    content = kernel.history(hist_access_type="latest")
    assert content["status"] == "error"
    assert '"latest"' in content["evalue"]
    content = kernel.history(hist_access_type="tail", n="ten")
    assert content["status"] == "error"
    assert 'invalid type: string "ten"' in content["evalue"]
    # The kernel still answers.
    assert kernel.history(hist_access_type="tail", n=1)["history"] == triples(1, [4])


def test_the_history_file_is_private(kernel, history_file):
    assert stat.S_IMODE(history_file.stat().st_mode) == 0o600


def test_history_survives_a_restart_in_a_new_session(tmp_path):
    path = tmp_path / "history.sqlite"
    k = HistoryKernel(path)
    try:
        assert k.run("let b = 2;") == 1
        assert k.run("b * 3") == 2
        before = [[1, 1, "let b = 2;"], [1, 2, "b * 3"]]
        assert k.history(hist_access_type="range", session=0)["history"] == before
        k.km.restart_kernel()
        k.kc.wait_for_ready(timeout=120)
        assert k.run("let c = 4;") == 1
        assert k.history(hist_access_type="range", session=0)["history"] == [[2, 1, "let c = 4;"]]
        assert k.history(hist_access_type="range", session=-1)["history"] == before
        assert k.history(hist_access_type="range", session=1, start=2)["history"] == before[1:]
        assert k.history(hist_access_type="tail", n=2)["history"] == [[1, 2, "b * 3"], [2, 1, "let c = 4;"]]
    finally:
        k.shutdown()
    with sqlite3.connect(path) as db:
        sessions = db.execute("SELECT session, end IS NOT NULL, num_cmds FROM sessions").fetchall()
    # The restart shut the first kernel down cleanly (its end time is written); the second was
    # killed (`now=True`), so its session has no end.
    assert sessions == [(1, 1, 2), (2, 0, 1)]


def prompt_line(session, number):
    """The text after the last `In [number]:` prompt on the screen."""
    marker = f"In [{number}]:"
    lines = [line for line in screen(session).splitlines() if marker in line]
    return lines[-1].split(marker, 1)[1].strip() if lines else None


def quit_console(session):
    """Ctrl-D and a yes, as a person leaves: the console then shuts its kernel down."""
    tmux("send-keys", "-t", session, "C-u")
    tmux("send-keys", "-t", session, "C-d")
    wait_for(session, "Do you really want to exit", timeout=30)
    tmux("send-keys", "-t", session, "y", "Enter")
    deadline = time.monotonic() + 60
    while tmux("has-session", "-t", session).returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.3)


def test_console_up_arrow_recalls_the_previous_sessions_last_input(tmp_path):
    console = os.path.join(os.path.dirname(sys.executable), "jupyter-console")
    history = tmp_path / "history.sqlite"
    command = f"env RUSTPX_HISTORY_FILE={history} RUSTPX_LOG=error {console} --kernel rustpx"
    first = f"rustpx-history-{os.getpid()}-1"
    assert tmux("new-session", "-d", "-s", first, "-x", "160", "-y", "50", command).returncode == 0
    try:
        wait_for(first, "In [1]:")
        type_line(first, "let earlier = 1;")
        wait_for(first, "In [2]:")
        type_line(first, "let remembered = 6 * 7;")
        wait_for(first, "In [3]:")
        quit_console(first)
    finally:
        tmux("kill-session", "-t", first)
    second = f"rustpx-history-{os.getpid()}-2"
    assert tmux("new-session", "-d", "-s", second, "-x", "160", "-y", "50", command).returncode == 0
    try:
        wait_for(second, "In [1]:")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # Keys sent while prompt_toolkit takes over the terminal are lost: Up is pressed
            # again only while the prompt is still empty.
            if prompt_line(second, 1) == "":
                tmux("send-keys", "-t", second, "Up")
            time.sleep(0.5)
            if prompt_line(second, 1):
                break
        assert prompt_line(second, 1) == "let remembered = 6 * 7;", screen(second)
    finally:
        quit_console(second)
        tmux("kill-session", "-t", second)
