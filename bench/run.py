"""rustpx against its baselines, measured in one run on this machine.

Every time is a full round trip through a real Jupyter client: execute_request sent until the
cell's `idle` arrives. Medians over --runs repetitions. See bench/run.sh for the one command.
"""
import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

from jupyter_client.manager import start_new_kernel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from conftest import descendants, parse_engine_pids, still_running  # noqa: E402
from soak import rss_mb  # noqa: E402  (one reader of /proc/PID/status for the project)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deps  # noqa: E402
import api  # noqa: E402
import scale  # noqa: E402
import runall  # noqa: E402
import against_baseline  # noqa: E402

# Each case: the same cell as plain Rust and under %px. Rust cells get a distinct comment per run
# so that every run really compiles (the cached path is measured separately).
CELLS = {
    "value 1+1": "1 + 1",
    "let v = vec![1u64; 10];": "let v = vec![1u64; 10];",
    'println!("hi")': 'println!("hi");',
}
ENGINE_COUNTS = [1, 2, 4, 8]
SCALE_N = scale.IPYPARALLEL_N
SCALE_TIMEOUT = scale.TIMEOUT


def load():
    return " ".join(open("/proc/loadavg").read().split()[:3])


class Timed:
    def __init__(self, kernel_name, env=None):
        if env:
            os.environ.update(env)
        started = time.monotonic()
        self.km, self.kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=120)
        self.ready_after = time.monotonic() - started
        self.started = started
        self.children = set()

    def run(self, code, timeout=300):
        """Seconds from sending the cell to its idle; fails loudly if the cell failed."""
        start = time.monotonic()
        msg_id = self.kc.execute(code)
        status = None
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "error":
                status = msg["content"]["ename"] + ": " + msg["content"]["evalue"]
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        elapsed = time.monotonic() - start
        reply = self.kc.get_shell_msg(timeout=timeout)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"cell failed: {code!r}: {status}")
        return elapsed

    def outputs(self, code, timeout=300):
        msg_id = self.kc.execute(code)
        texts = []
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            content = msg["content"]
            if msg["msg_type"] == "stream":
                texts.append(content["text"])
            elif msg["msg_type"] in ("display_data", "execute_result"):
                texts.append(content["data"].get("text/plain", ""))
            if msg["msg_type"] == "status" and content["execution_state"] == "idle":
                break
        self.kc.get_shell_msg(timeout=timeout)
        return "\n".join(texts)

    def pid(self):
        return self.km.provisioner.process.pid if hasattr(self.km, "provisioner") else None

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    def note_children(self):
        """Remembers the processes below the kernel now, for close_and_reap. Call it while the
        engines run: ipyparallel's per-engine nannies outlive their engine, reparented to init."""
        pid = self.pid()
        if pid:
            self.children.update(descendants(pid))

    def close_and_reap(self, timeout=60):
        """close(), then makes sure every process the kernel had started (engines, ipyparallel's
        controller and nannies, which run in sessions of their own) ended: waits up to `timeout` s
        for them to exit on their own, SIGKILLs the rest. Returns the pids that had to be killed."""
        self.note_children()
        pids = sorted(self.children)
        self.close()
        left = still_running(pids, timeout)
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if left:
            print(f"warning: {len(left)} processes outlived the kernel and were killed: {left}", flush=True)
        # Orphaned engines are reaped by init; wait for that too, so that `pgrep` right after the
        # benchmark finds nothing (not even zombies).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
            time.sleep(0.1)
        return left


def median_ms(samples):
    return round(statistics.median(samples) * 1000, 2)


def engine_pids(kernel):
    return list(parse_engine_pids(kernel.outputs("%engines")).values())


def bench_rustpx(runs, results):
    for n in ENGINE_COUNTS:
        print(f"rustpx with {n} engines ...", flush=True)
        k = Timed("rustpx", {"RUSTPX_ENGINES": str(n)})
        try:
            first = k.run("%px 0")
            results[f"rustpx first %px incl. pool start, n={n}"] = round(first + 0, 3)
            k.run("%px let warm = 1;")
            for label, cell in CELLS.items():
                samples = [k.run(f"%px {cell} // run {i}") for i in range(runs)]
                results[f"%px {label}, n={n}"] = median_ms(samples)
            if n == 4:
                k.run("%px 1 + 1")
                samples = [k.run("%px 1 + 1") for _ in range(max(runs, 20))]
                results["%px re-run of a compiled cell, n=4"] = median_ms(samples)
                pids = engine_pids(k)
                sizes = [s for s in (rss_mb(p) for p in pids) if s]
                results["idle engine RSS MB (median), n=4"] = round(statistics.median(sizes), 1) if sizes else None
                kernel_pid = k.pid()
                if kernel_pid:
                    results["kernel RSS MB, n=4"] = round(rss_mb(kernel_pid) or 0, 1)
                samples = []
                for _ in range(3):
                    samples.append(k.run("%engines start -n 4"))
                    k.run("%engines stop 4,5,6,7")
                results["start a pool of 4 engines on a running kernel (s)"] = round(statistics.median(samples), 3)
        finally:
            k.close()
    # Cold start: a fresh kernel, time until 4 engines answer, and the first %px let after it.
    print("rustpx cold start ...", flush=True)
    k = Timed("rustpx", {"RUSTPX_ENGINES": "4"})
    try:
        pool = k.run("%px 0")
        results["kernel cold start until a first %px ran on 4 engines (s)"] = round(time.monotonic() - k.started, 3)
        results["first %px let after start (ms)"] = round(k.run("%px let first = vec![1, 2, 3];") * 1000, 1)
        del pool
    finally:
        k.close()


def bench_solo_evcxr(results):
    """One evcxr context on its own, created until its first cell ran: the start-up baseline."""
    print("one evcxr context on its own ...", flush=True)
    binary = os.environ.get("RUSTPX_BIN", "target/release/rustpx")
    samples = []
    for _ in range(3):
        done = subprocess.run([binary, "measure-evcxr-start"], capture_output=True, text=True, check=True)
        samples.append(float(done.stdout.strip()))
    results["start one evcxr context on its own (s)"] = round(statistics.median(samples), 3)


FIRST_CELL_RUNS = 5


def first_cell_seconds(kernel_name):
    """A fresh kernel: seconds from starting it (start_new_kernel) until the reply of `1 + 1`."""
    k = Timed(kernel_name)
    try:
        k.run("1 + 1")
        return time.monotonic() - k.started
    finally:
        k.close()


def bench_first_cell(results):
    """The first thing a user waits for: a new kernel's first plain cell, rustpx against
    evcxr_jupyter (the same evcxr, one context, no engines), alternating, in the same run."""
    baseline = os.environ.get("RUSTPX_BENCH_EVCXR_KERNEL")
    ours, theirs = [], []
    for i in range(FIRST_CELL_RUNS):
        print(f"first plain cell, run {i + 1} of {FIRST_CELL_RUNS} ...", flush=True)
        ours.append(first_cell_seconds("rustpx"))
        if baseline:
            theirs.append(first_cell_seconds(baseline))
    results["rustpx kernel start until the first `1 + 1` replied (s)"] = round(statistics.median(ours), 3)
    if theirs:
        results["evcxr_jupyter kernel start until the first `1 + 1` replied (s)"] = round(statistics.median(theirs), 3)


def bench_plain(runs, results):
    print("plain cells (the kernel's own evcxr context) ...", flush=True)
    k = Timed("rustpx")
    try:
        first = k.run("0")
        results["kernel start until the first plain cell ran (s)"] = round(time.monotonic() - k.started, 3)
        del first
        k.run("let warm = 1;")
        for label, cell in CELLS.items():
            samples = [k.run(f"{cell} // run {i}") for i in range(runs)]
            results[f"plain {label}"] = median_ms(samples)
    finally:
        k.close()


MIB10 = 10 << 20


def bench_transfer(runs, results):
    """%push/%pull of 10 MiB and %scatter/%gather of 1,000,000 u64 on 4 engines, timed per magic
    through the Jupyter client (the local side of each magic compiles one small cell)."""
    print("rustpx data magics on 4 engines ...", flush=True)
    k = Timed("rustpx", {"RUSTPX_ENGINES": "4"})
    try:
        k.run("%px 0")
        k.run("let data: Vec<u8> = vec![7u8; 10 << 20];\nlet big: Vec<u64> = (0..1_000_000).collect();")
        first = k.run("%push data", timeout=900)
        results["first data magic incl. building the client crate (s)"] = round(first, 2)
        cases = {
            "%push 10 MiB Vec<u8> to 4 engines": "%push data",
            "%pull 10 MiB Vec<u8> from 4 engines": "%pull data -o pulled",
            "%scatter 1M u64 on 4 engines": "%scatter big",
            "%gather 1M u64 from 4 engines": "%gather big -o gathered",
        }
        for label, cell in cases.items():
            k.run(cell, timeout=600)
            results[label] = median_ms([k.run(cell, timeout=600) for _ in range(runs)])
        # Load-balanced map of a trivial function. Whole-magic time: it includes the two small
        # cells the kernel's context compiles (write the items, read the results).
        k.run("%%px\nfn inc(x: u64) -> u64 { x + 1 }")
        k.run("let tasks: Vec<u64> = (0..100_000).collect();")
        for label, cell, items in [
            ("%pxmap of 1,000,000 u64, default chunks", "%pxmap inc big -o out", 1_000_000),
            ("%pxmap of 100,000 u64, --chunksize 1", "%pxmap inc tasks -o out1 --chunksize 1", 100_000),
        ]:
            k.run(cell, timeout=600)
            ms = median_ms([k.run(cell, timeout=600) for _ in range(max(3, runs // 2))])
            results[f"{label}, n=4 (ms)"] = ms
            results[f"{label}, n=4 (items/s)"] = round(items / (ms / 1000))
        for size in (1000, 10_000, 62_500, 250_000):
            cell = f"%pxmap inc big -o out --chunksize {size}"
            k.run(cell, timeout=600)
            results[f"%pxmap of 1,000,000 u64, --chunksize {size}, n=4 (ms)"] = median_ms(
                [k.run(cell, timeout=600) for _ in range(3)])
    finally:
        k.close()


def bench_sent(runs, results):
    """What sending cells over the engine link costs: 4 engines that fetch every compiled cell
    (and libstd, into an empty cache) as engines on other hosts do, against 4 that read the
    kernel's files, with the same cells in the same run. The data magics' files then travel with
    the runs too, and %pxmap's chunks through each engine's relay."""
    import tempfile

    for mode in ("local", "sent"):
        print(f"rustpx, 4 engines, cells {mode} ...", flush=True)
        cache = tempfile.mkdtemp(prefix="rustpx-bench-cache-")
        extra = "" if mode == "local" else f" --engine-arg --fetch-objects --engine-arg --cache-dir --engine-arg {cache}"
        k = Timed("rustpx")
        try:
            k.run(f"%engines start -n 4{extra}")
            results[f"first %px 1+1 incl. compile, cells {mode} (ms)"] = round(k.run("%px 1 + 1") * 1000, 2)
            results[f"%px value 1+1, cells {mode}"] = median_ms([k.run(f"%px 1 + 1 // run {i}") for i in range(runs)])
            results[f"%px re-run of a compiled cell, cells {mode}"] = median_ms([k.run("%px 1 + 1") for _ in range(runs)])
            k.run("let data: Vec<u8> = vec![7u8; 10 << 20];")
            k.run("%push data", timeout=900)
            for label, cell in [("%push 10 MiB Vec<u8> to 4 engines", "%push data"),
                                ("%pull 10 MiB Vec<u8> from 4 engines", "%pull data -o pulled")]:
                k.run(cell, timeout=600)
                results[f"{label}, cells {mode}"] = median_ms([k.run(cell, timeout=600) for _ in range(runs)])
            # Engines that fetch their cells reach %pxmap's scheduler through their own engine
            # process, relayed over the link; the others over the kernel's Unix socket.
            k.run("%%px\nfn inc(x: u64) -> u64 { x + 1 }")
            k.run("let tasks: Vec<u64> = (0..100_000).collect();")
            k.run("%pxmap inc tasks -o out", timeout=900)
            results[f"%pxmap of 100,000 u64 on 4 engines, cells {mode}"] = median_ms(
                [k.run("%pxmap inc tasks -o out", timeout=600) for _ in range(runs)])
        finally:
            k.close()
            subprocess.run(["rm", "-rf", cache])


def ipp_start(n, timeout=120):
    """The cell that starts a local ipyparallel cluster of `n` engines and returns once all of
    them registered (expects `import ipyparallel as ipp`)."""
    return (f"cluster = ipp.Cluster(n={n}, engine_timeout={timeout}, log_level=40)\n"
            "rc = cluster.start_and_connect_sync()\n"
            f"rc.wait_for_engines({n}, timeout={timeout})\n")


def bench_ipyparallel_transfer(runs, results):
    print("ipyparallel push/pull/scatter/gather with numpy on 4 engines ...", flush=True)
    k = Timed("python3")
    try:
        k.run(
            "import ipyparallel as ipp, numpy as np\n"
            + ipp_start(4) +
            "dview = rc[:]\n"
            "data = np.full(10 << 20, 7, dtype=np.uint8)\n"
            "big = np.arange(1_000_000, dtype=np.uint64)",
            timeout=300,
        )
        k.note_children()
        cases = {
            "ipyparallel push 10 MiB numpy to 4 engines": "dview.push({'data': data}, block=True)",
            "ipyparallel pull 10 MiB numpy from 4 engines": "pulled = dview.pull('data', block=True)",
            "ipyparallel scatter 1M u64 numpy on 4 engines": "dview.scatter('big', big, block=True)",
            "ipyparallel gather 1M u64 numpy from 4 engines": "gathered = dview.gather('big', block=True)",
        }
        for label, cell in cases.items():
            k.run(cell)
            results[label] = median_ms([k.run(cell) for _ in range(runs)])
        k.run("lview = rc.load_balanced_view()\ndef inc(x):\n    return x + 1\nsmall = list(range(10_000))\nmid = list(range(100_000))")
        for label, cell, items in [
            ("ipyparallel map of 100,000 ints, chunksize 100", "out = lview.map_sync(inc, mid, chunksize=100)", 100_000),
            ("ipyparallel map of 10,000 ints, chunksize 1", "out = lview.map_sync(inc, small, chunksize=1)", 10_000),
        ]:
            ms = median_ms([k.run(cell, timeout=600) for _ in range(3)])
            results[f"{label}, n=4 (ms)"] = ms
            results[f"{label}, n=4 (items/s)"] = round(items / (ms / 1000))
        k.run("cluster.stop_cluster_sync()", timeout=120)
    finally:
        k.close_and_reap()


def bench_ipyparallel(runs, results, n=4):
    """ipyparallel's %px in an IPython kernel. For the scale case (n=SCALE_N) also the time from
    ipp.Cluster(n) to all n engines registered, with the import done in an earlier cell."""
    print(f"ipyparallel %px on {n} engines ...", flush=True)
    started = time.monotonic()
    timeout = SCALE_TIMEOUT if n == SCALE_N else 120
    count = runs if n == SCALE_N else max(runs, 20)
    k = Timed("python3")
    try:
        k.run("import ipyparallel as ipp")
        start = k.run(ipp_start(n, timeout), timeout=timeout + 300)
        k.note_children()
        if n == SCALE_N:
            results[f"ipyparallel Cluster(n={n}) start until all registered (s)"] = round(start, 3)
        k.run("rc[:].activate()")
        k.run("%px 1 + 1", timeout=timeout)
        samples = [k.run("%px 1 + 1", timeout=timeout) for _ in range(count)]
        results[f"ipyparallel %px 1+1, n={n}"] = median_ms(samples)
        samples = [k.run("%px print('hi')", timeout=timeout) for _ in range(count)]
        results[f"ipyparallel %px print, n={n}"] = median_ms(samples)
    finally:
        try:
            k.run("if 'cluster' in globals(): cluster.stop_cluster_sync()", timeout=timeout)
        except Exception as e:  # noqa: BLE001  (close_and_reap still ends its processes)
            print(f"warning: stop_cluster_sync failed: {e!r}", flush=True)
        left = k.close_and_reap()
        if n == SCALE_N:
            results[f"ipyparallel processes killed after the kernel's shutdown, n={n}"] = len(left)
    if n == SCALE_N:
        print(f"ipyparallel with {n} engines: {time.monotonic() - started:.1f} s", flush=True)


def ratio(a, b, digits=2):
    if a is None or b in (None, 0):
        return None
    return round(a / b, digits)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", default="bench/results/latest.json")
    parser.add_argument("--skip-ipyparallel", action="store_true")
    parser.add_argument("--only", choices=["first-cell", "cells", "transfer", "scale", "sent", "link", "structure",
                                           "deps", "memory", "api", "runall"],
                        help="run one part of the benchmark")
    parser.add_argument("--baseline-bin", help="a directory with an older build's rustpx and rustpx-engine, "
                        "installed by bench/run.sh as the kernel rustpx-baseline, for --only link, structure, memory and runall")
    args = parser.parse_args()
    load_before = load()
    results = {}
    if args.only in (None, "first-cell"):
        bench_first_cell(results)
    if args.only in (None, "cells"):
        bench_solo_evcxr(results)
        bench_plain(args.runs, results)
        bench_rustpx(args.runs, results)
        if not args.skip_ipyparallel:
            bench_ipyparallel(args.runs, results)
    if args.only in (None, "transfer"):
        bench_transfer(args.runs, results)
        if not args.skip_ipyparallel:
            bench_ipyparallel_transfer(args.runs, results)
    if args.only in (None, "sent"):
        bench_sent(args.runs, results)
    if args.only in (None, "link"):
        against_baseline.bench_link(args.runs, results, args.baseline_bin, Timed, median_ms)
    if args.only == "structure":
        against_baseline.bench_structure(args.runs, results, args.baseline_bin, Timed, median_ms)
    if args.only in (None, "deps"):
        deps.bench_deps(min(args.runs, 3), results, Timed)
    if args.only in (None, "memory"):
        deps.bench_memory(args.runs, results, Timed, args.baseline_bin)
    if args.only in (None, "runall"):
        runall.bench_run_all(args.runs, results, Timed, args.baseline_bin)
    if args.only in (None, "api"):
        api.bench_api(args.runs, results, Timed, ipp_start, args.skip_ipyparallel)
    if args.only in (None, "scale"):
        scale.bench_rustpx(args.runs, results, Timed, engine_pids, median_ms)
        if not args.skip_ipyparallel:
            bench_ipyparallel(args.runs, results, n=SCALE_N)
    load_after = load()

    ratios = {}
    for label in CELLS:
        ratios[f"%px {label} n=4 / plain"] = ratio(results.get(f"%px {label}, n=4"), results.get(f"plain {label}"))
        ratios[f"%px {label} n=8 / n=1"] = ratio(results.get(f"%px {label}, n=8"), results.get(f"%px {label}, n=1"))
    ratios["first plain cell of a new kernel, rustpx / evcxr_jupyter"] = ratio(
        results.get("rustpx kernel start until the first `1 + 1` replied (s)"),
        results.get("evcxr_jupyter kernel start until the first `1 + 1` replied (s)"))
    ratios["re-run of compiled cell, rustpx / ipyparallel"] = ratio(
        results.get("%px re-run of a compiled cell, n=4"), results.get("ipyparallel %px 1+1, n=4"))
    ratios["pool of 4 start / one evcxr context start"] = ratio(
        results.get("start a pool of 4 engines on a running kernel (s)"), results.get("start one evcxr context on its own (s)"))
    ratios["kernel cold start to first %px (4 engines) / one evcxr context start"] = ratio(
        results.get("kernel cold start until a first %px ran on 4 engines (s)"), results.get("start one evcxr context on its own (s)"))

    for ours, theirs in [("%push 10 MiB Vec<u8> to 4 engines", "ipyparallel push 10 MiB numpy to 4 engines"),
                         ("%pull 10 MiB Vec<u8> from 4 engines", "ipyparallel pull 10 MiB numpy from 4 engines")]:
        if results.get(ours):
            ratios[f"{ours}: aggregate MB/s"] = round(4 * MIB10 / 1e6 / (results[ours] / 1000), 1)
        if results.get(theirs):
            ratios[f"{theirs}: aggregate MB/s"] = round(4 * MIB10 / 1e6 / (results[theirs] / 1000), 1)
        ratios[f"{ours.split(' ')[0]} throughput, rustpx / ipyparallel"] = ratio(results.get(theirs), results.get(ours))
    for ours, theirs in [("%scatter 1M u64 on 4 engines", "ipyparallel scatter 1M u64 numpy on 4 engines"),
                         ("%gather 1M u64 from 4 engines", "ipyparallel gather 1M u64 numpy from 4 engines")]:
        ratios[f"{ours.split(' ')[0]} time, rustpx / ipyparallel"] = ratio(results.get(ours), results.get(theirs))

    ratios["%pxmap default chunks, items/s: rustpx / ipyparallel (chunksize 100)"] = ratio(
        results.get("%pxmap of 1,000,000 u64, default chunks, n=4 (items/s)"),
        results.get("ipyparallel map of 100,000 ints, chunksize 100, n=4 (items/s)"))
    ratios["%pxmap chunksize 1, tasks/s: rustpx / ipyparallel"] = ratio(
        results.get("%pxmap of 100,000 u64, --chunksize 1, n=4 (items/s)"),
        results.get("ipyparallel map of 10,000 ints, chunksize 1, n=4 (items/s)"))

    for label in ["first %px 1+1 incl. compile", "%px value 1+1", "%px re-run of a compiled cell",
                  "%push 10 MiB Vec<u8> to 4 engines", "%pull 10 MiB Vec<u8> from 4 engines",
                  "%pxmap of 100,000 u64 on 4 engines"]:
        suffix = " (ms)" if label.startswith("first") else ""
        ratios[f"{label}: cells sent / local"] = ratio(
            results.get(f"{label}, cells sent{suffix}"), results.get(f"{label}, cells local{suffix}"))

    for measure in ["kernel_info round trip", "%px re-run of a compiled cell over the link, n=4",
                    "%push 10 MiB Vec<u8> over the link to 4 engines"]:
        ratios[f"{measure}: rustpx / baseline build"] = ratio(
            results.get(f"rustpx: {measure}"), results.get(f"baseline: {measure}"))

    for case in (c for c in against_baseline.STRUCTURE_CASES if f"rustpx: {c}" in results):
        ratios[f"{case}: rustpx / baseline build"] = ratio(
            results.get(f"rustpx: {case}"), results.get(f"baseline: {case}"))

    deps.add_ratios(results, ratios, ratio)
    api.add_ratios(results, ratios, ratio)
    runall.add_ratios(results, ratios, ratio)

    scale.add_ratios(results, ratios, ratio)

    width = max(len(k) for k in list(results) + list(ratios))
    print(f"\nmachine: {os.cpu_count()} cores, {platform.platform()}, load before {load_before}, after {load_after}")
    print(f"medians of {args.runs} runs (ms unless marked s or MB)\n")
    for key, value in results.items():
        print(f"  {key:<{width}}  {value}")
    print("\nratios")
    targets = {"n=4 / plain": 1.3, "n=8 / n=1": 1.5, "pool of 4": 1.5, "RSS after two plain cells": 1.15,
               "Run All / first Run All (start": 0.4}
    for key, value in ratios.items():
        if value is None and args.only:
            continue  # a part of the bench that was not run
        target = next((t for k, t in targets.items() if k in key), None)
        verdict = "" if target is None or value is None else ("  (target <= %g: %s)" % (target, "met" if value <= target else "NOT met"))
        print(f"  {key:<{width}}  {value}{verdict}")
    scale.print_targets(results, width)
    first_cell = results.get("rustpx kernel start until the first `1 + 1` replied (s)")
    if first_cell is not None:
        print(f"  {'first plain cell under 4 s':<{width}}  {'met' if first_cell < 4 else 'NOT met'} ({first_cell} s)")
    rerun = results.get("%px re-run of a compiled cell, n=4")
    if rerun is not None:
        print(f"  {'re-run of a compiled cell under 10 ms':<{width}}  {'met' if rerun < 10 else 'NOT met'} ({rerun} ms)")
    first_let = results.get("first %px let after start (ms)")
    if first_let is not None:
        print(f"  {'first %px let under 1 s':<{width}}  {'met' if first_let < 1000 else 'NOT met'} ({first_let} ms)")
    rss = results.get("idle engine RSS MB (median), n=4")
    if rss is not None:
        print(f"  {'idle engine under 30 MB':<{width}}  {'met' if rss < 30 else 'NOT met'} ({rss} MB)")
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"results": results, "ratios": ratios, "runs": args.runs, "load_before": load_before,
                   "load_after": load_after, "cores": os.cpu_count(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                  f, indent=2)
    print(f"\nwritten {args.json}")


if __name__ == "__main__":
    sys.exit(main())
