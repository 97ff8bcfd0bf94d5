"""Every notebook in notebooks/ runs end to end through nbclient, and its outputs are checked."""
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import run_notebook  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ is empty"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_shows_what_it_promises(path, monkeypatch):
    # As a user would run them: the pool size is whatever the kernel chooses by default.
    monkeypatch.delenv("RUSTPX_ENGINES", raising=False)
    notebook = run_notebook.run(str(path))
    checked = sum(len(c.metadata.get("rustpx", {}).get("expect", [])) for c in notebook.cells)
    assert checked > 0, "the notebook checks nothing"
    assert run_notebook.problems(notebook) == []
