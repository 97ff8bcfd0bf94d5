"""Issue 5: a shortened soak run in the suite (the full one: `python tests/soak.py --cells 500`)."""
import json
import os
import pathlib

import soak

CELLS = int(os.environ.get("RUSTPX_SOAK_CELLS", "120"))


def test_mixed_cells_keep_their_outputs_and_memory():
    result = soak.soak(CELLS)
    artifacts = pathlib.Path(__file__).parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "soak.json").write_text(json.dumps(result, indent=2))
    assert result["violations"] == []
    assert result["kernel_ratio"] <= 1.5, result
    assert result["engine_ratio"] <= 1.5, result
