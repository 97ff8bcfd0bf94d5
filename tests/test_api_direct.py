"""Issue 16: the direct view of the Rust API from plain cells: `apply` on every engine and the
typed `push`, `pull`, `scatter`, `gather`, against the real kernel, its px service and 2 real
engines; their errors (a type mismatch, a missing variable, a type the engines lack, a panic on
one engine, a dead engine) leave the kernel and the engines usable; what the API pushes `%px`
sees, and what `%px` sets the API pulls.

One kernel serves the module; the tests run in file order and build on each other's state.
"""
import os
import re
import signal
import time

import pytest

from conftest import engine_pids, px_values, kernel_with_engines, ok, value

SERDE = ':dep serde = { version = "1", features = ["derive"] }'
POINT = "#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]\npub struct Point { pub x: i32, pub label: String }"

FUNCTIONS = """%%px
fn me() -> u64 { std::env::var("RUSTPX_ENGINE_ID").unwrap().parse().unwrap() }
fn whoami(offset: u64) -> u64 { me() + offset }
fn fragile(x: u64) -> u64 { if me() == 1 { panic!("engine 1 refuses {x}") } else { x * 10 } }
fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }"""


@pytest.fixture(scope="module")
def k():
    kernel = kernel_with_engines(2)
    # serde, then the client crate, then the types, in both contexts: adding a crate makes
    # evcxr drop values of cell-defined types.
    ok(kernel, SERDE)
    ok(kernel, "%%px\n" + SERDE)
    ok(kernel, "let rc = rustpx::client();\nlet dv = rc.direct_view(..);\nrc.ids().unwrap();")
    ok(kernel, FUNCTIONS)
    ok(kernel, POINT)
    ok(kernel, "%%px\n" + POINT)
    yield kernel
    kernel.shutdown()


def engine_values(k, code):
    return px_values(ok(k, code))


# --- apply ---

def test_apply_runs_on_every_engine_with_one_value_each_in_target_order(k):
    assert value(k, 'dv.apply_sync::<u64, u64>("whoami", 100).unwrap()') == "[100, 101]"
    assert value(k, 'rc.direct_view(vec![1, 0]).apply_sync::<u64, u64>("whoami", 0).unwrap()') == "[1, 0]"
    assert value(k, 'rc.direct_view(1).apply_sync::<u64, u64>("whoami", 5).unwrap()') == "[6]"


def test_apply_is_asynchronous_until_get(k):
    ok(k, 'let napping = dv.apply::<u64, u64>("nap", 1500);')
    # Submitted, not done: 1.5 s of sleep on each engine.
    assert value(k, "napping.ready()") == "false"
    assert value(k, "napping.wait(Some(std::time::Duration::from_secs(120)))") == "true"
    assert value(k, "(napping.progress(), napping.get().unwrap())") == "(2, [1500, 1500])"
    assert value(k, "napping.serial_time() >= std::time::Duration::from_millis(3000)") == "true"


def test_a_panic_on_one_engine_names_it_and_the_other_value_stays(k):
    ok(k, 'let shaky = dv.apply::<u64, u64>("fragile", 4);')
    assert value(k, "shaky.get().unwrap_err().to_string()") == (
        '"CompositeError: 1 of 2 tasks failed\\n[1:apply] engine 1 refuses 4"'
    )
    assert value(k, "let r = shaky.results().unwrap(); (r[0].clone().ok(), r[1].clone().unwrap_err().engine)") == (
        "(Some(40), 1)"
    )
    assert value(k, 'dv.apply_sync::<u64, u64>("fragile", 1).is_err()') == "true"
    assert value(k, 'rc.direct_view(0).apply_sync::<u64, u64>("fragile", 1).unwrap()') == "[10]"


def test_an_apply_type_mismatch_names_both_types(k):
    text = value(k, 'dv.apply::<i32, u64>("whoami", 3).get().unwrap_err().to_string()')
    assert re.fullmatch(
        r'"TypeError: `whoami` on engine [01] takes `u64` and returns `u64`, but this call sends `i32` and expects `u64`; '
        r'call it with the engine\'s types \(e.g. ::<u64, u64>\)"',
        text,
    ), text
    assert value(k, 'dv.apply_sync::<u64, u64>("whoami", 0).unwrap()') == "[0, 1]"


def test_same_named_types_defined_differently_are_refused_before_anything_crosses(k):
    """A `Reading` of two i32 here and of one f64 on the engines: bincode would read the one as
    the other. The call is refused naming both definitions; defined alike (a `pub`, a derive and
    a comment apart), it runs; a type reached through a field counts too."""
    ok(k, "#[derive(serde::Serialize, serde::Deserialize)]\npub struct Reading { pub a: i32, pub b: i32 }")
    ok(k, "%%px\n#[derive(serde::Serialize, serde::Deserialize)]\npub struct Reading { pub v: f64 }\n"
          "fn first(r: Reading) -> f64 { r.v }")
    refused = value(k, 'dv.apply::<Reading, f64>("first", Reading { a: 1, b: 2 }).get().unwrap_err().to_string()')
    assert refused == (
        '"TypeError: `first`: `Reading` is defined one way in this kernel and another on engine 0, '
        "and a value of one would be read as the other: here `struct Reading { a : i32 , b : i32 }`, "
        "on engine 0 `struct Reading { v : f64 }`; define it the same way in a plain cell and a %%px cell\""
    )
    pushed = value(k, 'dv.push_sync("r", &Reading { a: 1, b: 2 }).unwrap_err().to_string()')
    assert pushed.startswith('"TypeError: push: `Reading` is defined one way'), pushed
    ok(k, "%%px\n#[derive(serde::Deserialize, serde::Serialize, Debug)]\n/// the same\nstruct Reading { a: i32, b: i32 }\n"
          "fn first(r: Reading) -> f64 { (r.a + r.b) as f64 }")
    assert value(k, 'dv.apply_sync::<Reading, f64>("first", Reading { a: 1, b: 2 }).unwrap()') == "[3.0, 3.0]"
    # Through a field: the outer types agree, the inner one does not.
    ok(k, "#[derive(serde::Serialize, serde::Deserialize)]\npub enum Unit { Metre, Foot(u8) }\n"
          "#[derive(serde::Serialize, serde::Deserialize)]\npub struct Length { pub unit: Unit, pub n: u32 }")
    ok(k, "%%px\n#[derive(serde::Serialize, serde::Deserialize)]\npub enum Unit { Metre, Foot(u16) }\n"
          "#[derive(serde::Serialize, serde::Deserialize)]\npub struct Length { pub unit: Unit, pub n: u32 }\n"
          "fn n(l: Length) -> u32 { l.n }")
    refused = value(k, 'dv.apply::<Length, u32>("n", Length { unit: Unit::Metre, n: 4 }).get().unwrap_err().to_string()')
    assert "`Unit` is defined one way in this kernel and another on engine 0" in refused, refused
    assert "here `pub enum Unit" not in refused and "here `enum Unit { Metre , Foot ( u8 ) }`" in refused, refused


# --- push and pull ---

def test_pushed_values_are_the_engines_variables_for_px(k):
    ok(k, "dv.push_sync(\"scale\", &3u64).unwrap();")
    assert engine_values(k, "%px scale * 2") == {0: "6", 1: "6"}
    ok(k, 'dv.push_all_sync(rustpx::vars().add("label", "grüße").add("weights", &vec![0.5f64, 1.5])).unwrap();')
    assert engine_values(k, '%px format!("{label} {}", weights.iter().sum::<f64>())') == {
        0: '"grüße 2"', 1: '"grüße 2"'
    }
    # A slice arrives as the Vec it was cut from; a second push replaces the value.
    ok(k, 'let local: Vec<u64> = (0..10).collect();\ndv.push_sync("tail", &local[7..]).unwrap();')
    assert engine_values(k, "%px tail.clone()") == {0: "[7, 8, 9]", 1: "[7, 8, 9]"}
    ok(k, 'rc.direct_view(1).push_sync("scale", &4u64).unwrap();')
    assert engine_values(k, "%px scale") == {0: "3", 1: "4"}


def test_a_user_struct_crosses_both_ways(k):
    ok(k, 'dv.push_sync("p", &Point { x: 2, label: "kernel".into() }).unwrap();')
    assert engine_values(k, "%px p.x * 10") == {0: "20", 1: "20"}
    ok(k, '%px let q = Point { x: me() as i32, label: "engine".into() };')
    assert value(k, 'dv.pull_sync::<Point>("q").unwrap().iter().map(|q| (q.x, q.label.clone())).collect::<Vec<_>>()') == (
        '[(0, "engine"), (1, "engine")]'
    )


def test_values_set_by_px_are_pulled_typed_in_target_order(k):
    ok(k, '%px let made: Vec<String> = vec![format!("e{}", me())];')
    assert value(k, 'dv.pull_sync::<Vec<String>>("made").unwrap()') == '[["e0"], ["e1"]]'
    assert value(k, 'rc.direct_view(vec![1, 0]).pull_sync::<u64>("scale").unwrap()') == "[4, 3]"
    ok(k, 'let later = dv.pull::<Vec<String>>("made");')
    assert value(k, "later.get().unwrap().concat()") == '["e0", "e1"]'


def test_a_pull_of_another_type_or_a_missing_variable_names_engine_variable_and_types(k):
    assert value(k, 'dv.pull_sync::<u64>("made").unwrap_err().to_string()') == (
        '"TypeError: pull made: `made` is a `Vec<String>` on engine 0, but this call asks for `u64`; '
        'call pull_sync::<Vec<String>>"'
    )
    ok(k, "%%px -t 1\nlet only_one: u8 = 1;")
    assert value(k, 'dv.pull_sync::<u8>("only_one").unwrap_err().to_string()') == (
        "\"NameError: pull only_one: name 'only_one' is not defined on engine 0\""
    )
    assert value(k, 'rc.direct_view(1).pull_sync::<u8>("only_one").unwrap()') == "[1]"
    assert value(k, 'dv.pull_sync::<u8>("bad name").unwrap_err().to_string()') == (
        '"pull: `bad name` is not a variable name (letters, digits and `_`, not starting with a digit)"'
    )


def test_a_type_only_the_plain_context_defines_says_where_to_define_it(k):
    ok(k, "#[derive(serde::Serialize, serde::Deserialize)]\npub struct OnlyHere { pub a: u8 }")
    assert value(k, 'dv.push_sync("o", &OnlyHere { a: 1 }).unwrap_err().to_string()') == (
        '"push o: the type `OnlyHere` is not defined on the engines; define it there too (a %%px cell with the same definition)"'
    )
    ok(k, "%%px\n#[derive(serde::Serialize, serde::Deserialize)]\npub struct OnlyHere { pub a: u8 }")
    ok(k, 'dv.push_sync("o", &OnlyHere { a: 5 }).unwrap();')
    assert engine_values(k, "%px o.a") == {0: "5", 1: "5"}
    assert engine_values(k, "%px scale") == {0: "3", 1: "4"}


def test_a_value_the_engines_cannot_serialize_names_the_type_and_the_trait(k):
    ok(k, "#[derive(Debug, serde::Deserialize)]\npub struct Handle(pub u8);")
    ok(k, "%px pub struct Handle(pub u8);\nlet h = Handle(1);")
    text = value(k, 'dv.pull_sync::<Handle>("h").unwrap_err().to_string()')
    assert text.startswith('"pull h: `Handle` cannot leave the engines: it does not implement serde::Serialize; '), text
    assert engine_values(k, "%px h.0 + 1") == {0: "2", 1: "2"}


# --- scatter and gather ---

def test_scatter_splits_contiguously_and_gather_concatenates_in_engine_order(k):
    ok(k, 'let items: Vec<u64> = (0..11).collect();\ndv.scatter_sync("part", &items).unwrap();')
    assert engine_values(k, "%px part.clone()") == {0: "[0, 1, 2, 3, 4, 5]", 1: "[6, 7, 8, 9, 10]"}
    ok(k, "%px part.iter_mut().for_each(|x| *x *= 2);")
    assert value(k, 'dv.gather_sync::<u64>("part").unwrap() == items.iter().map(|x| x * 2).collect::<Vec<u64>>()') == "true"
    ok(k, 'rc.direct_view(vec![1, 0]).scatter("rev", &items).get().unwrap();')
    assert engine_values(k, "%px rev.len()") == {1: "6", 0: "5"}
    assert value(k, 'rc.direct_view(vec![1, 0]).gather::<u64>("rev").get().unwrap() == items') == "true"
    assert value(k, 'dv.gather_sync::<u32>("part").unwrap_err().to_string()') == (
        '"TypeError: gather part: `part` is a `Vec<u64>` on engine 0, but this call asks for `Vec<u32>`; call gather_sync::<u64>"'
    )
    assert value(k, 'dv.gather_sync::<u64>("scale").unwrap_err().to_string()') == (
        '"TypeError: gather scale: `scale` is a `u64` on engine 0, not a Vec; pull it instead (pull_sync::<u64>)"'
    )


def test_a_large_vector_crosses_both_ways(k):
    ok(k, 'let big: Vec<u64> = (0..4_000_000).collect();\ndv.scatter_sync("big", &big).unwrap();')
    assert engine_values(k, "%px big.len()") == {0: "2000000", 1: "2000000"}
    assert value(k, 'dv.gather_sync::<u64>("big").unwrap() == big') == "true"


# --- a dead engine (last: the module's kernel keeps one engine after it) ---

def test_an_engine_dying_during_apply_is_named_and_the_rest_goes_on(k):
    pids = engine_pids(k)
    assert sorted(pids) == [0, 1], pids
    ok(k, 'let doomed = dv.apply::<u64, u64>("nap", 4000);')
    time.sleep(1.5)
    os.kill(pids[1], signal.SIGKILL)
    assert value(k, "doomed.get().unwrap_err().to_string()") == (
        '"CompositeError: 1 of 2 tasks failed\\n[1:apply] EngineError: engine 1 died before it returned a value"'
    )
    assert value(k, "doomed.results().unwrap()[0].clone().ok()") == "Some(4000)"
    assert value(k, "rc.ids().unwrap()") == "[0]"
    assert value(k, 'dv.apply_sync::<u64, u64>("whoami", 0).unwrap()') == "[0]"
    ok(k, 'dv.push_sync("after", &7u8).unwrap();')
    assert engine_values(k, "%px after + scale as u8") == {0: "10"}
