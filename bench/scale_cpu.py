"""Where a compiled `%px` re-run on a large pool spends its time: one fresh kernel of the build in
BIN_DIR (its `rustpx` and `rustpx-engine`), N local engines, RUNS re-runs of `%px 1 + 1` (CELL in
the environment to change it), each timed from the request to `idle` with this Jupyter client
reading every engine's output. Prints the median wall time and, per re-run, the CPU time of the
client, the kernel and all engines together (on-CPU time of every thread, from schedstat), what
the idle pool costs per second, and per re-run the context switches and CPU of each kind of thread
(per engine for the engines): each wake-up of each engine's threads is what a run costs on a pool
of hundreds of engines on a few cores.

    python bench/scale_cpu.py BIN_DIR N RUNS
    PERF_OUT=FILE python bench/scale_cpu.py ...   # also `perf record` the kernel during the runs
                                                  # (PERF_KIDS=1: the engines; PERF_G=1: call graphs;
                                                  # PERF_SW=1: context switches of 8 engines)
    TIDS=1 python bench/scale_cpu.py ...          # threads of one name told apart by their order
                                                  # (libzmq's threads carry their creator's name)
"""
import json, os, statistics, subprocess, sys, tempfile, time
from jupyter_client.manager import start_new_kernel

bindir, n, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
perf = os.environ.get("PERF_OUT")
cell = os.environ.get("CELL", "%px 1 + 1")
jp = tempfile.mkdtemp()
os.makedirs(f"{jp}/kernels/rpx")
json.dump({"argv": [f"{bindir}/rustpx", "kernel", "--connection-file", "{connection_file}"],
           "display_name": "rpx", "language": "rust"}, open(f"{jp}/kernels/rpx/kernel.json", "w"))
os.environ["JUPYTER_PATH"] = jp
km, kc = start_new_kernel(kernel_name="rpx", startup_timeout=120)
pid = km.provisioner.process.pid
def cpu(p):
    # On-CPU nanoseconds of every thread (schedstat), not clock ticks: 1 ms resolution is too coarse.
    t = 0
    for task in os.listdir(f"/proc/{p}/task"):
        try: t += int(open(f"/proc/{p}/task/{task}/schedstat").read().split()[0])
        except OSError: pass
    return t / 1e9
def by_thread(pids):
    out = {}
    for p in pids:
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                name = open(f"/proc/{p}/task/{task}/comm").read().strip() + ("#" + str(sorted(os.listdir(f"/proc/{p}/task"), key=int).index(task)) if os.environ.get("TIDS") else "")
                v = nv = 0
                for line in open(f"/proc/{p}/task/{task}/status"):
                    if line.startswith("voluntary_ctxt"): v = int(line.split()[1])
                    if line.startswith("nonvoluntary_ctxt"): nv = int(line.split()[1])
                ns = int(open(f"/proc/{p}/task/{task}/schedstat").read().split()[0])
                o = out.setdefault(name, [0, 0, 0]); o[0] += v; o[1] += nv; o[2] += ns
        except OSError: pass
    return out
def switches(pids):
    n = 0
    for p in pids:
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                for line in open(f"/proc/{p}/task/{task}/status"):
                    if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")): n += int(line.split()[1])
        except OSError: pass
    return n
def kids():
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
                if int(f[1]) == pid and (not os.environ.get("PERF_KIDS") or "rustpx-engine" in open(f"/proc/{p}/comm").read()): out.append(int(p))
            except OSError: pass
    return out
KIDS = []
def ecpu():
    t = 0
    for p in KIDS:
        try: t += cpu(p)
        except OSError: pass
    return t
def run(code, timeout=900):
    e0 = ecpu(); t0 = time.monotonic(); c0 = time.process_time(); k0 = cpu(pid)
    mid = kc.execute(code); outs = 0; first = None
    while True:
        m = kc.get_iopub_msg(timeout=timeout)
        if m["parent_header"].get("msg_id") != mid: continue
        if m["msg_type"] in ("execute_result", "stream", "display_data"):
            outs += 1
            if first is None: first = time.monotonic() - t0
        if m["msg_type"] == "error": print("ERROR", m["content"]["evalue"][:300])
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle": break
    el = time.monotonic() - t0
    kc.get_shell_msg(timeout=timeout)
    return el, time.process_time() - c0, cpu(pid) - k0, outs, first, ecpu() - e0
try:
    t = run(f"%engines start -n {n}")
    print(f"registered {n} in {t[0]:.2f}s", flush=True)
    KIDS[:] = kids(); print("children", len(KIDS))
    run(cell); run(cell)
    e0 = ecpu(); k0 = cpu(pid); time.sleep(3); print(f"idle per second: engines {(ecpu()-e0)/3*1000:.1f} ms, kernel {(cpu(pid)-k0)/3*1000:.1f} ms", flush=True)
    p = None
    if perf:
        p = subprocess.Popen(["perf", "record", *(["-e", "sched:sched_switch"] if os.environ.get("PERF_SW") else ["-F", "2000"]), *(["--call-graph", "dwarf,32768"] if os.environ.get("PERF_G") else []), *(["-a"] if os.environ.get("PERF_ALL") else ["-p", ",".join(map(str, KIDS[:8] if os.environ.get("PERF_SW") else KIDS)) if os.environ.get("PERF_KIDS") else str(pid)]), "-o", perf],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(jp, "perf.err"),"w"))
        time.sleep(1)
    s0 = switches(KIDS); k0 = switches([pid]); t0 = by_thread(KIDS); tk0 = by_thread([pid])
    res = [run(cell) for _ in range(runs)]
    t1 = by_thread(KIDS); tk1 = by_thread([pid])
    for label, a, b in (("engine", t0, t1), ("kernel", tk0, tk1)):
        for name in sorted(b):
            d = [(b[name][i] - a.get(name, [0, 0, 0])[i]) / runs for i in range(3)]
            per = n if label == "engine" else 1
            if d[0] + d[1] > 0: print(f"  {label} thread {name:20s} vol {d[0]/per:7.2f} invol {d[1]/per:6.2f} cpu {d[2]/1e6/per:8.3f} ms (per {label}, per run)")
    print(f"context switches per re-run: engines {(switches(KIDS)-s0)/runs:.0f} ({(switches(KIDS)-s0)/runs/n:.2f} per engine), kernel {(switches([pid])-k0)/runs:.0f}", flush=True)
    if p:
        p.send_signal(2); p.wait()
    med = lambda i: (statistics.median(r[i] for r in res) if i in (0, 4) else sum(r[i] for r in res) / len(res)) * 1000
    print(f"n={n} runs={runs} wall {med(0):.1f} ms | client cpu {med(1):.1f} ms | kernel cpu {med(2):.1f} ms | first output {med(4):.1f} ms | engines cpu {med(5):.1f} ms | outputs {res[0][3]}", flush=True)
finally:
    kc.stop_channels(); km.shutdown_kernel(now=True)
