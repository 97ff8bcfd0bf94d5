"""A Jupyter client for tests/test_lifecycle.py, run as its own process so that the test can
kill it: starts a rustpx kernel through jupyter_client's KernelManager (which sets
JPY_PARENT_PID, as every Jupyter client does), runs a `%px` cell so that engines exist, prints
one JSON line {"kernel": pid, "engines": [pids]}, then sleeps until it is killed.
"""
import json
import sys
import time

from jupyter_client.manager import start_new_kernel

from conftest import KERNEL_NAME, parse_engine_pids


def run(kc, code):
    """Runs `code`; returns its text output (streams and results), failing on an error."""
    msg_id = kc.execute(code)
    text = []
    while True:
        msg = kc.get_iopub_msg(timeout=300)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        content = msg["content"]
        if msg["msg_type"] == "stream":
            text.append(content["text"])
        elif msg["msg_type"] in ("execute_result", "display_data"):
            text.append(content["data"].get("text/plain", ""))
        elif msg["msg_type"] == "status" and content["execution_state"] == "idle":
            break
    reply = kc.get_shell_msg(timeout=300)
    if reply["content"]["status"] != "ok":
        sys.exit(f"{code!r} failed: {reply['content']}")
    return "".join(text)


def main():
    km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=120)
    run(kc, "%px 1 + 1")
    engines = parse_engine_pids(run(kc, "%engines"))
    print(json.dumps({"kernel": km.provisioner.process.pid, "engines": sorted(engines.values())}), flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
