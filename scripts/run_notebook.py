"""Runs a notebook end to end through nbclient with the rustpx kernel and prints its outputs.

    python scripts/run_notebook.py notebooks/01-tour.ipynb [--save OUT.ipynb]

Cells may list strings their outputs must contain (`metadata.rustpx.expect`); a missing one
makes the run fail, so this is both the demo and a check.
"""
import argparse
import re
import sys
import time

import nbformat
from nbclient import NotebookClient

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def output_text(output):
    """The text a person would read for one output."""
    kind = output.get("output_type")
    if kind == "stream":
        return output.get("text", "")
    if kind in ("display_data", "execute_result"):
        return str(output.get("data", {}).get("text/plain", "")) + "\n"
    if kind == "error":
        lines = [f"{output.get('ename')}: {output.get('evalue')}"] + list(output.get("traceback", []))
        return "\n".join(lines) + "\n"
    return ""


def cell_text(cell):
    return ANSI.sub("", "".join(output_text(o) for o in cell.get("outputs", [])))


def run(path, kernel_name="rustpx", timeout=600):
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, kernel_name=kernel_name, timeout=timeout, allow_errors=False)
    client.execute()
    return notebook


def problems(notebook):
    """Expected strings that a cell's outputs lack."""
    missing = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        text = cell_text(cell)
        for expected in cell.metadata.get("rustpx", {}).get("expect", []):
            if expected not in text:
                missing.append(f"cell {index}: expected {expected!r} in:\n{text}")
    return missing


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook")
    parser.add_argument("--save", help="write the executed notebook here")
    args = parser.parse_args()
    started = time.monotonic()
    notebook = run(args.notebook)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        print(f"In [{cell.get('execution_count')}]: " + cell.source.replace("\n", "\n    ...: "))
        text = cell_text(cell)
        if text.strip():
            print(text.rstrip("\n"))
        print()
    if args.save:
        nbformat.write(notebook, args.save)
    missing = problems(notebook)
    print(f"ran {args.notebook} in {time.monotonic() - started:.1f} s")
    if missing:
        print("\n".join(missing), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
