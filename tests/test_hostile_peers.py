"""Issue 14: what a peer without the key can do to a live kernel, performed against the real
binary (as another local user would: it sees the ports, not the key)."""
import os

import pytest
import zmq
from jupyter_client.session import Session

from conftest import Kernel


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    runtime_dir = tmp_path_factory.mktemp("hostile-runtime")
    os.environ["JUPYTER_RUNTIME_DIR"] = str(runtime_dir)
    try:
        k = Kernel()
    finally:
        del os.environ["JUPYTER_RUNTIME_DIR"]
    k.log = runtime_dir / f"rustpx-kernel-{k.km.provisioner.process.pid}.log"
    yield k
    k.shutdown()


def dealer(kernel, port_name):
    info = kernel.km.get_connection_info()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://{info['ip']}:{info[port_name]}")
    return sock, Session(key=info["key"], signature_scheme=info["signature_scheme"])


def test_a_flood_of_badly_signed_messages_writes_two_log_lines_not_gigabytes(kernel):
    """Each dropped message used to log ~150 bytes at WARN: 25 GB an hour from one client."""
    sock, good = dealer(kernel, "shell_port")
    bad = Session(key=b"not-the-key", signature_scheme="hmac-sha256")
    try:
        before = kernel.log.stat().st_size
        for _ in range(20_000):
            bad.send(sock, "kernel_info_request", {})
        good.send(sock, "kernel_info_request", {})
        # The good request is answered after the flood was read (and dropped).
        assert sock.poll(60_000) != 0, "no answer to a good message after 20,000 bad ones"
        _, reply = good.feed_identities(sock.recv_multipart(), copy=True)
        assert good.deserialize(reply)["msg_type"] == "kernel_info_reply"
        written = kernel.log.read_text()[before:]
        drops = [line for line in written.splitlines() if "shell: dropped" in line]
        assert len(drops) == 1, drops[:5]
        assert "further drops in the next minute are counted, not logged" in drops[0]
        assert len(written) < 2_000, written[:2_000]
    finally:
        sock.close()
