"""The Rust API (issue 16) against ipyparallel's task interface, same engine count, same run.

Each side times its own calls inside one cell (a cell's own overhead, hundreds of ms for a Rust
cell's compile, is not a call's), prints the figures, and the cell is repeated; medians are kept.
Cases: the round trip of an `apply` of an already compiled function, `apply` sent N at once then
collected, a map at chunk size 1 (tasks/s) and a map with default chunks (items/s). Then, in the
same kernel, the whole cell that leaves a map's 1,000,000 results in a plain variable, once with
the API and once with `%pxmap` (both pay a plain cell's compile: `%pxmap -o` stores its results
through the kernel's context), timed from the client.
"""
import re
import statistics

ENGINES = 4
FIGURES = re.compile(r"(\w+)=([\d.]+)")

RUST_FUNCTIONS = "%%px\nfn inc(x: u64) -> u64 { x + 1 }"
RUST_CASES = """lview.apply::<u64, u64>("inc", 0).get().unwrap();
let t = std::time::Instant::now();
for i in 0..500u64 { lview.apply::<u64, u64>("inc", i).get().unwrap(); }
let apply_ms = t.elapsed().as_secs_f64() * 1000.0 / 500.0;
let t = std::time::Instant::now();
let pending: Vec<_> = (0..500u64).map(|i| lview.apply::<u64, u64>("inc", i)).collect();
for r in &pending { r.get().unwrap(); }
let async_ms = t.elapsed().as_secs_f64() * 1000.0 / 500.0;
let t = std::time::Instant::now();
lview.clone().chunk_size(1).map_sync::<u64, u64>("inc", &tasks).unwrap();
let tasks_s = tasks.len() as f64 / t.elapsed().as_secs_f64();
let t = std::time::Instant::now();
lview.map_sync::<u64, u64>("inc", &items).unwrap();
let items_s = items.len() as f64 / t.elapsed().as_secs_f64();
println!("apply_ms={apply_ms:.4} async_ms={async_ms:.4} tasks_s={tasks_s:.0} items_s={items_s:.0}");"""

IPP_FUNCTIONS = (
    "lview = rc.load_balanced_view()\n"
    "def inc(x):\n    return x + 1\n"
    "tasks = list(range(10_000))\nitems = list(range(100_000))\n"
    "import time"
)
IPP_CASES = """lview.apply_sync(inc, 0)
t = time.perf_counter()
for i in range(200): lview.apply_sync(inc, i)
apply_ms = (time.perf_counter() - t) * 1000 / 200
t = time.perf_counter()
pending = [lview.apply_async(inc, i) for i in range(200)]
for r in pending: r.get()
async_ms = (time.perf_counter() - t) * 1000 / 200
t = time.perf_counter()
lview.map_sync(inc, tasks, chunksize=1)
tasks_s = len(tasks) / (time.perf_counter() - t)
t = time.perf_counter()
lview.map_sync(inc, items)
items_s = len(items) / (time.perf_counter() - t)
print(f"apply_ms={apply_ms:.4f} async_ms={async_ms:.4f} tasks_s={tasks_s:.0f} items_s={items_s:.0f}")"""

# The same job, a whole cell each, timed from the client: (label, cell).
WHOLE_CELLS = [
    ("API map_sync into a variable", 'let api_out = lview.map_sync::<u64, u64>("inc", &items).unwrap();'),
    ("%pxmap -o into a variable", "%pxmap inc items -o pxmap_out"),
]
WHOLE_LABEL = "cell mapping 1,000,000 u64 into a plain variable: {}, n={} (ms)"

LABELS = {
    "apply_ms": "apply round trip of a compiled function (ms)",
    "async_ms": "apply sent 500 (ipyparallel 200) at once, then get, per task (ms)",
    "tasks_s": "map at chunk size 1 (tasks/s)",
    "items_s": "map with default chunks (items/s)",
}


def medians(kernel, cell, runs):
    samples = {}
    for _ in range(runs):
        text = kernel.outputs(cell, timeout=900)
        found = dict(FIGURES.findall(text))
        if set(found) != set(LABELS):
            raise RuntimeError(f"no figures in the cell's output: {text!r}")
        for key, value in found.items():
            samples.setdefault(key, []).append(float(value))
    return {key: round(statistics.median(values), 4) for key, values in samples.items()}


def bench_api(runs, results, timed, ipp_start, skip_ipyparallel):
    print(f"rustpx Rust API on {ENGINES} engines ...", flush=True)
    k = timed("rustpx", {"RUSTPX_ENGINES": str(ENGINES)})
    try:
        k.run(RUST_FUNCTIONS, timeout=600)
        k.run("let rc = rustpx::client(); let lview = rc.load_balanced_view();\n"
              "let tasks: Vec<u64> = (0..100_000).collect(); let items: Vec<u64> = (0..1_000_000).collect();",
              timeout=900)
        k.run(RUST_CASES, timeout=900)
        for key, value in medians(k, RUST_CASES, runs).items():
            results[f"rustpx API: {LABELS[key]}, n={ENGINES}"] = value
        # Each in a row, after one warm-up: a `%pxmap` worker cell between two API calls
        # changes the engines' state, and the API's serving cell is compiled again for it (and
        # the other way round), which is a different case from a loop of either.
        for label, cell in WHOLE_CELLS:
            k.run(cell, timeout=900)
            samples = [k.run(cell, timeout=900) for _ in range(runs)]
            results[WHOLE_LABEL.format(label, ENGINES)] = round(statistics.median(samples) * 1000, 2)
    finally:
        k.close()
    if skip_ipyparallel:
        return
    print(f"ipyparallel task interface on {ENGINES} engines ...", flush=True)
    k = timed("python3")
    try:
        k.run("import ipyparallel as ipp\n" + ipp_start(ENGINES), timeout=300)
        k.note_children()
        k.run(IPP_FUNCTIONS)
        for key, value in medians(k, IPP_CASES, max(3, runs // 2)).items():
            results[f"ipyparallel: {LABELS[key]}, n={ENGINES}"] = value
        k.run("cluster.stop_cluster_sync()", timeout=120)
    finally:
        k.close_and_reap()


def add_ratios(results, ratios, ratio):
    (api, _), (pxmap, _) = WHOLE_CELLS
    ratios[f"map into a variable: API / %pxmap (time, same kernel), n={ENGINES}"] = ratio(
        results.get(WHOLE_LABEL.format(api, ENGINES)), results.get(WHOLE_LABEL.format(pxmap, ENGINES)))
    # Issue 16's target: the API's map (timed in its cell, as a program calls it) moves items no
    # slower than a whole `%pxmap -o` cell of the same 1,000,000 items.
    pxmap_ms = results.get(WHOLE_LABEL.format(pxmap, ENGINES))
    if pxmap_ms:
        results[f"%pxmap -o whole cell, 1,000,000 u64 (items/s), n={ENGINES}"] = round(1_000_000 / (pxmap_ms / 1000))
        ratios[f"map with default chunks: API in its cell / %pxmap whole cell (throughput), n={ENGINES}"] = ratio(
            results.get(f"rustpx API: {LABELS['items_s']}, n={ENGINES}"),
            results[f"%pxmap -o whole cell, 1,000,000 u64 (items/s), n={ENGINES}"])
    for key in LABELS:
        ours = results.get(f"rustpx API: {LABELS[key]}, n={ENGINES}")
        theirs = results.get(f"ipyparallel: {LABELS[key]}, n={ENGINES}")
        if key.endswith("_ms"):
            ratios[f"{LABELS[key]}: rustpx API / ipyparallel (time)"] = ratio(ours, theirs, digits=4)
        else:
            ratios[f"{LABELS[key]}: rustpx API / ipyparallel (throughput)"] = ratio(ours, theirs)
