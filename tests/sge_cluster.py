"""A throwaway single-node Grid Engine for integration tests, started without an init system.

Why: rustpx submits engines with `qsub`. The test machine has no cluster, so this module runs a
real one -- Debian's sge_qmaster and sge_execd (packages gridengine-master, gridengine-exec,
gridengine-client; Son of Grid Engine 8.1.9) -- in a cell of its own:

    with single_node_sge() as env:
        subprocess.run(["qsub", "-b", "y", "/bin/true"], env=env, check=True)

`env` is a full environment for clients (qsub, qstat, qdel, qconf, or a kernel that runs them):
SGE_ROOT, SGE_CELL and the cell's ports, and the tools' directory on PATH.

How (as root, nothing in the system's default cell is touched):
* a new cell `rpxNNNN` under SGE_ROOT=/var/lib/gridengine (Grid Engine finds a cell only there),
  a symlink to a temporary directory that holds everything: bootstrap, spool (Berkeley DB, made
  with the same `spoolinit`/`spooldefaults` steps as Debian's init_cluster), execd spool, logs;
* the global configuration allows root's jobs (min_uid 0) and mails nobody;
* free ports in $SGE_QMASTER_PORT / $SGE_EXECD_PORT, so a system Grid Engine (6444/6445) or
  another test cell can coexist;
* host names: a container's hostname usually resolves to 127.0.0.1, whose reverse name is
  `localhost`; Grid Engine refuses a client whose resolved name differs from the name it gives,
  so the cell's `host_aliases` makes `localhost` an alias of this host's name;
* a queue `rustpx.q` on this host with 8 slots and no load thresholds (a busy 2-core machine
  must not put it in alarm state), and a scheduler that runs every second.

Shutdown deletes the jobs, stops both daemons (qconf -ke / -km, then SIGKILL by pid), and
removes the cell and its directory.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SGE_ROOT = "/var/lib/gridengine"
_BIN = "/usr/lib/gridengine"
QUEUE = "rustpx.q"


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name):
    path = os.path.join(_BIN, name)
    if not os.path.exists(path):
        raise RuntimeError(f"{path} not found: install Debian's Grid Engine, as root: "
                           "apt-get install -y gridengine-master gridengine-exec gridengine-client")
    return path


class _Cell:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="rustpx-sge-")
        os.chmod(self.dir, 0o755)
        self.cell = "rpx" + os.path.basename(self.dir).rsplit("-", 1)[-1]
        self.link = os.path.join(SGE_ROOT, self.cell)
        self.host = socket.gethostname()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SGE_")}
        self.env.update(SGE_ROOT=SGE_ROOT, SGE_CELL=self.cell,
                        SGE_QMASTER_PORT=str(_free_port()), SGE_EXECD_PORT=str(_free_port()))
        self.env["PATH"] = _BIN + ":" + self.env.get("PATH", "")

    def _run(self, *argv, check=True):
        r = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60,
                           cwd=self.dir)
        if check and r.returncode != 0:
            raise self._failure(f"`{' '.join(argv)}` failed ({r.returncode}): "
                                f"{(r.stderr or r.stdout).strip()}")
        return r

    def _write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def _failure(self, what):
        logs = []
        for log in ("qmaster/messages", f"execd/{self.host}/messages", "execd/localhost/messages"):
            path = os.path.join(self.dir, log)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    logs.append(f"--- {path}:\n" + "".join(f.readlines()[-15:]))
        return RuntimeError("\n".join([f"single-node Grid Engine in {self.dir}: {what}"] + logs))

    def start(self, timeout):
        if os.geteuid() != 0:
            raise RuntimeError("the Grid Engine test cell needs root: run the tests as root")
        _tool("sge_qmaster")
        for d in ("common", "spooldb", "qmaster", "execd"):
            os.makedirs(os.path.join(self.dir, d))
        os.symlink(self.dir, self.link)
        self._write("common/bootstrap", f"""\
Version: 6.2
admin_user              root
default_domain          none
ignore_fqdn             true
spooling_method         berkeleydb
spooling_lib            libspoolb
spooling_params         {self.dir}/spooldb
binary_path             /usr/sbin
qmaster_spool_dir       {self.dir}/qmaster
security_mode           none
listener_threads        2
worker_threads          2
scheduler_threads       1
""")
        self._write("common/act_qmaster", self.host + "\n")
        self._write("common/host_aliases", f"{self.host} localhost\n")
        with open("/usr/share/gridengine/default-configuration") as f:
            conf = f.read().splitlines()
        overrides = {"execd_spool_dir": f"{self.dir}/execd", "min_uid": "0", "min_gid": "0",
                     "mailer": "/bin/true", "load_report_time": "00:00:05"}
        conf = [f"{line.split()[0]:<22} {overrides[line.split()[0]]}"
                if line.split() and line.split()[0] in overrides else line for line in conf]
        conf_file = self._write("configuration", "\n".join(conf) + "\n")
        self._run(_tool("spoolinit"), "berkeleydb", "libspoolb", f"{self.dir}/spooldb", "init")
        self._run(_tool("spooldefaults"), "configuration", conf_file)
        self._run(_tool("spooldefaults"), "complexes", "/usr/share/gridengine/util/resources/centry")
        self._run(_tool("spooldefaults"), "usersets", "/usr/share/gridengine/util/resources/usersets")
        self._run(_tool("spooldefaults"), "managers", "root")
        self._run(_tool("sge_qmaster"))  # daemonizes once it listens
        self._wait(lambda: self._run(_tool("qconf"), "-sh", check=False).returncode == 0,
                   timeout, "qmaster did not answer qconf")
        self._write("exechost", f"hostname {self.host}\nload_scaling NONE\ncomplex_values NONE\n"
                    "user_lists NONE\nxuser_lists NONE\nprojects NONE\nxprojects NONE\n"
                    "usage_scaling NONE\nreport_variables NONE\n")
        self._run(_tool("qconf"), "-Ae", f"{self.dir}/exechost")
        self._run(_tool("qconf"), "-as", self.host)
        sconf = self._run(_tool("qconf"), "-ssconf").stdout.splitlines()
        fast = {"schedule_interval": "0:0:1", "flush_submit_sec": "1", "flush_finish_sec": "1",
                "job_load_adjustments": "NONE"}
        sconf = [f"{line.split()[0]} {fast[line.split()[0]]}"
                 if line.split() and line.split()[0] in fast else line for line in sconf]
        self._run(_tool("qconf"), "-Msconf", self._write("sconf", "\n".join(sconf) + "\n"))
        queue = self._run(_tool("qconf"), "-sq").stdout.splitlines()
        settings = {"qname": QUEUE, "hostlist": self.host, "load_thresholds": "NONE",
                    "slots": "8", "pe_list": "NONE"}
        queue = [f"{line.split()[0]} {settings[line.split()[0]]}"
                 if line.split() and line.split()[0] in settings else line for line in queue]
        self._run(_tool("qconf"), "-Aq", self._write("queue", "\n".join(queue) + "\n"))
        self._run(_tool("sge_execd"))

        def queue_up():
            r = self._run(_tool("qstat"), "-f", "-q", QUEUE, check=False)
            lines = [ln for ln in r.stdout.splitlines() if ln.startswith(QUEUE + "@")]
            # A queue instance with a state column (au: alarm/unknown) cannot run jobs yet.
            return len(lines) == 1 and len(lines[0].split()) == 5 and "-NA-" not in lines[0]

        self._wait(queue_up, timeout, "the queue instance did not come up")

    def _wait(self, ready, timeout, what):
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise self._failure(what)
            time.sleep(0.3)

    def _pids(self):
        found = []
        for pidfile in ("qmaster/qmaster.pid", f"execd/{self.host}/execd.pid",
                        "execd/localhost/execd.pid"):
            with contextlib.suppress(OSError, ValueError):
                with open(os.path.join(self.dir, pidfile)) as f:
                    found.append(int(f.read().strip()))
        return found

    def stop(self):
        pids = self._pids()
        with contextlib.suppress(Exception):
            self._run(_tool("qdel"), "-u", "root", check=False)
            self._run(_tool("qconf"), "-ke", self.host, check=False)
            self._run(_tool("qconf"), "-km", check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
            time.sleep(0.2)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.unlink(self.link)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def single_node_sge(timeout=60):
    """Runs a one-host Grid Engine cell; yields the environment for its clients. Raises
    RuntimeError, with the daemons' messages, when it cannot start."""
    cell = _Cell()
    try:
        cell.start(timeout)
        yield dict(cell.env)
    finally:
        cell.stop()


if __name__ == "__main__":
    with single_node_sge() as env:
        r = subprocess.run(["qsub", "-sync", "y", "-b", "y", "-o", "/dev/null", "-j", "y",
                            "/bin/true"], env=env, capture_output=True, text=True, timeout=120)
        print(r.stdout, r.stderr)
