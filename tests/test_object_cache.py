"""Issue 14, item 8: engines that fetch compiled cells keep them in a cache by SHA-256, and load
what is there. A file planted under the right name and size used to be loaded as it was; now the
content is hashed before use, and the cache is private (0700, files 0600)."""
import glob
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile

from conftest import Kernel, px_values


def toolchain_libstd():
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout.strip()
    found = glob.glob(os.path.join(sysroot, "lib", "rustlib", "*", "lib", "libstd-*.so"))
    assert len(found) == 1, found
    return found[0]


def run_one_fetching_engine(engine_args="", **kernel_options):
    """A kernel with one engine that fetches its objects into its cache runs `%px 6 * 7`."""
    k = Kernel(**kernel_options)
    try:
        reply, msgs, _ = k.execute(f"%engines start -n 1 --engine-arg --fetch-objects{engine_args}")
        assert reply["status"] == "ok", reply
        reply, msgs, _ = k.execute("%px 6 * 7")
        assert reply["status"] == "ok", (reply, msgs)
        assert px_values(msgs) == {0: "42"}, msgs
    finally:
        k.shutdown()


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

    run_one_fetching_engine(f" --engine-arg --cache-dir --engine-arg {cache}")
    assert hashlib.sha256(planted.read_bytes()).hexdigest() == digest, "the planted file is still there"
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(planted).st_mode) == 0o600


def test_without_home_the_cache_is_in_the_password_databases_home(tmp_path):
    """Item 9: a kernel started by a service without HOME (or XDG_CACHE_HOME) must not fall back
    to a fixed name under /tmp, where another user could have planted a directory first."""
    libstd = toolchain_libstd()
    digest = hashlib.sha256(open(libstd, "rb").read()).hexdigest()
    home = pwd.getpwuid(os.geteuid()).pw_dir
    kept = os.path.join(home, ".cache", "rustpx", "objects", digest, os.path.basename(libstd))
    old_fallback = os.path.join(tempfile.gettempdir(), "rustpx", "objects", digest)
    for stale in (kept, old_fallback):
        if os.path.isdir(stale):
            shutil.rmtree(stale)
        elif os.path.exists(stale):
            os.remove(stale)
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CACHE_HOME")}
    run_one_fetching_engine(env=env)
    assert os.path.isfile(kept), f"the engine did not keep libstd in {kept}"
    assert not os.path.exists(old_fallback), f"the engine used the shared name {old_fallback}"
