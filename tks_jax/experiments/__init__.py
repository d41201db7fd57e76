"""Experiments of the paper on the data this machine has (issue 7): the ablation study.

    python -m tks_jax.experiments.ablation --out results/ablation --budget full

``tks_jax.experiments.ablation`` plans, runs and aggregates the study (``plan_runs``,
``run_study``, ``aggregate``, ``load_results``, ``penultimate_features``);
``tks_jax.experiments.figures`` draws the paper's figures from its results folder (also used by
``notebooks/02_paper_figures.ipynb``). Submodules are not imported here, so that
``python -m tks_jax.experiments.ablation`` runs the module once.
"""
