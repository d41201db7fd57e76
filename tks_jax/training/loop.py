"""The training loop (callable from a notebook).

Sections follow big_vision's trainer: config and workdir (``workdir``: lock, artefacts,
config.json), mesh, input pipeline, model and optimiser (``build``), checkpoint
(``checkpointing``: restore with fallback, integrity, keep policy), loop, final evaluation
(``evaluate_run``) and report. Failure handling and exit codes: README "Failure handling",
``errors``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from tks_jax import provenance
from tks_jax.training import (
    build,
    checkpointing,
    config_lib,
    input_pipeline,
    objectives,
    optim,
)
from tks_jax.training import compiled as compiled_lib
from tks_jax.training import evaluate_run as eval_lib
from tks_jax.training import sharding as sharding_lib
from tks_jax.training import steps as steps_lib
from tks_jax.training import workdir as workdir_lib
from tks_jax.training.compiled import CompiledOnFirstCall
from tks_jax.training.errors import (
    ConfigError,
    NonFiniteLossError,
    TrainingError,
    WorkdirLockedError,
)
from tks_jax.training.logger import MetricWriter
from tks_jax.training.preemption import StopRequest, should_stop

# Former homes of these names (callers import them from here).
build_model = build.build_model
make_init_fn = build.make_init_fn
model_step_limit = build.model_step_limit
maybe_initialize_distributed = build.maybe_initialize_distributed
evaluate_state = eval_lib.evaluate_state
evaluate_workdir = eval_lib.evaluate_workdir
_jitted_eval_step = eval_lib.jitted_eval_step

StepHook = Callable[[int, dict], None]


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _acquire_lock(lock: workdir_lib.WorkdirLock) -> None:
    """Process 0 takes the workdir lock; every process fails if it could not."""
    error = None
    try:
        lock.acquire()
    except TrainingError as e:
        error = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
        if not ok and error is None:
            raise WorkdirLockedError(f"Workdir {lock.workdir!r} is in use by another run "
                                     "(process 0 could not take its lock).")
    if error is not None:
        raise error


# ------------------------------------------------------------------------------------------
# Training.
# ------------------------------------------------------------------------------------------


class _Trainer:
    """One training run: set-up that validates everything, then the loop and the final eval.

    ``self.state`` is the only mutable train state; each method reads and replaces it.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, model, hooks):
        self.config, self.workdir, self.hooks = config, workdir, tuple(hooks)
        # The code this run trains with, recorded in its report even if a commit lands while
        # it trains.
        self.code = provenance.git_info()
        self.nproc, self.is_main = jax.process_count(), jax.process_index() == 0
        self.ckpt_dir = os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)
        self.state_bytes = 0
        self.writer: MetricWriter | None = None
        self.saver: checkpointing.Saver | None = None
        self.decision = workdir_lib.check_workdir(workdir, config)
        _sync("tks_workdir_checked")  # every host read config.json before it is rewritten
        self._setup_data()
        self._setup_model(model)

    # --- Set-up (nothing in the workdir changes until ``prepare``) --------------------------

    def _setup_data(self) -> None:
        c, pidx = self.config, jax.process_index()
        try:
            self.train_iter, self.info = input_pipeline.get_dataset(
                c, c.data.train_split, train=True, batch_size=c.batch_size // self.nproc,
                num_steps=c.num_steps, seed=c.seed, shard_index=pidx, shard_count=self.nproc,
            )
        except (FileNotFoundError, ValueError) as e:  # missing or unusable data: the message
            raise ConfigError(str(e)) from None  # names the path and the prepare command
        num_train = self.info.num_examples
        if c.data.get("max_train_examples"):
            num_train = min(num_train, c.data.max_train_examples)
        self.steps_per_epoch = num_train // c.batch_size
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"batch_size={c.batch_size} is larger than the {num_train} training examples; "
                "use a smaller batch_size."
            )
        self.total_steps = c.num_epochs * self.steps_per_epoch
        if c.get("max_train_steps"):
            self.total_steps = min(self.total_steps, c.max_train_steps)

    def _setup_model(self, model) -> None:
        c = self.config
        if model is None:
            try:
                model = build.build_model(c, self.info.num_classes)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"Invalid config: the model cannot be built: {e}") from None
            eval_t = c.eval_num_steps or c.num_steps
            config_lib.check_num_steps_supported(build.model_step_limit(model), eval_t,
                                                 "eval_num_steps")
        self.model = model
        self.mesh = sharding_lib.make_mesh()
        self.repl = sharding_lib.replicated(self.mesh)
        self.schedule = optim.make_schedule(c, self.steps_per_epoch)
        self.tx = optim.make_optimizer(c, self.schedule)
        self.init_fn = build.make_init_fn(model, self.tx, self.info, c)
        self.abstract = build.abstract_state(self.init_fn, self.repl)
        self.state_sharding = jax.tree.map(lambda x: x.sharding, self.abstract)
        self.state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self.abstract))

    # --- Workdir and state ----------------------------------------------------------------

    def prepare(self) -> None:
        """The last step before training: replaces a fresh workdir's artefacts, restores or
        initialises the state."""
        c = self.config
        if self.decision["fresh"] and self.is_main:
            workdir_lib.clear_run(self.workdir)
            workdir_lib.write_config(self.workdir, c, self.decision["history"])
        _sync("tks_workdir_ready")
        self.writer = MetricWriter(self.workdir, enabled=self.is_main,
                                   tensorboard=c.get("tensorboard", True))
        self._open_manager()
        if self.decision["changes"]:
            self._set_aside_diverged()
        state, step, moved = checkpointing.restore_newest(
            self.saver.manager, self.abstract, self.train_iter, warn=self.writer.warn,
            move_aside=self.is_main)
        if moved:
            _sync("tks_corrupt_moved")
            self._open_manager()  # forget the moved steps
        if step is None:
            self.state = build.initial_state(self.init_fn, c.seed, self.state_sharding)
            n_params = sum(x.size for x in jax.tree.leaves(self.state["params"]))
            self.writer.info("Initialised %s: %d parameters.", c.model.name, n_params)
        else:
            self.state = state
            self.writer.info("Resumed from %s at step %d.", self.ckpt_dir, step)
        if self.decision["changes"] and self.is_main:
            history = [*self.decision["history"],
                       workdir_lib.changes_record(step or 0, self.decision["changes"])]
            workdir_lib.write_config(self.workdir, c, history)
            self.writer.info("Resumed with changes %s (recorded in config.json).",
                             self.decision["changes"])

    def _open_manager(self) -> None:
        if self.saver is not None:
            self.saver.manager.close()
        async_save = self.config.get("async_checkpointing", True)
        manager = checkpointing.make_manager(self.ckpt_dir,
                                             max_to_keep=self.config.keep_checkpoints,
                                             async_save=async_save)
        self.saver = checkpointing.Saver(manager, async_save=async_save,
                                         write_integrity=self.is_main)

    def _set_aside_diverged(self) -> None:
        """Resuming with changed optimiser settings starts from the newest sane checkpoint:
        newer (diverging) steps are renamed ``<step>.diverged``."""
        sane = self.saver.newest_sane_step()
        newer = [s for s in self.saver.manager.all_steps() if sane is not None and s > sane]
        if not newer:
            return
        if self.is_main:
            for s in newer:
                path = checkpointing.step_dir(self.saver.manager, s)
                os.rename(path, path + ".diverged")
                self.writer.warn(f"Moved {path} aside to {path}.diverged (parameters not sane); "
                                 f"resuming from step {sane}.")
        _sync("tks_diverged_moved")
        self._open_manager()

    # --- Steps ----------------------------------------------------------------------------

    def _compile(self, batch) -> None:
        train_step, self.traces = steps_lib.make_train_step(self.model, self.tx, self.config,
                                                            self.schedule)
        self.batch_shardings = sharding_lib.batch_shardings(self.mesh, batch,
                                                            is_event=self.info.is_event)
        self.step_fn = CompiledOnFirstCall(jax.jit(
            train_step, donate_argnums=0,
            in_shardings=(self.state_sharding, self.batch_shardings, self.repl),
            out_shardings=(self.state_sharding, self.repl),
        ), release_host_memory=compiled_lib.trims_host_memory())

    def run_step(self, lam: np.float32) -> dict:
        batch = next(self.train_iter)
        if not hasattr(self, "step_fn"):
            self._compile(batch)
        global_batch = sharding_lib.to_global_batch(batch, self.batch_shardings)
        self.state, metrics = self.step_fn(self.state, global_batch, lam)
        return metrics

    def lam_at(self, epoch: int) -> np.float32:
        return objectives.lam_at(self.config, epoch)

    def check_finite(self) -> None:
        bad = int(jax.device_get(self.state["first_nonfinite_step"]))
        if bad < 0:
            return
        self.saver.finalize()
        good = self.saver.newest_sane_step()
        if good is None:
            kept = ("No sane checkpoint was written before it, so a re-run starts afresh: "
                    "re-run with e.g. --config.optimizer.base_learning_rate=<lower> "
                    "--config.resume_with_changes=optimizer.base_learning_rate")
        else:
            kept = (f"The newest sane checkpoint (step {good}) was kept: re-run with e.g. "
                    "--config.optimizer.base_learning_rate=<lower> "
                    "--config.resume_with_changes=optimizer.base_learning_rate (or "
                    "optimizer.grad_clip_norm) to resume from it")
        raise NonFiniteLossError(
            # ``bad`` counts completed steps; report the failing one 1-based, like the log.
            f"Non-finite loss or gradient at step {bad + 1} (epoch "
            f"{bad // self.steps_per_epoch}); training stopped. {kept}."
        )

    def save(self, step: int) -> None:
        self.check_finite()
        if self.saver.manager.latest_step() != step:  # e.g. SIGTERM right after a save
            self.saver.save(step, self.state, self.train_iter)

    # --- Loop -----------------------------------------------------------------------------

    def train(self, stop: StopRequest) -> tuple[int, dict[str, float], bool]:
        """Runs the steps left; returns ``(step, last train scalars, preempted)``."""
        c, spe, total = self.config, self.steps_per_epoch, self.total_steps
        step = int(jax.device_get(self.state["step"]))
        last_train = workdir_lib.last_train_metrics(self.workdir, step) if step else {}
        pending: list[dict] = []
        t_log, n_log, t_start, step_start = time.time(), 0, None, step
        eval_every = c.get("eval_every_epochs") or 0
        while step < total:
            if should_stop(stop, step, c.log_every_steps, self.nproc):
                self.writer.info("SIGTERM: saving a checkpoint at step %d and stopping.", step)
                self.save(step)
                return step, last_train, True
            metrics = self.run_step(self.lam_at(step // spe))
            step += 1
            pending.append(metrics)
            n_log += 1
            if t_start is None:  # exclude the first step (compilation) from the speed
                jax.block_until_ready(metrics)
                t_start, step_start, t_log, n_log = time.time(), step, time.time(), 0
            for hook in self.hooks:
                hook(step, metrics)
            epoch_end = step % spe == 0
            if step % c.log_every_steps == 0 or step == total:
                self.check_finite()
                last_train = self._log(step, pending, n_log, t_log, t_start, step_start)
                pending, t_log, n_log = [], time.time(), 0
            if step % c.checkpoint_every_steps == 0 or epoch_end or step == total:
                self.save(step)
            if epoch_end and eval_every and (step // spe) % eval_every == 0 and step < total:
                m = eval_lib.evaluate_state(c, self.model, self.state, self.mesh,
                                            self.info.is_event)
                self.writer.write(step, eval_lib.scalar_summary(m), prefix="eval")
                self.writer.info("eval at step %d: top1=%.4f", step, m["top1"])
        return step, last_train, False

    def _log(self, step, pending, n_log, t_log, t_start, step_start) -> dict[str, float]:
        host = jax.device_get(pending)
        # Averages over the interval; lam and lr are the current values.
        last_train = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        last_train.update(lam=float(host[-1]["lam"]), lr=float(host[-1]["lr"]))
        now = time.time()
        ips = n_log * self.config.batch_size / max(now - t_log, 1e-9)
        rate = (step - step_start) / max(now - t_start, 1e-9)
        eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
        self.writer.write(step, {**last_train, "epoch": step / self.steps_per_epoch,
                                 "images_per_sec": ips})
        self.writer.progress(step, self.total_steps, last_train, images_per_sec=ips,
                             eta_seconds=eta)
        return last_train

    def final_evaluation(self, step: int, last_train: dict, stop: StopRequest) -> dict | None:
        """Evaluates and writes the report; None if SIGTERM came first (redone on re-run)."""
        self.check_finite()
        try:
            m = eval_lib.evaluate_state(self.config, self.model, self.state, self.mesh,
                                        self.info.is_event,
                                        should_stop=lambda: self.nproc == 1 and stop.requested)
        except eval_lib.EvaluationInterrupted:
            return None
        if self.nproc > 1 and should_stop(stop, 0, 1, self.nproc):
            return None
        self.writer.write(step, eval_lib.scalar_summary(m), prefix="eval")
        report_dir = os.path.join(self.workdir, "report")
        if self.is_main:
            from tks_jax import report

            rep = report.build_report(m, self.config, step=step, train=last_train,
                                      git=self.code)
            report.write_report(rep, report_dir)
            if self.config.get("anytime"):  # from the checkpoint just saved (one host)
                from tks_jax import anytime_eval

                anytime_eval.add_to_report(self.workdir, {**rep, "report_dir": report_dir},
                                           self.config.anytime, model=self.model)
        return {"eval": m, "report_dir": report_dir}

    def run(self) -> dict[str, Any]:
        with StopRequest() as stop:
            step, last_train, preempted = self.train(stop)
            self.saver.finalize()
            result: dict[str, Any] = {
                "step": step, "epoch": step / self.steps_per_epoch, "preempted": preempted,
                "train_step_traces": getattr(self, "traces", [0])[0], "train": last_train,
                "eval": None, "report_dir": None,
            }
            if not preempted:
                final = self.final_evaluation(step, last_train, stop)
                if final is None:
                    self.writer.info("SIGTERM during the final evaluation: stopping; a re-run "
                                     "redoes it.")
                    result["preempted"] = True
                else:
                    result.update(final)
        return result

    def cleanup_partial(self) -> None:
        """Removes orbax's temporary step folders (partial saves) after a failed write."""
        if not self.is_main or not os.path.isdir(self.ckpt_dir):
            return
        for name in os.listdir(self.ckpt_dir):
            if "tmp" in name:
                shutil.rmtree(os.path.join(self.ckpt_dir, name), ignore_errors=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.saver is not None:
                self.saver.manager.close()
        if self.writer is not None:
            self.writer.close()


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, model=None,
    step_hooks: Sequence[StepHook] = (),
) -> dict[str, Any]:
    """Trains per ``config``, checkpointing into ``workdir``, then evaluates and reports.

    Holds the workdir's lock for the whole run. Validates everything (config, data, model
    shapes) before touching the workdir; resumes from the newest checkpoint that restores.
    Returns early (after a checkpoint) on SIGTERM, also during the final evaluation.

    Args:
      config: an experiment config (``configs/*.py``); ``config.smoke`` shrinks it.
      workdir: run directory: ``config.json``, ``metrics.jsonl``, ``tensorboard/``,
        ``checkpoints/``, ``report/``, ``.lock``.
      model: optional Flax module to use instead of ``config.model`` (tests, notebooks).
      step_hooks: callables ``hook(step, train_metrics)`` run on the host after every step.

    Returns:
      ``{'step', 'epoch', 'preempted', 'train_step_traces', 'train': last train scalars,
      'eval': evaluation metrics (None if preempted), 'report_dir'}``.

    Raises:
      ConfigError, WorkdirError: invalid config, or a workdir holding an incompatible run.
      WorkdirLockedError: another live run holds the workdir.
      NonFiniteLossError: a step produced a non-finite loss; no checkpoint was written after it.
      CheckpointRestoreError: checkpoints exist but none restores.
      DiskFullError: a write ran out of space (partial files removed).
    """
    build.maybe_initialize_distributed(config)
    config = config_lib.apply_smoke(config)
    config_lib.validate_config(config, num_devices=jax.device_count(),
                               num_processes=jax.process_count())
    workdir_lib.check_directory_path(workdir, "--workdir")
    workdir_lib.check_directory_path(config.data.get("data_dir"), "data.data_dir")
    os.makedirs(workdir, exist_ok=True)
    lock = workdir_lib.WorkdirLock(workdir, enabled=jax.process_index() == 0)
    _acquire_lock(lock)
    trainer = None
    try:
        if lock.previous_holder:
            from absl import logging

            logging.info("Took over the lock of a crashed run (pid %s on %s).",
                         lock.previous_holder.get("pid"), lock.previous_holder.get("host"))
        trainer = _Trainer(config, workdir, model, step_hooks)
        with workdir_lib.translate_disk_full(workdir, trainer.state_bytes,
                                             cleanup=[trainer.cleanup_partial]):
            try:
                trainer.prepare()
                return trainer.run()
            finally:
                trainer.close()
    finally:
        lock.release()
