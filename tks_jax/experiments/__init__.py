"""Experiments of the paper on the data this machine has: the ablation study.

    python -m tks_jax.experiments.ablation --out results/ablation --budget full

``tks_jax.experiments.ablation`` is the command line and gathers the study's public API
(``plan_runs``, ``run_study``, ``aggregate``, ``load_results``, ``penultimate_features``, ...)
from its modules ``plan``, ``runner``, ``records``, ``features``, ``aggregate``, ``claims`` and
``summary``; ``tks_jax.experiments.figures`` draws the paper's figures from a results folder
(also used by ``notebooks/02_paper_figures.ipynb``). Submodules are not imported here, so that
``python -m tks_jax.experiments.ablation`` runs the module once.
"""
