"""Evaluation over a whole split: accumulate per-sample outputs on the host, then the metrics.

Everything the report needs (``docs/method.md`` §10) comes from one pass at the evaluated T:
top-1/top-5 of the averaged logits, AURC x 1000 with max-logit and max-softmax confidence,
per-step accuracy, accuracy of the first k steps for k = 1..T, per-class accuracy at the first
step, and firing rates / spikes per image per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np

from tks_jax import metrics


def compute_metrics(
    mean_logits: np.ndarray, labels: np.ndarray, step_pred: np.ndarray, firstk_pred: np.ndarray,
    num_classes: int,
) -> dict[str, Any]:
    """Metrics of one evaluated split from its per-sample outputs.

    Args:
      mean_logits: ``[N, C]`` time-averaged logits.
      labels: ``[N]`` int labels.
      step_pred: ``[T, N]`` argmax of each step's logits.
      firstk_pred: ``[T, N]`` argmax of the mean of the first k = row + 1 steps.
      num_classes: C.

    Returns:
      A JSON-able dict: ``top1``, ``top5`` (fractions), ``aurc_logit``, ``aurc_softmax``
      (x 1000), ``per_step_accuracy`` and ``first_k_accuracy`` (lists of T fractions),
      ``per_class_accuracy_first_step`` (list of C; NaN for classes absent from the split),
      ``num_examples``. All computed by :mod:`tks_jax.metrics`.

    Raises:
      ValueError: non-finite logits (a diverged model) or labels outside ``[0, C)``.
    """
    labels = np.asarray(labels)
    k = min(5, num_classes)
    return {
        "num_examples": len(labels),
        "top1": float(metrics.top_k_accuracy(mean_logits, labels, k=1)),
        "top5": float(metrics.top_k_accuracy(mean_logits, labels, k=k)),
        # The paper's AURC: confidence = max of the raw mean logits (ties in confidence
        # averaged).
        "aurc_logit": 1000.0 * float(metrics.aurc(mean_logits, labels, confidence="logit")),
        "aurc_softmax": 1000.0 * float(metrics.aurc(mean_logits, labels, confidence="softmax")),
        "per_step_accuracy": np.asarray(metrics.accuracy(step_pred, labels)).tolist(),
        "first_k_accuracy": np.asarray(metrics.accuracy(firstk_pred, labels)).tolist(),
        "per_class_accuracy_first_step": np.asarray(
            metrics.class_accuracy(step_pred[0], labels, num_classes)
        ).tolist(),
    }


def _spike_summary(intermediates: dict) -> dict[str, dict[str, float]]:
    if not intermediates:
        return {}
    from tks_jax import models

    return models.spike_summary(intermediates)


def run_evaluation(
    eval_step: Callable[[dict, dict], tuple[dict, dict]], variables: dict,
    batches: Iterable[dict], to_device: Callable[[dict], dict], num_classes: int,
) -> dict[str, Any]:
    """Evaluates ``variables`` over every batch of a split (padding excluded by ``mask``).

    Args:
      eval_step: the jitted step of ``steps.make_eval_step`` with replicated outputs.
      variables: model variables (``params`` and ``batch_stats``).
      batches: host batches of this process (the eval iterator).
      to_device: host batch -> global device batch.
      num_classes: C.

    Returns:
      ``compute_metrics`` output plus ``spikes``: per layer ``{'rate', 'spikes_per_image'}``
      averaged over batches weighted by their number of real samples, and
      ``spikes_per_image`` (sum over layers).
    """
    parts: dict[str, list[np.ndarray]] = {"mean_logits": [], "label": [], "step_pred": [],
                                         "firstk_pred": []}
    spike_sums: dict[str, dict[str, float]] = {}
    total = 0
    for batch in batches:
        outputs, stats = eval_step(variables, to_device(batch))
        outputs = jax.device_get(outputs)
        mask = np.asarray(outputs["mask"], bool)
        parts["mean_logits"].append(outputs["mean_logits"][mask])
        parts["label"].append(outputs["label"][mask])
        parts["step_pred"].append(outputs["step_pred"][:, mask])
        parts["firstk_pred"].append(outputs["firstk_pred"][:, mask])
        real = int(mask.sum())
        total += real
        # Spike statistics are batch means over all rows, padded ones included (approximation
        # confined to the last eval batch); weight each batch by its real samples.
        for layer, values in _spike_summary(jax.device_get(stats)).items():
            acc = spike_sums.setdefault(layer, {})
            for key, v in values.items():
                acc[key] = acc.get(key, 0.0) + real * float(np.mean(v))
    if total == 0:
        raise ValueError("The evaluation split yielded no examples; check data.eval_split.")
    result = compute_metrics(
        np.concatenate(parts["mean_logits"]), np.concatenate(parts["label"]),
        np.concatenate(parts["step_pred"], axis=1), np.concatenate(parts["firstk_pred"], axis=1),
        num_classes,
    )
    spikes = {layer: {k: v / total for k, v in acc.items()} for layer, acc in spike_sums.items()}
    result["spikes"] = spikes
    result["spikes_per_image"] = float(
        sum(v.get("spikes_per_image", 0.0) for v in spikes.values())
    )
    return result
