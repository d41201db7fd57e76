"""The jitted train and eval steps, and the loss selected by ``config.loss.name``.

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

State = dict[str, Any]


def compute_loss(
    loss_config: ml_collections.ConfigDict, logits: jax.Array, labels: jax.Array, lam: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The training loss of spec sections 4-5 on logits ``[T, B, C]`` and labels ``[B]``.

    Returns:
      ``(loss, aux)``: a float32 scalar and a dict of scalar diagnostics (for TKS: ``ce``, ``kd``).
    """
    from tks_jax import losses

    name = loss_config.name
    if name == "baseline":
        return losses.mean_ce(logits, labels), {}
    if name == "ls":
        return losses.label_smoothing(logits, labels, smoothing=loss_config.smoothing), {}
    if name == "tet":
        loss = losses.tet(logits, labels, lamb=loss_config.tet_lamb, means=loss_config.tet_means)
        return loss, {}
    if name == "tks":
        loss, aux = losses.tks(
            logits, labels, temperature=loss_config.temperature, lam=lam,
            detach_teacher=loss_config.detach_teacher, return_aux=True,
        )
        return loss, {k: v for k, v in aux.items() if k in ("ce", "kd")}
    raise ValueError(f"Unknown loss.name {name!r}; choose baseline, ls, tet or tks.")


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
            loss, aux = compute_loss(config.loss, logits, batch["label"], lam)
            return loss, (logits, updates, aux)

        (loss, (logits, updates, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"]
        )
        param_updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], param_updates)
        grad_norm = optax.global_norm(grads)
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
        top1 = jnp.mean(jnp.argmax(logits.mean(0), -1) == batch["label"])
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
        counts = jnp.arange(1, logits.shape[0] + 1, dtype=jnp.float32)[:, None, None]
        firstk = jnp.cumsum(logits, axis=0) / counts
        outputs = {
            "mean_logits": logits.mean(0),
            "step_pred": jnp.argmax(logits, -1).astype(jnp.int32),
            "firstk_pred": jnp.argmax(firstk, -1).astype(jnp.int32),
            "label": batch["label"],
            "mask": batch["mask"],
        }
        # Sown firing statistics (scalars); ``tks_jax.models.spike_summary`` reads them on
        # the host.
        stats = inter.get("intermediates", {})
        return outputs, stats

    return eval_step
