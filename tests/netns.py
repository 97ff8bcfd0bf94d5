""""Separate hosts" on one machine, for integration tests of engines that run on other hosts.

Why: rustpx starts engines on other machines (over ssh, with mpiexec, with srun). A test that
starts such an engine on the local machine proves little: the engine would still reach the
kernel over loopback, see the kernel's files, and find the Rust toolchain that the kernel's
machine has. Real multi-machine clusters are not available to the test suite, so this module
builds the next best thing out of Linux namespaces, as root, with nothing but iproute2,
util-linux and OpenSSH:

* every host is a **network namespace** (`ip netns`) joined to the root namespace by a veth pair.
  The host has its own address (`Host.address`, 10.231.K.2) and reaches the root namespace -- the
  machine the kernel runs on -- through the host-side end of the pair (`Host.gateway`,
  10.231.K.1), its default route. The root namespace reaches every host directly (connected
  /24s), so nothing outside the namespaces (no forwarding, no NAT, no firewall) is touched.
* `Host.cut()` takes the host-side veth down: packets stop in both directions, established TCP
  connections stall (they are not reset) and resume after `Host.restore()`, like a pulled cable.
  New connections during a cut fail after ARP gives up (about 3 s, "No route to host").
  `Host.throttle(rate)` slows the link each way instead (tc's tbf) until `Host.unthrottle()`.
* `Host.popen_isolated()` additionally runs the process in a private **mount namespace** in which
  the Rust toolchain and the kernel's files are hidden under empty tmpfs mounts ($HOME, which holds
  ~/.rustup, ~/.cargo, ~/.cache and the Jupyter runtime dir; /tmp; the directories of rustc,
  cargo and rustup, $RUSTUP_HOME, $CARGO_HOME, $CARGO_TARGET_DIR; this repository's checkout), with
  PATH set to exactly the host's own bin dir plus /usr/bin:/bin, and in its own **UTS namespace**
  whose hostname is the host's name. Binaries meant to run there are copied into the host's bin
  dir with `Host.install_binary()`, like deploying them to another machine.
* `Host.start_sshd()` runs Debian's sshd in that isolated view of the host, so ssh sessions (and
  what mpiexec or the kernel's ssh launcher start through them) see no toolchain either.

The veth pair is the only link of a host. Every host reaches every address of the root
namespace (engines dial the kernel there). Whether hosts reach each other depends on the root
namespace's net.ipv4.ip_forward, which this module leaves alone: tests must not rely on it.
`ip netns exec` bind-mounts /etc/netns/<name>/{hosts,resolv.conf}: the hosts resolve each other's
names and the root namespace's hostname (to their gateway), and other lookups fail at once
(the root namespace's DNS server is not reachable from a host, and would hang 5 s per lookup).

HOSTS_ROOT (/opt/rustpx-test-hosts) is visible from every host, like a shared file system: a
binary installed on one host has a path that works on all of them, which is what mpiexec needs
(it starts every rank by the same absolute path). Notes for mpiexec (MPICH's Hydra) across hosts:
`mpiexec -launcher ssh -launcher-exec WRAPPER -hosts A,B -wdir / ...` where WRAPPER execs ssh with
`ssh_options()`; -wdir must exist on the hosts (/tmp and this checkout are empty there); Hydra
passes the launching environment, PATH included, to the ranks.

Tests must fail, not skip, when this harness cannot work: `make_hosts()` calls
`require_root_and_netns()`, which raises RuntimeError saying what is missing and how to fix it.

    with make_hosts(2) as (a, b):
        engine = a.install_binary(ENGINE_BIN)
        p = a.popen_isolated([engine, "--id", "0"], env={"RUSTPX_ENGINE_CONNECTION": blob})
        a.cut(); ...; a.restore()

Run `python tests/netns_check.py --self-check` (as root) to check that the harness works here. It needs
the Debian packages iproute2, util-linux, openssh-server and openssh-client (tests/run.sh installs
them).

Known limits: the hosts share the root namespace's process table (so pids seen by the kernel are
real, killable pids), users and /proc (a root process inside could still read the toolchain
through /proc/<pid>/root of a process outside); /run and /dev are shared; only the directories
listed above are hidden.
"""

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

HOSTS_ROOT = "/opt/rustpx-test-hosts"
"""Per-host directories (`HOSTS_ROOT/<name>`: bin dir, sshd config, keys and log)."""

SUBNET_PREFIX = "10.231"
"""Host K gets 10.231.K.0/24: K.1 on the host-side veth (gateway), K.2 inside the namespace."""

ETC_NETNS = "/etc/netns"
"""`ip netns exec NAME` bind-mounts the files of ETC_NETNS/NAME over /etc: hosts, resolv.conf."""

SSHD = "/usr/sbin/sshd"
LOCK_FILE = "/run/lock/rustpx-test-hosts.lock"

_NAME_RE = re.compile(r"^rpx(\d+)(h\d+|p)$")  # hosts, and require_root_and_netns's probe
_TOOL_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# Directories that must stay visible (PATH, libraries): toolchain binaries found in one of these
# are masked file by file instead of hiding the directory.
_SYSTEM_DIRS = {"/", "/usr", "/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local",
                "/usr/local/bin", "/usr/local/sbin", "/usr/lib", "/lib", "/etc", "/opt"}
_TOOLCHAIN_BINARIES = ("rustc", "cargo", "rustup", "rustdoc", "rust-analyzer", "cargo-clippy",
                       "clippy-driver", "rustfmt", "cargo-fmt", "rust-gdb", "rust-lldb")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name):
    """Absolute path of a system tool, also when PATH (e.g. a venv's) lacks the sbin dirs."""
    path = os.environ.get("PATH", "") + ":" + ":".join(_TOOL_DIRS)
    found = shutil.which(name, path=path)
    if not found:
        package = {"ip": "iproute2", "tc": "iproute2", "sshd": "openssh-server"}.get(name, name)
        raise RuntimeError(f"`{name}` not found; install it (as root: apt-get install {package})")
    return found


def _run(argv, check=True, **kw):
    """subprocess.run with captured text output; on failure, raises with the command's stderr."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    r = subprocess.run(argv, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{shlex.join(map(str, argv))} failed ({r.returncode}): "
                           f"{(r.stderr or '').strip() or (r.stdout or '').strip()}")
    return r


def _ip(*args, check=True):
    return _run([_tool("ip"), *args], check=check)


def require_root_and_netns():
    """Raises RuntimeError (what is missing, how to fix it) unless this process can make hosts.

    Checks: running as root; `ip`, `unshare` and `mount` exist; a network namespace and a veth
    pair can be created; `unshare --mount --uts` works. Tests call this instead of skipping, so a
    machine that cannot run them fails loudly.
    """
    if os.geteuid() != 0:
        raise RuntimeError(
            "the multi-host tests need root (network and mount namespaces): run them as root, "
            "e.g. `sudo bash tests/run.sh`, or in a container started with --privileged "
            "(or --cap-add NET_ADMIN --cap-add SYS_ADMIN)")
    for name in ("ip", "unshare", "mount"):
        _tool(name)
    probe = f"rpx{os.getpid()}p"
    try:
        r = _ip("netns", "add", probe, check=False)
        if r.returncode != 0:
            raise RuntimeError(
                f"`ip netns add` does not work here ({r.stderr.strip()}); the multi-host tests "
                "need network namespaces: run as root on a kernel with CONFIG_NET_NS, in a "
                "container started with --privileged (or --cap-add NET_ADMIN --cap-add SYS_ADMIN "
                "and a writable /run)")
        r = _ip("link", "add", probe + "a", "type", "veth", "peer", "name", probe + "b",
                check=False)
        if r.returncode != 0:
            raise RuntimeError(
                f"cannot create a veth pair ({r.stderr.strip()}); load the veth module "
                "(`modprobe veth` on the machine that runs the container)")
        r = _run([_tool("unshare"), "--mount", "--uts", "--propagation", "private", "true"],
                 check=False)
        if r.returncode != 0:
            raise RuntimeError(
                f"`unshare --mount --uts` does not work here ({r.stderr.strip()}); the multi-host "
                "tests need mount namespaces: run as root, in a container with --privileged "
                "(or --cap-add SYS_ADMIN and no seccomp/AppArmor profile forbidding unshare)")
    finally:
        _ip("link", "del", probe + "a", check=False)
        _ip("netns", "del", probe, check=False)


def make_ssh_key(dir):
    """Makes a passphrase-less ed25519 key in `dir`; returns (private_key_path, public_key_text)."""
    os.makedirs(dir, exist_ok=True)
    key = os.path.join(dir, "id_ed25519")
    for path in (key, key + ".pub"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    _run([_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "rustpx-test", "-f", key])
    with open(key + ".pub") as f:
        return key, f.read().strip()


def ssh_options(private_key):
    """ssh client options for the hosts: this key only, no prompts, no known_hosts, 5 s connect."""
    return ["-i", str(private_key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=5"]


def _under(path, parent):
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def hidden_paths(extra=()):
    """(dirs, files) that `Host.popen_isolated` hides: dirs get an empty tmpfs, files /dev/null.

    Dirs: $HOME and /root, /tmp, this checkout, $RUSTUP_HOME, $CARGO_HOME, $CARGO_TARGET_DIR,
    ~/.rustup, ~/.cargo, the directories of rustc/cargo/rustup (and of what their symlinks point
    to), plus `extra`; nested entries are dropped (the outer tmpfs hides them). Toolchain binaries
    that live in system directories such as /usr/bin (Debian's rustc package) are masked one by one.
    """
    home = os.path.expanduser("~")
    candidates = [home, "/root", "/tmp", REPO_ROOT,
                  os.path.join(home, ".rustup"), os.path.join(home, ".cargo")]
    for var in ("RUSTUP_HOME", "CARGO_HOME", "CARGO_TARGET_DIR"):
        if os.environ.get(var):
            candidates.append(os.environ[var])
    files = []
    for name in ("rustc", "cargo", "rustup"):
        found = shutil.which(name)
        if not found:
            continue
        for path in (os.path.abspath(found), os.path.realpath(found)):
            d = os.path.dirname(path)
            if d in _SYSTEM_DIRS:
                files.extend(os.path.join(d, b) for b in _TOOLCHAIN_BINARIES)
            else:
                candidates.append(d)
    candidates.extend(extra)
    dirs = []
    for d in sorted({os.path.realpath(c) for c in candidates if c}, key=len):
        if os.path.isdir(d) and d not in _SYSTEM_DIRS and not any(_under(d, p) for p in dirs):
            dirs.append(d)
    files = sorted({f for f in files if os.path.lexists(f)})
    return dirs, files


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_netns_processes(name, grace=2.0):
    """SIGTERM, then SIGKILL, every process whose network namespace is `name`."""
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while time.monotonic() < deadline + 5:
        r = _ip("netns", "pids", name, check=False)
        pids = [int(p) for p in r.stdout.split()] if r.returncode == 0 else []
        pids = [p for p in pids if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(0.05)
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
    raise RuntimeError(f"processes in network namespace {name} survive SIGKILL")


def _remove_host_leftovers(name):
    """Kills the processes of host `name` and deletes its namespace, veth and directory."""
    errors = []
    netns = set(_ip("netns", "list", check=False).stdout.split())
    if name in netns:
        try:
            _kill_netns_processes(name)
        except RuntimeError as e:
            errors.append(str(e))
    links = _ip("-o", "link", "show", check=False).stdout
    if re.search(rf"^\d+: {re.escape(name)}a[@:]", links, re.M):
        r = _ip("link", "del", name + "a", check=False)
        if r.returncode != 0:
            errors.append(f"ip link del {name}a: {r.stderr.strip()}")
    if name in netns:
        r = _ip("netns", "del", name, check=False)
        if r.returncode != 0:
            errors.append(f"ip netns del {name}: {r.stderr.strip()}")
    for root in (HOSTS_ROOT, ETC_NETNS):
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        if os.path.isdir(os.path.join(root, name)):
            errors.append(f"cannot remove {os.path.join(root, name)}")
        with contextlib.suppress(OSError):
            os.rmdir(root)
    return errors


def cleanup_stale():
    """Removes hosts left by test runs that died (SIGKILL): names rpx<pid>h<i> of dead pids."""
    names = set(_ip("netns", "list", check=False).stdout.split())
    names |= {m.group(1) for m in re.finditer(r"^\d+: (rpx\d+(?:h\d+|p))a[@:]",
                                              _ip("-o", "link", "show", check=False).stdout, re.M)}
    for root in (HOSTS_ROOT, ETC_NETNS):
        if os.path.isdir(root):
            names |= set(os.listdir(root))
    for name in sorted(names):
        m = _NAME_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            _remove_host_leftovers(name)


def _used_octets():
    text = _ip("-4", "-o", "addr", "show", check=False).stdout
    text += _ip("-4", "route", "show", "table", "all", check=False).stdout
    return {int(m.group(1)) for m in re.finditer(re.escape(SUBNET_PREFIX) + r"\.(\d+)\.", text)}


class Host:
    """One simulated host: a network namespace with a veth link to the root namespace.

    Attributes: `name` (namespace name, rpx<pid>h<i>), `address` (its IPv4), `gateway` (the
    root namespace's address on its link: what processes on the host dial to reach the kernel),
    `veth` (host-side interface in the root namespace), `dir` (HOSTS_ROOT/name), `bin_dir`
    (dir/bin: the host's "installed software", first on PATH of isolated processes).
    Create hosts with `make_hosts()`.
    """

    def __init__(self, name, octet, hidden_extra=()):
        self.name = name
        self.address = f"{SUBNET_PREFIX}.{octet}.2"
        self.gateway = f"{SUBNET_PREFIX}.{octet}.1"
        self.veth = name + "a"
        self.dir = os.path.join(HOSTS_ROOT, name)
        self.bin_dir = os.path.join(self.dir, "bin")
        self.etc_dir = os.path.join(ETC_NETNS, name)
        self.hidden_dirs, self.hidden_files = hidden_paths(hidden_extra)
        self._procs = []

    def __repr__(self):
        return f"Host({self.name!r}, address={self.address!r}, gateway={self.gateway!r})"

    def _create(self):
        peer = self.name + "b"
        os.makedirs(self.bin_dir, mode=0o755, exist_ok=True)
        _ip("netns", "add", self.name)
        _ip("link", "add", self.veth, "type", "veth", "peer", "name", peer, "netns", self.name)
        _ip("addr", "add", self.gateway + "/24", "dev", self.veth)
        _ip("link", "set", self.veth, "up")
        _ip("-n", self.name, "link", "set", "lo", "up")
        _ip("-n", self.name, "addr", "add", self.address + "/24", "dev", peer)
        _ip("-n", self.name, "link", "set", peer, "up")
        _ip("-n", self.name, "route", "add", "default", "via", self.gateway)

    def _write_etc(self, hosts):
        """/etc/netns/<name>/{hosts,resolv.conf}, which `ip netns exec` bind-mounts over /etc.

        hosts: every host by name, and the root namespace's hostname (the kernel's machine) at
        this host's gateway, so a callback address such as mpiexec's resolves to something
        reachable. resolv.conf: the root namespace's DNS server is not reachable from a host, so
        other lookups fail at once (127.0.0.1, nothing listens) instead of hanging 5 s per try.
        """
        os.makedirs(self.etc_dir, exist_ok=True)
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        lines += [f"{h.address} {h.name}" for h in hosts]
        lines.append(f"{self.gateway} {socket.gethostname()}")
        with open(os.path.join(self.etc_dir, "hosts"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(self.etc_dir, "resolv.conf"), "w") as f:
            f.write("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")

    # -- the link ------------------------------------------------------------------------------

    def cut(self):
        """Takes the link down: traffic to and from the host stops, open TCP connections stall."""
        _ip("link", "set", self.veth, "down")

    def restore(self):
        """Brings the link back up after `cut()`; stalled connections resume on their next retry."""
        _ip("link", "set", self.veth, "up")

    def throttle(self, rate="1mbit"):
        """Limits the link to `rate` each way: a tbf qdisc on both ends of the veth pair, since
        shaping applies only to what a device sends (the root side's end carries what goes to the
        host, the host's end what comes from it). `unthrottle()` removes them."""
        for where, dev in self._link_ends():
            _run([_tool("tc"), *where, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
                  "burst", "16kb", "latency", "500ms"])

    def unthrottle(self):
        """Removes `throttle()`'s limits (nothing to do if there were none)."""
        for where, dev in self._link_ends():
            _run([_tool("tc"), *where, "qdisc", "del", "dev", dev, "root"], check=False)

    def _link_ends(self):
        return [((), self.veth), (("-n", self.name), self.name + "b")]

    # -- processes -----------------------------------------------------------------------------

    def _netns_argv(self, argv):
        return [_tool("ip"), "netns", "exec", self.name, *map(str, argv)]

    def run(self, argv, **kw):
        """subprocess.run(argv) inside the network namespace (root's file system and toolchain)."""
        return subprocess.run(self._netns_argv(argv), **kw)

    def popen(self, argv, env=None, **kw):
        """subprocess.Popen(argv) inside the network namespace; killed when the hosts go away.

        `ip netns exec` execs, so the Popen's pid is the process's pid.
        """
        p = subprocess.Popen(self._netns_argv(argv), env=env, **kw)
        self._procs.append(p)
        return p

    def _isolated_argv(self, argv):
        """The argv that runs `argv` in the namespace, a private mount namespace with hidden dirs,
        and a UTS namespace named after the host."""
        q = shlex.quote
        script = ["set -e"]
        for d in self.hidden_dirs:
            mode = "1777" if d == "/tmp" else "0700" if d == "/root" else "0755"
            script.append(f"/bin/mount -t tmpfs -o mode={mode},size=256m rustpx-hidden {q(d)}")
        for f in self.hidden_files:
            script.append(f"/bin/mount --bind /dev/null {q(f)}")
        script.append(f"echo {q(self.name)} > /proc/sys/kernel/hostname")
        script.append("cd /")
        script.append('exec "$@"')
        return self._netns_argv([_tool("unshare"), "--mount", "--uts", "--propagation", "private",
                                 "--", "/bin/sh", "-c", "\n".join(script), "sh", *argv])

    def isolated_env(self, bin_dir=None, env=None):
        """The environment of isolated processes: PATH=bin_dir:/usr/bin:/bin, HOME=/root, + env."""
        out = {"PATH": f"{bin_dir or self.bin_dir}:/usr/bin:/bin", "HOME": "/root",
               "USER": "root", "LOGNAME": "root", "LANG": "C.UTF-8"}
        out.update({k: str(v) for k, v in (env or {}).items()
                    if k not in ("PATH", "HOME")})
        return out

    def _check_bin_dir(self, bin_dir):
        real = os.path.realpath(bin_dir)
        for d in self.hidden_dirs:
            if _under(real, d):
                raise ValueError(f"bin_dir {bin_dir} is under {d}, which isolated processes "
                                 "cannot see; use host.install_binary() (copies to "
                                 f"{self.bin_dir})")

    def popen_isolated(self, argv, bin_dir=None, env=None, **kw):
        """Popen(argv) on the host as another machine would run it: network namespace, private
        mount namespace where $HOME (/root), /tmp, the toolchain and this checkout are empty
        tmpfs, own hostname (the host's name), cwd /, environment exactly
        `isolated_env(bin_dir, env)` (PATH=bin_dir:/usr/bin:/bin, HOME=/root, plus `env`, e.g.
        RUSTPX_ENGINE_CONNECTION). `bin_dir` defaults to `self.bin_dir`. The Popen's pid is the
        process's pid. Killed when the hosts go away.
        """
        bin_dir = bin_dir or self.bin_dir
        self._check_bin_dir(bin_dir)
        kw.setdefault("cwd", "/")
        p = subprocess.Popen(self._isolated_argv(argv),
                             env=self.isolated_env(bin_dir, env), **kw)
        self._procs.append(p)
        return p

    def run_isolated(self, argv, bin_dir=None, env=None, timeout=60, **kw):
        """Like `popen_isolated`, waits; returns subprocess.CompletedProcess (text, captured)."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        p = self.popen_isolated(argv, bin_dir, env, **kw)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    def install_binary(self, path, name=None):
        """Copies the file `path` into this host's bin dir (mode 0755); returns the new path."""
        dest = os.path.join(self.bin_dir, name or os.path.basename(path))
        shutil.copyfile(path, dest + ".part")
        os.chmod(dest + ".part", 0o755)
        os.replace(dest + ".part", dest)
        return dest

    # -- sshd ----------------------------------------------------------------------------------

    def start_sshd(self, authorized_pubkey, timeout=15):
        """Starts Debian's sshd on `address`:22 in the isolated view of the host (sessions see no
        toolchain; their PATH is bin_dir:/usr/bin:/bin), accepting root logins with the given
        public key only. Its log (sshd -e) goes to `dir/sshd.log`. Returns the sshd Popen once
        the port accepts connections."""
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} not found: apt-get install openssh-server")
        host_key = os.path.join(self.dir, "ssh_host_ed25519_key")
        if not os.path.exists(host_key):
            _run([_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", self.name,
                  "-f", host_key])
        authorized = os.path.join(self.dir, "authorized_keys")
        with open(authorized, "a") as f:
            f.write(authorized_pubkey.strip() + "\n")
        os.chmod(authorized, 0o600)
        config = os.path.join(self.dir, "sshd_config")
        with open(config, "w") as f:
            f.write("\n".join([
                f"ListenAddress {self.address}:22",
                f"HostKey {host_key}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                f"AuthorizedKeysFile {authorized}",
                "StrictModes no",
                "UsePAM no",
                "UseDNS no",
                "PidFile none",
                "PrintMotd no",
                "PrintLastLog no",
                "X11Forwarding no",
                "MaxStartups 100:30:200",
                "MaxSessions 100",
                "Subsystem sftp internal-sftp",
                f"SetEnv PATH={self.bin_dir}:/usr/bin:/bin",
                "",
            ]))
        # The privilege separation directory: Debian's init script or systemd unit creates it.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        log = open(os.path.join(self.dir, "sshd.log"), "ab")
        try:
            p = self.popen_isolated([SSHD, "-D", "-e", "-f", config], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if p.poll() is not None:
                raise RuntimeError(f"sshd on {self.name} exited ({p.returncode}): "
                                   f"{self.sshd_log()}")
            try:
                socket.create_connection((self.address, 22), timeout=1).close()
                return p
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshd on {self.name} does not accept connections on "
                                       f"{self.address}:22 after {timeout}s: {self.sshd_log()}")
                time.sleep(0.05)

    def sshd_log(self):
        """The text of sshd's log so far (for failure messages)."""
        try:
            with open(os.path.join(self.dir, "sshd.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # -- teardown ------------------------------------------------------------------------------

    def _destroy(self):
        errors = []
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
        deadline = time.monotonic() + 2
        for p in self._procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        errors += _remove_host_leftovers(self.name)
        return errors


@contextlib.contextmanager
def make_hosts(k, hidden_extra=()):
    """Creates k hosts (named rpx<pid>h0 .. rpx<pid>h<k-1>, each on its own 10.231.N.0/24) and
    yields the list; on exit kills every process in their namespaces and deletes the namespaces,
    the veths and HOSTS_ROOT/<name>, also when the body raises. `hidden_extra`: more directories
    that isolated processes must not see. Also removes hosts left by dead runs first."""
    require_root_and_netns()
    cleanup_stale()
    pid = os.getpid()
    hosts = []
    try:
        # Concurrent runs: pick free subnets and configure them under one lock.
        with open(LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = _used_octets()
            for i in range(k):
                octet = next((o for o in ((pid % 200 + i + n) % 254 + 1 for n in range(254))
                              if o not in used), None)
                if octet is None:
                    raise RuntimeError(f"no free {SUBNET_PREFIX}.N.0/24 subnet left")
                used.add(octet)
                host = Host(f"rpx{pid}h{i}", octet, hidden_extra)
                hosts.append(host)
                host._create()
        for host in hosts:
            host._write_etc(hosts)
        yield hosts
    except BaseException:
        errors = [e for h in hosts for e in h._destroy()]
        if errors:
            print("netns cleanup problems: " + "; ".join(errors), file=sys.stderr)
        raise
    else:
        errors = [e for h in hosts for e in h._destroy()]
        if errors:
            raise RuntimeError("netns cleanup failed: " + "; ".join(errors))
