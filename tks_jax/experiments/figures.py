"""The paper's figures from an ablation results folder (``results.json``; matplotlib, Agg).

Each ``fig_*`` function takes the results dict (``aggregate.load_results``) and returns a
``matplotlib.figure.Figure``; ``draw_all`` writes them as PNG into the results folder.

- ``fig_fewer_steps`` (Fig. 3a): accuracy of ``argmax mean_{t<k} z_t`` vs k, from the runs at
  the training T (``docs/method.md`` §10).
- ``fig_same_t`` (Fig. 3b): top-1 when training and testing at the same T.
- ``fig_per_step`` (Fig. 4): accuracy of ``argmax z_t`` per step t.
- ``fig_tsne`` (Fig. 5): t-SNE of the penultimate features, baseline vs TKS.
- ``fig_per_class_first_step`` (Sec. 5.4): per-class accuracy of the first step alone.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

SETTING_TITLES = {"mnist": "MNIST (T=4)", "mnist_hard": "MNIST, reduced train set (T=4)",
                  "nmnist_synth": "simulated N-MNIST (T=10)"}
COLORS = {"baseline": "tab:gray", "ls": "tab:blue", "tet": "tab:green", "tks": "tab:red"}
FILES = {
    "fig_fewer_steps": "fig3a_fewer_steps.png",
    "fig_same_t": "fig3b_same_T.png",
    "fig_per_step": "fig4_per_step.png",
    "fig_tsne": "fig5_tsne.png",
    "fig_per_class_first_step": "per_class_first_step.png",
}


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _settings(results: dict) -> list[str]:
    return [s for s in SETTING_TITLES if s in results["groups"]]


def _curve_axes(results: dict, key: str, xlabel: str, title: str):
    plt = _plt()
    settings = _settings(results)
    fig, axes = plt.subplots(1, max(1, len(settings)), figsize=(4.2 * max(1, len(settings)), 3.4),
                             squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=False):
        for loss, g in results["groups"][setting].items():
            mean = 100 * np.asarray(g[key]["mean"], float)
            std = g[key]["std"]
            ks = np.arange(1, len(mean) + 1)
            ax.plot(ks, mean, marker="o", ms=3, color=COLORS.get(loss), label=loss)
            if std is not None:
                s = 100 * np.asarray(std, float)
                ax.fill_between(ks, mean - s, mean + s, color=COLORS.get(loss), alpha=0.15)
            ax.set_xticks(ks)
        ax.set_title(SETTING_TITLES[setting], fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def fig_fewer_steps(results: dict):
    """Fig. 3a: accuracy with the first k test steps of a model trained at T (mean ± std)."""
    return _curve_axes(results, "first_k_accuracy", "test steps k (first k of T)",
                       "Fig. 3a: fewer steps at test time")


def fig_per_step(results: dict):
    """Fig. 4: accuracy of each single step t (mean ± std over seeds)."""
    return _curve_axes(results, "per_step_accuracy", "time step t",
                       "Fig. 4: accuracy of each single step")


def fig_same_t(results: dict):
    """Fig. 3b: trained and tested at the same T (one seed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for loss, per_t in results["sweep"].items():
        ts = [int(t) for t in per_t]
        ax.plot(ts, [100 * v for v in per_t.values()], marker="o", color=COLORS.get(loss),
                label=loss)
        ax.set_xticks(ts)
    ax.set_xlabel("T (train = test)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Fig. 3b: same T for training and test\n(simulated N-MNIST, seed 0)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig_tsne(results: dict, out_dir: str):
    """Fig. 5: t-SNE of the penultimate features (rows: settings, columns: baseline, TKS)."""
    plt = _plt()
    keys = results.get("tsne", {})
    settings = [s for s in SETTING_TITLES if any(k.startswith(s + "/") for k in keys)]
    losses = sorted({k.split("/")[1] for k in keys}, key=lambda x: x != "baseline")
    fig, axes = plt.subplots(max(1, len(settings)), max(1, len(losses)),
                             figsize=(3.6 * max(1, len(losses)), 3.4 * max(1, len(settings))),
                             squeeze=False)
    for i, setting in enumerate(settings):
        for j, loss in enumerate(losses):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            key = f"{setting}/{loss}"
            if key not in keys:
                ax.set_axis_off()
                continue
            data = np.load(os.path.join(out_dir, keys[key]))
            emb, lab = data["embedding"], data["labels"]
            ax.scatter(emb[:, 0], emb[:, 1], c=lab, cmap="tab10", s=3, vmin=0, vmax=9)
            ax.set_title(f"{SETTING_TITLES[setting]}\n{loss}: silhouette "
                         f"{float(data['silhouette']):.3f}", fontsize=8)
    fig.suptitle("Fig. 5: t-SNE of penultimate features (test set, seed 0)", fontsize=10)
    fig.tight_layout()
    return fig


def fig_per_class_first_step(results: dict, losses: tuple[str, ...] = ("baseline", "tks")):
    """Sec. 5.4: per-class accuracy of the first step alone, baseline vs TKS (mean over seeds)."""
    plt = _plt()
    settings = _settings(results)
    fig, axes = plt.subplots(1, max(1, len(settings)), figsize=(4.2 * max(1, len(settings)), 3.4),
                             squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=False):
        groups = results["groups"][setting]
        present = [x for x in losses if x in groups]
        width = 0.8 / max(1, len(present))
        for j, loss in enumerate(present):
            acc = 100 * np.asarray(
                [np.nan if v is None else v
                 for v in groups[loss]["per_class_accuracy_first_step"]["mean"]], float)
            ax.bar(np.arange(len(acc)) + (j - (len(present) - 1) / 2) * width, acc, width,
                   color=COLORS.get(loss), label=loss)
            ax.set_xticks(np.arange(len(acc)))
        ax.set_title(SETTING_TITLES[setting], fontsize=9)
        ax.set_xlabel("class")
        ax.set_ylabel("first-step accuracy (%)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Per-class accuracy of the first step (Sec. 5.4)", fontsize=10)
    fig.tight_layout()
    return fig


def draw_all(results: dict[str, Any], out_dir: str) -> dict[str, str]:
    """Writes every figure the results allow as PNG into ``out_dir``; returns their paths."""
    plt = _plt()
    figs = {"fig_fewer_steps": fig_fewer_steps(results), "fig_per_step": fig_per_step(results),
            "fig_per_class_first_step": fig_per_class_first_step(results)}
    if results.get("sweep"):
        figs["fig_same_t"] = fig_same_t(results)
    if results.get("tsne"):
        figs["fig_tsne"] = fig_tsne(results, out_dir)
    paths = {}
    for name, fig in figs.items():
        paths[name] = os.path.join(out_dir, FILES[name])
        fig.savefig(paths[name], dpi=110)
        plt.close(fig)
    return paths
