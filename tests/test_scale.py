"""Issues 8 and 18: a 32-engine pool on one machine registers, runs a %px on every engine, and stops.

Timings are the benchmark's business (`bash bench/run.sh --only scale`); this test checks the
behaviour: every engine registers with its own id, a cell runs once on each of the 32 with its
own result, a cell that panics on one engine leaves the other 31 results, and stopping the pool
leaves no engine process behind.
"""
import time

from conftest import Kernel, parse_engine_pids, px_values, still_running, stream_text

N = 32
ID = 'let id: u32 = std::env::var("RUSTPX_ENGINE_ID").unwrap().parse().unwrap();'


def test_32_engines_register_and_run_a_cell_each():
    k = Kernel()
    try:
        started = time.monotonic()
        reply, msgs, _ = k.execute(f"%engines start -n {N}", timeout=300)
        assert reply["status"] == "ok", reply
        assert f"started engines {', '.join(str(i) for i in range(N))}" in stream_text(msgs)
        print(f"{N} engines registered in {time.monotonic() - started:.2f} s")
        _, msgs, _ = k.execute("%engines")
        table = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "display_data"][0]
        pids = parse_engine_pids(table)
        assert sorted(pids) == list(range(N))
        assert len(set(pids.values())) == N

        reply, msgs, _ = k.execute(f"%%px\n{ID}\nid * id", timeout=300)
        assert reply["status"] == "ok", reply
        assert px_values(msgs) == {i: str(i * i) for i in range(N)}

        reply, msgs, _ = k.execute(f'%%px --no-stream\n{ID}\nif id == 17 {{ panic!("only 17") }}\nid', timeout=300)
        assert reply["status"] == "error"
        assert "[17:execute]Panic" in reply["evalue"]
        assert px_values(msgs) == {i: str(i) for i in range(N) if i != 17}

        reply, _, _ = k.execute("%engines stop", timeout=120)
        assert reply["status"] == "ok"
        assert still_running(list(pids.values()), timeout=15) == []
    finally:
        k.shutdown()


BIG = 1024


def test_1024_engines_register_and_each_runs_its_own_cell():
    """Issue 18: a pool of 1024 engines on this machine. Every engine answers with its own
    value, and every one of the 1024 outputs reaches the client: iopub once dropped what did
    not fit in libzmq's default queue of 1,000 messages, `idle` included."""
    k = Kernel()
    try:
        reply, msgs, _ = k.execute(f"%engines start -n {BIG}", timeout=600)
        assert reply["status"] == "ok", reply
        assert "started engines 0, 1, 2, " in stream_text(msgs)
        _, msgs, _ = k.execute("%engines")
        table = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "display_data"][0]
        pids = parse_engine_pids(table)
        assert sorted(pids) == list(range(BIG))
        for _ in range(2):  # compiled, then run again
            reply, msgs, _ = k.execute(f"%%px\n{ID}\nid * id", timeout=300)
            assert reply["status"] == "ok", reply
            assert px_values(msgs) == {i: str(i * i) for i in range(BIG)}
        reply, _, _ = k.execute("%engines stop", timeout=300)
        assert reply["status"] == "ok"
        assert still_running(list(pids.values()), timeout=60) == []
    finally:
        k.shutdown()
