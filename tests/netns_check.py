"""Checks that the multi-host test harness (tests/netns.py) works on this machine.

Run `python tests/netns_check.py --self-check` (as root): it creates two hosts and checks what
the multi-host tests rely on (addresses and routes, the hidden toolchain, sshd, cut links,
clean-up). Kept apart from netns.py, which the tests import, so that module stays small.
"""
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time

from netns import (
    ETC_NETNS,
    HOSTS_ROOT,
    REPO_ROOT,
    _ip,
    _pid_alive,
    _run,
    _tool,
    make_hosts,
    make_ssh_key,
    require_root_and_netns,
    ssh_options,
)


# -- the checks --------------------------------------------------------------------------------


class _Server:
    """A TCP server in the root namespace that records the first line of every connection."""

    def __init__(self, address):
        import threading

        self.sock = socket.create_server((address, 0))
        self.port = self.sock.getsockname()[1]
        self.lines = []
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        f = conn.makefile("r")
        line = f.readline().strip()
        with self.lock:
            self.lines.append(line)

    def wait_line(self, line, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if line in self.lines:
                    return True
            time.sleep(0.02)
        return False


def _readline(stream, timeout):
    import select

    r, _, _ = select.select([stream], [], [], timeout)
    return stream.readline().strip() if r else None


def self_check():
    """Creates 2 hosts and checks what the tests rely on; returns the number of failures."""
    import tempfile

    failures = []
    started = time.monotonic()

    def check(ok, what, detail=""):
        print(f"{time.monotonic() - started:5.1f}s {'ok  ' if ok else 'FAIL'} {what}"
              + (f": {detail}" if detail and not ok else ""), flush=True)
        if not ok:
            failures.append(what)
        return ok

    require_root_and_netns()
    check(True, "root, ip netns, veth and unshare --mount --uts work")
    with make_hosts(2) as (h1, h2):
        names = (h1.name, h2.name)
        print(f"     hosts: {h1}, {h2}")
        print(f"     hidden in isolated processes: {h1.hidden_dirs + h1.hidden_files}")
        server = _Server(h1.gateway)
        dial = f"exec 3<>/dev/tcp/{h1.gateway}/{server.port} && echo \"$1\" >&3"
        for host in (h1, h2):
            r = host.run_isolated(["bash", "-c", dial, "bash", f"hello-from-{host.name}"],
                                  timeout=15)
            check(r.returncode == 0 and server.wait_line(f"hello-from-{host.name}"),
                  f"{host.name} ({host.address}) reaches a root-namespace server on "
                  f"{h1.gateway}:{server.port}", r.stderr)
        r = h1.run(["bash", "-c", dial, "bash", "plain-netns"], capture_output=True, text=True)
        check(r.returncode == 0 and server.wait_line("plain-netns"),
              "Host.run (network namespace only) reaches it too", r.stderr)

        probe = ("command -v rustc cargo rustup; test -e /root/.rustup && echo HAS_RUSTUP; "
                 "test -e /root/.cargo && echo HAS_CARGO; "
                 f"test -e {shlex.quote(os.path.join(REPO_ROOT, 'Cargo.toml'))} && echo HAS_REPO; "
                 "ls -A /tmp; true")
        r = h1.run_isolated(["bash", "-c", probe])
        check(r.returncode == 0 and r.stdout.strip() == "",
              "isolated process: no rustc/cargo/rustup on PATH, /root/.rustup, /root/.cargo and "
              "the checkout absent, /tmp empty", r.stdout + r.stderr)
        r = h1.run_isolated(["bash", "-c", "command -v rustc"])
        check(r.returncode != 0, "`command -v rustc` fails in an isolated process",
              r.stdout)
        show = 'echo "$PATH|$HOME|$(hostname)|$RUSTPX_ENGINE_CONNECTION|$(pwd)"'
        r = h1.run_isolated(["bash", "-c", show], env={"RUSTPX_ENGINE_CONNECTION": '{"k": "v w"}'})
        want = f'{h1.bin_dir}:/usr/bin:/bin|/root|{h1.name}|{{"k": "v w"}}|/'
        check(r.stdout.strip() == want, "isolated env: PATH, HOME, hostname, passed env, cwd",
              f"{r.stdout.strip()!r} != {want!r}")
        installed = h1.install_binary(shutil.which("true"), "rustpx-selfcheck-true")
        r = h1.run_isolated(["rustpx-selfcheck-true"])
        check(r.returncode == 0 and os.stat(installed).st_mode & 0o777 == 0o755,
              "install_binary: mode 0755, found by name on the isolated PATH", r.stderr)
        p = h1.popen_isolated(["bash", "-c", "echo $$; exec sleep 30"], stdout=subprocess.PIPE,
                              text=True)
        got = _readline(p.stdout, 10)
        check(got == str(p.pid), "Popen.pid is the isolated process's own pid",
              f"{got} != {p.pid}")
        p.kill()
        p.wait()
        r = h1.run_isolated(["getent", "hosts", socket.gethostname(), h2.name])
        check(r.returncode == 0 and h1.gateway in r.stdout and h2.address in r.stdout,
              "/etc/hosts on a host: root hostname -> gateway, other hosts by name", r.stdout)
        t = time.monotonic()
        r = h1.run(["getent", "hosts", "no-such-name.example"], capture_output=True)
        check(r.returncode != 0 and time.monotonic() - t < 3,
              f"unknown names fail fast, no DNS timeout ({time.monotonic() - t:.2f}s)")

        # Cut and restore, with a connection established before the cut.
        cut_server = socket.create_server((h1.gateway, 0))
        port = cut_server.getsockname()[1]
        reader = h1.popen_isolated(
            ["bash", "-c", f"exec 3<>/dev/tcp/{h1.gateway}/{port}; echo connected; "
                           "while read -r l <&3; do echo \"got $l\"; done; echo eof"],
            stdout=subprocess.PIPE, text=True)
        check(_readline(reader.stdout, 10) == "connected", "connection from host 1 established")
        conn, _ = cut_server.accept()
        conn.sendall(b"before\n")
        check(_readline(reader.stdout, 5) == "got before", "data flows before the cut")
        h1.cut()
        t_cut = time.monotonic()
        conn.sendall(b"during\n")
        got = _readline(reader.stdout, 2)
        check(got is None, "cut(): data sent on the open connection does not arrive", got)
        r = h1.run_isolated(["timeout", "4", "bash", "-c",
                             f"exec 3<>/dev/tcp/{h1.gateway}/{port}"], timeout=15)
        check(r.returncode != 0, "cut(): a new connection from the host fails",
              "it connected")
        check(reader.poll() is None, "cut(): the open connection is not reset (stalls)")
        h1.restore()
        got = _readline(reader.stdout, 20)
        check(got == "got during",
              f"restore(): the stalled data arrives ({time.monotonic() - t_cut:.1f}s after the "
              "cut)", got)
        r = h1.run_isolated(["timeout", "5", "bash", "-c",
                             f"exec 3<>/dev/tcp/{h1.gateway}/{port}"], timeout=15)
        check(r.returncode == 0, "restore(): new connections work again", r.stderr)
        conn.close()
        reader.kill()
        reader.wait()
        cut_server.close()

        # ssh into host 1.
        with tempfile.TemporaryDirectory(prefix="rustpx-netns-") as tmp:
            key, pub = make_ssh_key(tmp)
            t = time.monotonic()
            h1.start_sshd(pub)
            print(f"     sshd on {h1.address}:22 accepting after {time.monotonic() - t:.2f}s")
            ssh = [_tool("ssh"), *ssh_options(key), f"root@{h1.address}"]
            r = _run([*ssh, "true"], check=False, timeout=30)
            check(r.returncode == 0, "ssh root@host1 true", r.stderr + h1.sshd_log())
            r = _run([*ssh, "command -v rustc"], check=False, timeout=30)
            check(r.returncode == 1 and r.stdout == "", "`command -v rustc` fails over ssh",
                  r.stdout + r.stderr)
            r = _run([*ssh, 'echo "$PATH|$HOME|$(hostname)"; ls -A /root /tmp; '
                            'test -e /root/.rustup && echo HAS_RUSTUP; true'],
                     check=False, timeout=30)
            want = f"{h1.bin_dir}:/usr/bin:/bin|/root|{h1.name}"
            check(r.returncode == 0 and r.stdout.split("\n")[0] == want
                  and "HAS_RUSTUP" not in r.stdout and ".cargo" not in r.stdout,
                  "ssh session: PATH, HOME, hostname, empty /root and /tmp",
                  repr(r.stdout + r.stderr))
            bad = _run([_tool("ssh"), *ssh_options(os.devnull), "-o", "IdentitiesOnly=yes",
                        f"root@{h1.address}", "true"], check=False, timeout=30)
            check(bad.returncode == 255, "ssh without the key is refused", bad.stderr)
        procs = _ip("netns", "pids", h1.name).stdout.split()
        check(len(procs) >= 1, "sshd runs in host 1's namespace", procs)

    def leftovers():
        found = [n for n in _ip("netns", "list").stdout.split() if n in names]
        found += [line for line in _ip("-o", "link", "show").stdout.splitlines()
                  if any(n in line for n in names)]
        found += [os.path.join(r, n) for n in names for r in (HOSTS_ROOT, ETC_NETNS)
                  if os.path.exists(os.path.join(r, n))]
        return found

    check(leftovers() == [], "make_hosts cleaned up: no namespaces, veths or dirs left",
          leftovers())
    check(not any(_pid_alive(int(p)) for p in procs), "processes in the namespaces killed", procs)

    class Boom(Exception):
        pass

    sleeper = None
    try:
        with make_hosts(1) as (h,):
            names = (h.name,)
            sleeper = h.popen_isolated(["sleep", "600"])
            h.run(["sleep", "0"])
            raise Boom()
    except Boom:
        pass
    check(leftovers() == [] and sleeper.poll() is not None,
          "make_hosts cleans up when the body raises", leftovers())

    print(f"{'self check passed' if not failures else f'{len(failures)} check(s) FAILED'} "
          f"in {time.monotonic() - started:.1f}s")
    return len(failures)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--self-check", action="store_true",
                        help="create 2 hosts and check what the multi-host tests rely on")
    args = parser.parse_args()
    if not args.self_check:
        parser.print_help()
        sys.exit(2)
    sys.exit(1 if self_check() else 0)
