"""Large pools on one machine: for 64, 256 and 1024 local engines, the time from `%engines
start -n N` in a fresh kernel until every engine registered, and a compiled `%px` re-run on all
of them; ipyparallel's Cluster(n=64) and its `%px` in the same run. Called by bench/run.py
(--only scale), which passes its kernel class and helpers.

The re-run is timed from the request to the kernel's idle, so it includes the Jupyter client
reading one output per engine, as a notebook does.
"""
import time

# Pool sizes for rustpx, and the one ipyparallel is run at (its Python engines take about a
# second each to start on two cores, so hundreds would dominate the run).
RUSTPX_COUNTS = [64, 256, 1024]
IPYPARALLEL_N = 64
# Registration of a large pool on two cores, and a cell on all of it, take a while.
TIMEOUT = 900
CELL = "%px 1 + 1"


def bench_rustpx(runs, results, Timed, engine_pids, median_ms):
    for n in RUSTPX_COUNTS:
        print(f"rustpx with {n} engines ...", flush=True)
        started = time.monotonic()
        k = Timed("rustpx")
        try:
            results[f"rustpx %engines start -n {n} in a fresh kernel until registered (s)"] = round(
                k.run(f"%engines start -n {n}", timeout=TIMEOUT), 3)
            k.note_children()
            registered = len(engine_pids(k))
            if registered != n:
                raise RuntimeError(f"%engines lists {registered} engines, not {n}")
            k.run(CELL, timeout=TIMEOUT)  # the first run compiles
            results[f"%px re-run of a compiled cell, n={n}"] = median_ms(
                [k.run(CELL, timeout=TIMEOUT) for _ in range(runs)])
            if n == IPYPARALLEL_N:
                cell = '%px println!("hi");'
                k.run(cell, timeout=TIMEOUT)
                results[f'%px re-run of println!("hi"), n={n}'] = median_ms(
                    [k.run(cell, timeout=TIMEOUT) for _ in range(runs)])
        finally:
            results[f"rustpx processes killed after the kernel's shutdown, n={n}"] = len(k.close_and_reap())
        print(f"rustpx with {n} engines: {time.monotonic() - started:.1f} s", flush=True)


def add_ratios(results, ratios, ratio):
    n = IPYPARALLEL_N
    ratios[f"registration of {n} engines in a fresh kernel, rustpx / ipyparallel"] = ratio(
        results.get(f"rustpx %engines start -n {n} in a fresh kernel until registered (s)"),
        results.get(f"ipyparallel Cluster(n={n}) start until all registered (s)"), digits=4)
    ratios[f"%px 1+1 re-run on {n} engines, rustpx / ipyparallel"] = ratio(
        results.get(f"%px re-run of a compiled cell, n={n}"), results.get(f"ipyparallel %px 1+1, n={n}"))
    ratios[f"%px print re-run on {n} engines, rustpx / ipyparallel"] = ratio(
        results.get(f'%px re-run of println!("hi"), n={n}'), results.get(f"ipyparallel %px print, n={n}"))
    for big in RUSTPX_COUNTS[1:]:
        ratios[f"%px 1+1 re-run, rustpx n={big} / n={n}"] = ratio(
            results.get(f"%px re-run of a compiled cell, n={big}"), results.get(f"%px re-run of a compiled cell, n={n}"))


def print_targets(results, width):
    """The issue's targets for large pools: a compiled re-run under 50 ms on 256 engines and
    under 200 ms on 1024."""
    for n, limit in [(256, 50), (1024, 200)]:
        value = results.get(f"%px re-run of a compiled cell, n={n}")
        if value is not None:
            label = f"compiled re-run on {n} engines under {limit} ms"
            print(f"  {label:<{width}}  {'met' if value < limit else 'NOT met'} ({value} ms)")
