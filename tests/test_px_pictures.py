"""Issue 13, item 5: rich output from engines, live and labelled, through a real Jupyter client.

A `%%px` cell on 2 engines prints pictures with evcxr's display protocol. Streamed, each display
must arrive while the engines still run (before the cell's reply), as ipyparallel's `[output:N]`
display followed by the bundle with metadata `{"engine": N}`; a picture that is the cell's value
keeps its `Out[N:C]` text/plain and gains a text/html that shows that label above the picture,
because JupyterLab renders text/html rather than text/plain. Not streamed, the grouped shape stays.
"""
import os
import re

import pytest

from conftest import Kernel, of_type

# Two small SVG pictures per engine, 1.5 s apart; the cell has no final expression.
SHOW = r'''
let engine: u32 = std::env::var("RUSTPX_ENGINE_ID").unwrap().parse().unwrap();
fn show(engine: u32, frame: u32) {
    println!("EVCXR_BEGIN_CONTENT image/svg+xml\n<svg xmlns='http://www.w3.org/2000/svg' width='40' height='20' data-engine='{engine}' data-frame='{frame}'></svg>\nEVCXR_END_CONTENT");
}
show(engine, 1);
std::thread::sleep(std::time::Duration::from_millis(1500));
show(engine, 2);
'''

FRAME = re.compile(r"data-engine='(\d+)' data-frame='(\d+)'")


@pytest.fixture(scope="module")
def px():
    os.environ["RUSTPX_ENGINES"] = "2"
    k = Kernel()
    reply, _, _ = k.execute("%px 0")
    assert reply["status"] == "ok", reply
    yield k
    k.shutdown()


def outputs(msgs):
    """The content of every display_data, in arrival order."""
    return [m["content"] for m in of_type(msgs, "display_data")]


def test_each_display_arrives_live_after_its_engine_header(px):
    reply, msgs, times = px.execute("%%px" + SHOW)
    assert reply["status"] == "ok", reply
    shown = [(t, m["content"]) for t, m in zip(times, msgs) if m["msg_type"] == "display_data"]
    pictures = {}
    for i, (arrived, content) in enumerate(shown):
        found = FRAME.search(content["data"].get("image/svg+xml", ""))
        if not found:
            continue
        engine, frame = int(found.group(1)), int(found.group(2))
        assert content["metadata"] == {"engine": engine}
        # The bundle keeps its own type only; the header before it is ipyparallel's, unchanged.
        assert set(content["data"]) == {"image/svg+xml"}
        assert shown[i - 1][1]["data"] == {"text/plain": f"[output:{engine}]"}
        pictures[(engine, frame)] = arrived
    assert sorted(pictures) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    idle = times[-1]
    for engine in (0, 1):
        # Live: the first picture came while the engine still slept before the second one.
        assert pictures[(engine, 2)] - pictures[(engine, 1)] > 1.0, pictures
        assert idle - pictures[(engine, 1)] > 1.0, (idle, pictures)


def test_a_picture_value_keeps_out_and_gains_a_labelled_html(px):
    code = (
        "%%px\nstruct Svg(String);\nimpl Svg { fn evcxr_display(&self) { "
        'println!("EVCXR_BEGIN_CONTENT image/svg+xml\\n{}\\nEVCXR_END_CONTENT", self.0); } }\n'
        "Svg(format!(\"<svg data-value='{}'></svg>\", std::env::var(\"RUSTPX_ENGINE_ID\").unwrap()))"
    )
    reply, msgs, _ = px.execute(code)
    assert reply["status"] == "ok", reply
    values = {}
    for content in outputs(msgs):
        found = re.match(r"\x1b\[0;31mOut\[(\d+):(\d+)\]: \x1b\[0m$", content["data"].get("text/plain", ""))
        if found:
            values[int(found.group(1))] = (found.group(2), content)
    assert sorted(values) == [0, 1]
    for engine, (count, content) in values.items():
        assert content["metadata"] == {"engine": engine}
        svg = f"<svg data-value='{engine}'></svg>"
        assert content["data"]["image/svg+xml"] == svg
        html = content["data"]["text/html"]
        label = html.index(f">Out[{engine}:{count}]:</div>")
        assert html.index(svg) > label


def test_not_streamed_the_displays_stay_grouped_by_engine(px):
    reply, msgs, _ = px.execute("%%px --no-stream --progress-after -1" + SHOW)
    assert reply["status"] == "ok", reply
    shown = []
    for content in outputs(msgs):
        found = FRAME.search(content["data"].get("image/svg+xml", ""))
        shown.append(f"picture {found.group(1)}.{found.group(2)}" if found else content["data"].get("text/plain"))
    assert shown == ["[output:0]", "picture 0.1", "picture 0.2", "[output:1]", "picture 1.1", "picture 1.2"]
