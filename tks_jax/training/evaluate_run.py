"""Evaluation of a train state over a split, and of a workdir's latest checkpoint."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from tks_jax.training import (
    build,
    checkpointing,
    config_lib,
    evaluation,
    input_pipeline,
    optim,
)
from tks_jax.training import sharding as sharding_lib
from tks_jax.training import steps as steps_lib
from tks_jax.training import workdir as workdir_lib
from tks_jax.training.errors import CheckpointRestoreError, ConfigError, NonFiniteParamsError


class EvaluationInterrupted(Exception):
    """Raised inside an evaluation when a stop (SIGTERM) was requested; nothing is written."""


@functools.lru_cache(maxsize=8)
def jitted_eval_step(model, num_steps: int, mesh):
    """One jitted eval step per (model, T, mesh): periodic evaluations compile once."""
    from tks_jax.training.loop import CompiledOnFirstCall

    repl = sharding_lib.replicated(mesh)
    return CompiledOnFirstCall(
        jax.jit(steps_lib.make_eval_step(model, num_steps), out_shardings=(repl, repl))
    )


def check_finite_params(state: dict, where: str) -> None:
    """Raises ``NonFiniteParamsError`` if any parameter or BN statistic is NaN or inf."""
    trees = {"params": state["params"], "batch_stats": state.get("batch_stats", {})}
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(trees))[0]
    bad = [jax.tree_util.keystr(p) for p, x in flat if not np.isfinite(np.asarray(x)).all()]
    if bad:
        raise NonFiniteParamsError(
            f"{where} has non-finite values in {len(bad)} arrays (first: {bad[0]}); its metrics "
            "would be meaningless. Evaluate an earlier checkpoint or retrain (README "
            "'Failure handling')."
        )


def _checked_step(eval_step: Callable) -> Callable:
    def step(variables, batch):
        outputs, stats = eval_step(variables, batch)
        logits = np.asarray(jax.device_get(outputs["mean_logits"]))
        if not np.isfinite(logits).all():
            raise NonFiniteParamsError(
                "The model produced non-finite logits on the evaluation data (finite "
                "parameters, overflow in the forward pass); its metrics would be meaningless."
            )
        return outputs, stats

    return step


def _stoppable(batches: Iterable, should_stop: Callable[[], bool] | None) -> Iterator:
    for batch in batches:
        if should_stop is not None and should_stop():
            raise EvaluationInterrupted
        yield batch


def evaluate_state(
    config: ml_collections.ConfigDict, model, state: dict, mesh, is_event: bool, *,
    num_steps: int | None = None, split: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Evaluates a train state over a whole split (see ``evaluation.run_evaluation``).

    Raises:
      NonFiniteParamsError: non-finite parameters or logits.
      EvaluationInterrupted: ``should_stop()`` turned True between batches.
    """
    check_finite_params(state, "The train state")
    nproc, pidx = jax.process_count(), jax.process_index()
    num_steps = num_steps or config.get("eval_num_steps") or config.num_steps
    split = split or config.data.eval_split
    eval_iter, info = input_pipeline.get_dataset(
        config, split, train=False, batch_size=config.eval_batch_size // nproc,
        num_steps=num_steps, seed=config.seed, shard_index=pidx, shard_count=nproc,
    )
    eval_step = _checked_step(jitted_eval_step(model, num_steps, mesh))
    variables = {"params": state["params"]}
    if state["batch_stats"]:
        variables["batch_stats"] = state["batch_stats"]
    shardings: dict = {}

    def to_device(batch):
        if not shardings:
            shardings.update(sharding_lib.batch_shardings(mesh, batch, is_event=is_event))
        return sharding_lib.to_global_batch(batch, shardings)

    metrics = evaluation.run_evaluation(eval_step, variables, _stoppable(eval_iter, should_stop),
                                        to_device, info.num_classes)
    metrics["num_steps"] = num_steps
    metrics["split"] = split
    return metrics


def scalar_summary(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalars of an evaluation logged to ``metrics.jsonl`` / TensorBoard."""
    out = {k: metrics[k] for k in ("top1", "top5", "aurc_logit", "aurc_softmax")}
    out.update({f"first_{k + 1}_steps_acc": v for k, v in enumerate(metrics["first_k_accuracy"])})
    out["spikes_per_image"] = metrics["spikes_per_image"]
    return out


@dataclasses.dataclass
class RestoredRun:
    """The latest restorable checkpoint of a run, ready for inference.

    Attributes:
      config: the run's resolved config (``config.json``).
      model: the Flax model the config describes.
      state: the train state (``params``, ``batch_stats``, ...).
      step: the training step of the restored checkpoint.
      info: the evaluation split's dataset info (shapes, classes, event or static).
      num_steps: the evaluation T.
      split: the evaluation split.
      mesh: the device mesh the state is replicated over.
    """

    config: ml_collections.ConfigDict
    model: Any
    state: dict
    step: int
    info: Any
    num_steps: int
    split: str
    mesh: Any

    @property
    def variables(self) -> dict:
        """The inference variables ``{'params', 'batch_stats'}``."""
        return {"params": self.state["params"], "batch_stats": self.state["batch_stats"]}


def restore_run(
    workdir: str, *, num_steps: int | None = None, split: str | None = None, model=None,
    check_model: Callable[[Any], None] | None = None,
) -> RestoredRun:
    """Restores the newest checkpoint of ``workdir`` that restores, read-only.

    Reads the workdir without taking its lock (a run may be training in it); a bad step is
    reported and skipped, never moved (the training run owns the folder).

    Args:
      workdir: a run directory written by ``train_and_evaluate``.
      num_steps: T at test time (default: the config's eval T).
      split: data split (default: ``config.data.eval_split``).
      model: optional module replacing ``config.model`` (tests).
      check_model: called with the model before anything is restored (e.g. a check that it
        can be exported), so an unusable model fails fast.

    Raises:
      FileNotFoundError: no ``config.json`` or no checkpoint.
      ConfigError: bad ``num_steps``.
      NonFiniteParamsError: the checkpoint's parameters are not finite.
      CheckpointRestoreError: no checkpoint restores.
    """
    workdir_lib.check_directory_path(workdir, "--workdir")
    config = workdir_lib.load_config(workdir)
    build.maybe_initialize_distributed(config)
    if num_steps is not None and (isinstance(num_steps, bool) or num_steps < 1):
        raise ConfigError(f"--num_steps must be an integer >= 1, got {num_steps!r}.")
    mesh = sharding_lib.make_mesh()
    repl = sharding_lib.replicated(mesh)
    t_eval = num_steps or config.get("eval_num_steps") or config.num_steps
    split = split or config.data.eval_split
    probe_iter, info = input_pipeline.get_dataset(
        config, split, train=False, batch_size=config.eval_batch_size // jax.process_count(),
        num_steps=t_eval, seed=config.seed, shard_index=jax.process_index(),
        shard_count=jax.process_count(),
    )
    del probe_iter
    if model is None:
        model = build.build_model(config, info.num_classes)
        config_lib.check_num_steps_supported(build.model_step_limit(model), t_eval, "--num_steps")
    if check_model is not None:
        check_model(model)
    ckpt_dir = os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)
    if not workdir_lib.has_checkpoints(workdir):
        raise FileNotFoundError(f"No checkpoint in {ckpt_dir}; train first.")
    manager = checkpointing.make_manager(ckpt_dir, max_to_keep=config.keep_checkpoints,
                                         async_save=False)
    tx = optim.make_optimizer(config, optim.make_schedule(config, 1))
    abstract = build.abstract_state(build.make_init_fn(model, tx, info, config), repl)
    try:
        state, step, _ = checkpointing.restore_newest(manager, abstract, warn=_warn,
                                                      move_aside=False)
    finally:
        manager.close()
    if step is None:
        raise CheckpointRestoreError(f"No checkpoint in {ckpt_dir} restores; train first.")
    check_finite_params(state, f"The checkpoint of step {step} in {ckpt_dir}")
    return RestoredRun(config=config, model=model, state=state, step=int(step), info=info,
                       num_steps=int(t_eval), split=split, mesh=mesh)


def evaluate_workdir(
    workdir: str, *, num_steps: int | None = None, split: str | None = None, model=None,
) -> dict[str, Any]:
    """Evaluates the latest checkpoint of a run at ``num_steps`` and writes its report.

    Reads the workdir without taking its lock (a run may be training in it). The report goes
    to ``workdir/report`` at the training T and default split, otherwise to
    ``workdir/report/<split>_T<num_steps>``.

    Args:
      workdir: a run directory written by ``train_and_evaluate``.
      num_steps: T at test time (default: the config's eval T).
      split: data split (default: ``config.data.eval_split``).
      model: optional module replacing ``config.model`` (tests).

    Returns:
      The report dict (see ``tks_jax.report.build_report``) with ``report_dir`` added.

    Raises:
      FileNotFoundError: no ``config.json`` or no checkpoint.
      ConfigError: bad ``num_steps``.
      NonFiniteParamsError: the checkpoint's parameters or the logits are not finite.
      CheckpointRestoreError: no checkpoint restores.
    """
    run = restore_run(workdir, num_steps=num_steps, split=split, model=model)
    config = run.config
    metrics = evaluate_state(config, run.model, run.state, run.mesh, run.info.is_event,
                             num_steps=run.num_steps, split=run.split)
    default = run.num_steps == (config.get("eval_num_steps") or config.num_steps) and (
        run.split == config.data.eval_split)
    report_dir = os.path.join(workdir, "report")
    if not default:
        report_dir = os.path.join(report_dir, f"{run.split}_T{run.num_steps}")
    from tks_jax import report

    rep = report.build_report(metrics, config, step=run.step)
    if jax.process_index() == 0:
        report.write_report(rep, report_dir)
    rep["report_dir"] = report_dir
    return rep


def _warn(msg: str) -> None:
    from absl import logging

    logging.warning("%s", msg)
