"""Wall time per image of anytime inference with real early exit, against running all T steps.

Four ways to classify the same images with the same network:

- ``full1`` / ``fullB``: ``model.apply(x, num_steps=T)`` on one image / batches of ``--batch``
  images at a time (all T steps);
- ``stream1``: ``tks_jax.inference.step`` one image at a time, stopping the image as soon as
  ``tks_jax.anytime``'s exit rule is met (the running mean's confidence >= threshold);
- ``streamB``: ``--batch`` images stepped together; an image that is sure leaves the batch
  (its state rows are dropped), so later steps run on fewer images. Every batch size
  1..B is compiled in the warm-up, outside the timing.

The streaming paths check confidence on the host after each step, as a deployment would. With
``--workdir`` the run's trained network and its evaluation split are used, and the threshold
defaults to the one its report calibrated on validation (``--anytime``); without, a randomly
initialised zoo model on random inputs (only the mechanics are meaningful then; pass
``--threshold``). Each mode is timed ``--repeats`` times and the median is reported. Prints one
JSON line per mode (seconds per image, speed-up against ``full`` at the same batch, mean steps,
accuracy with ``--workdir``, the date, machine and load average), appended to ``--out`` if given.

    python -m benchmarks.anytime_latency --model vgg_snn --width 0.25 --num_steps 10 \\
        --images 64 --batch 8 --threshold 0.5
    python -m benchmarks.anytime_latency --workdir runs/nmnist_synth_tks --images 256 \\
        --batch 8
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time

import jax
import numpy as np

from tks_jax import anytime, inference, models
from tks_jax.training import build


def _confidence(mean_logits: np.ndarray, kind: str) -> np.ndarray:
    """``anytime.confidence_of`` in NumPy (the host-side check after each step)."""
    if kind == "logit":
        return mean_logits.max(-1)
    e = np.exp(mean_logits - mean_logits.max(-1, keepdims=True))
    p = np.sort(e / e.sum(-1, keepdims=True), axis=-1)
    return p[..., -1] if kind == "softmax" else p[..., -1] - p[..., -2]


def _frames(x: np.ndarray, num_steps: int) -> np.ndarray:
    """[T, N, H, W, C] frames (static images repeated)."""
    return x if x.ndim == 5 else np.broadcast_to(x[None], (num_steps,) + x.shape)


@functools.partial(jax.jit, static_argnames=("model", "num_steps"))
def _apply(variables, x, *, model, num_steps):
    return model.apply(variables, x, num_steps=num_steps, train=False)


def run_full(model, variables, x, num_steps, batch):
    # One executable per batch shape, shared by the full modes (full1's is full-B's last
    # short batch).
    apply = functools.partial(_apply, model=model, num_steps=num_steps)
    n = x.shape[-4]
    chunks = [x[..., i:i + batch, :, :, :] for i in range(0, n, batch)]
    for c in chunks[:1]:  # warm-up / compile (and a last short batch)
        jax.block_until_ready(apply(variables, c))
    jax.block_until_ready(apply(variables, chunks[-1]))
    start = time.perf_counter()
    preds = [np.argmax(np.asarray(apply(variables, c)).mean(0), -1) for c in chunks]
    return time.perf_counter() - start, np.concatenate(preds), np.full(n, num_steps)


def run_stream(model, variables, frames, num_steps, batch, threshold, kind):
    """Streams ``batch`` images at a time; sure images leave the batch."""
    step = jax.jit(lambda state, x_t: inference.step(model, variables, state, x_t))
    n = frames.shape[1]
    # Warm-up: compile every batch size that can occur; zero states made once per size.
    zero_state = {}
    for b in range(1, batch + 1):
        zero_state[b] = inference.init_state(model, variables, frames[0, :b])
        jax.block_until_ready(step(zero_state[b], frames[0, :b]))
    preds, steps = np.zeros(n, np.int64), np.zeros(n, np.int64)
    start = time.perf_counter()
    for lo in range(0, n, batch):
        ids = np.arange(lo, min(lo + batch, n))
        state = zero_state[len(ids)]
        total = None
        for t in range(num_steps):
            logits, state = step(state, frames[t, ids])
            logits = np.asarray(logits)
            total = logits if total is None else total + logits
            mean = total / (t + 1)
            done = (_confidence(mean, kind) >= threshold) | (t == num_steps - 1)
            preds[ids[done]] = np.argmax(mean[done], -1)
            steps[ids[done]] = t + 1
            if done.all():
                break
            if done.any():  # finished images leave the batch
                keep = np.flatnonzero(~done)
                ids, total = ids[keep], total[keep]
                state = {
                    inference.STATE: jax.tree.map(
                        lambda a, keep=keep: a[keep] if a.ndim > 0 else a,
                        state[inference.STATE],
                    ),
                    "t": state["t"],
                }
    return time.perf_counter() - start, preds, steps


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default=None, help="a trained run (else a random model)")
    p.add_argument("--model", default="vgg_snn")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--num_steps", type=int, default=None,
                   help="T (default: the run's, or 10 for a random model)")
    p.add_argument("--input_shape", default="48,48,2", help="H,W,C (random model only)")
    p.add_argument("--events", action="store_true", help="random frames [T, ...] (random model)")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threshold", type=float, default=None,
                   help="exit threshold (default: the run's calibrated one; 0.9 otherwise)")
    p.add_argument("--confidence", default=None, choices=anytime.CONFIDENCES,
                   help="confidence of the exit rule (default: the run's, else softmax)")
    p.add_argument("--repeats", type=int, default=3, help="timings per mode (median kept)")
    p.add_argument("--out", default=None, help="JSONL file the rows are appended to")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")

    labels = None
    if args.workdir:
        from tks_jax import anytime_eval
        from tks_jax.training import input_pipeline

        config, model, variables, _ = anytime_eval.restore_run(args.workdir)
        num_steps = args.num_steps or config.num_steps
        args.threshold, args.confidence = _calibrated(args)
        it, _ = input_pipeline.get_dataset(
            config, config.data.eval_split, train=False, batch_size=args.images,
            num_steps=num_steps, seed=config.seed, shard_index=0, shard_count=1,
        )
        batch = next(it)
        keep = np.asarray(batch["mask"], bool)
        x = np.asarray(batch["image"])[..., keep, :, :, :]
        labels = np.asarray(batch["label"])[keep]
    else:
        num_steps = args.num_steps or 10
        args.threshold = 0.9 if args.threshold is None else args.threshold
        args.confidence = args.confidence or "softmax"
        h, w, c = (int(v) for v in args.input_shape.split(","))
        rng = np.random.default_rng(args.seed)
        shape = ((num_steps,) if args.events else ()) + (args.images, h, w, c)
        x = (rng.random(shape) < 0.2).astype(np.float32) if args.events else \
            rng.random(shape, dtype=np.float32)
        model = models.get_model(args.model, num_classes=10, width=args.width)
        variables = build.init_variables(model, jax.random.PRNGKey(args.seed),
                                         x[..., :1, :, :, :], num_steps=num_steps)
    frames = _frames(x, num_steps)
    n = frames.shape[1]
    modes = {
        "full1": (1, lambda: run_full(model, variables, x, num_steps, 1)),
        f"full{args.batch}": (args.batch, lambda: run_full(model, variables, x, num_steps,
                                                           args.batch)),
        "stream1": (1, lambda: run_stream(model, variables, frames, num_steps, 1,
                                          args.threshold, args.confidence)),
        f"stream{args.batch}": (args.batch, lambda: run_stream(
            model, variables, frames, num_steps, args.batch, args.threshold, args.confidence)),
    }
    rows, full_time = [], {}
    for mode, (batch, run) in modes.items():
        times = []
        for _ in range(args.repeats):
            seconds, preds, steps = run()
            times.append(seconds / n)
        per_image = statistics.median(times)
        if mode.startswith("full"):
            full_time[batch] = per_image
        row = {
            "mode": mode, "model": args.workdir or args.model, "num_steps": num_steps,
            "images": n, "batch": batch,
            "threshold": None if mode.startswith("full") else args.threshold,
            "confidence": None if mode.startswith("full") else args.confidence,
            "seconds_per_image": per_image, "spread": [min(times), max(times)],
            "speedup_vs_full": full_time[batch] / per_image,
            "mean_steps": float(np.mean(steps)),
            "date": time.strftime("%Y-%m-%d %H:%M"), "machine": _machine(),
            "load_avg": [round(v, 2) for v in os.getloadavg()],
        }
        if labels is not None:
            row["accuracy"] = float(np.mean(preds == labels))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


def _calibrated(args) -> tuple[float, str]:
    """The threshold and confidence: as given, else those the run's report calibrated."""
    threshold, confidence = args.threshold, args.confidence
    if threshold is None:
        from tks_jax import report

        section = report.load_report(os.path.join(args.workdir, "report")).get("anytime")
        if not section:
            raise SystemExit(
                f"{args.workdir}/report has no calibrated exit rule: pass --threshold, or run "
                f"`python -m tks_jax.evaluate --workdir {args.workdir} --anytime "
                "max_drop=0.005` first.")
        threshold = float("inf") if section["threshold"] is None else section["threshold"]
        confidence = confidence or section["confidence"]
    return threshold, confidence or "softmax"


def _machine() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, " \
        f"jax {jax.__version__} ({jax.default_backend()})"


if __name__ == "__main__":
    main()
