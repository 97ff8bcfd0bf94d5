"""Engines on the kernel's host dial the hub's Unix socket and speak ZMTP on it themselves,
without libzmq (issue 18, item 3: libzmq's I/O thread cost each engine a hand-off each way per
run). That parser is new attack surface in the engine: these tests put a hostile hub on the
socket the real engine binary dials and check that the engine refuses it, says why, exits, and
allocates nothing for what the peer only announced. The real kernel's side (a pool that runs
cells over this link) is covered by test_px.py and test_scale.py, whose engines all use it.
"""
import json
import os
import pathlib
import socket
import struct
import subprocess
import threading
import time

import pytest

ENGINE_BIN = os.environ.get("RUSTPX_ENGINE_BIN",
                            str(pathlib.Path(__file__).resolve().parent.parent / "target/release/rustpx-engine"))


def zmtp_greeting():
    """ZMTP 3.0's 64-byte greeting: signature, version, the NULL mechanism, filler."""
    return b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00") + b"\x00" * 32


def router_ready():
    """The READY command of a ROUTER."""
    body = b"\x05READY" + bytes([11]) + b"Socket-Type" + struct.pack(">I", 6) + b"ROUTER"
    return bytes([0x04, len(body)]) + body


def read_exactly(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class FakeHub:
    """A hostile hub on a Unix socket in a 0700 directory: greets the engine as `greet` says,
    then writes `attack`, and keeps the connection open."""

    def __init__(self, directory, greet, attack):
        directory.mkdir(mode=0o700)
        self.path = directory / "hub.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(1)
        self.greet, self.attack = greet, attack
        self.engine_greeting = b""
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _ = self.listener.accept()
        with conn:
            self.engine_greeting = read_exactly(conn, 64)
            if self.greet:
                conn.sendall(zmtp_greeting() + router_ready())
            conn.sendall(self.attack)
            conn.settimeout(30)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass


def run_engine(tmp_path, hub):
    connection = tmp_path / "engine.json"
    connection.write_text(json.dumps({
        "url": f"ipc://{hub.path}",
        "key": "a-key-the-fake-hub-does-not-have",
        "signature_scheme": "hmac-sha256",
    }))
    started = time.monotonic()
    process = subprocess.Popen([ENGINE_BIN, "--connect", str(connection), "--register-timeout", "20"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait4 for the peak memory the engine reached, which shows whether it allocated what the
    # hub only announced.
    deadline = time.monotonic() + 30
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the engine kept running against a hostile hub")
        time.sleep(0.05)
    stderr = process.stderr.read().decode()
    return os.waitstatus_to_exitcode(status), stderr, usage.ru_maxrss, time.monotonic() - started


LONG = 0x02
MORE = 0x01
CASES = {
    # A frame announcing 2^62 bytes and sending none: disconnect before allocating.
    "huge_frame": (True, bytes([LONG]) + struct.pack(">Q", 1 << 62), "over the limit"),
    # An endless message of empty frames: cut off at the frame bound.
    "endless_message": (True, bytes([MORE, 0]) * 70_000, "more than 65536 frames"),
    # Not ZMTP at all.
    "not_zmtp": (False, b"HTTP/1.1 200 OK\r\n" + b" " * 80, "not a ZMTP 3 socket"),
    # Well-formed ZMTP, but a registration reply the hub's key did not sign.
    "forged_reply": (True, bytes([MORE, 9]) + b"<IDS|MSG>" + bytes([MORE, 64]) + b"0" * 64
                     + b"".join(bytes([MORE, 2]) + b"{}" for _ in range(3)) + bytes([0, 2]) + b"{}",
                     "registration reply"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_engine_refuses_a_hostile_hub_on_its_unix_socket(tmp_path, case):
    greet, attack, reason = CASES[case]
    hub = FakeHub(tmp_path / "private", greet, attack)
    code, stderr, max_rss_kib, took = run_engine(tmp_path, hub)
    assert hub.engine_greeting[:1] == b"\xff" and hub.engine_greeting[10] == 3, hub.engine_greeting
    assert code == 2, (code, stderr)
    assert reason in stderr, stderr
    assert "registered with the hub" not in stderr
    assert max_rss_kib < 100 * 1024, f"the engine grew to {max_rss_kib} KiB"
    assert took < 15, f"took {took:.1f} s to give up"
