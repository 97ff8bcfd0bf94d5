"""Issue 14, item 10: Jupyter's ipc transport. With the kernel's sockets as files in a private
directory (instead of loopback ports every local user can reach), only the user gets in: the
usual multi-user mitigation, which ipykernel supports. The old transport panicked with `IPC
transport is not available on this platform`."""
import os
import stat

from jupyter_client.manager import KernelManager

from conftest import KERNEL_NAME


def test_the_kernel_serves_a_connection_over_ipc(tmp_path):
    private = tmp_path / "ipc"
    private.mkdir(mode=0o700)
    km = KernelManager(kernel_name=KERNEL_NAME)
    km.transport = "ipc"
    km.ip = str(private / "kernel")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        msg_id = kc.execute("6 * 7")
        result = None
        while True:
            msg = kc.get_iopub_msg(timeout=120)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "execute_result":
                result = msg["content"]["data"]["text/plain"]
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        assert result == "42"
        assert kc.get_shell_msg(timeout=60)["content"]["status"] == "ok"
        sockets = sorted(p.name for p in private.iterdir() if stat.S_ISSOCK(os.stat(p).st_mode))
        assert len(sockets) == 5, sockets  # shell, iopub, stdin, control, heartbeat
        assert kc.hb_channel.is_beating()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
