"""Issue 8: engines on other hosts, tested with real separate hosts on this machine.

Each "host" is a network namespace with its own address, joined to this one by a veth pair
(tests/netns.py). Its engines run in a private mount namespace where the Rust toolchain, $HOME
and /tmp (the kernel's evcxr directories) are hidden, from a directory that holds only the
`rustpx-engine` binary: they can only run cells whose objects (and libstd) came over the link.
The kernel's hub binds 0.0.0.0 and tells engines to dial the first host's gateway address.

Also: the ssh launcher against a real sshd inside a namespace, the MPI launcher with Debian's
mpich, the exact srun command of the slurm launcher, and a host refused for its platform.
"""
import datetime
import glob
import itertools
import json
import os
import pathlib
import platform
import queue
import re
import struct
import subprocess
import threading
import time

import pytest
import zmq
from jupyter_client.session import Session

import netns
from conftest import Kernel, processes_matching, px_values, still_running, stream_text
from link_seal import link_key, open_sealed, serialize_sealed

ENGINE_BIN = pathlib.Path(os.environ.get("RUSTPX_ENGINE_BIN", "")) if os.environ.get("RUSTPX_ENGINE_BIN") else None
ID = 'let id: u32 = std::env::var("RUSTPX_ENGINE_ID").unwrap().parse().unwrap();'


def engine_binary():
    """The rustpx-engine beside the installed kernel binary."""
    if ENGINE_BIN:
        return ENGINE_BIN
    spec = json.load(open(kernelspec_path()))
    return pathlib.Path(spec["argv"][0]).parent / "rustpx-engine"


def kernelspec_path():
    from jupyter_client.kernelspec import KernelSpecManager

    return os.path.join(KernelSpecManager().find_kernel_specs()["rustpx"], "kernel.json")


@pytest.fixture(scope="module")
def hosts():
    netns.require_root_and_netns()
    with netns.make_hosts(2) as made:
        yield made


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runtime")


@pytest.fixture(scope="module")
def px(hosts, runtime_dir):
    """A kernel whose hub listens on every interface and is dialled at host 0's gateway."""
    saved = dict(os.environ)
    os.environ.update(
        RUSTPX_HUB_IP="0.0.0.0",
        RUSTPX_HUB_LOCATION=hosts[0].gateway,
        JUPYTER_RUNTIME_DIR=str(runtime_dir),
        RUSTPX_LOG="warn,rustpx=info,rustpx_kernel=debug,rustpx_engine=info",
    )
    try:
        k = Kernel()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield k
    k.shutdown()


def connection_blob(runtime_dir):
    files = glob.glob(str(runtime_dir / "rustpx-engines-*.json"))
    assert len(files) == 1, files
    return pathlib.Path(files[0]).read_text()


def live_engines(px):
    _, msgs, _ = px.execute("%engines")
    table = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "display_data"][0]
    return table


IDLE_ROW = re.compile(r"^\s*(\d+)\s+\S+\s+\d+\s+\d+\s+(\w+)\s+idle", re.M)


def idle_engines(px):
    """Engine id to how it gets its cells (`local` or `sent`), for the idle engines."""
    return {int(m.group(1)): m.group(2) for m in IDLE_ROW.finditer(live_engines(px))}


def wait_for_engines(px, ids, timeout=60):
    """Waits for `ids` to register without a %px (which would start a local pool)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(idle_engines(px)) >= set(ids):
            return
        time.sleep(0.5)
    raise AssertionError(f"engines {ids} did not register; %engines says:\n{live_engines(px)}")


def start_isolated_engines(host, runtime_dir, ids, hub_silence=20):
    """Engines in `host` that see no toolchain and none of the kernel's files; each exits when
    the hub has been silent for `hub_silence` seconds."""
    binary = pathlib.Path(host.install_binary(engine_binary()))
    blob = connection_blob(runtime_dir)
    procs = []
    for engine_id in ids:
        procs.append(
            host.popen_isolated(
                [str(binary), "--id", str(engine_id), "--hub-silence", str(hub_silence)],
                bin_dir=str(binary.parent),
                env={"RUSTPX_ENGINE_CONNECTION": blob, "RUSTPX_LOG": "info"},
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


@pytest.fixture(scope="module")
def remote_engines(px, hosts, runtime_dir):
    # The kernel's hub starts with the kernel; wait until its connection file exists.
    deadline = time.monotonic() + 60
    while not glob.glob(str(runtime_dir / "rustpx-engines-*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    procs = start_isolated_engines(hosts[0], runtime_dir, [0, 1]) + start_isolated_engines(hosts[1], runtime_dir, [2, 3])
    wait_for_engines(px, [0, 1, 2, 3])
    assert idle_engines(px) == {0: "sent", 1: "sent", 2: "sent", 3: "sent"}
    yield procs
    for proc in procs:
        proc.kill()


def test_isolated_hosts_have_no_toolchain(hosts):
    binary = pathlib.Path(hosts[0].install_binary(engine_binary()))
    probe = hosts[0].popen_isolated(
        ["sh", "-c", "command -v rustc cargo; ls /root/.rustup 2>&1; ls " + str(binary.parent)],
        bin_dir=str(binary.parent),
        env={},
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = probe.communicate(timeout=30)
    assert "rustc" not in out.split("\n")[0]
    assert "No such file" in out
    assert out.strip().endswith("rustpx-engine")


def test_px_runs_across_hosts_from_objects_sent_over_the_link(px, remote_engines, hosts):
    reply, msgs, _ = px.execute(f"%px {ID} let x = id * 10;")
    assert reply["status"] == "ok", reply
    cell = (
        "%%px\n"
        'let rustc = std::process::Command::new("rustc").arg("--version").output().is_ok();\n'
        'let rustup = std::path::Path::new("/root/.rustup").exists();\n'
        'println!("rustc={rustc} rustup={rustup}");\n'
        "x + 1"
    )
    reply, msgs, _ = px.execute(cell)
    assert reply["status"] == "ok", reply
    assert px_values(msgs) == {0: "1", 1: "11", 2: "21", 3: "31"}
    for m in msgs:
        if m["msg_type"] == "display_data" and "[stdout:" in m["content"]["data"].get("text/plain", ""):
            assert "rustc=false rustup=false" in m["content"]["data"]["text/plain"]
    # Each engine runs on its own host: 0 and 1 on the first, 2 and 3 on the second.
    reply, msgs, _ = px.execute('%px std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned()')
    names = {i: f'"{hosts[0].name}"' for i in (0, 1)} | {i: f'"{hosts[1].name}"' for i in (2, 3)}
    assert px_values(msgs) == names


def test_data_magics_move_values_to_and_from_other_hosts(px, remote_engines):
    """The magics' files ride the engine link: the engines cannot see the kernel's /dev/shm."""
    reply, _, _ = px.execute("let v: u64 = 7;\nlet xs: Vec<u64> = (0..8).collect();")
    assert reply["status"] == "ok"
    reply, _, _ = px.execute("%push v", timeout=300)
    assert reply["status"] == "ok", reply
    reply, msgs, _ = px.execute(f"%px {ID} v * 100 + id as u64")
    assert px_values(msgs) == {0: "700", 1: "701", 2: "702", 3: "703"}
    reply, _, _ = px.execute("%scatter xs")
    assert reply["status"] == "ok", reply
    reply, msgs, _ = px.execute("%px xs.clone()")
    assert px_values(msgs) == {0: "[0, 1]", 1: "[2, 3]", 2: "[4, 5]", 3: "[6, 7]"}
    reply, _, _ = px.execute("%px let doubled: Vec<u64> = xs.iter().map(|x| x * 2).collect();")
    assert reply["status"] == "ok"
    reply, _, _ = px.execute("%gather doubled")
    assert reply["status"] == "ok", reply
    reply, msgs, _ = px.execute("doubled")
    assert "[0, 2, 4, 6, 8, 10, 12, 14]" in str([m["content"] for m in msgs if m["msg_type"] == "execute_result"])
    reply, _, _ = px.execute(f"%px {ID} let w = id * 3;")
    reply, _, _ = px.execute("%pull w")
    assert reply["status"] == "ok", reply
    reply, msgs, _ = px.execute("w")
    assert "[0, 3, 6, 9]" in str([m["content"] for m in msgs if m["msg_type"] == "execute_result"])


def start_local_engine(px):
    """One engine on the kernel's host (it shares the kernel's files); returns its id."""
    reply, msgs, _ = px.execute("%engines start -n 1")
    assert reply["status"] == "ok", reply
    started = re.search(r"started engines? (\d+)", stream_text(msgs))
    assert started, stream_text(msgs)
    return int(started.group(1))


def value_of(px, expression):
    reply, msgs, _ = px.execute(expression)
    assert reply["status"] == "ok", reply
    results = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "execute_result"]
    assert len(results) == 1, msgs
    return results[0]


HOLD = f"/dev/shm/rustpx-test-hold-{os.getpid()}-"
# Waits while HOLD<its engine id> exists (/dev/shm is shared by the network-namespace hosts), so
# a test decides which engine may work when.
SQUARE = (
    "fn square_plus(x: u64) -> u64 {\n"
    f'    let held = format!("{HOLD}{{}}", std::env::var("RUSTPX_ENGINE_ID").unwrap_or_default());\n'
    "    while std::path::Path::new(&held).exists() { std::thread::sleep(std::time::Duration::from_millis(5)); }\n"
    "    std::thread::sleep(std::time::Duration::from_millis(MS));\n"
    "    x * x + 1\n"
    "}"
)


def hold(engine):
    pathlib.Path(f"{HOLD}{engine}").touch()


def release(engine):
    pathlib.Path(f"{HOLD}{engine}").unlink(missing_ok=True)


def wait_until_engine_ran_items(px, engine):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _, msgs, _ = px.execute("%pxresult --status")
        if re.search(rf"engine {engine}: [1-9]", stream_text(msgs)):
            return
        time.sleep(0.2)
    raise AssertionError(f"engine {engine} ran nothing: {stream_text(msgs)}")


def end_remote_engine(px, proc, engine):
    """Kills a remote engine and waits until the hub no longer counts it (later cells on
    `all` must not wait for it)."""
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while engine in idle_engines(px):
        assert time.monotonic() < deadline, live_engines(px)
        time.sleep(0.5)


def counts_by_engine(px, name, engines):
    text = value_of(px, "(" + ", ".join(f"{name}.iter().filter(|&&e| e == {e}).count()" for e in engines) + ",)")
    return [int(n) for n in text.strip("(,)").split(", ")]


def test_pxmap_over_a_local_and_a_remote_engine_equals_the_local_result(px, remote_engines, hosts, runtime_dir):
    """Issue 18, item 2: the remote engine's worker reaches the scheduler through its own
    engine, over the signed link (its host cannot see the kernel's Unix socket). Both engines
    are fresh, so one compiled cell serves them both at once."""
    [remote] = start_isolated_engines(hosts[1], runtime_dir, [5])
    wait_for_engines(px, [5])
    local = start_local_engine(px)
    try:
        reply, _, _ = px.execute(f"%%px -t {local},5\n" + SQUARE.replace("MS", "1"))
        assert reply["status"] == "ok", reply
        reply, _, _ = px.execute("let items: Vec<u64> = (0..3000).collect();")
        assert reply["status"] == "ok", reply
        # The local engine waits until the remote one has results in: both surely take part.
        hold(local)
        reply, msgs, _ = px.execute(f"%pxmap square_plus items -t {local},5 -o both -a --chunksize 25", timeout=300)
        assert reply["status"] == "ok", reply
        wait_until_engine_ran_items(px, 5)
        release(local)
        reply, msgs, _ = px.execute("%pxresult", timeout=300)
        assert reply["status"] == "ok", reply
        assert f"mapped square_plus over 3000 items of items on engine {local}, 5 in 120 chunks" in stream_text(msgs), stream_text(msgs)
        assert "stopped" not in stream_text(msgs)
        counts = counts_by_engine(px, "both_engines", [local, 5])
        assert counts[0] > 0 and counts[1] > 0 and sum(counts) == 3000, counts
        # The same map on the local engine alone gives the same values.
        reply, msgs, _ = px.execute(f"%pxmap square_plus items -t {local} -o alone --chunksize 25", timeout=300)
        assert reply["status"] == "ok", reply
        assert value_of(px, "both == alone && both.len() == 3000 && both[2999] == 2999 * 2999 + 1") == "true"
    finally:
        release(local)
        end_remote_engine(px, remote, 5)
        reply, _, _ = px.execute(f"%engines stop {local}")
        assert reply["status"] == "ok", reply


API_FUNCTIONS = """%%px
fn me() -> u32 { std::env::var("RUSTPX_ENGINE_ID").unwrap().parse().unwrap() }
fn whoami(x: u64) -> u64 { x + me() as u64 }
fn cube(x: u64) -> (u64, u32) { std::thread::sleep(std::time::Duration::from_millis(2)); (x * x * x, me()) }"""


def test_the_rust_api_applies_maps_and_moves_data_on_remote_engines(px, remote_engines):
    """Issue 16: `apply` and `map` from a plain cell reach engines on other hosts. Their serving
    cell connects to its own engine process, which relays the connection over the signed link
    to the API's scheduler (the relay routes it by its token, beside %pxmap's). The typed data
    calls ship their files as the data magics do."""
    local = start_local_engine(px)
    try:
        reply, _, _ = px.execute(API_FUNCTIONS, timeout=300)
        assert reply["status"] == "ok", reply
        reply, _, _ = px.execute(f"let rc = rustpx::client();\nlet dv = rc.direct_view(vec![0, 2, {local}]);", timeout=300)
        assert reply["status"] == "ok", reply
        # One task pinned to each engine: two hosts and this one, each answering for itself.
        assert value_of(px, 'dv.apply_sync::<u64, u64>("whoami", 100).unwrap()') == f"[100, 102, {100 + local}]"
        # A load-balanced map over the two remote engines only equals the local result.
        reply, _, _ = px.execute(
            "let items: Vec<u64> = (0..400).collect();\n"
            "let remote = rc.direct_view(vec![0, 2]).load_balanced_view().chunk_size(10);\n"
            'let cubed = remote.map_sync::<u64, (u64, u32)>("cube", &items).unwrap();',
            timeout=300,
        )
        assert reply["status"] == "ok", reply
        assert value_of(px, "cubed.iter().map(|c| c.0).collect::<Vec<_>>() == items.iter().map(|x| x * x * x).collect::<Vec<_>>()") == "true"
        ran = value_of(px, "cubed.iter().map(|c| c.1).collect::<std::collections::BTreeSet<_>>()")
        ran = {int(e) for e in ran.strip("{}").split(", ")}
        assert ran and ran <= {0, 2}, ran
        # And over all three: the same values again.
        assert value_of(px, 'dv.load_balanced_view().map_sync::<u64, (u64, u32)>("cube", &items).unwrap() .iter().map(|c| c.0).sum::<u64>() == items.iter().map(|x| x * x * x).sum::<u64>()') == "true"
        # Data calls: scatter, work on each engine, gather back in order.
        reply, _, _ = px.execute('dv.scatter_sync("part", &items).unwrap();', timeout=300)
        assert reply["status"] == "ok", reply
        reply, _, _ = px.execute(f"%%px -t 0,2,{local}\nlet part: Vec<u64> = part.iter().map(|x| x + 1).collect();", timeout=300)
        assert reply["status"] == "ok", reply
        assert value_of(px, 'dv.gather_sync::<u64>("part").unwrap() == items.iter().map(|x| x + 1).collect::<Vec<u64>>()') == "true"
        assert value_of(px, 'dv.pull_sync::<u32>("nothing_here").unwrap_err().to_string().contains("engine 0")') == "true"
    finally:
        reply, _, _ = px.execute(f"%engines stop {local}")
        assert reply["status"] == "ok", reply


def test_a_remote_engine_killed_mid_map_leaves_its_chunks_to_the_other(px, remote_engines, hosts, runtime_dir):
    [victim] = start_isolated_engines(hosts[0], runtime_dir, [6])
    wait_for_engines(px, [6])
    local = start_local_engine(px)
    try:
        reply, _, _ = px.execute(f"%%px -t {local},6\n" + SQUARE.replace("MS", "5"))
        assert reply["status"] == "ok", reply
        reply, _, _ = px.execute("let many: Vec<u64> = (0..1000).collect();")
        assert reply["status"] == "ok", reply
        # Only the remote engine works until it is killed with chunks in hand.
        hold(local)
        reply, _, _ = px.execute(f"%pxmap square_plus many -t {local},6 -o ys -a --chunksize 10", timeout=300)
        assert reply["status"] == "ok", reply
        wait_until_engine_ran_items(px, 6)
        victim.kill()
        victim.wait()
        release(local)
        reply, msgs, _ = px.execute("%pxresult", timeout=300)
        assert reply["status"] == "ok", reply
        assert "engine 6 stopped and its chunks ran elsewhere" in stream_text(msgs), stream_text(msgs)
        assert value_of(px, "ys == many.iter().map(|&x| x * x + 1).collect::<Vec<u64>>()") == "true"
        counts = counts_by_engine(px, "ys_engines", [6, local])
        assert counts[0] > 0 and counts[1] > 0 and sum(counts) == 1000, counts
    finally:
        release(local)
        victim.kill()
        reply, _, _ = px.execute(f"%engines stop {local}")
        assert reply["status"] == "ok", reply


class FakeEngine(threading.Thread):
    """An engine that holds the link's key but not the rules: it registers, answers every run
    as done, and when it is sent a map worker's run, opens a relayed map stream with the right
    token and answers its first chunk with a result frame claiming 2**62 bytes. With `guess`, it
    opens two streams instead: one whose hello has a guessed token, one whose first line never
    ends."""

    CLAIMED = 2**62

    def __init__(self, blob, engine_id, guess=False):
        super().__init__(daemon=True)
        self.guess = guess
        connection = json.loads(blob)
        self.key = link_key(connection["key"])
        self.session = Session(key=connection["key"].encode(), signature_scheme="hmac-sha256")
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IDENTITY, self.session.bsession)
        self.sock.connect(connection["url"])
        self.engine_id = engine_id
        self.numbers = itertools.count(1)
        self.stop = threading.Event()
        self.registered = threading.Event()
        self.closed = queue.Queue()
        self.chunk = None
        self.sleeper = subprocess.Popen(["sleep", "600"])

    def send(self, msg_type, content, buffers=()):
        msg = self.session.msg(msg_type, content)
        msg["metadata"] = {"seq": next(self.numbers)}
        self.sock.send_multipart(serialize_sealed(self.session, msg, self.key, buffers))

    def run(self):
        self.send("register_request", {
            "requested_id": self.engine_id, "pid": self.sleeper.pid, "hostname": "fake",
            "version": "0.1.0", "platform": this_platform(), "shares_files": False, "link_version": 2,
        })
        beat = 0.0
        while not self.stop.is_set():
            if time.monotonic() - beat > 0.5:
                self.send("heartbeat", {})
                beat = time.monotonic()
            if not self.sock.poll(100):
                continue
            header, content, buffers = open_sealed(self.sock.recv_multipart(), self.key)
            kind = header["msg_type"]
            if kind == "register_reply":
                self.registered.set()
            elif kind == "run_request":
                files = [f["path"] for f in content.get("files_in", [])]
                if self.guess and any(path.endswith("map.server") for path in files):
                    self.send("map_bytes", {"stream": 1}, [b"0123456789abcdef0123456789abcdef\n9\nu64\nu64\n\n"])
                    self.send("map_bytes", {"stream": 2}, [b"x" * 2000])
                elif any(path.endswith("map.server") for path in files):
                    token = buffers[files.index(next(p for p in files if p.endswith("map.server")))].split(b"\n")[1]
                    hello = token + f"\n{self.engine_id}\nu64\nu64\n\n".encode()
                    self.send("map_bytes", {"stream": 1}, [hello])
                self.finish(content["run_id"])
            elif kind == "map_bytes" and self.chunk is None:
                # The stream's first bytes: tag 0, then the chunk's index.
                self.chunk = struct.unpack("<Q", buffers[0][1:9])[0]
                frame = struct.pack("<QIQ", self.chunk, 0, self.CLAIMED)
                self.send("map_bytes", {"stream": 1}, [frame])
            elif kind == "map_close":
                self.closed.put((content.get("stream"), content.get("reason")))

    def finish(self, run_id):
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        self.send("run_reply", {
            "run_id": run_id, "execution_count": 1, "status": "ok", "value": None,
            "changed_type": [], "started": now, "completed": now,
        })

    def close(self):
        self.stop.set()
        self.join(5)
        self.send("engine_exit", {"reason": "the test is over"})
        time.sleep(0.2)
        self.sock.close()
        self.sleeper.kill()


def this_platform():
    return {
        "arch": platform.machine(),
        "os": "linux",
        "glibc": os.confstr("CS_GNU_LIBC_VERSION").split()[1],
    }


def test_a_relayed_result_claiming_a_huge_length_is_refused_and_the_map_goes_on(px, remote_engines, hosts, runtime_dir):
    """An engine with the link's key (a compromised host) sends a result frame announcing 2**62
    bytes: the hub refuses the stream at once, before reading or allocating for it, tells the
    engine why, and the chunk runs on the other engine."""
    [remote] = start_isolated_engines(hosts[1], runtime_dir, [7])
    wait_for_engines(px, [7])
    fake = FakeEngine(connection_blob(runtime_dir), 9)
    fake.start()
    try:
        assert fake.registered.wait(30), "the fake engine was not registered"
        reply, _, _ = px.execute("%%px -t 7,9\n" + SQUARE.replace("MS", "1"))
        assert reply["status"] == "ok", reply
        reply, _, _ = px.execute("let few: Vec<u64> = (0..400).collect();")
        assert reply["status"] == "ok", reply
        # Engine 7 waits with its first chunks until the fake engine has been refused.
        hold(7)
        reply, msgs, _ = px.execute("%pxmap square_plus few -t 7,9 -o ys -a --chunksize 10", timeout=300)
        assert reply["status"] == "ok", reply
        _, reason = fake.closed.get(timeout=120)
        release(7)
        assert reason == f"a result of {FakeEngine.CLAIMED} bytes for chunk {fake.chunk}, over the limit of 1073741824", reason
        reply, msgs, _ = px.execute("%pxresult", timeout=300)
        assert reply["status"] == "ok", reply
        assert value_of(px, "ys == few.iter().map(|&x| x * x + 1).collect::<Vec<u64>>()") == "true"
        assert value_of(px, "ys_engines.iter().all(|&e| e == 7)") == "true"
        assert value_of(px, "40 + 2") == "42"
    finally:
        release(7)
        fake.close()
        end_remote_engine(px, remote, 7)


def test_relayed_streams_with_a_guessed_token_or_an_endless_first_line_are_refused(px, remote_engines, hosts, runtime_dir):
    """An engine with the link's key opens relayed streams while a map runs: one with a guessed
    token, one whose first line never ends. The hub routes neither to a scheduler, ends each with
    its reason, and the map completes on the honest engine."""
    [remote] = start_isolated_engines(hosts[1], runtime_dir, [8])
    wait_for_engines(px, [8])
    fake = FakeEngine(connection_blob(runtime_dir), 10, guess=True)
    fake.start()
    try:
        assert fake.registered.wait(30), "the fake engine was not registered"
        reply, _, _ = px.execute("%%px -t 8,10\n" + SQUARE.replace("MS", "1"))
        assert reply["status"] == "ok", reply
        reply, _, _ = px.execute("let guessed: Vec<u64> = (0..200).collect();")
        assert reply["status"] == "ok", reply
        reply, msgs, _ = px.execute("%pxmap square_plus guessed -t 8,10 -o gs --chunksize 10", timeout=300)
        assert reply["status"] == "ok", reply
        closes = dict(fake.closed.get(timeout=60) for _ in range(2))
        assert closes == {
            1: "a connection whose token no running %pxmap or API call holds",
            2: "a hello line that is too long or cut off",
        }, closes
        assert value_of(px, "gs == guessed.iter().map(|&x| x * x + 1).collect::<Vec<u64>>()") == "true"
    finally:
        fake.close()
        end_remote_engine(px, remote, 8)


def test_cutting_a_hosts_link_mid_cell_fails_only_its_engines(px, remote_engines, hosts):
    cell = f"%%px --no-stream\n{ID}\nstd::thread::sleep(std::time::Duration::from_secs(3));\nid * 100"
    msg_id = px.kc.execute(cell)
    time.sleep(1.0)
    hosts[1].cut()
    try:
        reply, msgs, _ = px.collect(msg_id, timeout=120)
    finally:
        hosts[1].restore()
    assert reply["status"] == "error"
    assert reply["ename"] == "CompositeError"
    assert "[2:execute]EngineError" in reply["evalue"] and "[3:execute]EngineError" in reply["evalue"], reply["evalue"]
    assert "no heartbeat" in "\n".join(reply["traceback"])
    assert px_values(msgs) == {0: "0", 1: "100"}
    # `all` follows the live set: the next cell runs on host 0's engines only.
    reply, msgs, _ = px.execute("%px 5")
    assert reply["status"] == "ok"
    assert px_values(msgs) == {0: "5", 1: "5"}


def test_an_engine_that_cannot_reach_the_hub_says_where_it_tried_and_gives_up(px, hosts, runtime_dir):
    binary = pathlib.Path(hosts[1].install_binary(engine_binary()))
    blob = connection_blob(runtime_dir)
    url = json.loads(blob)["url"]
    hosts[1].cut()
    try:
        started = time.monotonic()
        proc = hosts[1].popen_isolated(
            [str(binary), "--register-timeout", "2"],
            bin_dir=str(binary.parent),
            env={"RUSTPX_ENGINE_CONNECTION": blob},
            stderr=subprocess.PIPE,
            text=True,
        )
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        hosts[1].restore()
    assert proc.returncode == 2
    # libzmq queues the registration until a connection exists, so what times out is the answer.
    assert f"the hub at {url} did not answer registration" in err, err
    assert elapsed < 15


def test_a_host_that_cannot_load_the_cells_is_refused_with_a_reason(px, hosts, runtime_dir):
    binary = pathlib.Path(hosts[0].install_binary(engine_binary()))
    proc = hosts[0].popen_isolated(
        [str(binary), "--pretend-platform", "aarch64-linux-2.36"],
        bin_dir=str(binary.parent),
        env={"RUSTPX_ENGINE_CONNECTION": connection_blob(runtime_dir)},
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "the hub refused this engine: the engine's host is aarch64-linux, but cells are compiled for x86_64-linux" in err


@pytest.fixture(scope="module")
def ssh_host(hosts, tmp_path_factory):
    key, public = netns.make_ssh_key(tmp_path_factory.mktemp("ssh"))
    host = hosts[0]
    host.start_sshd(public)
    binary = pathlib.Path(host.install_binary(engine_binary()))
    return host, key, binary


def test_ssh_launcher_starts_engines_on_a_real_sshd(px, remote_engines, ssh_host):
    host, key, binary = ssh_host
    options = " ".join(f"--launcher-arg {o}" for o in netns.ssh_options(key))
    line = f"%engines start --launcher ssh --hosts {host.address}:2 --engine {binary} {options}"
    reply, msgs, _ = px.execute(line + " --print")
    assert reply["status"] == "ok"
    printed = stream_text(msgs)
    assert f"ssh -T -o BatchMode=yes -i {key}" in printed
    assert re.search(rf"{re.escape(host.address)} -- {re.escape(str(binary))} --id \d+ --connect - < ", printed), printed

    reply, msgs, _ = px.execute(line)
    assert reply["status"] == "ok", reply
    started = re.search(r"started engines (\d+), (\d+)", stream_text(msgs))
    assert started, stream_text(msgs)
    a, b = started.groups()
    reply, msgs, _ = px.execute(
        f"%%px -t {a},{b}\nstd::process::Command::new(\"rustc\").output().is_ok()"
    )
    assert px_values(msgs) == {int(a): "false", int(b): "false"}, (reply, stream_text(msgs), [m["content"] for m in msgs if m["msg_type"] == "display_data"])
    # An interrupt reaches a remote engine over the link; it exits, and the ssh launcher
    # starts it again on the same host while the other one's result is shown.
    cell = f"%%px -t {a},{b}\n{ID}\nif id == {a} {{ loop {{ std::hint::spin_loop(); }} }}\nid * 10"
    msg_id = px.kc.execute(cell)
    time.sleep(2.0)
    px.km.interrupt_kernel()
    reply, msgs, _ = px.collect(msg_id, timeout=120)
    assert reply["status"] == "ok", reply
    err = stream_text(msgs, "stderr")
    assert f"engine {a} was restarted" in err, err
    assert px_values(msgs) == {int(b): str(int(b) * 10)}
    reply, msgs, _ = px.execute(f"%%px -t {a},{b}\nstd::fs::read_to_string(\"/proc/sys/kernel/hostname\").unwrap().trim().to_owned()")
    assert px_values(msgs) == {int(a): f'"{host.name}"', int(b): f'"{host.name}"'}
    # Stopping them ends the remote processes too (their ssh sessions close).
    reply, msgs, _ = px.execute(f"%engines stop {a},{b}")
    assert reply["status"] == "ok"
    left = still_running(processes_matching(f"{binary} --id ({a}|{b}) --connect"), timeout=15)
    assert not left, f"remote engines still running: {left}"


def test_an_ssh_tunnel_carries_the_link_and_the_hub_stays_on_loopback(ssh_host):
    """Issue 14, item 4: the link to another host, encrypted by ssh and reachable by nobody
    else (a 0600 Unix socket on the engine host, the hub on the kernel host's loopback)."""
    host, key, binary = ssh_host
    options = " ".join(f"--launcher-arg {o}" for o in netns.ssh_options(key))
    k = Kernel()  # the default: the hub binds 127.0.0.1
    try:
        plain = f"%engines start --launcher ssh --hosts {host.address}:1 --engine {binary} {options}"
        reply, _, _ = k.execute(plain, stop_on_error=False)
        assert reply["status"] == "error" and "--tunnel" in reply["evalue"], reply
        line = plain.replace("--launcher ssh", "--launcher ssh --tunnel")
        reply, msgs, _ = k.execute(line + " --print")
        printed = stream_text(msgs)
        forward = re.search(r"-R (/tmp/rustpx-hub-\w+\.sock):127\.0\.0\.1:(\d+)", printed)
        assert forward, printed
        assert f"dialling ipc://{forward.group(1)}" in printed, printed
        reply, msgs, _ = k.execute(line)
        assert reply["status"] == "ok", reply
        started = re.search(r"started engines? (\d+)", stream_text(msgs))
        assert started, stream_text(msgs)
        engine = int(started.group(1))
        reply, msgs, _ = k.execute(
            f"%%px -t {engine}\nstd::fs::read_to_string(\"/proc/sys/kernel/hostname\").unwrap().trim().to_owned()")
        assert px_values(msgs) == {engine: f'"{host.name}"'}, (reply, msgs)
        _, msgs, _ = k.execute("%engines")
        table = [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "display_data"][0]
        assert "hub bound to: 127.0.0.1" in table, table
        reply, _, _ = k.execute(f"%engines stop {engine}")
        assert reply["status"] == "ok", reply
    finally:
        k.shutdown()


def test_ssh_failure_says_why(px, ssh_host):
    host, key, binary = ssh_host
    reply, msgs, _ = px.execute(
        f"%engines start --launcher ssh --hosts {host.address}:1 --engine {binary} "
        "--launcher-arg -o --launcher-arg BatchMode=yes --launcher-arg -o --launcher-arg StrictHostKeyChecking=no "
        "--launcher-arg -o --launcher-arg UserKnownHostsFile=/dev/null --launcher-arg -i --launcher-arg /nonexistent-key",
        stop_on_error=False,
    )
    assert reply["status"] == "error"
    assert "EngineStartError" == reply["ename"]
    assert f"ssh for {host.address}" in reply["evalue"] and "exited with status 255 before the engine registered" in reply["evalue"], reply["evalue"]
    assert "Permission denied" in reply["evalue"], reply["evalue"]


def test_mpi_launcher_spreads_ranks_over_hosts_through_ssh(px, ssh_host, hosts, tmp_path):
    """mpiexec (MPICH's Hydra) starts its proxies on two hosts over ssh; each rank is an engine
    with no toolchain, numbered by its rank, and stopping them ends the job."""
    host, key, binary = ssh_host
    with open(key + ".pub") as f:
        hosts[1].start_sshd(f.read().strip())
    wrapper = tmp_path / "ssh-for-mpiexec"
    wrapper.write_text("#!/bin/sh\nexec ssh " + " ".join(netns.ssh_options(key)) + ' "$@"\n')
    wrapper.chmod(0o755)
    args = ["-launcher", "ssh", "-launcher-exec", str(wrapper),
            "-hosts", f"{hosts[0].address}:1,{hosts[1].address}:1", "-wdir", "/"]
    options = " ".join(f"--launcher-arg {a}" for a in args)
    # The engine binary sits under /opt, which both hosts see, as on a shared filesystem.
    reply, msgs, _ = px.execute(f"%engines start --launcher mpi -n 2 --engine {binary} {options}", timeout=120)
    assert reply["status"] == "ok", reply
    started = re.search(r"started engines (\d+), (\d+)", stream_text(msgs))
    assert started, stream_text(msgs)
    a, b = (int(x) for x in started.groups())
    reply, msgs, _ = px.execute(
        f"%%px -t {a},{b}\n"
        'format!("{} {} {}", std::env::var("PMI_RANK").unwrap(), '
        'std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim(), '
        'std::process::Command::new("rustc").output().is_ok())'
    )
    assert px_values(msgs) == {a: f'"0 {hosts[0].name} false"', b: f'"1 {hosts[1].name} false"'}, msgs
    reply, _, _ = px.execute(f"%engines stop {a},{b}")
    assert reply["status"] == "ok"
    left = still_running(processes_matching(f"-launcher-exec {wrapper}"), timeout=20)
    assert not left, f"mpiexec still running after %engines stop: {left}"


def test_mpi_launcher_numbers_engines_by_rank(tmp_path):
    os.environ["RUSTPX_ENGINES"] = "1"
    saved = os.environ.get("JUPYTER_RUNTIME_DIR")
    os.environ["JUPYTER_RUNTIME_DIR"] = str(tmp_path)
    k = Kernel()
    try:
        reply, msgs, _ = k.execute("%engines start --launcher mpi -n 3")
        assert reply["status"] == "ok", reply
        assert "started engines 0, 1, 2" in stream_text(msgs)
        reply, msgs, _ = k.execute('%px std::env::var("PMI_RANK").unwrap()')
        assert px_values(msgs) == {0: '"0"', 1: '"1"', 2: '"2"'}
        reply, msgs, _ = k.execute("%engines stop")
        assert reply["status"] == "ok"
        left = still_running(processes_matching("mpiexec -n 3"), timeout=10)
        assert not left, f"mpiexec still running after %engines stop: {left}"
    finally:
        k.shutdown()
        if saved is None:
            os.environ.pop("JUPYTER_RUNTIME_DIR", None)
        else:
            os.environ["JUPYTER_RUNTIME_DIR"] = saved


def test_slurm_launcher_builds_the_exact_srun_command(px, runtime_dir):
    reply, msgs, _ = px.execute("%engines start --launcher slurm -n 3 --launcher-arg --nodes=2 --print")
    assert reply["status"] == "ok"
    text = stream_text(msgs)
    assert re.search(
        r'RUSTPX_ENGINE_CONNECTION="\$\(cat CONNECTION_FILE\)" srun --ntasks=3 --kill-on-bad-exit=0 --export=ALL --nodes=2 \S*rustpx-engine --id-base \d+',
        text,
    ), text
    assert "$SLURM_JOB_ID is unset" in text
    reply, _, _ = px.execute("%engines start --launcher slurm -n 1", stop_on_error=False)
    assert reply["status"] == "error"
    assert "salloc or sbatch" in reply["evalue"]


def test_the_cli_prints_a_launchers_command(runtime_dir, px):
    rustpx = pathlib.Path(json.load(open(kernelspec_path()))["argv"][0])
    conn = glob.glob(str(runtime_dir / "rustpx-engines-*.json"))[0]
    out = subprocess.run(
        [str(rustpx), "engines", "start", "--connect", conn, "--launcher", "mpi", "-n", "4", "--print"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert out.strip() == f'RUSTPX_ENGINE_CONNECTION="$(cat {conn})" mpiexec -n 4 {rustpx.parent / "rustpx-engine"} --id-base 0'


def test_the_cli_refuses_to_submit_a_job_and_says_where_to(runtime_dir, px):
    rustpx = pathlib.Path(json.load(open(kernelspec_path()))["argv"][0])
    conn = glob.glob(str(runtime_dir / "rustpx-engines-*.json"))[0]
    done = subprocess.run(
        [str(rustpx), "engines", "start", "--connect", conn, "--launcher", "sge", "-n", "2"],
        capture_output=True, text=True, env={**os.environ, "RUST_BACKTRACE": "0"},
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "Error: rustpx engines start runs its engines in this terminal and waits for them; "
        "to submit a batch job, use `%engines start --launcher slurm --submit` (or `--launcher sge`) "
        "in the notebook, or run `rustpx engines start --launcher slurm` inside your own job script"
    )
