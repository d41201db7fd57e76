"""Metric logging for process 0: console progress line, ``metrics.jsonl``, TensorBoard.

Other processes get a writer that drops everything, so call sites need no ``if`` on the
process index. The library prints nothing itself: the console line goes through absl logging.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping

from absl import logging


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class MetricWriter:
    """Writes scalars to ``workdir/metrics.jsonl`` and TensorBoard, and logs a progress line.

    Args:
      workdir: the run directory.
      enabled: False on processes other than 0 (everything becomes a no-op).
      tensorboard: whether to write TensorBoard event files under ``workdir/tensorboard``.
    """

    def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"), flush_secs=30)

    def write(self, step: int, scalars: Mapping[str, float], *, prefix: str = "train") -> None:
        """Records ``scalars`` at ``step`` under ``prefix`` (e.g. ``train``, ``eval``)."""
        if not self.enabled:
            return
        record = {"step": int(step), "split": prefix, "time": time.time()}
        record.update({k: float(v) for k, v in scalars.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(f"{prefix}/{k}", float(v), int(step))

    def progress(
        self, step: int, total_steps: int, scalars: Mapping[str, float], *, images_per_sec: float,
        eta_seconds: float,
    ) -> None:
        """Logs one progress line: bar, step, loss, lam, lr, img/s and ETA."""
        if not self.enabled:
            return
        frac = step / max(total_steps, 1)
        bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
        parts = [f"[{bar}] {step}/{total_steps}"]
        for key in ("loss", "lam", "lr", "top1"):
            if key in scalars:
                parts.append(f"{key}={scalars[key]:.4g}")
        parts.append(f"img/s={images_per_sec:.1f}")
        parts.append(f"eta={_fmt_duration(eta_seconds)}")
        logging.info(" ".join(parts))

    def info(self, msg: str, *args) -> None:
        if self.enabled:
            logging.info(msg, *args)

    def warn(self, msg: str) -> None:
        """Logs a warning (one line) on process 0."""
        if self.enabled:
            logging.warning("%s", msg)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


_NOISY_LIBRARIES = ("orbax", "tensorflow_datasets", "grain", "etils", "matplotlib")


class _QuietLibraries(logging.logging.Filter):
    """Drops INFO records of orbax/tfds/grain (every checkpoint logs a dozen lines)."""

    def filter(self, record) -> bool:
        noisy = any(f"/{lib}/" in record.pathname for lib in _NOISY_LIBRARIES)
        return record.levelno >= logging.logging.WARNING or not noisy


def quiet_library_logs() -> None:
    """For command-line entry points: hide INFO logs of orbax, tfds, grain (absl handler)."""
    logging.get_absl_handler().python_handler.addFilter(_QuietLibraries())
