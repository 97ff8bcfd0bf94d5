"""Issue 14, item 4: a captured signed message sent again must not act again.

The attacker here has recorded messages (as an observer of the network between a kernel and an
engine on another host would) but does not have the key: every message it sends is a byte-for-
byte copy of one that was sent before. The test makes the originals with the key, as the real
client or engine would, then replays them against the real kernel.

Also here, with the same fake engine: a large message's pieces that do not fit together (a piece
lost or dropped as a replay) end that engine with the reason, rather than leave a cell waiting.
"""
import itertools
import json
import os
import platform
import subprocess
import time

import pytest
import zmq
from jupyter_client.session import Session

from conftest import ENGINE_ROW, kernel_with_runtime_dir
from link_seal import link_key, open_sealed, serialize_carrying, serialize_sealed

# The link version this build's engines speak (core/src/link_messages.rs LINK_VERSION).
LINK_VERSION = 2


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    k = kernel_with_runtime_dir(tmp_path_factory.mktemp("replay-runtime"))
    reply, _, _ = k.execute("%engines start -n 1")
    assert reply["status"] == "ok", reply
    yield k
    k.shutdown()


def live_engines(kernel):
    """Engine id to pid, for the engines `%engines` does not list as dead."""
    _, msgs, _ = kernel.execute("%engines")
    tables = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "display_data"]
    assert tables, msgs
    live = {}
    for line in tables[0].splitlines():
        row = ENGINE_ROW.match(line)
        if row and " dead (" not in line:
            live[int(row.group(1))] = int(row.group(2))
    return live


def dealer(url, identity=None):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(url)
    return sock


def replies_within(sock, seconds):
    """Every message that arrives on `sock` within `seconds`."""
    got = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(int(left * 1000)):
            got.append(sock.recv_multipart())
    return got


def test_a_shell_request_sent_twice_is_answered_once(kernel):
    info = kernel.km.get_connection_info()
    session = Session(key=info["key"], signature_scheme=info["signature_scheme"])
    sock = dealer(f"tcp://{info['ip']}:{info['shell_port']}")
    try:
        recorded = session.serialize(session.msg("kernel_info_request", {}))
        sock.send_multipart(recorded)
        sock.send_multipart(recorded)
        # The same bytes, with the signature's hex digits upper-cased: the signature still
        # verifies, so this is a replay too.
        sock.send_multipart(recorded[:1] + [recorded[1].upper()] + recorded[2:])
        answers = replies_within(sock, 5)
        assert len(answers) == 1, f"{len(answers)} replies to one request sent three times"
        # A new request is answered as usual.
        session.send(sock, "kernel_info_request", {})
        assert len(replies_within(sock, 5)) == 1
    finally:
        sock.close()
    reply, _, _ = kernel.execute("1 + 1")
    assert reply["status"] == "ok"


def engine_link(kernel):
    path = kernel.runtime_dir / f"rustpx-engines-{kernel.km.provisioner.process.pid}.json"
    connection = json.loads(path.read_text())
    session = Session(key=connection["key"].encode(), signature_scheme="hmac-sha256")
    return connection["url"], session, link_key(connection["key"])


def this_platform():
    return {
        "arch": platform.machine(),
        "os": "linux",
        "glibc": os.confstr("CS_GNU_LIBC_VERSION").split()[1],
    }


def test_a_replayed_registration_or_heartbeat_gets_no_engine(kernel):
    """One recorded register_request registered three engines and one recorded heartbeat kept
    them alive; a fake engine is sent cells, data and objects, and makes %px wait for it."""
    url, session, key = engine_link(kernel)
    before = live_engines(kernel)
    sleeper = subprocess.Popen(["sleep", "120"])
    identity = session.bsession
    sock = dealer(url, identity)
    try:
        register = session.msg("register_request", {
            "requested_id": None, "pid": sleeper.pid, "hostname": "recorded", "version": "0.1.0",
            "platform": this_platform(), "shares_files": False, "link_version": LINK_VERSION,
        })
        register["metadata"] = {"seq": 1}
        recorded_register = serialize_sealed(session, register, key)
        heartbeat = session.msg("heartbeat", {})
        heartbeat["metadata"] = {"seq": 2}
        recorded_heartbeat = serialize_sealed(session, heartbeat, key)

        # The original registration is accepted: one engine more.
        sock.send_multipart(recorded_register)
        answers = replies_within(sock, 5)
        assert any(b"register_reply" in b"".join(a) for a in answers), answers
        sock.send_multipart(recorded_heartbeat)
        assert len(live_engines(kernel)) == len(before) + 1

        # The fake engine stays alive while the replays below are tried, as the real one would:
        # with fresh heartbeats, numbered on.
        numbers = itertools.count(3)

        def quiet_for(listener, seconds):
            got = []
            for _ in range(seconds):
                fresh = session.msg("heartbeat", {})
                fresh["metadata"] = {"seq": next(numbers)}
                sock.send_multipart(serialize_sealed(session, fresh, key))
                got += replies_within(listener, 1)
            return got

        # Replayed on the same connection, and from a connection with another identity: no
        # registration is answered, no engine is added.
        for _ in range(3):
            sock.send_multipart(recorded_register)
        assert not [a for a in quiet_for(sock, 3) if b"register_reply" in b"".join(a)]
        other = dealer(url, b"another-identity")
        other.send_multipart(recorded_register)
        assert not quiet_for(other, 3)
        other.close()
        assert len(live_engines(kernel)) == len(before) + 1

        # The recorded heartbeat, replayed, does not keep the fake engine: it departs after the
        # hub's heartbeat timeout (5 s) as a silent engine does.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(live_engines(kernel)) > len(before):
            sock.send_multipart(recorded_heartbeat)
            time.sleep(0.5)
        assert live_engines(kernel) == before, "a replayed heartbeat kept a fake engine alive"
    finally:
        sock.close()
        sleeper.kill()
    # The real engine was never disturbed.
    reply, msgs, _ = kernel.execute("%px 6 * 7")
    assert reply["status"] == "ok", reply


class FakeEngine:
    """An engine with the key, speaking on the link from Python: registers, then sends what it
    is told, each message numbered on."""

    def __init__(self, kernel, hostname, link_version=None):
        url, self.session, self.key = engine_link(kernel)
        self.sleeper = subprocess.Popen(["sleep", "120"])
        self.sock = dealer(url, self.session.bsession)
        self.numbers = itertools.count(1)
        before = set(live_engines(kernel))
        self.sock.send_multipart(self.sealed("register_request", {
            "requested_id": None, "pid": self.sleeper.pid, "hostname": hostname, "version": "0.1.0",
            "platform": this_platform(), "shares_files": False,
            "link_version": LINK_VERSION if link_version is None else link_version,
        }))
        # Until the answer (heartbeats are not sent here: the engine has 5 s to do its part).
        assert self.sock.poll(5000)
        _, self.registration, _ = open_sealed(self.sock.recv_multipart(), self.key)
        self.id = next(iter(set(live_engines(kernel)) - before), None)

    def sealed(self, msg_type, content):
        msg = self.session.msg(msg_type, content)
        msg["metadata"] = {"seq": next(self.numbers)}
        return serialize_sealed(self.session, msg, self.key)

    def piece(self, index, count, total, buffers):
        content = {"index": index, "count": count, "total": total, "last_continues": False}
        msg = self.session.msg("piece", content)
        msg["metadata"] = {"seq": next(self.numbers)}
        self.sock.send_multipart(serialize_carrying(self.session, msg, self.key, buffers))

    def close(self):
        self.sock.close()
        self.sleeper.kill()


def engine_row(kernel, engine_id, timeout=10):
    """The `%engines` row of `engine_id` once it is dead (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and engine_id in live_engines(kernel):
        time.sleep(0.2)
    _, msgs, _ = kernel.execute("%engines")
    table = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "display_data"][0]
    return next((line for line in table.splitlines()
                 if ENGINE_ROW.match(line) and int(ENGINE_ROW.match(line).group(1)) == engine_id), table)


def test_pieces_are_put_together_and_a_gap_among_them_ends_the_engine_with_the_reason(kernel):
    """An engine's message over 320 KiB travels in pieces (protocol/src/pieces.rs), each signed,
    sealed and numbered. Pieces that fit together are one message to the hub (here a goodbye,
    which shows in `%engines`); a gap among them loses a message, perhaps a run's reply, so the
    hub must let that engine go with the reason instead of leaving a cell waiting for good."""
    before = live_engines(kernel)
    whole_one = FakeEngine(kernel, "whole")
    broken_one = None
    try:
        goodbye = whole_one.sealed("engine_exit", {"reason": "said in two pieces"})
        total = sum(len(f) for f in goodbye)
        whole_one.piece(0, 2, total, goodbye[:3])
        whole_one.piece(1, 2, total, goodbye[3:])
        assert "dead (said in two pieces)" in engine_row(kernel, whole_one.id)

        # Piece 0 of 3, then piece 2: piece 1 is lost.
        broken_one = FakeEngine(kernel, "broken")
        goodbye = broken_one.sealed("engine_exit", {"reason": "never put together"})
        total = sum(len(f) for f in goodbye) + 10
        broken_one.piece(0, 3, total, goodbye[:3])
        broken_one.piece(2, 3, total, goodbye[3:])
        row = engine_row(kernel, broken_one.id)
        assert "dead (its link broke a large message" in row, row
        assert "piece 2 of 3 arrived where piece 1 was due" in row, row
    finally:
        for fake in (whole_one, broken_one):
            if fake:
                fake.close()
    # The real engine goes on.
    assert live_engines(kernel) == before
    reply, _, _ = kernel.execute("%px 6 * 7")
    assert reply["status"] == "ok", reply


def test_an_engine_of_another_link_version_is_refused_with_the_reason(kernel):
    """An engine of an older build does not know pieces: it would drop a large value's pieces and
    its run would wait for good. The hub refuses it at registration and says what to do."""
    before = live_engines(kernel)
    old = FakeEngine(kernel, "old-build", link_version=1)
    try:
        assert old.id is None
        assert old.registration["engine_id"] is None
        assert old.registration["refused"].startswith(
            "the engine speaks link version 1, this kernel 2: start engines from the rustpx-engine built with this kernel"
        ), old.registration
    finally:
        old.close()
    assert live_engines(kernel) == before
