"""The training loop and checkpoint evaluation (callable from a notebook).

Sections follow big_vision's trainer: config and workdir, mesh, input pipeline, model and
optimiser, checkpoint, loop, final evaluation and report.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tks_jax.training import (
    checkpointing,
    config_lib,
    evaluation,
    input_pipeline,
    optim,
)
from tks_jax.training import sharding as sharding_lib
from tks_jax.training import steps as steps_lib
from tks_jax.training.compiled import CompiledOnFirstCall
from tks_jax.training.logger import MetricWriter

StepHook = Callable[[int, dict], None]


class NonFiniteLossError(RuntimeError):
    """Raised when a train step produced a non-finite loss or gradient."""


# ------------------------------------------------------------------------------------------
# Building blocks shared by training and evaluation.
# ------------------------------------------------------------------------------------------


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """Calls ``jax.distributed.initialize()`` (auto-detected cluster) if ``config.distributed``."""
    if config.get("distributed", False) and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def build_model(config: ml_collections.ConfigDict, num_classes: int):
    """``tks_jax.models.get_model`` with every option spelled out in ``config.model``."""
    from tks_jax import models

    options = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    if options.get("norm") == "tebn":
        options["num_steps"] = config.num_steps  # TEBN sizes its per-step scales from T.
    return models.get_model(config.model.name, num_classes=num_classes, **options)


def model_step_limit(model) -> int | None:
    """The largest T the model supports (TEBN), or None."""
    from tks_jax import models

    return models.max_num_steps(model)


def _dummy_input(info, num_steps: int) -> jnp.ndarray:
    shape = tuple(info.input_shape)
    if info.is_event:
        frame = shape[1:] if len(shape) == 4 else shape  # [T, H, W, C] or [H, W, C]
        return jnp.zeros((num_steps, 1, *frame), jnp.float32)
    return jnp.zeros((1, *shape), jnp.float32)


def make_init_fn(model, tx, info, config) -> Callable[[jax.Array], dict]:
    """``init(rng) -> state`` building params, BN statistics and optimiser state."""

    def init(rng):
        variables = model.init(rng, _dummy_input(info, config.num_steps),
                               num_steps=config.num_steps, train=False)
        params = variables["params"]
        return {
            "params": params,
            "batch_stats": variables.get("batch_stats", {}),
            "opt_state": tx.init(params),
            "step": jnp.zeros((), jnp.int32),
            "rng": rng,
            "first_nonfinite_step": jnp.full((), -1, jnp.int32),
        }

    return init


def _load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, config_lib.CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: --workdir must be the directory of a training run "
            "(train.py writes config.json there)."
        )
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


# ------------------------------------------------------------------------------------------
# Preemption.
# ------------------------------------------------------------------------------------------


class _StopRequest:
    """Catches SIGTERM (preemption) and asks the loop to save and return."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _should_stop(stop: _StopRequest, step: int, every: int, num_processes: int) -> bool:
    """Whether to save and stop now; all hosts agree (every ``every`` steps) when multi-host."""
    if num_processes == 1:
        return stop.requested
    if step % every:
        return False
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray(stop.requested, np.int32))
    return bool(np.any(flags))


# ------------------------------------------------------------------------------------------
# Training.
# ------------------------------------------------------------------------------------------


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, model=None,
    step_hooks: Sequence[StepHook] = (),
) -> dict[str, Any]:
    """Trains per ``config``, checkpointing into ``workdir``, then evaluates and reports.

    Resumes automatically from the latest checkpoint in ``workdir``. Returns early (after a
    checkpoint) on SIGTERM.

    Args:
      config: an experiment config (``configs/*.py``); ``config.smoke`` shrinks it.
      workdir: run directory: ``config.json``, ``metrics.jsonl``, ``tensorboard/``,
        ``checkpoints/``, ``report/``.
      model: optional Flax module to use instead of ``config.model`` (tests, notebooks).
      step_hooks: callables ``hook(step, train_metrics)`` run on the host after every step.

    Returns:
      ``{'step', 'epoch', 'preempted', 'train_step_traces', 'train': last train scalars,
      'eval': evaluation metrics (None if preempted), 'report_dir'}``.

    Raises:
      ValueError: invalid config, or a workdir holding an incompatible run.
      NonFiniteLossError: a step produced a non-finite loss; no checkpoint was written after it.
    """
    # --- Config and workdir ---------------------------------------------------------------
    maybe_initialize_distributed(config)
    config = config_lib.apply_smoke(config)
    nproc, pidx = jax.process_count(), jax.process_index()
    config_lib.validate_config(config, num_devices=jax.device_count(), num_processes=nproc)
    is_main = pidx == 0
    os.makedirs(workdir, exist_ok=True)
    resume = config_lib.check_workdir(workdir, config)
    if nproc > 1:  # every host has read config.json before process 0 rewrites it
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("tks_workdir_checked")
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not resume and is_main:
        for name in ("checkpoints", "report", "tensorboard", "metrics.jsonl"):
            path = os.path.join(workdir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
        with open(os.path.join(workdir, config_lib.CONFIG_FILE), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    if nproc > 1:
        multihost_utils.sync_global_devices("tks_workdir_ready")
    writer = MetricWriter(workdir, enabled=is_main, tensorboard=config.get("tensorboard", True))

    # --- Mesh -----------------------------------------------------------------------------
    mesh = sharding_lib.make_mesh()
    repl = sharding_lib.replicated(mesh)

    # --- Input pipeline -------------------------------------------------------------------
    local_batch = config.batch_size // nproc
    train_iter, info = input_pipeline.get_dataset(
        config, config.data.train_split, train=True, batch_size=local_batch,
        num_steps=config.num_steps, seed=config.seed, shard_index=pidx, shard_count=nproc,
    )
    num_train = info.num_examples
    if config.data.get("max_train_examples"):
        num_train = min(num_train, config.data.max_train_examples)
    steps_per_epoch = num_train // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch_size={config.batch_size} is larger than the {num_train} training examples; "
            "use a smaller batch_size."
        )
    total_steps = config.num_epochs * steps_per_epoch
    if config.get("max_train_steps"):
        total_steps = min(total_steps, config.max_train_steps)

    # --- Model and optimiser --------------------------------------------------------------
    if model is None:
        model = build_model(config, info.num_classes)
        eval_t = config.eval_num_steps or config.num_steps
        config_lib.check_num_steps_supported(model_step_limit(model), eval_t, "eval_num_steps")
    schedule = optim.make_schedule(config, steps_per_epoch)
    tx = optim.make_optimizer(config, schedule)
    init_fn = make_init_fn(model, tx, info, config)
    rng = jax.random.PRNGKey(config.seed)
    abstract = jax.eval_shape(init_fn, rng)
    state_sharding = jax.tree.map(lambda _: repl, abstract)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, state_sharding
    )

    # --- Checkpoint -----------------------------------------------------------------------
    manager = checkpointing.make_manager(
        ckpt_dir, max_to_keep=config.keep_checkpoints,
        async_save=config.get("async_checkpointing", True),
    )
    latest = manager.latest_step()
    if latest is not None:
        state = checkpointing.restore(manager, latest, abstract, train_iter)
        writer.info("Resumed from %s at step %d.", ckpt_dir, latest)
    else:
        state = jax.jit(init_fn, out_shardings=state_sharding)(rng)
        n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
        writer.info("Initialised %s: %d parameters.", config.model.name, n_params)

    # --- Steps ----------------------------------------------------------------------------
    train_step, traces = steps_lib.make_train_step(model, tx, config, schedule)
    jitted: dict = {}  # built at the first batch (its keys give the batch shardings)

    def run_step(state, batch, lam):
        if not jitted:
            jitted["shardings"] = sharding_lib.batch_shardings(mesh, batch, is_event=info.is_event)
            jitted["step"] = CompiledOnFirstCall(jax.jit(
                train_step, donate_argnums=0,
                in_shardings=(state_sharding, jitted["shardings"], repl),
                out_shardings=(state_sharding, repl),
            ), release_host_memory=True)
        global_batch = sharding_lib.to_global_batch(batch, jitted["shardings"])
        return jitted["step"](state, global_batch, lam)

    def lam_at(epoch: int) -> np.float32:
        if config.loss.name != "tks":
            return np.float32(0.0)
        from tks_jax import losses

        return np.float32(losses.tks_lambda(epoch, config.num_epochs, config.loss.lambda_peak))

    def check_finite() -> None:
        bad = int(jax.device_get(state["first_nonfinite_step"]))
        if bad >= 0:
            last_good = manager.latest_step()
            manager.wait_until_finished()
            raise NonFiniteLossError(
                # ``bad`` counts completed steps; report the failing one 1-based, like the log.
                f"Non-finite loss or gradient at step {bad + 1} (epoch {bad // steps_per_epoch}); "
                f"training stopped. The last good checkpoint (step {last_good}) was kept. Try a "
                "lower optimizer.base_learning_rate or optimizer.grad_clip_norm."
            )

    def save() -> None:
        check_finite()
        if manager.latest_step() != step:  # e.g. SIGTERM right after a periodic save
            checkpointing.save(manager, int(step), state, train_iter)

    # --- Loop -----------------------------------------------------------------------------
    try:
        step = int(jax.device_get(state["step"]))
        pending: list[dict] = []
        last_train: dict[str, float] = {}
        preempted = False
        t_log, n_log, t_start, step_start = time.time(), 0, None, step
        with _StopRequest() as stop:
            while step < total_steps:
                if _should_stop(stop, step, config.log_every_steps, nproc):
                    writer.info("SIGTERM: saving a checkpoint at step %d and stopping.", step)
                    save()
                    preempted = True
                    break
                epoch = step // steps_per_epoch
                state, metrics = run_step(state, next(train_iter), lam_at(epoch))
                step += 1
                pending.append(metrics)
                n_log += 1
                if t_start is None:  # exclude the first step (compilation) from the speed
                    jax.block_until_ready(metrics)
                    t_start, step_start, t_log, n_log = time.time(), step, time.time(), 0
                for hook in step_hooks:
                    hook(step, metrics)
                epoch_end = step % steps_per_epoch == 0
                if step % config.log_every_steps == 0 or step == total_steps:
                    check_finite()
                    host = jax.device_get(pending)
                    # Averages over the interval; lam and lr are the current values.
                    last_train = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
                    last_train.update(lam=float(host[-1]["lam"]), lr=float(host[-1]["lr"]))
                    pending = []
                    now = time.time()
                    ips = n_log * config.batch_size / max(now - t_log, 1e-9)
                    rate = (step - step_start) / max(now - t_start, 1e-9)
                    eta = (total_steps - step) / rate if rate > 0 else float("inf")
                    writer.write(step, {**last_train, "epoch": step / steps_per_epoch,
                                        "images_per_sec": ips})
                    writer.progress(step, total_steps, last_train, images_per_sec=ips,
                                    eta_seconds=eta)
                    t_log, n_log = now, 0
                if step % config.checkpoint_every_steps == 0 or epoch_end or step == total_steps:
                    save()
                eval_every = config.get("eval_every_epochs") or 0
                if (epoch_end and eval_every and (step // steps_per_epoch) % eval_every == 0
                        and step < total_steps):
                    metrics_eval = evaluate_state(config, model, state, mesh, info.is_event)
                    writer.write(step, _scalar_summary(metrics_eval), prefix="eval")
                    writer.info("eval at step %d: top1=%.4f", step, metrics_eval["top1"])
        manager.wait_until_finished()

        result: dict[str, Any] = {
            "step": step, "epoch": step / steps_per_epoch, "preempted": preempted,
            "train_step_traces": traces[0], "train": last_train, "eval": None, "report_dir": None,
        }
        if not preempted:
            check_finite()
            metrics_eval = evaluate_state(config, model, state, mesh, info.is_event)
            writer.write(step, _scalar_summary(metrics_eval), prefix="eval")
            result["eval"] = metrics_eval
            report_dir = os.path.join(workdir, "report")
            if is_main:
                from tks_jax import report

                report.write_report(
                    report.build_report(metrics_eval, config, step=step, train=last_train),
                    report_dir,
                )
            result["report_dir"] = report_dir
    finally:
        manager.close()
        writer.close()
    return result


def _scalar_summary(metrics: dict[str, Any]) -> dict[str, float]:
    out = {k: metrics[k] for k in ("top1", "top5", "aurc_logit", "aurc_softmax")}
    out.update({f"first_{k + 1}_steps_acc": v for k, v in enumerate(metrics["first_k_accuracy"])})
    out["spikes_per_image"] = metrics["spikes_per_image"]
    return out


# ------------------------------------------------------------------------------------------
# Evaluation.
# ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _jitted_eval_step(model, num_steps: int, mesh):
    """One jitted eval step per (model, T, mesh): periodic evaluations compile once."""
    repl = sharding_lib.replicated(mesh)
    return CompiledOnFirstCall(
        jax.jit(steps_lib.make_eval_step(model, num_steps), out_shardings=(repl, repl)),
        release_host_memory=True,
    )


def evaluate_state(
    config: ml_collections.ConfigDict, model, state: dict, mesh, is_event: bool, *,
    num_steps: int | None = None, split: str | None = None,
) -> dict[str, Any]:
    """Evaluates a train state over a whole split (see ``evaluation.run_evaluation``)."""
    nproc, pidx = jax.process_count(), jax.process_index()
    num_steps = num_steps or config.get("eval_num_steps") or config.num_steps
    split = split or config.data.eval_split
    eval_iter, info = input_pipeline.get_dataset(
        config, split, train=False, batch_size=config.eval_batch_size // nproc,
        num_steps=num_steps, seed=config.seed, shard_index=pidx, shard_count=nproc,
    )
    eval_step = _jitted_eval_step(model, num_steps, mesh)
    variables = {"params": state["params"]}
    if state["batch_stats"]:
        variables["batch_stats"] = state["batch_stats"]
    shardings: dict = {}

    def to_device(batch):
        if not shardings:
            shardings.update(sharding_lib.batch_shardings(mesh, batch, is_event=is_event))
        return sharding_lib.to_global_batch(batch, shardings)

    metrics = evaluation.run_evaluation(eval_step, variables, eval_iter, to_device,
                                        info.num_classes)
    metrics["num_steps"] = num_steps
    metrics["split"] = split
    return metrics


def evaluate_workdir(
    workdir: str, *, num_steps: int | None = None, split: str | None = None, model=None,
) -> dict[str, Any]:
    """Evaluates the latest checkpoint of a run at ``num_steps`` and writes its report.

    The report goes to ``workdir/report`` at the training T and default split, otherwise to
    ``workdir/report/<split>_T<num_steps>``.

    Args:
      workdir: a run directory written by ``train_and_evaluate``.
      num_steps: T at test time (default: the config's eval T).
      split: data split (default: ``config.data.eval_split``).
      model: optional module replacing ``config.model`` (tests).

    Returns:
      The report dict (see ``tks_jax.report.build_report``) with ``report_dir`` added.
    """
    config = _load_workdir_config(workdir)
    maybe_initialize_distributed(config)
    if num_steps is not None and (isinstance(num_steps, bool) or num_steps < 1):
        raise ValueError(f"--num_steps must be an integer >= 1, got {num_steps!r}.")
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
        model = build_model(config, info.num_classes)
        config_lib.check_num_steps_supported(model_step_limit(model), t_eval, "--num_steps")
    manager = checkpointing.make_manager(
        os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints,
        async_save=False,
    )
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints; train first.")
    tx = optim.make_optimizer(config, optim.make_schedule(config, 1))
    init_fn = make_init_fn(model, tx, info, config)
    abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl),
                            abstract)
    state = checkpointing.restore_state_only(manager, step, abstract)
    manager.close()
    metrics = evaluate_state(config, model, state, mesh, info.is_event, num_steps=t_eval,
                             split=split)
    default = t_eval == (config.get("eval_num_steps") or config.num_steps) and (
        split == config.data.eval_split)
    report_dir = os.path.join(workdir, "report")
    if not default:
        report_dir = os.path.join(report_dir, f"{split}_T{t_eval}")
    from tks_jax import report

    rep = report.build_report(metrics, config, step=step)
    if jax.process_index() == 0:
        report.write_report(rep, report_dir)
    rep["report_dir"] = report_dir
    return rep
