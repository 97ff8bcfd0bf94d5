"""Issue 14, item 8: engines that fetch compiled cells keep them in a cache by SHA-256, and load
what is there. A file planted under the right name and size used to be loaded as it was; now the
content is hashed before use, and the cache is private (0700, files 0600)."""
import glob
import hashlib
import os
import stat
import subprocess

from conftest import Kernel, px_values


def toolchain_libstd():
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout.strip()
    found = glob.glob(os.path.join(sysroot, "lib", "rustlib", "*", "lib", "libstd-*.so"))
    assert len(found) == 1, found
    return found[0]


def test_a_planted_library_is_fetched_again_not_loaded(tmp_path):
    libstd = toolchain_libstd()
    real = open(libstd, "rb").read()
    digest = hashlib.sha256(real).hexdigest()
    cache = tmp_path / "objects"
    planted = cache / digest / os.path.basename(libstd)
    planted.parent.mkdir(parents=True)
    # The right name and size; not the right content (an attacker's library would go here).
    planted.write_bytes(b"\0" * len(real))
    os.chmod(cache, 0o755)
    os.chmod(planted, 0o644)

    k = Kernel()
    try:
        reply, msgs, _ = k.execute(
            f"%engines start -n 1 --engine-arg --fetch-objects --engine-arg --cache-dir --engine-arg {cache}")
        assert reply["status"] == "ok", reply
        reply, msgs, _ = k.execute("%px 6 * 7")
        assert reply["status"] == "ok", (reply, msgs)
        assert px_values(msgs) == {0: "42"}, msgs
    finally:
        k.shutdown()
    assert hashlib.sha256(planted.read_bytes()).hexdigest() == digest, "the planted file is still there"
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(planted).st_mode) == 0o600
