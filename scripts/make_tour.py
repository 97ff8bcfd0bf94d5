"""Writes the tour notebooks in notebooks/: getting started, errors and recovery, and a real
parallel computation.

Each code cell may carry `metadata.rustpx.expect`: strings its outputs must contain when the
notebook runs (tests/test_notebooks.py checks them). Cells that end in an error on purpose carry
the `raises-exception` tag, which nbclient honours.

    python scripts/make_tour.py
"""
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = {}
cells = []


def notebook(name):
    """Cells from here on go to notebooks/NAME."""
    global cells
    cells = NOTEBOOKS.setdefault(name, [])


def md(text):
    cells.append(new_markdown_cell(text.strip()))


def code(source, expect=(), raises=False):
    cell = new_code_cell(source.strip())
    if expect:
        cell.metadata["rustpx"] = {"expect": list(expect)}
    if raises:
        cell.metadata["tags"] = ["raises-exception"]
    cells.append(cell)


notebook("01-tour.ipynb")
md("""
# A tour of rustpx

rustpx is a Jupyter kernel for Rust with ipyparallel's parallel magics. Plain cells run in the
kernel's own Rust context; `%px` and `%%px` cells run on a pool of **engines**: separate processes,
each with its own variables. The kernel compiles each `%px` cell once and every engine runs it.

This tour follows the IPython Cookbook's recipe on distributing code across cores and the
direct-interface tutorial, in Rust.
""")

md("## The kernel's own context\nA plain cell is ordinary Rust, evaluated by evcxr:")
code("""
let greeting = "hello from the kernel";
greeting.len()
""", expect=["21"])

md("""
## Engines
With no engines running, the first `%px` starts a local pool by itself (one engine per CPU, or
`RUSTPX_ENGINES`). This tour asks for four, so that it reads the same on every machine: engines are
thin processes, and four of them run fine on one CPU.
""")
code("%engines start -n 4", expect=["started engines 0, 1, 2, 3"])
md("Each engine knows its id from `RUSTPX_ENGINE_ID`:")
code("""
%px println!("engine {} runs as process {}", std::env::var("RUSTPX_ENGINE_ID").unwrap(), std::process::id());
""", expect=["[stdout:0] engine 0 runs as process", "[stdout:1] engine 1 runs as process"])

code("%engines", expect=["pid", "idle"])

md("Every engine has its own variables. Define one on all engines, then use it:")
code("""
%%px
let id: u64 = std::env::var("RUSTPX_ENGINE_ID").unwrap().parse().unwrap();
let square = id * id;
""")
code("%px square", expect=["Out[0:", "Out[1:"])

md("## Choosing engines with `-t`\nA list, a slice, or one id:")
code("""
%%px -t 1,2
println!("only engines 1 and 2: id = {id}");
""", expect=["[stdout:1] only engines 1 and 2: id = 1", "[stdout:2] only engines 1 and 2: id = 2"])
code("""
%%px -t ::2
println!("even engines: {id}");
""", expect=["[stdout:0] even engines: 0", "[stdout:2] even engines: 2"])

md("""
## Non-blocking execution: `-a` and `%pxresult`
With `-a` the cell returns at once with a pending result; `%pxresult` waits for it and shows it.
""")
code("""
%%px -a
std::thread::sleep(std::time::Duration::from_millis(500 * (id + 1)));
println!("engine {id} woke up");
id * 100
""", expect=["<AsyncResult(%px): pending>"])
code("%pxresult", expect=["[stdout:0] \nengine 0 woke up", "Out[3:"])

md("""
## Pictures from the engines
A cell shows HTML, SVG or an image with evcxr's display protocol: it prints a line
`EVCXR_BEGIN_CONTENT <mime type>`, the content, then `EVCXR_END_CONTENT` (crates with evcxr
support, such as `evcxr_runtime` or plotters' `evcxr` feature, print exactly that). Each picture
shows under its engine's label, `[output:N]`, the moment it is drawn. The first cell below
fetches and builds [plotters](https://crates.io/crates/plotters) with only its SVG backend (about
half a minute, once per session), then every engine draws its own curve:
""")
code("""
%%px
:dep plotters = { version = "0.3", default-features = false, features = ["svg_backend", "line_series"] }
use plotters::prelude::*;
fn wave(frequency: f64) -> String {
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, (320, 120)).into_drawing_area();
        area.fill(&WHITE).unwrap();
        let mut chart = ChartBuilder::on(&area)
            .margin(8)
            .build_cartesian_2d(0.0..std::f64::consts::TAU, -1.1..1.1)
            .unwrap();
        let points = (0..=200).map(|i| {
            let x = i as f64 * std::f64::consts::TAU / 200.0;
            (x, (frequency * x).sin())
        });
        chart.draw_series(LineSeries::new(points, &BLUE)).unwrap();
        area.present().unwrap();
    }
    svg
}
let engine: f64 = std::env::var("RUSTPX_ENGINE_ID").unwrap().parse().unwrap();
println!("EVCXR_BEGIN_CONTENT image/svg+xml\\n{}\\nEVCXR_END_CONTENT", wave(engine + 1.0));
""", expect=["[output:0]"])

md("""
A picture can also be a cell's value: give a type an `evcxr_display` method that prints the
protocol. Values show under `Out[N:C]:`, as text values do:
""")
code("""
%%px
struct Svg(String);
impl Svg {
    fn evcxr_display(&self) {
        println!("EVCXR_BEGIN_CONTENT image/svg+xml\\n{}\\nEVCXR_END_CONTENT", self.0);
    }
}
Svg(wave(2.0 * (engine + 1.0)))
""", expect=["Out[0:"])

md("""
## Next
[02-errors-and-recovery](02-errors-and-recovery.ipynb) shows what happens when engines fail;
[03-monte-carlo-pi](03-monte-carlo-pi.ipynb) is a real parallel computation.
""")

notebook("03-monte-carlo-pi.ipynb")
md("""
# Estimating π in parallel
This notebook runs on the default pool: the first `%px` starts one engine per CPU.
""")
code("""
%%px
let id: u64 = std::env::var("RUSTPX_ENGINE_ID").unwrap().parse().unwrap();
""")
md("""
## A real parallel computation: estimating π
Each engine throws its own share of random darts (a small xorshift generator, seeded by the engine
id, so every engine gets different numbers) and counts how many land inside the unit circle.
""")
code("""
%%px
fn estimate_pi(seed: u64, darts: u64) -> (u64, f64) {
    let mut state = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut hits = 0;
    for _ in 0..darts {
        let (x, y) = (next(), next());
        if x * x + y * y <= 1.0 {
            hits += 1;
        }
    }
    (hits, 4.0 * hits as f64 / darts as f64)
}
let (hits, estimate) = estimate_pi(id + 1, 2_000_000);
println!("engine {id}: {hits} hits, pi ~ {estimate:.4}");
""", expect=["[stdout:0] engine 0:", "pi ~ 3.14"])
code("%px hits", expect=["Out[0:"])

md("""
Every engine's estimate differs (different darts); their average is the combined estimate.
""")

notebook("02-errors-and-recovery.ipynb")
md("""
# Errors and recovery
Engines fail in Rust's ways: compile errors, panics, aborts. rustpx reports each on its engine
and keeps the others' results.
""")
md("This notebook uses four engines, whatever the machine:")
code("%engines start -n 4", expect=["started engines 0, 1, 2, 3"])
code("""
%%px
let id: u64 = std::env::var("RUSTPX_ENGINE_ID").unwrap().parse().unwrap();
""")
md("""
## Errors
A panic on some engines is reported per engine (`[N:execute]`); the others' output is still shown.
""")
code("""
%%px
println!("engine {id} starts");
if id % 2 == 1 {
    panic!("engine {id} does not like odd numbers");
}
""", expect=["[1:execute]:", "does not like odd numbers", "2 errors"], raises=True)

md("Without streaming, the failures come together as a `CompositeError`:")
code("""
%%px --no-stream
if id == 0 { panic!("only engine 0 fails"); }
id
""", expect=["CompositeError", "[0:execute]Panic: only engine 0 fails", "Out[1:"], raises=True)

md("""
A compile error is reported the way rustc shows it. The kernel compiled the cell once for all four
engines, so it is one error, shown once and labelled with every engine it applies to:
""")
code("%px let wrong: u32 = \"text\";", expect=["[0-3:execute]:", "mismatched types", "4 errors"], raises=True)

md("The engines are still fine, and still hold their variables:")
code("%px id + 1", expect=["Out[0:", "1"])

md("""
## When an engine dies
An abort (or a segfault, or `std::process::exit`) kills the engine process. Its task fails at once
with an `EngineError` that says which variables were lost; the other engines are unaffected, and
the dead engine leaves `all`.
""")
code("""
%%px -t 3
std::process::abort();
""", expect=["EngineError", "Engine 3 died while running task", "SIGABRT"], raises=True)
code("%px id", expect=["Out[0:", "Out[2:"])
md("`%engines restart` brings it back, fresh:")
code("%engines restart 3", expect=["engine 3 restarted"])
code("%px 40 + 2", expect=["Out[3:"])

md("""
## Interrupts
Press the stop button (or *Kernel → Interrupt*) while a `%%px` cell runs, for example
`%%px` with `loop { std::thread::sleep(std::time::Duration::from_millis(100)); }`. rustpx prints
`Received Keyboard Interrupt. Sending signal SIGINT to engines...`, signals the engines still
running the cell (`--signal-on-interrupt` chooses the signal; `0` only stops waiting), shows what
they had printed, and tells you for each engine which variables it lost while it restarts it.
The cell ends normally and the next `%px` runs on every engine again.

![Interrupting a %%px cell in JupyterLab](../docs/jupyterlab-interrupt.png)

(This notebook runs unattended in CI, so it does not interrupt itself; the browser test does.)
""")

notebook("04-moving-data.ipynb")
md("""
# Moving data between the kernel and the engines

`%push`, `%pull`, `%scatter` and `%gather` copy typed values between the kernel's own Rust context
(plain cells) and the engines. Values cross through serde (bincode), so a type crosses when it
derives `Serialize` and `Deserialize`, and it must be defined on both sides.

Declare your serde types before you create values of them: the first data magic adds the small
`rustpx` client crate to both contexts, and evcxr drops values of cell-defined types whenever a
crate is added (rustpx tells you which if that happens).
""")
code(""":dep serde = { version = "1", features = ["derive"] }
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Sample { pub engine: u32, pub mean: f64 }""")
md("Two engines show every transfer, whatever the machine:")
code("%engines start -n 2", expect=["started engines 0, 1"])
code("""%%px
:dep serde = { version = "1", features = ["derive"] }
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Sample { pub engine: u32, pub mean: f64 }""")
md("""
## %push: the same value on every engine
""")
code("""let scale: f64 = 2.5;
let label = String::from("run A");""")
code("%push scale label", expect=["pushed scale, label to engine 0, 1"])
code('%px format!("{label}: {}", scale * 2.0)', expect=['"run A: 5"'])
md("""
## %scatter and %gather: a Vec split into contiguous chunks, one per engine, and back
Chunk sizes differ by at most one, in target order, as in ipyparallel.
""")
code("let xs: Vec<u64> = (1..=10).collect();")
code("%scatter xs", expect=["scattered xs across engine 0, 1"])
code("%px xs.clone()", expect=["Out[0:", "[1, 2, 3", "9, 10]"])
code("%px let scaled: Vec<f64> = xs.iter().map(|&x| x as f64 * scale).collect();")
code("%gather scaled", expect=["gathered scaled from engine 0, 1", "into scaled: Vec<f64>"])
code("scaled.iter().sum::<f64>()", expect=["137.5"])
md("""
## %pull: one value per engine
`-o NAME` chooses the local name; with a single-int target (`-t 1`) you get a bare value.
""")
code("""%px let sample = Sample { engine: rustpx::engine_id().unwrap(), mean: xs.iter().sum::<u64>() as f64 / xs.len() as f64 };""")
code("%pull sample -o samples", expect=["into samples: Vec<Sample>"])
code("samples", expect=["Sample { engine: 0, mean: ", "Sample { engine: 1, mean: "])
code("%pull sample -t 1 -o last", expect=["into last: Sample"])
md("""
## %pxmap: a load-balanced map
A function defined on the engines, applied to every item of a local `Vec` by whichever engine is
free; the results come back in input order. Each engine compiles its side once per function.
""")
code("""%%px
fn collatz_steps(mut n: u64) -> u32 {
    let mut steps = 0;
    while n != 1 { n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 }; steps += 1; }
    steps
}""")
code("let starts: Vec<u64> = (1..=100_000).collect();")
code("%pxmap collatz_steps starts -o steps", expect=["mapped collatz_steps over 100000 items of starts", "into steps: Vec<u32>"])
code("steps.iter().max()", expect=["Some(350)"])
md("""
With `-a` the map runs in the background: `%pxresult --status` shows its progress and
`%pxresult` collects it (and the engine of each item). A panicking item fails alone; add
`--errors-in-place` to keep every item's `Result`.
""")
code("%pxmap collatz_steps starts -o steps_async -a", expect=["<AsyncMapResult(%pxmap): pending>"])
code("%pxresult", expect=["into steps_async: Vec<u32> and steps_async_engines: Vec<u32>"])

md("""
## A type that cannot cross
""")
code("""struct Handle(std::fs::File);
let handle = Handle(std::fs::File::open("/dev/null").unwrap());""")
code("%push handle", expect=["`Handle` cannot leave the kernel's context", "serde::Serialize"], raises=True)


if __name__ == "__main__":
    for name, notebook_cells in NOTEBOOKS.items():
        written = new_notebook(
            cells=notebook_cells,
            metadata={
                "kernelspec": {"name": "rustpx", "display_name": "Rust (parallel)", "language": "rust"},
                "language_info": {"name": "rust", "file_extension": ".rs", "mimetype": "text/rust"},
            },
        )
        nbformat.write(written, f"notebooks/{name}")
        print(f"wrote notebooks/{name} ({len(notebook_cells)} cells)")
