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
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import engine_pids, kernel_with_engines, ok, still_running, value

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


def ready_without_socket_type():
    """A READY command with no properties: it does not say the peer is a ROUTER."""
    body = b"\x05READY"
    return bytes([0x04, len(body)]) + body


class FakeHub:
    """A hostile hub on a Unix socket in a 0700 directory: greets the engine with `greet` (the
    bytes it writes first: a greeting and a READY, a greeting alone, or nothing), then writes
    `attack`, and keeps the connection open."""

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
            conn.sendall(self.greet + self.attack)
            conn.settimeout(30)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass


def start_engine(tmp_path, hub):
    connection = tmp_path / "engine.json"
    connection.write_text(json.dumps({
        "url": f"ipc://{hub.path}",
        "key": "a-key-the-fake-hub-does-not-have",
        "signature_scheme": "hmac-sha256",
    }))
    return subprocess.Popen([ENGINE_BIN, "--connect", str(connection), "--register-timeout", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_engine(tmp_path, hub):
    started = time.monotonic()
    process = start_engine(tmp_path, hub)
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
GREETED = zmtp_greeting() + router_ready()
CASES = {
    # A frame announcing 2^62 bytes and sending none: disconnect before allocating.
    "huge_frame": (GREETED, bytes([LONG]) + struct.pack(">Q", 1 << 62), "over the limit"),
    # A frame one byte over the link's limit (protocol::pieces::MAX_FRAME_BYTES, 320 KiB):
    # larger messages travel in pieces, so the engine takes no larger frame from anyone.
    "frame_over_the_link_limit": (GREETED, bytes([LONG]) + struct.pack(">Q", 327_681),
                                  "327681 bytes, over the limit of 327680 bytes"),
    # An endless message of empty frames: cut off at the frame bound.
    "endless_message": (GREETED, bytes([MORE, 0]) * 70_000, "more than 65536 frames"),
    # Not ZMTP at all.
    "not_zmtp": (b"", b"HTTP/1.1 200 OK\r\n" + b" " * 80, "not a ZMTP 3 socket"),
    # A message where the READY command must be: refused on its first byte, although it
    # announces a large frame.
    "message_before_ready": (zmtp_greeting(), bytes([LONG]) + struct.pack(">Q", 1 << 29),
                             "a message before the READY command"),
    # A READY that does not say the peer is a ROUTER.
    "ready_without_socket_type": (zmtp_greeting() + ready_without_socket_type(), b"",
                                  "did not say it is a ROUTER"),
    # Flag bits ZMTP reserves.
    "reserved_flag_bits": (GREETED, bytes([0x80, 0]), "reserved flag bits"),
    # Well-formed ZMTP, but a registration reply the hub's key did not sign.
    "forged_reply": (GREETED, bytes([MORE, 9]) + b"<IDS|MSG>" + bytes([MORE, 64]) + b"0" * 64
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


def test_an_engine_whose_hub_stops_reading_exits_after_its_patience(tmp_path):
    """A hub that stops reading (here the real kernel, stopped with SIGSTOP while a cell prints
    without pause) must not hold the engine's link in a write for good: the link's silence
    check could then never run. The engine exits within its patience with the hub (30 s), and
    once the kernel goes on, it reports the engine gone and keeps working."""
    k = kernel_with_engines(1)
    kernel_pid = k.km.provisioner.process.pid
    try:
        ok(k, "%px 1")
        [engine_pid] = engine_pids(k).values()
        printing = k.kc.execute(
            "%%px\n"
            "let line = \"x\".repeat(4096);\n"
            "for _ in 0..2_000_000 { println!(\"{line}\"); }\n"
        )
        # The output has begun to arrive: the engine is writing to the hub without pause.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            msg = k.kc.get_iopub_msg(timeout=120)
            if msg["parent_header"].get("msg_id") == printing and "xxxx" in json.dumps(msg["content"]):
                break
        os.kill(kernel_pid, signal.SIGSTOP)
        try:
            stopped_at = time.monotonic()
            assert still_running([engine_pid], timeout=75) == [], \
                "the engine is still running 75 s after its hub stopped reading"
            gone_after = time.monotonic() - stopped_at
        finally:
            os.kill(kernel_pid, signal.SIGCONT)
        assert gone_after > 20, f"the engine left after {gone_after:.1f} s, before its patience ran out"
        reply, msgs, _ = k.collect(printing, timeout=120)
        assert (reply["status"], reply["evalue"]) == ("error", "1 error"), reply
        assert value(k, "1 + 1") == "2"
    finally:
        k.shutdown()
