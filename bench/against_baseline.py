"""Bench cases that compare this build with an older one (`--baseline-bin DIR`, holding its
`rustpx` and `rustpx-engine`) in the same run: the transport (`--only link`) and the cells users
run most (`--only structure`). Called by run.py, which passes its kernel timer and median."""
import os
import subprocess
import tempfile
import time


def bench_link(runs, results, baseline, Timed, median_ms):
    """The transport itself: a shell round trip (kernel_info), and the engine link carrying
    compiled cells and 10 MiB of data to 4 engines that fetch everything over it, as engines on
    other hosts do. With --baseline-bin, the same for an older build in the same run, so a
    change of transport or link is compared on one machine at one moment."""
    ours = os.environ.get("RUSTPX_ENGINE_BIN", "")
    builds = [("rustpx", "rustpx", ours)]
    if baseline:
        builds.append(("baseline", "rustpx-baseline", os.path.join(os.path.abspath(baseline), "rustpx-engine")))
    for label, kernel_name, engine in builds:
        print(f"link: {label} ...", flush=True)
        cache = tempfile.mkdtemp(prefix="rustpx-bench-cache-")
        # Each kernel starts its own build's engines.
        k = Timed(kernel_name, {"RUSTPX_ENGINE_BIN": engine} if engine else None)
        try:
            samples = []
            for _ in range(max(runs, 10) * 20):
                start = time.monotonic()
                k.kc.kernel_info(reply=True, timeout=30)
                samples.append(time.monotonic() - start)
            results[f"{label}: kernel_info round trip"] = median_ms(samples)
            k.run(f"%engines start -n 4 --engine-arg --fetch-objects --engine-arg --cache-dir --engine-arg {cache}")
            k.run("%px 1 + 1")
            results[f"{label}: %px re-run of a compiled cell over the link, n=4"] = median_ms(
                [k.run("%px 1 + 1") for _ in range(max(runs, 20))])
            k.run("let data: Vec<u8> = vec![7u8; 10 << 20];")
            k.run("%push data", timeout=900)
            results[f"{label}: %push 10 MiB Vec<u8> over the link to 4 engines"] = median_ms(
                [k.run("%push data", timeout=600) for _ in range(runs)])
        finally:
            k.close()
            subprocess.run(["rm", "-rf", cache])
    if ours:
        os.environ["RUSTPX_ENGINE_BIN"] = ours


# Each case's cell; `{i}` makes a new cell every round (compiled each time).
STRUCTURE_CASES = {
    "plain cell 1 + 1 (compiled each time)": "{i} + 1",
    "%px value (compiled each time), n=4": "%px {i} + 1",
    "%px re-run of a compiled cell, n=4": "%px 1 + 1",
    "%push 10 MiB Vec<u8> to 4 engines": "%push data",
    "%pxmap of 100,000 u64, default chunks, n=4": "%pxmap inc tasks -o out",
}


def bench_structure(runs, results, baseline, Timed, median_ms):
    """Before and after a change of the kernel's inside: the cells a user runs most (plain,
    %px compiled and re-run, a transfer, a map) on this build and on --baseline-bin's, each
    build in its own kernel with 4 local engines, alternating builds every round, in one run."""
    if not baseline:
        raise SystemExit("--only structure needs --baseline-bin DIR (an older build's rustpx and rustpx-engine)")
    ours = os.environ.get("RUSTPX_ENGINE_BIN", "")
    builds = [("rustpx", "rustpx", ours),
              ("baseline", "rustpx-baseline", os.path.join(os.path.abspath(baseline), "rustpx-engine"))]
    kernels = {}
    try:
        for label, kernel_name, engine in builds:
            print(f"structure: starting {label} ...", flush=True)
            env = {"RUSTPX_ENGINES": "4"}
            if engine:
                env["RUSTPX_ENGINE_BIN"] = engine
            k = Timed(kernel_name, env)
            k.run("%px 0")
            k.run("let data: Vec<u8> = vec![7u8; 10 << 20];\nlet tasks: Vec<u64> = (0..100_000).collect();")
            k.run("%%px\nfn inc(x: u64) -> u64 { x + 1 }")
            k.run("%push data", timeout=900)
            k.run("%pxmap inc tasks -o out", timeout=900)
            k.run("%px 1 + 1")
            kernels[label] = k
        samples = {(label, case): [] for label in kernels for case in STRUCTURE_CASES}
        for i in range(runs):
            for label, k in kernels.items():
                for case, cell in STRUCTURE_CASES.items():
                    samples[(label, case)].append(k.run(cell.format(i=1000 + i), timeout=600))
        for (label, case), values in samples.items():
            results[f"{label}: {case}"] = median_ms(values)
    finally:
        for k in kernels.values():
            k.close()
        if ours:
            os.environ["RUSTPX_ENGINE_BIN"] = ours
