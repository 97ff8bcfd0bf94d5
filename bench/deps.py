"""Dependencies and memory: what a `:dep` costs in each of rustpx's contexts and after a kernel
restart, against evcxr_jupyter's own `:dep` of the same crate, and the kernel's resident memory
against evcxr_jupyter's after the same plain cells. Called by bench/run.py (--only deps,
--only memory), which passes its `Timed` kernel class.
"""
import os
import shutil
import statistics
import tempfile
import time

from soak import rss_mb

DEP = ':dep rand = "0.8"'
USE = "rand::random::<u8>() as u32 + 1000 > 999"


class cache_home:
    """A fresh XDG_CACHE_HOME for the kernels started inside the block (an empty crate cache)."""

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="rustpx-bench-deps-")
        self.before = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = self.dir
        return self.dir

    def __exit__(self, *exc):
        if self.before is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = self.before
        shutil.rmtree(self.dir, ignore_errors=True)


def rustpx_kernel_deps(timed):
    """One kernel: both contexts up first (so no context start is timed), then the crate in the
    plain context and in %px. Returns (plain s, %px s)."""
    k = timed("rustpx", {"RUSTPX_ENGINES": "1"})
    try:
        k.run("1")
        k.run("%px 1")
        plain = k.run(f"{DEP}\n{USE}", timeout=900)
        px = k.run(f"%%px\n{DEP}\n{USE}", timeout=900)
        return plain, px
    finally:
        k.close()


def evcxr_kernel_dep(timed, kernel_name):
    k = timed(kernel_name)
    try:
        k.run("1")
        return k.run(f"{DEP}\n{USE}", timeout=900)
    finally:
        k.close()


def bench_deps(runs, results, timed):
    """Per run: an empty cache, a first kernel (:dep in the plain context, then in %px), a
    restarted kernel (the same two), and evcxr_jupyter's :dep in a first and a restarted kernel."""
    baseline = os.environ.get("RUSTPX_BENCH_EVCXR_KERNEL")
    samples = {key: [] for key in ("plain first", "px first", "plain restart", "px restart",
                                   "evcxr first", "evcxr restart")}
    for i in range(runs):
        print(f"deps, run {i + 1} of {runs} ...", flush=True)
        with cache_home():
            plain, px = rustpx_kernel_deps(timed)
            samples["plain first"].append(plain)
            samples["px first"].append(px)
            plain, px = rustpx_kernel_deps(timed)
            samples["plain restart"].append(plain)
            samples["px restart"].append(px)
            if baseline:
                samples["evcxr first"].append(evcxr_kernel_dep(timed, baseline))
                samples["evcxr restart"].append(evcxr_kernel_dep(timed, baseline))
    labels = {
        "plain first": f"rustpx {DEP} + use, plain context, empty cache (s)",
        "px first": f"rustpx {DEP} + use, %px after the plain context built it (s)",
        "plain restart": f"rustpx {DEP} + use, plain context after a restart (s)",
        "px restart": f"rustpx {DEP} + use, %px after a restart (s)",
        "evcxr first": f"evcxr_jupyter {DEP} + use, first kernel (s)",
        "evcxr restart": f"evcxr_jupyter {DEP} + use, after a restart (s)",
    }
    for key, values in samples.items():
        if values:
            results[labels[key]] = round(statistics.median(values), 2)


PLAIN_CELLS = ["1 + 1", "let v = vec![1, 2, 3];"]
SETTLE_S = 20


def kernel_rss_after_plain_cells(timed, kernel_name, then_px=False):
    """RSS (MB) of the kernel process after PLAIN_CELLS and SETTLE_S seconds idle (rustpx warms
    its analyser when idle; evcxr_jupyter's analyser works in its cells). With `then_px`, also
    the first `%px` after that (1 engine; the px compiler's context starts with it), the `%px`
    sent right after it, and the RSS then."""
    k = timed(kernel_name, {"RUSTPX_ENGINES": "1"} if then_px else None)
    try:
        for cell in PLAIN_CELLS:
            k.run(cell)
        time.sleep(SETTLE_S)
        rss = rss_mb(k.pid())
        if not then_px:
            return rss, None, None, None
        first = k.run("%px 1 + 1")
        second = k.run("%px 2 + 1")
        return rss, first, second, rss_mb(k.pid())
    finally:
        k.close()


def bench_memory(runs, results, timed, baseline_bin=None):
    """rustpx (and, with --baseline-bin, the older build as kernel rustpx-baseline) against
    evcxr_jupyter, alternating, in one run."""
    baseline = os.environ.get("RUSTPX_BENCH_EVCXR_KERNEL")
    builds = ["rustpx"] + (["rustpx-baseline"] if baseline_bin else [])
    ours, theirs = {b: [] for b in builds}, []
    for i in range(max(1, min(runs, 3))):
        print(f"memory, run {i + 1} ...", flush=True)
        for build in builds:
            ours[build].append(kernel_rss_after_plain_cells(timed, build, then_px=True))
        if baseline:
            theirs.append(kernel_rss_after_plain_cells(timed, baseline)[0])

    for build, samples in ours.items():
        def median(index):
            return round(statistics.median(sample[index] for sample in samples), 2)

        label = "rustpx" if build == "rustpx" else "baseline build"
        results[f"{label} kernel RSS after two plain cells, no %px (MB)"] = median(0)
        results[f"{label} first %px 1 + 1 after them, 1 engine (s)"] = median(1)
        results[f"{label} %px 2 + 1 sent right after it (s)"] = median(2)
        results[f"{label} kernel RSS once %px ran (MB)"] = median(3)
    if theirs:
        results["evcxr_jupyter RSS after the same cells (MB)"] = round(statistics.median(theirs), 1)


def add_ratios(results, ratios, ratio):
    """The deps and memory cases against evcxr_jupyter, into `ratios`."""
    first = f"evcxr_jupyter {DEP} + use, first kernel (s)"
    restart = f"evcxr_jupyter {DEP} + use, after a restart (s)"
    for ours, theirs in [("plain context after a restart", restart), ("%px after a restart", restart),
                         ("%px after the plain context built it", first)]:
        mine = next((v for k, v in results.items() if k.startswith("rustpx") and ours in k), None)
        ratios[f"{DEP}, rustpx {ours} / evcxr_jupyter"] = ratio(mine, results.get(theirs))
    ratios["kernel RSS after two plain cells, rustpx / evcxr_jupyter"] = ratio(
        results.get("rustpx kernel RSS after two plain cells, no %px (MB)"),
        results.get("evcxr_jupyter RSS after the same cells (MB)"))
    ratios["first %px after two plain cells, rustpx / baseline build"] = ratio(
        results.get("rustpx first %px 1 + 1 after them, 1 engine (s)"),
        results.get("baseline build first %px 1 + 1 after them, 1 engine (s)"))
    ratios["kernel RSS after two plain cells, rustpx / baseline build"] = ratio(
        results.get("rustpx kernel RSS after two plain cells, no %px (MB)"),
        results.get("baseline build kernel RSS after two plain cells, no %px (MB)"))
