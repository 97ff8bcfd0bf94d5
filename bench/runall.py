"""Restart + Run All: notebooks/01-tour.ipynb run whole in a first kernel (empty cell cache),
then in a new kernel with the cells the first one compiled on disk, in one run. As in JupyterLab,
every cell is sent at once and the kernel queues them. Called by
bench/run.py (--only runall), which passes its `Timed` kernel class.

Both kernels share a fresh XDG_CACHE_HOME whose dependency cache is empty, so the first run is
what a new machine pays and the second what a restart pays. Times are from asking for the kernel
to its last cell's idle (the kernel's start is part of a restart), and the cells alone. With
--baseline-bin, the older build (kernel rustpx-baseline) runs the same pair, alternating with this
build, each pair in its own fresh cache directory.
"""
import json
import os
import statistics
import time
from pathlib import Path

from deps import cache_home

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "01-tour.ipynb"


def code_cells(path=NOTEBOOK):
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def run_all(timed, kernel_name="rustpx"):
    """(seconds from start to the last cell's idle, seconds of the cells alone, errors).

    Every cell's request is sent at once, as JupyterLab's Run All does; the kernel runs them in
    order (nbclient instead sends each after the previous reply)."""
    started = time.monotonic()
    k = timed(kernel_name, {"RUSTPX_ENGINES": "4"})
    try:
        cells_started = time.monotonic()
        errors = 0
        msg_ids = [k.kc.execute(code, stop_on_error=False) for code in code_cells()]
        for msg_id in msg_ids:
            while True:
                msg = k.kc.get_iopub_msg(timeout=900)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                errors += msg["msg_type"] == "error"
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
        for _ in msg_ids:
            k.kc.get_shell_msg(timeout=900)
        end = time.monotonic()
        return end - started, end - cells_started, errors
    finally:
        k.close_and_reap()


def cell_cache_files(home):
    cells = Path(home) / "rustpx" / "cells"
    if not cells.is_dir():
        return 0, 0
    entries = [e for e in cells.iterdir() if not e.name.startswith(".")]
    size = sum(f.stat().st_size for e in entries for f in e.iterdir())
    return len(entries), size


def bench_run_all(runs, results, timed, baseline_bin=None):
    builds = ["rustpx"] + (["rustpx-baseline"] if baseline_bin else [])
    keys = ("first", "first cells", "restart", "restart cells")
    samples = {build: {key: [] for key in keys} for build in builds}
    errors = {build: set() for build in builds}
    cached = {}
    for i in range(max(1, min(runs, 3))):
        for build in builds:
            print(f"run all, run {i + 1}, {build} ...", flush=True)
            with cache_home() as home:
                whole, cells, first_errors = run_all(timed, build)
                samples[build]["first"].append(whole)
                samples[build]["first cells"].append(cells)
                cached[build] = cell_cache_files(home)
                whole, cells, restart_errors = run_all(timed, build)
                samples[build]["restart"].append(whole)
                samples[build]["restart cells"].append(cells)
                errors[build].add((first_errors, restart_errors))
    for build in builds:
        median = {key: round(statistics.median(v), 2) for key, v in samples[build].items()}
        tag = "01-tour" if build == "rustpx" else "baseline build 01-tour"
        results[f"{tag} Run All, first kernel, empty caches: start + cells (s)"] = median["first"]
        results[f"{tag} Run All, first kernel: cells only (s)"] = median["first cells"]
        results[f"{tag} restart + Run All, cells cached: start + cells (s)"] = median["restart"]
        results[f"{tag} restart + Run All: cells only (s)"] = median["restart cells"]
        entries, size = cached[build]
        results[f"{tag} cell cache after the first run (entries, kB)"] = f"{entries}, {size // 1024}"
        results[f"{tag} error outputs (first, restart; the tour shows some on purpose)"] = str(
            sorted(errors[build]))


def add_ratios(results, ratios, ratio):
    ratios["01-tour restart + Run All / first Run All (start + cells)"] = ratio(
        results.get("01-tour restart + Run All, cells cached: start + cells (s)"),
        results.get("01-tour Run All, first kernel, empty caches: start + cells (s)"))
    ratios["01-tour restart + Run All / first Run All (cells only)"] = ratio(
        results.get("01-tour restart + Run All: cells only (s)"),
        results.get("01-tour Run All, first kernel: cells only (s)"))
    ratios["baseline build 01-tour restart + Run All / first Run All (start + cells)"] = ratio(
        results.get("baseline build 01-tour restart + Run All, cells cached: start + cells (s)"),
        results.get("baseline build 01-tour Run All, first kernel, empty caches: start + cells (s)"))
    ratios["01-tour restart + Run All, rustpx / baseline build (start + cells)"] = ratio(
        results.get("01-tour restart + Run All, cells cached: start + cells (s)"),
        results.get("baseline build 01-tour restart + Run All, cells cached: start + cells (s)"))
