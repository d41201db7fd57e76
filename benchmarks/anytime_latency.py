"""Wall time per image of anytime inference with real early exit, against running all T steps.

Three ways to classify the same images with the same network:

- ``full``: ``model.apply(x, num_steps=T)`` on batches of ``--batch`` images (all T steps);
- ``stream1``: ``tks_jax.inference.step`` one image at a time, stopping the image as soon as
  ``tks_jax.anytime``'s exit rule is met (the running mean's confidence >= threshold);
- ``streamB``: ``--batch`` images stepped together; an image that is sure leaves the batch
  (its state rows are dropped), so later steps run on fewer images. Every batch size
  1..B is compiled in the warm-up, outside the timing.

The streaming paths check confidence on the host after each step, as a deployment would. With
``--workdir`` the run's trained network and its evaluation split are used; without, a randomly
initialised zoo model on random inputs (only the mechanics are meaningful then; pass
``--threshold``). Prints one JSON line per mode: seconds per image, mean steps, accuracy (with
``--workdir``).

    python -m benchmarks.anytime_latency --model vgg_snn --width 0.25 --num_steps 10 \\
        --images 64 --batch 8 --threshold 0.5
    python -m benchmarks.anytime_latency --workdir runs/nmnist_synth_tks --images 256 \\
        --batch 8 --threshold 0.9
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from tks_jax import anytime, inference, models


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


def run_full(model, variables, x, num_steps, batch):
    apply = jax.jit(lambda v, x: model.apply(v, x, num_steps=num_steps, train=False))
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
    p.add_argument("--num_steps", type=int, default=10)
    p.add_argument("--input_shape", default="48,48,2", help="H,W,C (random model only)")
    p.add_argument("--events", action="store_true", help="random frames [T, ...] (random model)")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--confidence", default="softmax", choices=anytime.CONFIDENCES)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    labels = None
    if args.workdir:
        from tks_jax import anytime_eval
        from tks_jax.training import input_pipeline

        config, model, variables, _ = anytime_eval.restore_run(args.workdir)
        num_steps = args.num_steps or config.num_steps
        it, _ = input_pipeline.get_dataset(
            config, config.data.eval_split, train=False, batch_size=args.images,
            num_steps=num_steps, seed=config.seed, shard_index=0, shard_count=1,
        )
        batch = next(it)
        keep = np.asarray(batch["mask"], bool)
        x = np.asarray(batch["image"])[..., keep, :, :, :]
        labels = np.asarray(batch["label"])[keep]
    else:
        num_steps = args.num_steps
        h, w, c = (int(v) for v in args.input_shape.split(","))
        rng = np.random.default_rng(args.seed)
        shape = ((num_steps,) if args.events else ()) + (args.images, h, w, c)
        x = (rng.random(shape) < 0.2).astype(np.float32) if args.events else \
            rng.random(shape, dtype=np.float32)
        model = models.get_model(args.model, num_classes=10, width=args.width)
        variables = model.init(jax.random.PRNGKey(args.seed), x[..., :1, :, :, :],
                               num_steps=num_steps)
    frames = _frames(x, num_steps)
    n = frames.shape[1]
    results = {
        "full": run_full(model, variables, x, num_steps, args.batch),
        "stream1": run_stream(model, variables, frames, num_steps, 1, args.threshold,
                              args.confidence),
        f"stream{args.batch}": run_stream(model, variables, frames, num_steps, args.batch,
                                          args.threshold, args.confidence),
    }
    for mode, (seconds, preds, steps) in results.items():
        row = {
            "mode": mode, "model": args.workdir or args.model, "num_steps": num_steps,
            "images": n, "batch": 1 if mode == "stream1" else args.batch,
            "threshold": None if mode == "full" else args.threshold,
            "seconds_per_image": seconds / n, "mean_steps": float(np.mean(steps)),
        }
        if labels is not None:
            row["accuracy"] = float(np.mean(preds == labels))
        print(json.dumps(row))


if __name__ == "__main__":
    main()
