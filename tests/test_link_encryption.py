"""The engine link is encrypted: an observer of the network between the hub and an engine on
another host reads no cell, no pushed value and no output.

A TCP relay stands between the real kernel's hub and a real engine, as a router on the path
would, and records every byte in both directions. The engine fetches its compiled cells over the
link (as an engine on another host does, `--fetch-objects` into an empty cache), a `%push` sends
it a value, and its cells print. Everything works through the relay, and none of the strings in
those cells, values and outputs is in what the relay saw.
"""
import glob
import json
import os
import pathlib
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import kernel_with_runtime_dir, stream_text

ENGINE_BIN = os.environ.get("RUSTPX_ENGINE_BIN",
                            str(pathlib.Path(__file__).resolve().parent.parent / "target/release/rustpx-engine"))

# Each literal below appears only in a cell's source (and so in its compiled object); what the
# cells print and push is joined at run time, so each secret also has a form that only an output
# or a pushed value carries.
SOURCE_ONLY = "AARDVARK-IN-THE-CELL-SOURCE"
PRINTED = "QUOKKA" + "-PRINTED-BY-THE-ENGINE"
PUSHED = "NARWHAL" + "-PUSHED-TO-THE-ENGINE"


class Relay:
    """A TCP forwarder on 127.0.0.1 to `target`, recording what passes in each direction."""

    def __init__(self, target):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.seen = {"to hub": bytearray(), "to engine": bytearray()}
        self.connections = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                engine_side, _ = self.listener.accept()
            except OSError:
                return
            hub_side = socket.create_connection(self.target)
            with self.lock:
                self.connections += 1
            for source, sink, direction in ((engine_side, hub_side, "to hub"),
                                            (hub_side, engine_side, "to engine")):
                threading.Thread(target=self._pump, args=(source, sink, direction), daemon=True).start()

    def _pump(self, source, sink, direction):
        try:
            while chunk := source.recv(1 << 20):
                with self.lock:
                    self.seen[direction] += chunk
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def recorded(self):
        with self.lock:
            return {direction: bytes(data) for direction, data in self.seen.items()}

    def close(self):
        self.closed = True
        self.listener.close()


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    k = kernel_with_runtime_dir(tmp_path_factory.mktemp("link-encryption-runtime"))
    yield k
    k.shutdown()


def connection_file(runtime_dir):
    """The hub's engine connection file (written when the kernel starts)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = glob.glob(str(runtime_dir / "rustpx-engines-*.json"))
        if found:
            return pathlib.Path(found[0])
        time.sleep(0.2)
    raise AssertionError(f"no engine connection file in {runtime_dir}")


def engines_table(kernel):
    _, msgs, _ = kernel.execute("%engines")
    return [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "display_data"][0]


def shown_text(msgs):
    """Everything a cell displayed or streamed, as text."""
    parts = [stream_text(msgs), stream_text(msgs, "stderr")]
    for m in msgs:
        data = m["content"].get("data") or {}
        parts.append(data.get("text/plain", ""))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def relayed(kernel, tmp_path_factory):
    """One engine that reaches the hub only through a recording relay."""
    path = connection_file(kernel.runtime_dir)
    connection = json.loads(path.read_text())
    host, port = re.fullmatch(r"tcp://([^:]+):(\d+)", connection["url"]).groups()
    relay = Relay((host, int(port)))
    connection["url"] = f"tcp://127.0.0.1:{relay.port}"
    tmp = tmp_path_factory.mktemp("relayed-engine")
    relayed_file = tmp / "connection.json"
    relayed_file.write_text(json.dumps(connection))
    os.chmod(relayed_file, 0o600)
    engine = subprocess.Popen(
        [ENGINE_BIN, "--connect", str(relayed_file), "--fetch-objects", "--cache-dir", str(tmp / "objects")],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        # Wait for the registration through the relay, without a %px (which would start a pool).
        deadline = time.monotonic() + 60
        while not re.search(r"^\s*0\s.*\bsent\b.*idle", engines_table(kernel), re.M):
            assert engine.poll() is None, engine.stderr.read()
            assert time.monotonic() < deadline, engines_table(kernel)
            time.sleep(0.3)
        yield relay
    finally:
        engine.kill()
        engine.wait()
        relay.close()


def test_cells_pushes_and_outputs_cross_the_network_encrypted(kernel, relayed):
    reply, msgs, _ = kernel.execute(
        f'%px let marker = "{SOURCE_ONLY}"; println!("{{}}{{}} {{}}", "QUOKKA", "-PRINTED-BY-THE-ENGINE", marker.len());'
    )
    assert reply["status"] == "ok", (reply, msgs)
    assert f"{PRINTED} {len(SOURCE_ONLY)}" in shown_text(msgs), msgs

    reply, msgs, _ = kernel.execute('let secret: String = ["NARWHAL", "-PUSHED-TO-THE-ENGINE"].concat();')
    assert reply["status"] == "ok", (reply, msgs)
    reply, msgs, _ = kernel.execute("%push secret")
    assert reply["status"] == "ok", (reply, msgs)
    reply, msgs, _ = kernel.execute('%px println!("{} has {} bytes", secret, secret.len());')
    assert reply["status"] == "ok", (reply, msgs)
    assert f"{PUSHED} has {len(PUSHED)} bytes" in shown_text(msgs), msgs

    # The cells ran on the relayed engine only (the one engine there is), so everything above
    # crossed the relay; the readable headers show the runs and their output did.
    assert re.findall(r"^\s*(\d+)\s", engines_table(kernel), re.M) == ["0"], engines_table(kernel)
    assert "[stdout:0]" in shown_text(msgs), msgs
    assert relayed.connections >= 1
    recorded = relayed.recorded()
    assert b"run_request" in recorded["to engine"]
    assert b"stream" in recorded["to hub"] and b"run_reply" in recorded["to hub"]
    # Compiled cells (and the libstd they need) went to the engine; outputs came back.
    assert len(recorded["to engine"]) > 100_000, len(recorded["to engine"])
    assert len(recorded["to hub"]) > 1_000, len(recorded["to hub"])
    readable = [
        f"{secret!r} {direction}"
        for direction, data in recorded.items()
        for secret in (SOURCE_ONLY, PRINTED, PUSHED, "QUOKKA", "NARWHAL", "println!")
        if secret.encode() in data
    ]
    assert not readable, f"readable on the network: {readable}"
