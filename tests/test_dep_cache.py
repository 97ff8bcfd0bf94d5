"""The machine's cache of built `:dep` crates (evcxr's crate cache, made private by rustpx).

Each test gives its kernels a fresh XDG_CACHE_HOME, so the cache starts empty and what one
kernel builds is what the next finds. Whether rustc compiled a crate is seen directly: a
watcher thread reads /proc while the cells run and records every rustc process (not the
rustpx wrapper around it) with this test's XDG_CACHE_HOME in its environment, by the crate it
compiles.
"""
import os
import re
import shutil
import stat
import threading
import time

import pytest

from conftest import Kernel, of_type, px_values, stream_text

DEP_TIMEOUT = float(os.environ.get("RUSTPX_TEST_DEP_TIMEOUT", "600"))


class RustcWatcher:
    """Records the crate names of rustc processes whose environment holds `marker`."""

    def __init__(self, marker):
        self.marker = f"XDG_CACHE_HOME={marker}".encode()
        self.crates = set()
        self.seen = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            for entry in os.listdir("/proc"):
                if not entry.isdigit() or entry in self.seen:
                    continue
                try:
                    exe = os.path.basename(os.readlink(f"/proc/{entry}/exe"))
                    if exe != "rustc":
                        continue
                    args = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
                    environ = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
                except OSError:
                    continue
                self.seen.add(entry)
                if self.marker in environ and b"--crate-name" in args:
                    self.crates.add(args[args.index(b"--crate-name") + 1].decode())
            time.sleep(0.002)

    def take(self):
        """The crates compiled since the last call."""
        crates, self.crates = self.crates, set()
        return crates

    def close(self):
        self.stop.set()
        self.thread.join()


@pytest.fixture
def cache_home(tmp_path):
    home = tmp_path / "xdg-cache"
    home.mkdir()
    watcher = RustcWatcher(home)
    yield home, watcher
    watcher.close()


def start_kernel(home, **env):
    return Kernel(env={**os.environ, "XDG_CACHE_HOME": str(home), "RUSTPX_ENGINES": "1", **env})


def run_ok(kernel, code):
    reply, msgs, _ = kernel.execute(code, timeout=DEP_TIMEOUT)
    assert reply["status"] == "ok", (code, [m["content"] for m in of_type(msgs, "error")])
    return msgs


def value(msgs):
    return "".join(m["content"]["data"]["text/plain"] for m in of_type(msgs, "execute_result"))


def test_a_crate_built_in_one_kernel_is_reused_by_the_next_and_by_px(cache_home):
    home, rustc = cache_home
    first = start_kernel(home)
    try:
        run_ok(first, ':dep itoa = "1"')
        assert "itoa" in rustc.take(), "the first kernel builds the crate"
    finally:
        first.shutdown()

    second = start_kernel(home)
    try:
        rustc.take()
        msgs = run_ok(second, ':dep itoa = "1"\nitoa::Buffer::new().format(1234).to_owned()')
        assert value(msgs) == '"1234"'
        compiled = rustc.take()
        assert "ctx" in compiled, "the cell itself was compiled (the watcher sees rustc)"
        assert "itoa" not in compiled, "the crate came from the cache"

        msgs = run_ok(second, '%%px\n:dep itoa = "1"\nitoa::Buffer::new().format(7).to_owned()')
        assert px_values(msgs) == {0: '"7"'}
        assert "itoa" not in rustc.take(), "the px compiler's context reuses it too"
    finally:
        second.shutdown()


def test_another_version_or_feature_set_is_built_anew(cache_home):
    home, rustc = cache_home
    k = start_kernel(home)
    try:
        run_ok(k, ':dep ryu = "1"')
        assert "ryu" in rustc.take()
        run_ok(k, ':dep ryu = { version = "1", features = ["small"] }')
        assert "ryu" in rustc.take(), "a new feature set is a new build"
        run_ok(k, ':dep itoa = "1"')
        assert "itoa" in rustc.take()
        msgs = run_ok(k, ':dep itoa = "=1.0.10"\nitoa::Buffer::new().format(5).to_owned()')
        assert value(msgs) == '"5"'
        assert "itoa" in rustc.take(), "another version is a new build"
    finally:
        k.shutdown()


def cache_bytes(directory):
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def test_the_cache_honours_its_size_bound(cache_home):
    home, rustc = cache_home
    k = start_kernel(home, RUSTPX_DEP_CACHE_MB="1")
    try:
        msgs = run_ok(k, ":cache")
        assert "Size limit: 1 MiB" in stream_text(msgs) + value(msgs)
        run_ok(k, ':dep itoa = "1"')
        assert 0 < cache_bytes(home / "evcxr") <= 1024 * 1024, "itoa's build (about 170 kB) is kept"
        # memchr's rlib and rmeta are about 3 MB: over the bound, the oldest entries go.
        run_ok(k, ':dep memchr = "2"\nmemchr::memchr(b\'x\', b\"axb\")')
        assert "memchr" in rustc.take()
        assert cache_bytes(home / "evcxr") <= 1024 * 1024
        msgs = run_ok(k, ":cache 64")
        assert "64 MiB" in stream_text(msgs) + value(msgs)
        run_ok(k, ':dep memchr = { version = "2", default-features = false, features = ["alloc"] }')
        assert "memchr" in rustc.take()
        assert cache_bytes(home / "evcxr") > 1024 * 1024, ":cache N raised the bound for this session"
    finally:
        k.shutdown()


def test_deleting_the_cache_under_a_running_kernel_rebuilds_it_privately(cache_home):
    home, rustc = cache_home
    k = start_kernel(home)
    try:
        run_ok(k, ':dep itoa = "1"')
        assert (home / "evcxr").is_dir()
        shutil.rmtree(home / "evcxr")
        msgs = run_ok(k, ':dep ryu = "1"\nryu::Buffer::new().format(2.5f64).to_owned()')
        assert value(msgs) == '"2.5"'
        assert "ryu" in rustc.take()
        assert stat.S_IMODE((home / "evcxr").stat().st_mode) == 0o700
        entries = [e for e in (home / "evcxr").iterdir()]
        assert entries, "the new build went into a new cache"
        for entry in entries:
            assert stat.S_IMODE(entry.stat().st_mode) == 0o700
            for f in entry.iterdir():
                assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f
        msgs = run_ok(k, "itoa::Buffer::new().format(3).to_owned()")
        assert value(msgs) == '"3"'
    finally:
        k.shutdown()


def test_entries_others_could_have_written_are_never_used(cache_home):
    home, _ = cache_home
    cache = home / "evcxr"
    cache.mkdir(mode=0o755)
    os.chmod(cache, 0o755)
    planted = cache / "1234567890"
    planted.mkdir()
    (planted / "stderr").write_text("planted")
    os.chmod(planted / "stderr", 0o666)
    linked = cache / "987654321"
    os.symlink("/etc", linked)
    k = start_kernel(home)
    try:
        run_ok(k, "1 + 1")
        assert stat.S_IMODE(cache.stat().st_mode) == 0o700
        assert not planted.exists(), "an entry with a file others may write is removed"
        assert not os.path.lexists(linked), "a link in the cache is removed"
        assert os.path.isdir("/etc")
    finally:
        k.shutdown()


def test_cache_command_reports_the_default_bound(cache_home):
    home, _ = cache_home
    k = start_kernel(home)
    try:
        msgs = run_ok(k, ":cache")
        shown = stream_text(msgs) + value(msgs)
        assert re.search(r"Size limit: 2048 MiB", shown), shown
    finally:
        k.shutdown()
