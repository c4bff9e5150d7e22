"""examples/chapter3.ipynb runs top to bottom in a real Jupyter kernel, and its next-token table has " Paris" first."""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "chapter3.ipynb"


def _text(output: dict) -> str:
    """An output's text: its HTML with the tags taken out, else its plain text or stream."""
    data = output.get("data", {})
    if "text/html" in data:
        return html.unescape(re.sub(r"<[^>]+>", "", data["text/html"]))
    return data.get("text/plain", "") or output.get("text", "")


def _this_python_as_the_kernel(monkeypatch: pytest.MonkeyPatch, where: Path) -> None:
    """Make kernel `python3` this interpreter: a spec of our own, first on JUPYTER_PATH (a user's may run another)."""
    spec = where / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(where))


def _run(notebook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Execute the notebook in a kernel of this interpreter; each code cell's source -> its outputs' text."""
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # committed clean
    _this_python_as_the_kernel(monkeypatch, tmp_path / "jupyter")
    notebook.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on any cell's error
    assert notebook.cells[0].outputs[0]["text"].strip() == sys.executable
    nbformat.write(notebook, tmp_path / "chapter3.ipynb")
    return {cell.source: "\n".join(_text(o) for o in cell.outputs) for cell in notebook.cells
            if cell.cell_type == "code"}


def _finds_paris_and_the_shapes(outputs: dict[str, str]) -> None:
    table = outputs["table"]
    assert re.search(r"│\s*1\s*│\s*␣Paris\s*│", table), table  # rank 1 in the table's first row
    shapes = next(text for source, text in outputs.items() if "hidden states" in source)
    assert re.search(r"hidden states \[1, 6, 128\]", shapes) and re.search(r"logits\s+\[1, 6, 1024\]", shapes)


@pytest.mark.slow
def test_the_chapter_runs_in_a_kernel_and_finds_paris(tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    outputs = _run(notebook, tmp_path, monkeypatch)
    _finds_paris_and_the_shapes(outputs)
    assert "speedup" in outputs["li.bench(lm, new_tokens=48, repeat=2, reference=False)"]
    load = next(text for source, text in outputs.items() if "li.load(MODEL)" in source)
    assert load.strip() == "tiny cpu torch.float32 context 512"  # no TqdmWarning, no loading bar
    lens = outputs["li.lens(lm, prompt, top_k=3)"]
    said = next(cell.source for cell in notebook.cells if cell.source.startswith("## 8. The logit lens"))
    assert "top-1 first at layer 1 (after block 0)" in lens and "after\nthe first block (layer 1" in said


@pytest.mark.slow
def test_the_chapter_runs_against_llm_serve_by_changing_its_load_line(tiny, tmp_path, monkeypatch):
    pytest.importorskip("uvicorn")
    from lookinside.core.model.spec import LoadSpec
    from lookinside.serve.settings import ServeSettings

    from .test_serve import LiveServer

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    load = next(cell for cell in notebook.cells if "li.load(MODEL)" in cell.source)
    with LiveServer(tiny, ServeSettings(spec=LoadSpec(model="tiny", device="cpu"))) as server:
        load.source = load.source.replace("li.load(MODEL)", f"li.connect({server.url!r})")
        outputs = _run(notebook, tmp_path, monkeypatch)
    _finds_paris_and_the_shapes(outputs)
    assert "decode tokens/s" in outputs["li.bench(lm, new_tokens=48, repeat=2, reference=False)"]
