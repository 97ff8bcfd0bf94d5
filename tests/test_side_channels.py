"""Issue 14, item 3: the kernel's local side channels (the evaluator's re-run door, the px
bridge, the %pxmap scheduler) were loopback ports any local user could reach: trickling one byte
a second into the re-run door hung every plain cell, a token line of 512 MiB was held in memory,
and 500 connections to the bridge made 500 threads. They are Unix sockets in a 0700 directory
now, with bounded, deadlined handshakes; these tests perform those attacks on the real kernel."""
import glob
import os
import re
import socket
import stat
import subprocess
import threading
import time

import pytest

from conftest import Kernel, px_values


@pytest.fixture(scope="module")
def kernel():
    k = Kernel()
    # A %px cell starts the px compiler and its bridge.
    reply, _, _ = k.execute("%engines start -n 1")
    assert reply["status"] == "ok", reply
    reply, _, _ = k.execute("%px 1 + 1")
    assert reply["status"] == "ok", reply
    k.pid = k.km.provisioner.process.pid
    yield k
    k.shutdown()


def private_dir(kernel):
    found = glob.glob(f"/tmp/rustpx-sockets-{kernel.pid}-*")
    assert len(found) == 1, found
    return found[0]


def socket_inodes(pid):
    """The inode numbers of the sockets process `pid` holds open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def listening_tcp_ports(pid):
    """The TCP ports process `pid` listens on (from /proc/net/tcp{,6} and its open sockets)."""
    inodes = socket_inodes(pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_cell_runs(kernel, timeout=60):
    reply, msgs, _ = kernel.execute("20 + 22", timeout=timeout)
    assert reply["status"] == "ok", reply
    assert any(m["msg_type"] == "execute_result" and m["content"]["data"]["text/plain"] == "42" for m in msgs)


def test_only_the_jupyter_ports_and_the_hub_listen_on_tcp(kernel):
    info = kernel.km.get_connection_info()
    jupyter = {info[name] for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")}
    extra = listening_tcp_ports(kernel.pid) - jupyter
    # The one other TCP listener is the engine hub (signed, numbered messages; issue 14 item 4).
    assert len(extra) == 1, f"TCP ports other than Jupyter's: {sorted(extra)}"


def test_the_side_channels_are_unix_sockets_only_this_user_can_enter(kernel):
    directory = private_dir(kernel)
    mode = os.stat(directory).st_mode
    assert stat.S_IMODE(mode) == 0o700, oct(mode)
    sockets = sorted(os.listdir(directory))
    assert "rerun.sock" in sockets and "px-bridge.sock" in sockets, sockets
    assert os.getuid() == 0, "this test becomes another user to try the door; run it as root (CI does)"
    attempt = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "python3", "-c",
         "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])",
         os.path.join(directory, "px-bridge.sock")],
        capture_output=True, text=True, timeout=30,
    )
    assert attempt.returncode != 0 and "PermissionError" in attempt.stderr, attempt


def test_a_trickled_token_does_not_hang_plain_cells(kernel):
    door = os.path.join(private_dir(kernel), "rerun.sock")
    stop = threading.Event()
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(door)

    def trickle():
        try:
            while not stop.is_set():
                conn.send(b"a")
                time.sleep(0.5)
        except OSError:
            pass  # the kernel closed it

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    try:
        # The handshake has 2 s in all; a plain cell waits at most that for it.
        assert_cell_runs(kernel, timeout=30)
        assert_cell_runs(kernel, timeout=30)
    finally:
        stop.set()
        conn.close()
        feeder.join(5)


def test_a_huge_token_line_is_cut_off_and_not_held(kernel):
    door = os.path.join(private_dir(kernel), "px-bridge.sock")
    before = rss_kib(kernel.pid)
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(door)
    chunk = b"x" * (1 << 20)
    sent = 0
    try:
        for _ in range(256):  # up to 256 MiB, no newline
            conn.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # closed by the kernel after the first 128 bytes
    finally:
        conn.close()
    grown_mib = (rss_kib(kernel.pid) - before) / 1024
    assert sent < 64 << 20, f"the kernel read {sent >> 20} MiB of one token line"
    assert grown_mib < 32, f"the kernel grew by {grown_mib:.0f} MiB"
    assert_cell_runs(kernel)


def test_hundreds_of_bridge_connections_get_no_threads(kernel):
    door = os.path.join(private_dir(kernel), "px-bridge.sock")
    before = threads(kernel.pid)
    held = []
    try:
        for _ in range(500):
            conn = socket.socket(socket.AF_UNIX)
            conn.connect(door)
            held.append(conn)
        time.sleep(1)
        during = threads(kernel.pid)
        assert during - before <= 8, f"{during - before} threads for 500 idle connections"
    finally:
        for conn in held:
            conn.close()
    # The px compiler still reaches the engines through the bridge.
    reply, _, _ = kernel.execute("%px 2 + 2")
    assert reply["status"] == "ok", reply


def engine_pids(kernel):
    """The kernel's local engines: its children named rustpx-engine."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if parent == kernel.pid and name == "rustpx-engine":
            found.append(int(entry))
    return found


def tcp_sockets(pid):
    """How many TCP sockets (any state) process `pid` holds."""
    inodes = socket_inodes(pid)
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            count += sum(1 for line in f if line.split()[9] in inodes)
    return count


def test_local_engines_reach_the_hub_on_its_unix_socket_only(kernel):
    """Issue 18 item 3: engines the kernel starts here dial the hub's Unix socket in the private
    directory (no TCP on loopback for every message), and still run cells."""
    hub = os.path.join(private_dir(kernel), "hub.sock")
    assert stat.S_ISSOCK(os.stat(hub).st_mode), hub
    engines = engine_pids(kernel)
    assert len(engines) == 1, engines
    assert tcp_sockets(engines[0]) == 0, "a local engine still holds a TCP socket"
    reply, msgs, _ = kernel.execute("%px 6 * 7")
    assert reply["status"] == "ok", reply
    assert px_values(msgs) == {0: "42"}, msgs


def test_another_user_cannot_reach_the_hub_socket(kernel):
    hub = os.path.join(private_dir(kernel), "hub.sock")
    assert os.getuid() == 0, "this test becomes another user to try the door; run it as root (CI does)"
    attempt = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "python3", "-c",
         "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])", hub],
        capture_output=True, text=True, timeout=30,
    )
    assert attempt.returncode != 0 and "PermissionError" in attempt.stderr, attempt


def test_the_hub_socket_refuses_unsigned_and_forged_registrations(kernel):
    """Whoever gets into the directory (this user, root) still needs the key: an unsigned or
    wrongly signed hello over the Unix socket registers nobody, gets no answer, and the engine
    already there keeps serving."""
    import zmq
    from jupyter_client.session import Session

    hub = os.path.join(private_dir(kernel), "hub.sock")
    identity = "intruder-session"
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, identity.encode())
    sock.connect(f"ipc://{hub}")
    content = {"requested_id": 7, "pid": os.getpid(), "hostname": "intruder", "version": "0",
               "shares_files": True}
    try:
        for number, key in enumerate([b"", b"not-the-key"], start=1):
            session = Session(key=key, signature_scheme="hmac-sha256", session=identity)
            session.send(sock, "register_request", content, metadata={"seq": number})
        assert sock.poll(3000) == 0, "the hub answered an unsigned or forged registration"
    finally:
        sock.close()
    _, msgs, _ = kernel.execute("%engines")
    table = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "display_data"][0]
    assert "intruder" not in table and not re.search(r"^\s*7\s", table, re.M), table
    reply, msgs, _ = kernel.execute("%px 40 + 2")
    assert reply["status"] == "ok", reply
    assert px_values(msgs) == {0: "42"}, msgs
