"""Issue 6: JupyterLab in a real browser (Debian's chromium, driven by playwright-core).

Starts JupyterLab on 127.0.0.1 with a token, runs tests/browser/lab.test.mjs against it, and
keeps its screenshots in tests/artifacts/browser/. tests/run.sh installs what it needs.
"""
import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
BROWSER_DIR = ROOT / "tests" / "browser"
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logs_of(lab_log, runtime):
    """The ends of JupyterLab's log and of every rustpx kernel's log, for a failure's report."""
    parts = [f"\n--- {lab_log.name}:\n" + lab_log.read_text(errors="replace")[-6000:]]
    for log in sorted(runtime.glob("rustpx-kernel-*.log")):
        parts.append(f"\n--- {log.name}:\n" + log.read_text(errors="replace")[-6000:])
    return "".join(parts)


def test_jupyterlab_in_chromium(tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed (tests/run.sh installs it with apt-get)"
    assert (BROWSER_DIR / "node_modules" / "playwright-core").exists(), "run npm ci in tests/browser"
    port, token = free_port(), secrets.token_hex(16)
    runtime = tmp_path / "runtime"
    env = dict(os.environ, RUSTPX_ENGINES="2", JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(runtime))
    lab = subprocess.Popen(
        ["jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
         "--LabApp.news_url=", "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                assert lab.poll() is None and time.monotonic() < deadline, "JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()
                time.sleep(0.5)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["node", "--test", "lab.test.mjs"], cwd=BROWSER_DIR, capture_output=True, text=True, timeout=900,
            env=dict(os.environ, LAB_URL=f"{base}/lab?token={token}", CHROMIUM=chromium, ARTIFACTS=str(ARTIFACTS)),
        )
        print(done.stdout[-5000:])
        assert done.returncode == 0, (
            done.stdout[-5000:] + done.stderr[-3000:] + logs_of(tmp_path / "lab.log", runtime)
        )
        assert (ARTIFACTS / "02-px-outputs.png").exists()
        assert (ARTIFACTS / "05-px-charts.png").exists()
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()
