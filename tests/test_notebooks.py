"""Both notebooks execute top to bottom (nbclient) on a tiny run, and are stored without outputs.

01 trains a smoke run (``TKS_NOTEBOOK_SMOKE=1``) on the offline MNIST; 02 draws its figures from a
hand-made results folder (the ``fake_study`` fixture of ``conftest.py``), so no study is trained.
"""

from __future__ import annotations

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, "notebooks")


def _execute(name: str, env: dict[str, str], monkeypatch) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()
    return nb


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text"))
    return "\n".join(parts)


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_paper_figures.ipynb"])
def test_stored_without_outputs(name):
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_notebooks_match_their_generator(monkeypatch):
    """The .ipynb files are what ``make_notebooks.py`` writes (edit the script, not the files)."""
    monkeypatch.syspath_prepend(NOTEBOOKS)
    import make_notebooks

    for name, cells in (("01_quickstart.ipynb", make_notebooks.QUICKSTART),
                        ("02_paper_figures.ipynb", make_notebooks.PAPER_FIGURES)):
        stored = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
        fresh = make_notebooks._notebook(cells)
        assert [c.source for c in stored.cells] == [c.source for c in fresh.cells], name


@pytest.mark.slow
def test_quickstart_runs(tmp_path, monkeypatch):
    workdir = str(tmp_path / "quickstart")
    nb = _execute("01_quickstart.ipynb", {"TKS_NOTEBOOK_SMOKE": "1",
                                          "TKS_NOTEBOOK_WORKDIR": workdir}, monkeypatch)
    text = _outputs_text(nb)
    assert "teacher q_b" in text and "top-1" in text
    assert os.path.exists(os.path.join(workdir, "report", "report.json"))
    # The notebook displayed the report's plot.
    assert any("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs",
                                                                                      []))


@pytest.mark.slow
def test_paper_figures_runs(fake_study, monkeypatch):
    nb = _execute("02_paper_figures.ipynb", {"TKS_RESULTS_DIR": fake_study.out}, monkeypatch)
    text = _outputs_text(nb)
    assert "budget: smoke" in text
    assert "96.00 ± 1.00" in text  # the table, from results.json
    assert "22 run records" in text and fake_study.commit in text
    assert "mnist_tks_T4_s2              top-1 97.00%" in text  # a seed, from runs.jsonl
    pngs = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert pngs == 5  # Figs. 3a, 3b, 4, 5 and the per-class accuracy
