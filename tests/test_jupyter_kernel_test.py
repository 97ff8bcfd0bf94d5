"""The community conformance suite (jupyter_kernel_test) against the installed kernelspec."""
import unittest

import jupyter_kernel_test as jkt


class RustpxKernelTests(jkt.KernelTests):
    kernel_name = "rustpx"
    language_name = "rust"
    file_extension = ".rs"

    code_hello_world = 'println!("hello, world");'
    code_stderr = 'eprintln!("oops");'
    completion_samples = [{"text": "std::collections::HashM", "matches": {"HashMap"}}]
    complete_code_samples = ["1 + 1", "fn f() { }", "let x = vec![1, 2];"]
    incomplete_code_samples = ["fn f() {", "let v = vec![1,"]
    invalid_code_samples = ["1 + 1)"]
    code_generate_error = 'let wrong: i32 = "text";'
    code_inspect_sample = "Vec"
    code_execute_result = [{"code": "6 * 7", "result": "42"}, {"code": '"hi"', "result": '"hi"'}]
    # A plain cell's displays are its value (execute_result), as in evcxr_jupyter; an engine's
    # display is display_data. One engine, not streamed: no `[output:0]` label display before it
    # (px-behaviour.md) and no progress display however long it takes, so every display_data of
    # the cell carries the bundle.
    code_display_data = [
        {"code": '%%px --no-stream -t 0 --progress-after -1\nprintln!("EVCXR_BEGIN_CONTENT text/html\\n<b>hi</b>\\nEVCXR_END_CONTENT");', "mime": "text/html"},
    ]
    # The input history (SQLite, as IPython's): all three access types.
    supported_history_operations = ("tail", "range", "search")
    code_history_pattern = "6*"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        # The suite waits 15 s per request; evcxr's first compile on a busy 2-core machine can
        # take longer, so the context is brought up once before the timed requests start.
        reply = cls.kc.execute_interactive("0", timeout=300)
        assert reply["content"]["status"] == "ok", reply["content"]
        # The engines too, so the display test's cell shows no pool-start or progress display
        # (a %px cell that waits more than 2 s shows ipyparallel's progress display first).
        reply = cls.kc.execute_interactive("%px 0", timeout=300)
        assert reply["content"]["status"] == "ok", reply["content"]

    def execute_helper(self, code, timeout=300, **kwargs):
        return super().execute_helper(code, timeout=timeout, **kwargs)


if __name__ == "__main__":
    unittest.main()
