"""Soak test: many mixed %px cells on 4 engines through a real Jupyter client.

    python tests/soak.py --cells 500            # the full run (documented in the README)

Checks for every cell that its outputs arrived complete, under its own parent, before its idle,
and that nothing of an earlier cell arrives later; at the end, kernel and engine RSS against the
RSS after the first 50 cells. Prints a summary and exits non-zero on any violation. The pytest
suite runs a shortened form (tests/test_soak.py).
"""
import argparse
import json
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from conftest import Kernel  # noqa: E402


def rss_mb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def descendants(pid):
    """The kernel's engine processes (its children named rustpx-engine)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            comm = stat[stat.index("(") + 1: stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        if ppid == pid and comm.startswith("rustpx-engine"):
            found.append(int(entry))
    return found


class Soak:
    def __init__(self, kernel):
        self.k = kernel
        self.finished = set()
        self.violations = []

    def run(self, code):
        msg_id = self.k.kc.execute(code)
        msgs = []
        while True:
            msg = self.k.kc.get_iopub_msg(timeout=300)
            parent = msg["parent_header"].get("msg_id")
            if parent in self.finished:
                self.violations.append(f"output of an earlier cell after its idle: {msg['msg_type']}")
                continue
            if parent != msg_id:
                continue
            msgs.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        reply = self.k.kc.get_shell_msg(timeout=300)
        self.finished.add(msg_id)
        return reply["content"], msgs

    def expect(self, ok, what):
        if not ok:
            self.violations.append(what)


def texts(msgs, kinds=("display_data", "update_display_data")):
    return [m["content"]["data"].get("text/plain", "") for m in msgs if m["msg_type"] in kinds]


def last_stream_displays(msgs):
    last = {}
    for m in msgs:
        if m["msg_type"] in ("display_data", "update_display_data"):
            did = m["content"].get("transient", {}).get("display_id", "")
            if did.endswith("-stdout"):
                last[did] = m["content"]["data"]["text/plain"]
    return sorted(last.values())


def values(msgs):
    out = {}
    for t in texts(msgs, ("display_data",)):
        m = re.match(r"\x1b\[0;31mOut\[(\d+):\d+\]: \x1b\[0m(.*)", t, re.S)
        if m:
            out[int(m.group(1))] = m.group(2)
    return out


def soak(cells, engines=4):
    os.environ["RUSTPX_ENGINES"] = str(engines)
    k = Kernel()
    s = Soak(k)
    kernel_pid = k.km.provisioner.process.pid
    s.run("%px 0")
    baseline = None
    started = time.monotonic()
    try:
        for i in range(cells):
            kind = i % 4
            if kind == 0:
                reply, msgs = s.run(f'%px println!("cell {i}");')
                s.expect(reply["status"] == "ok", f"cell {i}: {reply}")
                want = sorted(f"[stdout:{n}] cell {i}\n" for n in range(engines))
                s.expect(last_stream_displays(msgs) == want, f"cell {i}: output {last_stream_displays(msgs)}")
            elif kind == 1:
                reply, msgs = s.run(f"%px {i} * 2")
                s.expect(values(msgs) == {n: str(i * 2) for n in range(engines)}, f"cell {i}: values {values(msgs)}")
            elif kind == 2:
                reply, msgs = s.run(f'%%px -t 1\npanic!("failure {i}");')
                s.expect(reply.get("ename") == "Panic" and reply.get("evalue") == f"failure {i}", f"cell {i}: {reply}")
            else:
                reply, msgs = s.run(f"%%px -a\n{i} + 1")
                s.expect(texts(msgs, ("execute_result",)) == ["<AsyncResult(%px): pending>"], f"cell {i}: -a")
                reply, msgs = s.run("%pxresult")
                s.expect(values(msgs) == {n: str(i + 1) for n in range(engines)}, f"cell {i}: %pxresult {values(msgs)}")
            if i + 1 == min(50, cells):
                baseline = measure(kernel_pid)
        final = measure(kernel_pid)
    finally:
        k.shutdown()
    return {
        "cells": cells,
        "seconds": round(time.monotonic() - started, 1),
        "violations": s.violations,
        "rss_after_50": baseline,
        "rss_at_end": final,
        "kernel_ratio": round(final["kernel_mb"] / baseline["kernel_mb"], 3),
        "engine_ratio": round(final["engine_mb_median"] / baseline["engine_mb_median"], 3),
    }


def measure(kernel_pid):
    engines = [rss_mb(p) for p in descendants(kernel_pid)]
    engines = [e for e in engines if e]
    return {
        "kernel_mb": round(rss_mb(kernel_pid) or 0, 1),
        "engine_mb_median": round(statistics.median(engines), 1) if engines else 0,
        "engines": len(engines),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=500)
    parser.add_argument("--json")
    args = parser.parse_args()
    result = soak(args.cells)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    bad = result["violations"] or result["kernel_ratio"] > 1.5 or result["engine_ratio"] > 1.5
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
