"""The notebook runs against a freshly materialised pipeline and its LanceDB query returns pins."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.pinner_assets.conftest import Pipeline, day

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "query_embeddings.ipynb"


def test_notebook_queries_lancedb(trained_pipeline: Pipeline, tmp_path: Path) -> None:
    p = trained_pipeline
    p.run(["user_embeddings"], day(0), day(3))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    data_dir = str(p.resources["storage"].root)  # type: ignore[attr-defined]
    env_before = os.environ.get("PINNER_DATA_DIR")
    os.environ["PINNER_DATA_DIR"] = data_dir  # the kernel inherits the environment
    try:
        NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        if env_before is None:
            del os.environ["PINNER_DATA_DIR"]
        else:
            os.environ["PINNER_DATA_DIR"] = env_before
    outputs = "\n".join(
        out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert "users," in outputs
    assert "pin_id" in outputs  # the top-10 tables rendered
    assert "of the top 10 pins are from topic" in outputs
