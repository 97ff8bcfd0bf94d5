"""Issue 6: `jupyter console --kernel rustpx` in a real terminal (tmux), as a person types."""
import os
import secrets
import shutil
import subprocess
import sys
import time

from conftest import command_line, descendants, program_of, still_running

# A tmux server of this test session's own: the console's command then runs with this session's
# environment (a shared server would give it the environment of whoever started that server).
SOCKET = f"rustpx-test-{os.getpid()}"


def tmux(*args):
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True, check=False)


def screen(session):
    return tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", session).stdout


def wait_for(session, text, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = screen(session)
        if text in shown:
            return shown
        time.sleep(0.3)
    raise AssertionError(f"{text!r} never appeared; the screen shows:\n{screen(session)}")


def send_literal(session, text):
    """tmux takes a trailing `;` in an argument as its command separator: send those as hex."""
    for index, part in enumerate(text.split(";")):
        if index:
            tmux("send-keys", "-t", session, "-H", "3b")
        if part:
            tmux("send-keys", "-t", session, "-l", part)


def type_line(session, text):
    """Types `text` like a person, waits until the terminal echoes it, then presses Enter.

    Keys sent while prompt_toolkit is still taking over the terminal are lost, so a line that
    does not echo is cleared (Ctrl-U) and typed again.
    """
    for _ in range(10):
        send_literal(session, text)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if text in screen(session):
                tmux("send-keys", "-t", session, "Enter")
                return
            time.sleep(0.2)
        tmux("send-keys", "-t", session, "C-u")
    raise AssertionError(f"the terminal never echoed {text!r}:\n{screen(session)}")


def start_console():
    """A `jupyter console` with a rustpx kernel in a new tmux session; returns the session name.

    Exit confirmation is off so that Ctrl-D leaves at once, as `exit` does in IPython's console
    (rustpx has no `exit` command: typed, it is Rust code).
    """
    assert shutil.which("tmux"), "tmux is not installed"
    console = os.path.join(os.path.dirname(sys.executable), "jupyter-console")
    session = f"rustpx-{secrets.token_hex(4)}"
    command = (
        f"env RUSTPX_ENGINES=2 RUSTPX_LOG=error {console} --kernel rustpx "
        "--no-confirm-exit"
    )
    assert tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "50", command).returncode == 0
    return session


def leave_console(session, timeout=30):
    """Ctrl-D, the console's way out: it shuts its kernel down and exits, which ends the tmux
    session. Returns whether it did within `timeout`; the session is killed either way."""
    tmux("send-keys", "-t", session, "C-d")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tmux("has-session", "-t", session).returncode != 0:
            tmux("kill-server")
            return True
        time.sleep(0.2)
    tmux("kill-session", "-t", session)
    tmux("kill-server")
    return False


def console_kernel(session):
    """The pid of the rustpx kernel the console in `session` started."""
    pane = int(tmux("display-message", "-p", "-t", session, "#{pane_pid}").stdout.strip())
    kernels = [p for p in descendants(pane) if program_of(p) == "rustpx" and " kernel " in command_line(p)]
    assert len(kernels) == 1, [(p, command_line(p)) for p in descendants(pane)]
    return kernels[0]


def test_px_in_jupyter_console():
    session = start_console()
    try:
        wait_for(session, "In [1]:")
        type_line(session, "let x = 40 + 2;")
        wait_for(session, "In [2]:")
        type_line(session, "x + 0")
        wait_for(session, "Out[2]: 42")
        type_line(session, '%px println!("from the console on engine {}", std::env::var("RUSTPX_ENGINE_ID").unwrap());')
        wait_for(session, "[stdout:1] from the console on engine 1")
        shown = wait_for(session, "[stdout:0] from the console on engine 0")
        assert "starting 2 engines" in shown
        wait_for(session, "In [4]:")
    finally:
        leave_console(session)


def test_leaving_the_console_ends_its_kernel_and_engines():
    session = start_console()
    try:
        wait_for(session, "In [1]:")
        type_line(session, "%px 1")
        wait_for(session, "In [2]:")
        kernel = console_kernel(session)
        processes = [kernel, *descendants(kernel)]
        assert any(program_of(p) == "rustpx-engine" for p in processes), [command_line(p) for p in processes]
    except BaseException:
        leave_console(session)
        raise
    assert leave_console(session), "the console did not exit on Ctrl-D"
    left = still_running(processes, timeout=10)
    assert left == [], [command_line(p) for p in left]
