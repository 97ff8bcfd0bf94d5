"""Issue 16, the task interface of the load-balanced view: retries, `after`/`follow`
dependencies, timeouts, abort, unordered maps, metadata and iteration as tasks complete, against
the real kernel, its scheduler, 2 real engines and evcxr.

One kernel serves the module; the tests run in file order. Each ends by checking that the kernel
and both engines still serve calls after the errors it provoked.
"""
import os
import re
import time

import pytest

from conftest import kernel_with_engines, ok, value

FUNCTIONS = """%%px
fn engine() -> u32 { std::env::var("RUSTPX_ENGINE_ID").unwrap().parse().unwrap() }
/// Fails the first time it runs on each engine for `tag` (a marker file per engine remembers).
fn flaky(tag: String) -> String {
    let marker = format!("{tag}.{}", engine());
    if std::fs::metadata(&marker).is_err() {
        std::fs::write(&marker, "").unwrap();
        panic!("first try on engine {}", engine());
    }
    format!("done on {}", engine())
}
fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
fn which(ms: u64) -> u32 { std::thread::sleep(std::time::Duration::from_millis(ms)); engine() }
fn fails(x: u64) -> u64 { panic!("fails on purpose {x}") }
/// Says who it is on both streams; 3 panics after printing.
fn chatty(x: u64) -> u64 {
    println!("out {x} on {}", engine());
    eprintln!("err {x}");
    if x == 3 { panic!("three") }
    x
}
/// Prints `lines` lines of 100 bytes.
fn loud(lines: u64) -> u64 { for _ in 0..lines { println!("{}", "x".repeat(99)); } lines }
/// Sleeps, then leaves a file `{dir}/{x}` behind: which items really ran.
fn mark(arg: (String, u64)) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(150));
    std::fs::write(format!("{}/{}", arg.0, arg.1), "").unwrap();
    arg.1
}"""


@pytest.fixture(scope="module")
def k():
    kernel = kernel_with_engines(2)
    ok(kernel, FUNCTIONS)
    ok(kernel, "let rc = rustpx::client();\nlet lview = rc.load_balanced_view();\nuse std::time::Duration;")
    yield kernel
    kernel.shutdown()


def still_serving(k):
    assert value(k, 'lview.map_sync::<u64, u64>("nap", &[1, 2, 3, 4]).unwrap()') == "[1, 2, 3, 4]"


def test_retries_run_a_flaky_task_again_on_the_other_engine_until_it_succeeds(k, tmp_path):
    tag = str(tmp_path / "flaky")
    ok(k, f'let retried = lview.clone().retries(2).apply::<String, String>("flaky", "{tag}".to_string());')
    assert re.fullmatch(r'"done on [01]"', value(k, "retried.get().unwrap()"))
    # It failed once on each engine (both markers exist), then succeeded: three runs.
    assert os.path.exists(tag + ".0") and os.path.exists(tag + ".1")
    assert value(k, "retried.metadata().unwrap()[0].attempts") == "3"
    assert value(k, "retried.metadata().unwrap()[0].error.clone()") == "None"
    still_serving(k)


def test_retries_exhausted_report_only_the_last_failure(k, tmp_path):
    tag = str(tmp_path / "exhausted")
    text = value(k, f'lview.clone().retries(1).apply::<String, String>("flaky", "{tag}".to_string()).get().unwrap_err().to_string()')
    m = re.fullmatch(r'"CompositeError: 1 of 1 tasks failed\\n\[([01]):apply\] item 0: first try on engine ([01])"', text)
    assert m and m.group(1) == m.group(2), text
    # The retry ran on the other engine: each engine failed it once.
    assert os.path.exists(tag + ".0") and os.path.exists(tag + ".1")
    # Without retries the same failure is reported at once.
    text = value(k, f'lview.apply::<String, String>("flaky", "{tag}-none".to_string()).get().unwrap_err().to_string()')
    assert "first try on engine" in text
    assert [os.path.exists(f"{tag}-none.{e}") for e in (0, 1)].count(True) == 1
    still_serving(k)


def test_an_after_chain_runs_in_order(k):
    ok(k, """let first = lview.apply::<u64, u64>("nap", 600);
let second = lview.clone().after(&[&first]).apply::<u64, u64>("nap", 200);
let third = lview.clone().after(&[&second]).apply::<u64, u64>("nap", 10);""")
    assert value(k, "(third.get().unwrap(), second.get().unwrap(), first.get().unwrap())") == "(10, 200, 600)"
    ok(k, """let meta: Vec<rustpx::TaskMetadata> = [&first.metadata().unwrap()[0], &second.metadata().unwrap()[0], &third.metadata().unwrap()[0]].into_iter().cloned().collect();
let slack = Duration::from_millis(5);""")
    # Each started only after the one before it completed (the kernel's clock, 5 ms of slack).
    assert value(k, "meta[1].started.unwrap() + slack >= meta[0].completed.unwrap() && meta[2].started.unwrap() + slack >= meta[1].completed.unwrap()") == "true"
    assert value(k, "meta[2].completed.unwrap().duration_since(meta[0].submitted).unwrap() >= Duration::from_millis(800)") == "true"
    assert value(k, "meta.iter().all(|m| m.submitted <= m.started.unwrap() && m.started.unwrap() <= m.completed.unwrap() && m.engine.is_some())") == "true"
    assert value(k, "third.wall_time() >= Duration::from_millis(800)") == "true"


def test_a_failed_dependency_fails_its_dependent_naming_it(k):
    text = value(k, """let bad = lview.apply::<u64, u64>("fails", 1);
lview.clone().after(&[&bad]).apply::<u64, u64>("nap", 1).get().unwrap_err().to_string()""")
    assert re.fullmatch(
        r'"ImpossibleDependency: `nap` \(call \d+\) depends on call \d+ \(`fails`\), which failed: \[engine [01]\] item 0: fails on purpose 1"',
        text,
    ), text
    # success_only(false): a failed dependency still counts as done.
    assert value(k, 'lview.clone().success_only(false).after(&[&bad]).apply::<u64, u64>("nap", 2).get().unwrap()') == "2"
    still_serving(k)


def test_follow_runs_on_the_engine_that_ran_the_dependency(k):
    ok(k, 'let placed = lview.apply::<u64, u32>("which", 0);\nlet home = placed.get().unwrap();')
    # 20 one-item tasks would spread over both engines; following `placed` keeps them home.
    assert value(k, 'lview.clone().follow(&[&placed]).chunk_size(1).map_sync::<u64, u32>("which", &[20; 20]).unwrap().iter().all(|e| *e == home)') == "true"
    # Without it, the same tasks use both engines.
    assert value(k, 'lview.clone().chunk_size(1).map_sync::<u64, u32>("which", &[100; 20]).unwrap().iter().any(|e| *e != home)') == "true"
    still_serving(k)


def test_timeout_fails_a_task_whose_dependency_is_late(k):
    text = value(k, """let long = lview.apply::<u64, u64>("nap", 3000);
lview.clone().after(&[&long]).timeout(Duration::from_millis(300)).apply::<u64, u64>("nap", 1).get().unwrap_err().to_string()""")
    assert re.fullmatch(
        r'"TaskTimeout: `nap` \(call \d+\) waited 300ms for call\(s\) \[\d+\] to finish and never started; give it a longer .timeout\(..\) or wait for those first"',
        text,
    ), text
    assert value(k, "long.get().unwrap()") == "3000"
    still_serving(k)


def test_abort_keeps_completed_values_and_never_runs_the_rest(k, tmp_path):
    ok(k, f"""let dir = "{tmp_path}".to_string();
let items: Vec<(String, u64)> = (0..24).map(|i| (dir.clone(), i)).collect();
let doomed = lview.clone().chunk_size(1).map::<(String, u64), u64>("mark", &items);
while doomed.progress() < 2 {{ std::thread::sleep(Duration::from_millis(20)); }}
doomed.abort().unwrap();
let outcome = doomed.results().unwrap();""")
    done = [int(v) for v in value(k, "outcome.iter().filter_map(|r| r.as_ref().ok().copied()).collect::<Vec<u64>>()").strip("[]").split(", ")]
    aborted = int(value(k, 'outcome.iter().filter(|r| r.as_ref().is_err_and(|f| f.message.starts_with("TaskAborted: `mark` was aborted"))).count()'))
    assert len(done) >= 2 and len(done) + aborted == 24 and aborted >= 12, (done, aborted)
    # Completed items kept their values, in input order; aborted ones never ran.
    assert done == sorted(done)
    ran = sorted(int(name) for name in os.listdir(tmp_path))
    assert ran == done
    assert value(k, "doomed.get().unwrap_err().to_string().contains(\"[no engine] item\")") == "true"
    assert value(k, "doomed.metadata().unwrap().iter().filter(|m| m.engine.is_none()).count()") == str(aborted)
    still_serving(k)


def test_unordered_map_returns_every_item_as_it_completes(k):
    ok(k, "let naps: Vec<u64> = vec![2000, 10, 10, 10, 10, 10];")
    unordered = value(k, 'lview.clone().chunk_size(1).map_unordered::<u64, u64>("nap", &naps).get().unwrap()')
    assert unordered != "[2000, 10, 10, 10, 10, 10]" and sorted(unordered.strip("[]").split(", ")) == sorted(["2000"] + ["10"] * 5), unordered
    streamed = value(k, 'lview.clone().ordered(false).chunk_size(1).map::<u64, u64>("nap", &naps).iter().map(|r| r.unwrap()).collect::<Vec<u64>>()')
    assert streamed != "[2000, 10, 10, 10, 10, 10]" and sorted(streamed.strip("[]").split(", ")) == sorted(unordered.strip("[]").split(", ")), streamed
    # Ordered iteration yields input order, each item as soon as those before it are in.
    assert value(k, 'lview.clone().chunk_size(1).map::<u64, u64>("nap", &naps).iter().map(|r| r.unwrap()).collect::<Vec<u64>>()') == "[2000, 10, 10, 10, 10, 10]"


def test_each_task_s_stdout_and_stderr_are_in_its_metadata_and_bounded(k):
    ok(k, 'let talk = lview.clone().chunk_size(1).map::<u64, u64>("chatty", &[1, 2, 3]);\nlet _ = talk.wait(None);')
    # Each task's own lines, from the engine that ran it; the panicking one keeps what it printed.
    engines = [value(k, f"talk.metadata().unwrap()[{i}].engine.unwrap()") for i in range(3)]
    expected = ", ".join(f'("out {i + 1} on {e}\\n", "err {i + 1}\\n")' for i, e in enumerate(engines))
    assert value(k, "talk.metadata().unwrap().iter().map(|m| (m.stdout.clone(), m.stderr.clone())).collect::<Vec<_>>()") \
        == f"[{expected}]"
    assert value(k, "talk.metadata().unwrap()[2].error.is_some()") == "true"
    # 500,000 bytes: the first 256 KiB (ending inside a line of x) are kept, and a note says how
    # much went.
    ok(k, 'let noisy = lview.apply::<u64, u64>("loud", 5000);')
    assert value(k, "noisy.get().unwrap()") == "5000"
    ok(k, "let noisy_out = noisy.metadata().unwrap()[0].stdout.clone();")
    assert value(k, "noisy_out.len()") == str(262144 + len("\n[rustpx: 237856 more bytes of this task's output were dropped]\n"))
    assert value(k, "noisy_out.ends_with(\"x\\n[rustpx: 237856 more bytes of this task's output were dropped]\\n\")") == "true"
    # The engines' own output goes where it went before: to the cell that runs on them.
    outs = value(k, 'rc.direct_view(..).execute_sync("println!(\\"after\\")").unwrap().iter().map(|o| o.stdout.clone()).collect::<Vec<_>>()')
    assert outs == '["after\\n", "after\\n"]'
    still_serving(k)


def test_calls_between_cells_are_answered_and_a_waiting_call_starts_on_its_own(k, tmp_path):
    out = tmp_path / "late.txt"
    # A thread that outlives its cell calls the API after the cell ended.
    ok(k, f"""let late_view = lview.clone();
std::thread::spawn(move || {{
    std::thread::sleep(Duration::from_millis(300));
    let values = late_view.map_sync::<u64, u64>("nap", &[1, 2]).unwrap();
    std::fs::write("{out}.partial", format!("{{values:?}}")).unwrap();
    std::fs::rename("{out}.partial", "{out}").unwrap();
}});""")
    # No cell runs now: the kernel answers the thread between cells.
    deadline = time.monotonic() + 120
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert out.read_text() == "[1, 2]"
    # A call whose dependency ends between cells starts then, not at the next cell's request.
    ok(k, 'let early = lview.apply::<u64, u64>("nap", 500);\nlet then = lview.clone().after(&[&early]).apply::<u64, u64>("nap", 1);')
    time.sleep(4)
    gap = value(k, "then.metadata().unwrap()[0].started.unwrap().duration_since(early.metadata().unwrap()[0].completed.unwrap()).unwrap().as_millis() < 2000")
    assert gap == "true"
    still_serving(k)


def test_a_waiting_call_starts_while_a_px_cell_runs_on_another_engine(k):
    """A call waiting on another starts when that one ends, not when the `%px` cell the notebook
    is in (on engine 0, for 4 s) ends: the kernel looks at waiting calls during a `%px` wait too."""
    ok(k, "let on_one = rc.direct_view(1).load_balanced_view();\n"
          'let first = on_one.apply::<u64, u64>("nap", 300);\n'
          'let second = on_one.clone().after(&[&first]).apply::<u64, u64>("nap", 1);')
    ok(k, "%%px -t 0\nstd::thread::sleep(std::time::Duration::from_secs(4));")
    gap = value(k, "second.metadata().unwrap()[0].started.unwrap().duration_since(first.metadata().unwrap()[0].completed.unwrap()).unwrap().as_millis()")
    assert int(gap) < 2000, gap
    assert value(k, "second.get().unwrap()") == "1"
    still_serving(k)


def test_the_engines_still_run_cells_after_all_of_it(k):
    assert value(k, "rc.ids().unwrap()") == "[0, 1]"
    outs = value(k, 'rc.direct_view(..).execute_sync("engine()").unwrap().iter().map(|o| o.value.clone().unwrap()).collect::<Vec<_>>()')
    assert outs == '["0", "1"]'
