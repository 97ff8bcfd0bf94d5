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

import pytest

from conftest import Kernel, px_values


def toolchain_libstd():
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout.strip()
    found = glob.glob(os.path.join(sysroot, "lib", "rustlib", "*", "lib", "libstd-*.so"))
    assert len(found) == 1, found
    return found[0]


def px_on_one_fetching_engine(start_args="", **kernel_options):
    """A kernel starts one engine that fetches its objects into its cache (`start_args` go to
    `%engines start`) and runs `%px 6 * 7`: its reply and messages."""
    k = Kernel(**kernel_options)
    try:
        reply, msgs, _ = k.execute(f"%engines start -n 1 --engine-arg --fetch-objects{start_args}")
        assert reply["status"] == "ok", reply
        reply, msgs, _ = k.execute("%px 6 * 7")
        return reply, msgs
    finally:
        k.shutdown()


def run_one_fetching_engine(engine_args="", **kernel_options):
    """A kernel with one engine that fetches its objects into its cache runs `%px 6 * 7`."""
    reply, msgs = px_on_one_fetching_engine(engine_args, **kernel_options)
    assert reply["status"] == "ok", (reply, msgs)
    assert px_values(msgs) == {0: "42"}, msgs


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


# A uid that has no entry in the password database: no HOME, no home directory to find.
NO_PASSWD_UID = 54321


def engine_without_a_home(tmp_dir):
    """An `--engine` for `%engines start` that runs this build's engine as a uid with no passwd
    entry and no HOME or XDG_CACHE_HOME, from a copy that uid can execute."""
    assert os.getuid() == 0, "this test becomes another user; run it as root (CI does)"
    with pytest.raises(KeyError):
        pwd.getpwuid(NO_PASSWD_UID)
    os.makedirs(tmp_dir, exist_ok=True)
    os.chmod(tmp_dir, 0o755)
    engine = os.path.join(tmp_dir, "rustpx-engine")
    shutil.copy(os.environ["RUSTPX_ENGINE_BIN"], engine)
    os.chmod(engine, 0o755)
    wrapper = os.path.join(tmp_dir, "as-another-user.sh")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nexec setpriv --reuid={NO_PASSWD_UID} --regid={NO_PASSWD_UID} --clear-groups "
                f"env -u HOME -u XDG_CACHE_HOME {engine} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    return wrapper


def fallback_cache():
    return os.path.join(tempfile.gettempdir(), f"rustpx-objects-{NO_PASSWD_UID}")


def test_without_any_home_the_cache_is_private_to_the_engines_uid():
    cache = fallback_cache()
    shutil.rmtree(cache, ignore_errors=True)
    wrapper = engine_without_a_home(tempfile.mkdtemp(prefix="rustpx-nohome-"))
    try:
        reply, msgs = px_on_one_fetching_engine(f" --engine {wrapper}")
        assert reply["status"] == "ok", (reply, msgs)
        assert px_values(msgs) == {0: "42"}, msgs
        info = os.stat(cache)
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (NO_PASSWD_UID, 0o700)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(os.path.dirname(wrapper), ignore_errors=True)


def test_a_fallback_cache_made_first_by_another_user_is_refused():
    """Another user (root here) makes the engine's fallback name first, writable by all: the
    engine must not write or load objects there, and says which directory and what to do."""
    cache = fallback_cache()
    shutil.rmtree(cache, ignore_errors=True)
    os.mkdir(cache)
    os.chmod(cache, 0o777)
    wrapper = engine_without_a_home(tempfile.mkdtemp(prefix="rustpx-nohome-"))
    try:
        reply, msgs = px_on_one_fetching_engine(f" --engine {wrapper}")
        assert reply["status"] == "error", reply
        text = "".join(m["content"]["text"] for m in msgs if m["msg_type"] == "stream")
        assert f"{cache} is not a directory of this user; choose another cache with --cache-dir" in text, text
        assert os.listdir(cache) == []
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(os.path.dirname(wrapper), ignore_errors=True)
