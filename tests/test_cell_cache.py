"""Compiled cells kept on disk (kernel/src/cell_cache): reused by a restarted kernel, compiled
anew for any change, bounded, private and verified.

Each test gives its kernels a fresh XDG_CACHE_HOME (so the cell cache starts empty) and a
runtime directory of its own (so the kernel's log can be read). Whether rustc compiled a cell
is seen directly: test_dep_cache's watcher records every rustc process with this test's
XDG_CACHE_HOME in its environment by the crate it builds, and evcxr builds every cell as the
crate `ctx`.
"""
import os
import shutil
import stat

import pytest

from conftest import Kernel, of_type, px_values, stream_text
from test_dep_cache import cache_home  # noqa: F401 (the fixture: a cache home and its rustc watcher)

TIMEOUT = 600
HIT = "loaded from the cell cache, rustc not run"
STORED = "compiled by rustc and stored in the cell cache"
REFUSED = "refused the cached entry"


@pytest.fixture
def home(cache_home):
    """test_dep_cache's cache home and rustc watcher, under this module's name for them."""
    return cache_home


class Session:
    """A kernel with the test's cache home and a runtime directory of its own."""

    def __init__(self, home, runtime, **env):
        runtime.mkdir()
        env = {**os.environ, "XDG_CACHE_HOME": str(home), "JUPYTER_RUNTIME_DIR": str(runtime),
               "RUSTPX_ENGINES": "1", **env}
        self.kernel = Kernel(env=env)
        self.log_path = runtime / f"rustpx-kernel-{self.kernel.km.provisioner.process.pid}.log"

    def run(self, code):
        reply, msgs, _ = self.kernel.execute(code, timeout=TIMEOUT)
        assert reply["status"] == "ok", (code, [m["content"] for m in of_type(msgs, "error")])
        return msgs

    def log(self):
        return self.log_path.read_text()

    def shutdown(self):
        self.kernel.shutdown()


def cells_dir(home):
    return home / "rustpx" / "cells"


def entries(home):
    return {p for p in cells_dir(home).iterdir() if not p.name.startswith(".")}


def entry_holding(home, marker):
    """The one entry whose object contains `marker` (a cell's string constant)."""
    found = [e for e in entries(home) if marker.encode() in (e / "object").read_bytes()]
    assert len(found) == 1, (marker, found)
    return found[0]


PLAIN = ["fn double(x: i32) -> i32 { x * 2 }", 'println!("doubled {}", double(21));']
PX = "%%px\nlet y = 5;\ny * 3"
# Brings both contexts up. evcxr compiles one cell of its own inside each context's constructor,
# before the context can be told to use the wrapper: that build is never cached, so the tests
# watch rustc only once both contexts are up.
START = ["0", "%px 0"]


def test_cells_are_reused_after_a_restart_and_a_one_character_change_compiles(home, tmp_path):
    home, rustc = home
    first = Session(home, tmp_path / "run1")
    try:
        for cell in START + PLAIN:
            first.run(cell)
        assert px_values(first.run(PX)) == {0: "15"}
        assert "ctx" in rustc.take(), "the first kernel compiles the cells"
        assert STORED in first.log()
    finally:
        first.shutdown()
    kept = entries(home)
    assert kept, "compiled cells are on disk"

    second = Session(home, tmp_path / "run2")
    try:
        for cell in START:
            second.run(cell)
        rustc.take()
        second.run(PLAIN[0])
        msgs = second.run(PLAIN[1])
        assert stream_text(msgs) == "doubled 42\n"
        assert "ctx" not in rustc.take(), "the plain context's cells came from the cache"
        assert px_values(second.run(PX)) == {0: "15"}
        assert "ctx" not in rustc.take(), "the px compiler's cell came from the cache"
        log = second.log()
        assert HIT in log and STORED not in log, log

        # One character differs: compiled anew, with the new result. The kernel's log line is
        # the evidence here: the watcher polls /proc and can miss a rustc that lives a few ms.
        msgs = second.run('println!("doubled {}", double(22));')
        assert stream_text(msgs) == "doubled 44\n"
        compiled = second.log().count(STORED)
        assert compiled >= 1
        msgs = second.run("%%px\ny * 4")
        assert px_values(msgs) == {0: "20"}
        assert second.log().count(STORED) > compiled
    finally:
        second.shutdown()


# evcxr writes a context's crate attributes, items and variables in the order of its hash maps,
# seeded afresh by each process: with four attributes, eight items and six variables, two kernels
# write the same cells in the same order about once in 4! * 8! * 6! times. The cache puts them in
# one order first (canonical.rs).
ATTRIBUTES = "\n".join(f"#![allow({lint})]" for lint in
                       ("non_snake_case", "unreachable_code", "non_upper_case_globals", "unused_parens"))
ITEMS = "\n".join(f"fn part_{n}(x: u64) -> u64 {{ x + {i} }}" for i, n in enumerate("abcdefgh", 1))
VARIABLES = "let (u, v, w, x, y, z) = (part_a(1), part_b(1), part_c(1), part_d(1), part_e(1), part_f(1));"
USE = "let sum = u + v + w + x + y + z + part_g(0) + part_h(0);\nsum"
PX_VARIABLES = "%%px\nlet (p, q, r, s) = (1u64, 2u64, 3u64, 4u64);"
PX_USE = "%%px\np * 1000 + q * 100 + r * 10 + s"
BAD = 'fn aaa_ok() -> u64 { 1 }\nfn aab_wrong() -> u64 { "two" }\nfn aac_ok() -> u64 { 3 }'


def many_items_and_variables(session):
    """Runs the cells; returns the plain sum, the px value and the failing cell's traceback."""
    session.run(ATTRIBUTES)
    session.run(ITEMS)
    session.run(VARIABLES)
    plain = [m["content"]["data"]["text/plain"] for m in of_type(session.run(USE), "execute_result")]
    session.run(PX_VARIABLES)
    px = px_values(session.run(PX_USE))
    reply, msgs, _ = session.kernel.execute(BAD, timeout=TIMEOUT)
    assert reply["status"] == "error" and reply["ename"] == "CompilationError", reply
    return plain, px, "\n".join(of_type(msgs, "error")[0]["content"]["traceback"])


def test_cells_with_many_items_and_variables_are_reused_whatever_order_evcxr_writes(home, tmp_path):
    home, _ = home
    first = Session(home, tmp_path / "run1")
    try:
        for cell in START:
            first.run(cell)
        plain, px, traceback = many_items_and_variables(first)
        assert plain == ["42"] and px == {0: "1234"}
        assert 'fn aab_wrong() -> u64 { "two" }' in traceback and "^" in traceback, traceback
    finally:
        first.shutdown()

    second = Session(home, tmp_path / "run2")
    try:
        for cell in START:
            second.run(cell)
        before = second.log().count(STORED)
        again = many_items_and_variables(second)
        assert again == (plain, px, traceback), "same values, and the error on the same line"
        log = second.log()
        assert log.count(STORED) == before, "every cell, the failing one too, came from the cache"
        assert log.count(HIT) >= 6, log
    finally:
        second.shutdown()


def cache_bytes(directory):
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def test_the_cache_honours_its_bound_and_survives_being_deleted(home, tmp_path):
    home, _ = home
    bound = 0.05 * 1024 * 1024  # about ten cells' objects and manifests
    k = Session(home, tmp_path / "run", RUSTPX_CELL_CACHE_MB="0.05")
    try:
        for n in range(24):
            assert stream_text(k.run(f'println!("cell {n}");')) == f"cell {n}\n"
            assert cache_bytes(cells_dir(home)) <= bound
        assert "older entries removed" in k.log()
        assert 0 < len(entries(home)) < 24

        shutil.rmtree(cells_dir(home))
        assert stream_text(k.run('println!("after the deletion");')) == "after the deletion\n"
        assert stat.S_IMODE(cells_dir(home).stat().st_mode) == 0o700
        entry = entry_holding(home, "after the deletion")
        assert stat.S_IMODE(entry.stat().st_mode) == 0o700
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in entry.iterdir())
    finally:
        k.shutdown()


def test_a_tampered_or_foreign_entry_is_refused_and_compiled_anew(home, tmp_path):
    home, _ = home
    cells = ['println!("tampered-one");', 'println!("foreign-two");', 'println!("open-three");']
    first = Session(home, tmp_path / "run1")
    try:
        for cell in cells:
            first.run(cell)
    finally:
        first.shutdown()

    # Same size, one byte changed: what a corrupted or replaced object looks like.
    tampered = entry_holding(home, "tampered-one") / "object"
    data = bytearray(tampered.read_bytes())
    data[-1] ^= 0xFF
    tampered.write_bytes(bytes(data))
    # Written by someone else: another owner (as root), else a file others could have written.
    foreign = entry_holding(home, "foreign-two") / "manifest.json"
    if os.geteuid() == 0:
        os.chown(foreign, 65534, 65534)
    else:
        os.chmod(foreign, 0o666)
    # An entry directory others may enter.
    os.chmod(entry_holding(home, "open-three"), 0o755)

    second = Session(home, tmp_path / "run2")
    try:
        for cell, text in zip(cells, ["tampered-one", "foreign-two", "open-three"]):
            compiled = second.log().count(STORED)
            assert stream_text(second.run(cell)) == text + "\n"
            assert second.log().count(STORED) > compiled, f"{text}: refused, so compiled by rustc"
        log = second.log()
        assert log.count(REFUSED) == 3, log
        assert "does not match the hash its entry recorded" in log
        assert "is not a regular file of this user closed to others" in log
        assert "is not a directory of this user closed to others" in log
        # Stored again, whole and private.
        for text in ["tampered-one", "foreign-two", "open-three"]:
            entry = entry_holding(home, text)
            assert stat.S_IMODE(entry.stat().st_mode) == 0o700
            assert all(f.stat().st_uid == os.geteuid() for f in entry.iterdir())
    finally:
        second.shutdown()
