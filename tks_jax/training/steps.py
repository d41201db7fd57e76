"""The jitted train and eval steps (the loss comes from ``objectives``, by ``config.loss``).

The train state is a plain dict (big_vision style):
``{'params', 'batch_stats', 'opt_state', 'step', 'rng', 'first_nonfinite_step'}``.
``first_nonfinite_step`` is -1 until a step produces a non-finite loss or gradient; the loop
reads it on the host before every checkpoint and stops, so a bad state is never saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from tks_jax import metrics as metrics_lib
from tks_jax.training import objectives

State = dict[str, Any]


def _variables(params, batch_stats) -> dict:
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def make_train_step(
    model, tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
    schedule: Callable[[jax.Array], jax.Array],
) -> tuple[Callable[[State, dict, jax.Array], tuple[State, dict]], list[int]]:
    """Builds ``train_step(state, batch, lam) -> (state, metrics)`` (not yet jitted).

    Returns:
      The step function and a one-element list counting how often it was traced (the loop
      reports it; it must stay 1 across epochs since ``lam`` is a traced argument).
    """
    num_steps = config.num_steps
    traces = [0]

    def train_step(state: State, batch: dict, lam: jax.Array) -> tuple[State, dict]:
        traces[0] += 1

        def loss_fn(params):
            logits, updates = model.apply(
                _variables(params, state["batch_stats"]), batch["image"], num_steps=num_steps,
                train=True, mutable=["batch_stats"],
            )
            logits = logits.astype(jnp.float32)
            loss, aux = objectives.compute_loss(config.loss, logits, batch["label"], lam)
            return loss, (logits, updates, aux)

        (loss, (logits, updates, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"]
        )
        param_updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], param_updates)
        grad_norm = optax.tree_utils.tree_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        bad = state["first_nonfinite_step"]
        new_state = dict(
            state,
            params=params,
            opt_state=opt_state,
            batch_stats=updates.get("batch_stats", state["batch_stats"]),
            step=state["step"] + 1,
            first_nonfinite_step=jnp.where((bad < 0) & ~finite, state["step"], bad),
        )
        # Prediction is argmax of the time-averaged logits (Eq. 3).
        top1 = metrics_lib.top_k_accuracy(logits, batch["label"])
        metrics = {"loss": loss, "top1": top1, "lr": schedule(state["step"]), "lam": lam,
                   "grad_norm": grad_norm, **aux}
        return new_state, metrics

    return train_step, traces


def make_eval_step(model, num_steps: int) -> Callable[[dict, dict], tuple[dict, dict]]:
    """Builds ``eval_step(variables, batch) -> (outputs, spike_stats)`` (not yet jitted).

    ``outputs`` (batch axis last-but-time, all for the host):
      ``mean_logits`` ``[B, C]`` float32 (Eq. 3 aggregated output);
      ``step_pred`` ``[T, B]`` argmax of each step's logits (per-step accuracy, Fig. 4);
      ``firstk_pred`` ``[T, B]`` argmax of the mean of the first k steps, row k-1 (Fig. 3a;
      exact for a causal SNN with inference-mode BN);
      ``label`` ``[B]``, ``mask`` ``[B]``.
    ``spike_stats``: the raw ``intermediates`` collection (sown firing statistics, ``{}`` if the
    model sows none), for ``tks_jax.models.spike_summary`` on the host.
    """

    def eval_step(variables: dict, batch: dict) -> tuple[dict, dict]:
        logits, inter = model.apply(
            variables, batch["image"], num_steps=num_steps, train=False,
            mutable=["intermediates"],
        )
        logits = logits.astype(jnp.float32)
        outputs = {
            "mean_logits": logits.mean(0),
            "step_pred": metrics_lib.per_step_predictions(logits),
            "firstk_pred": metrics_lib.first_k_predictions(logits),
            "label": batch["label"],
            "mask": batch["mask"],
        }
        # Sown firing statistics (scalars); ``tks_jax.models.spike_summary`` reads them on
        # the host.
        stats = inter.get("intermediates", {})
        return outputs, stats

    return eval_step
