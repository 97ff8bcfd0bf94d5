"""Large values on the link to an engine's host: one large message that takes longer to cross
a slow link than the heartbeat allowance must not end a live engine, and values too large for
one message fail with the reason while the engine keeps them.

The hub declares an engine dead when no whole message came from it for 5 s, and an engine leaves
when no whole message came from the hub for its `--hub-silence`. A value moved by `%pull` (in a
run reply) or `%push` (in a run request) that crossed as one message would, on a slow network,
fill that time with its frames alone, and a healthy engine would be declared dead or leave. Here
the engines run on network-namespace hosts (tests/netns.py) whose veth link is throttled to
1 Mbit/s each way while one value of 1.5 MB (12.5 s at that rate, measured with plain TCP)
crosses it. Both engines have `--hub-silence 5`: while a large reply drains, the engine must
still hear the hub, and while a large request arrives, the hub must still hear the engine.

Everything else (first cells, the transfer cells' compiled objects) crosses before the throttle:
only the value itself travels on the slow link, so what is tested is one large message.
"""
import glob
import time

import pytest

from conftest import px_values, stream_text
# `hosts`, `runtime_dir` and `px` are module-scoped fixtures: this module pays for its own
# kernel (its hub bound to 0.0.0.0) and pair of hosts.
from test_remote import (  # noqa: F401
    hosts,
    idle_engines,
    live_engines,
    px,
    runtime_dir,
    start_isolated_engines,
    value_of,
    wait_for_engines,
)

RATE = "1mbit"
# 12 s at 1 Mbit/s: well over the hub's 5 s without a message and the engines' --hub-silence.
BYTES = 1_500_000
HUB_SILENCE = 5
PULLED_FROM, PUSHED_TO = 0, 1
# The same bytes on both sides, checked one by one.
MAKE = f"(0..{BYTES}u32).map(|i| (i % 251) as u8).collect()"
CHECK = f"big.len() == {BYTES} && big.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8)"


@pytest.fixture(scope="module")
def engines(px, hosts, runtime_dir):
    """Engine 0 on host 0 (values pulled from it), engine 1 on host 1 (values pushed to it),
    both leaving after HUB_SILENCE seconds without a message from the hub."""
    deadline = time.monotonic() + 60
    while not glob.glob(str(runtime_dir / "rustpx-engines-*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    procs = {
        PULLED_FROM: start_isolated_engines(hosts[0], runtime_dir, [PULLED_FROM], HUB_SILENCE)[0],
        PUSHED_TO: start_isolated_engines(hosts[1], runtime_dir, [PUSHED_TO], HUB_SILENCE)[0],
    }
    wait_for_engines(px, [PULLED_FROM, PUSHED_TO])
    # The first cell ships the engines their libraries; it must not cross the slow link.
    ok(px, f"%%px -t {PULLED_FROM},{PUSHED_TO}\nlet big: Vec<u8> = vec![7u8; 16];")
    yield procs
    for proc in procs.values():
        proc.kill()


def ok(px, code):
    reply, msgs, _ = px.execute(code, timeout=300)
    assert reply["status"] == "ok", (code, reply, stream_text(msgs, "stderr"))
    return msgs


def over_slow_link(px, host, code):
    """Runs `code` while `host`'s link is throttled; returns (reply, stderr text, seconds)."""
    host.throttle(RATE)
    try:
        started = time.monotonic()
        reply, msgs, _ = px.execute(code, timeout=300)
        return reply, stream_text(msgs, "stderr"), time.monotonic() - started
    finally:
        host.unthrottle()


def what_happened(px, procs, engine, reply, stderr, seconds):
    """For failure messages: the reply, the engine's fate, the kernel's table."""
    proc = procs[engine]
    exited = proc.poll()
    said = proc.stderr.read()[-2000:] if exited is not None else "(still running)"
    return (f"after {seconds:.1f} s: {reply.get('ename')}: {reply.get('evalue')}\n"
            f"{''.join(reply.get('traceback', []))}\nstderr: {stderr}\n"
            f"engine {engine} process exit status {exited}, its log: {said}\n"
            f"%engines:\n{live_engines(px)}")


def assert_alive_and_holding(px, procs, engine, context):
    assert procs[engine].poll() is None, context
    assert engine in idle_engines(px), context
    reply, msgs, _ = px.execute(f"%%px -t {engine}\n{CHECK}", timeout=300)
    assert reply["status"] == "ok" and px_values(msgs) == {engine: "true"}, (reply, msgs, context)


def crosses_slowly(px, host, engines, engine, code):
    """Runs the data magic `code` with `host`'s link throttled; it must succeed. Returns the
    description of what happened, for the checks that follow."""
    reply, stderr, seconds = over_slow_link(px, host, code)
    context = what_happened(px, engines, engine, reply, stderr, seconds)
    print(f"{code} of {BYTES} bytes at {RATE}: {seconds:.1f} s, {reply['status']}")
    assert reply["status"] == "ok", context
    return context


def test_a_pull_slower_than_the_heartbeat_allowance_keeps_the_engine(px, hosts, engines):
    # Once unthrottled: compiles the transfer cells and ships their objects.
    ok(px, f"%pull big -t {PULLED_FROM} -o pulled")
    ok(px, f"%%px -t {PULLED_FROM}\nlet big: Vec<u8> = {MAKE};")
    context = crosses_slowly(px, hosts[0], engines, PULLED_FROM, f"%pull big -t {PULLED_FROM} -o pulled")
    assert value_of(px, CHECK.replace("big", "pulled")) == "true", context
    assert_alive_and_holding(px, engines, PULLED_FROM, context)


def test_a_push_slower_than_the_engines_hub_silence_keeps_the_engine(px, hosts, engines):
    ok(px, "let big: Vec<u8> = vec![7u8; 16];")
    ok(px, f"%push big -t {PUSHED_TO}")
    ok(px, f"let big: Vec<u8> = {MAKE};")
    context = crosses_slowly(px, hosts[1], engines, PUSHED_TO, f"%push big -t {PUSHED_TO}")
    assert_alive_and_holding(px, engines, PUSHED_TO, context)


# Over the 1 GiB (less 1 MiB of envelope, protocol::pieces::MAX_CARRIED_BYTES) one message may
# carry; bincode adds 8 bytes of length.
TOO_LARGE = 1_100_000_000


def refused(px, code, reason):
    """Runs the data magic `code`, which must fail naming `reason`."""
    reply, msgs, _ = px.execute(code, timeout=300)
    said = f"{reply.get('ename')}: {reply.get('evalue')} {stream_text(msgs, 'stderr')}"
    assert reply["status"] == "error", said
    assert reason in said, said


def test_a_pull_too_large_for_one_reply_fails_with_the_reason_and_the_engine_keeps_it(px, engines):
    ok(px, f"%%px -t {PULLED_FROM}\nlet huge: Vec<u8> = vec![1u8; {TOO_LARGE}];")
    refused(px, f"%pull huge -t {PULLED_FROM} -o pulled_huge",
            "more than the 1072693248 bytes one reply to the kernel may carry; pull fewer at a time")
    # The engine is alive, still holds the value, and a small pull works.
    assert engines[PULLED_FROM].poll() is None
    reply, msgs, _ = px.execute(f"%%px -t {PULLED_FROM}\nhuge.len()", timeout=300)
    assert px_values(msgs) == {PULLED_FROM: str(TOO_LARGE)}, (reply, msgs)
    ok(px, f"%%px -t {PULLED_FROM}\ndrop(huge); let small: u32 = 5;")
    ok(px, f"%pull small -t {PULLED_FROM}")
    assert value_of(px, "small") == "5"


def test_a_push_too_large_for_one_message_fails_with_the_reason_and_the_engine_lives(px, engines):
    ok(px, f"let huge: Vec<u8> = vec![1u8; {TOO_LARGE}];")
    refused(px, f"%push huge -t {PUSHED_TO}",
            "more than the 1072693248 bytes one message to an engine on another host may carry")
    ok(px, "drop(huge);")
    assert engines[PUSHED_TO].poll() is None
    ok(px, "let small: u32 = 6;")
    reply, msgs, _ = px.execute(f"%push small -t {PUSHED_TO}", timeout=300)
    assert reply["status"] == "ok", what_happened(px, engines, PUSHED_TO, reply, stream_text(msgs, "stderr"), 0)
    reply, msgs, _ = px.execute(f"%%px -t {PUSHED_TO}\nsmall", timeout=300)
    assert px_values(msgs) == {PUSHED_TO: "6"}, (reply, msgs)
