"""Issue 5: the kernel's own resilience and its security defaults, with the real binaries."""
import json
import os
import pathlib
import re
import stat
import subprocess
import time

import pytest
import zmq
from jupyter_client import BlockingKernelClient
from jupyter_client.session import Session

from conftest import Kernel, parse_engine_pids, still_running

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENGINE_BIN = os.environ.get("RUSTPX_ENGINE_BIN", str(ROOT / "target/release/rustpx-engine"))


@pytest.fixture(scope="module")
def px():
    os.environ["RUSTPX_ENGINES"] = "2"
    # The log checks below read info lines, whatever the caller's RUSTPX_LOG says.
    os.environ["RUSTPX_LOG"] = "warn,rustpx=info,rustpx_kernel=info,rustpx_engine=info"
    k = Kernel()
    reply, _, _ = k.execute("%px 0")
    assert reply["status"] == "ok"
    yield k
    k.shutdown()


def raw_socket(kernel, channel, kind=zmq.DEALER):
    info = kernel.km.get_connection_info()
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://{info['ip']}:{info[channel + '_port']}")
    return sock, Session(key=info["key"], signature_scheme=info["signature_scheme"])


def kernel_info_answered(sock, session, timeout_ms=10000):
    session.send(sock, "kernel_info_request", {})
    while sock.poll(timeout_ms):
        _, frames = session.feed_identities(sock.recv_multipart(), copy=True)
        if session.deserialize(frames)["msg_type"] == "kernel_info_reply":
            return True
    return False


@pytest.mark.parametrize("channel", ["shell", "control"])
def test_malformed_frames_and_unknown_types_are_dropped(px, channel):
    sock, session = raw_socket(px, channel)
    try:
        junk = [
            [b"no delimiter at all"],
            [b"<IDS|MSG>"],
            [b"<IDS|MSG>", b"sig", b"{", b"{}", b"{}", b"{}"],
            [b"<IDS|MSG>", b"", b"[]", b"{}", b"{}", b"{}"],
            [b"\xff\xfe" * 100],
        ]
        for frames in junk:
            sock.send_multipart(frames)
        # A correctly signed message of a type nobody knows.
        session.send(sock, "frobnicate_request", {"x": 1})
        # A signed header that lacks required fields.
        header = json.dumps({"msg_id": "m"}).encode()
        parts = [header, b"{}", b"{}", b"{}"]
        sock.send_multipart([b"<IDS|MSG>", session.sign(parts)] + parts)
        assert kernel_info_answered(sock, session), f"{channel} stopped answering after bad input"
    finally:
        sock.close()


def test_huge_messages_are_handled(px):
    sock, session = raw_socket(px, "shell")
    try:
        # 64 MiB of unsigned junk, then a signed 16 MiB message of an unknown type.
        sock.send_multipart([b"<IDS|MSG>", b"bad", b"x" * (64 << 20), b"{}", b"{}", b"{}"])
        session.send(sock, "huge_request", {"blob": "y" * (16 << 20)})
        assert kernel_info_answered(sock, session, timeout_ms=60000)
    finally:
        sock.close()
    reply, msgs, _ = px.execute('%px println!("still here");')
    assert reply["status"] == "ok"


def test_a_client_that_disconnects_mid_cell(px):
    info = px.km.get_connection_info()
    gone = BlockingKernelClient()
    gone.load_connection_info(info)
    gone.start_channels()
    gone.execute('%%px\nstd::thread::sleep(std::time::Duration::from_millis(1500));\nprintln!("for nobody");')
    time.sleep(0.3)
    gone.stop_channels()
    # The kernel finishes that cell for nobody, then serves the next client; the old cell's
    # output never appears under the new cell.
    reply, msgs, _ = px.execute('%px println!("for the new cell");')
    assert reply["status"] == "ok"
    texts = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] in ("display_data", "update_display_data")]
    assert any("for the new cell" in t for t in texts)
    assert not any("for nobody" in t for t in texts)


def footer(px):
    _, msgs, _ = px.execute("%engines")
    table = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "display_data"][0]
    found = re.search(r"hub: (tcp://\S+); more engines: rustpx-engine --connect (\S+)", table)
    assert found, table
    return found.group(1), pathlib.Path(found.group(2)), table


def test_everything_binds_to_loopback(px):
    url, _, _ = footer(px)
    assert url.startswith("tcp://127.0.0.1:")
    assert px.km.get_connection_info()["ip"] == "127.0.0.1"


def test_the_engine_connection_file_is_private(px):
    _, path, _ = footer(px)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o600, oct(mode)
    blob = json.loads(path.read_text())
    assert len(blob["key"]) >= 32 and blob["signature_scheme"] == "hmac-sha256"


def test_an_engine_with_the_wrong_key_is_refused(px, tmp_path):
    _, path, _ = footer(px)
    blob = json.loads(path.read_text())
    blob["key"] = "0" * 64
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(blob))
    done = subprocess.run([ENGINE_BIN, "--connect", str(wrong), "--register-timeout", "5"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    # The hub drops the badly signed registration, so the engine times out waiting for the answer,
    # naming the address and the likely cause.
    assert f"the hub at {blob['url']} did not answer registration" in done.stderr, done.stderr
    assert "is the key right?" in done.stderr, done.stderr
    _, _, table = footer(px)
    assert len(parse_engine_pids(table)) == 2


def test_an_unreachable_hub_is_named_with_its_address(tmp_path):
    blob = {"url": "tcp://127.0.0.1:9", "key": "k", "signature_scheme": "hmac-sha256"}
    path = tmp_path / "nowhere.json"
    path.write_text(json.dumps(blob))
    done = subprocess.run([ENGINE_BIN, "--connect", str(path), "--register-timeout", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "tcp://127.0.0.1:9" in done.stderr


def test_an_engine_started_by_hand_joins_all(px):
    _, path, _ = footer(px)
    extra = subprocess.Popen([ENGINE_BIN, "--connect", str(path)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, _, table = footer(px)
            if len(parse_engine_pids(table)) == 3:
                break
            time.sleep(0.2)
        reply, msgs, _ = px.execute('%px println!("{}", std::env::var("RUSTPX_ENGINE_ID").unwrap());')
        assert reply["status"] == "ok"
        shown = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] in ("display_data", "update_display_data")]
        assert any(t.startswith("[stdout:2] 2") for t in shown), shown
    finally:
        extra.kill()
        extra.wait()


def test_shutdown_leaves_no_engine_processes_and_no_key_file():
    os.environ["RUSTPX_ENGINES"] = "2"
    k = Kernel()
    try:
        k.execute("%px 0")
        _, key_file, table = footer(k)
        pids = list(parse_engine_pids(table).values())
        assert len(pids) == 2 and key_file.exists()
    finally:
        # A shutdown request, as Jupyter sends when a notebook is closed.
        k.kc.stop_channels()
        k.km.shutdown_kernel(now=False)
    assert still_running(pids) == [], "engines survived the kernel"
    assert not key_file.exists(), "the engine connection file (it holds the key) was left behind"


def test_a_killed_kernel_leaves_no_orphan_engines():
    os.environ["RUSTPX_ENGINES"] = "2"
    k = Kernel()
    try:
        k.execute("%px 0")
        _, key_file, table = footer(k)
        pids = list(parse_engine_pids(table).values())
        assert len(pids) == 2
        k.km.provisioner.process.kill()  # SIGKILL: no shutdown code runs in the kernel
        # Until the killed process has exited, its pid is live and its files are not stale; wait
        # for the exit, as Jupyter's server reaps its kernels.
        k.km.provisioner.process.wait(timeout=60)
    finally:
        k.kc.stop_channels()
    assert still_running(pids) == [], "orphan engines"
    k.km.cleanup_resources()
    # The dead kernel could not remove its key file; the next kernel to start does.
    assert key_file.exists()
    again = Kernel()
    try:
        assert not key_file.exists(), "a dead kernel's engine connection file survived the next start"
    finally:
        again.shutdown()


def test_the_kernel_log_file_has_kernel_and_engine_lines(px):
    _, _, table = footer(px)
    found = re.search(r"^log: (\S+)$", table, re.M)
    assert found, table
    text = pathlib.Path(found.group(1)).read_text()
    assert "engine 0 registered" in text  # the kernel's hub
    # An engine's own line: local engines dial the hub's Unix socket in the private directory.
    assert re.search(r"registered with the hub at ipc:///\S*/rustpx-sockets-\d+-\w+/hub\.sock as engine", text), text[-3000:]
