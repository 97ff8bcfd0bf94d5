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

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        # The suite waits 15 s per request; evcxr's first compile on a busy 2-core machine can
        # take longer, so the context is brought up once before the timed requests start.
        reply = cls.kc.execute_interactive("0", timeout=300)
        assert reply["content"]["status"] == "ok", reply["content"]

    def execute_helper(self, code, timeout=300, **kwargs):
        return super().execute_helper(code, timeout=timeout, **kwargs)


if __name__ == "__main__":
    unittest.main()
