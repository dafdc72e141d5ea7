"""examples/quickstart.ipynb runs from top to bottom in a real Jupyter kernel (nbclient), on a
small subset, and is stored without outputs."""
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parent.parent / "examples" / "quickstart.ipynb"


def test_the_notebook_is_stored_without_outputs():
    import nbformat
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 5
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert "google.colab" in code[0].source and "pip install" in code[0].source


@pytest.mark.slow
def test_the_quickstart_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("IMCLASS_NOTEBOOK_SUBSET", "1200")
    monkeypatch.setenv("IMCLASS_NOTEBOOK_EPOCHS", "2")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "test accuracy" in text and "on 10000 images" in text
    assert "true class:" in text and "model.onnx onnx" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # curves, confusion matrix, sample predictions
    assert (tmp_path / "runs" / "notebook" / "model.onnx").is_file()
