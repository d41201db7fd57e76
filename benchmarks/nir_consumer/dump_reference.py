"""tks-jax side of the NIR consumer check: export a run and dump its test inputs and logits.

Run with the tks-jax environment (not the consumer's):

    python -m benchmarks.nir_consumer.dump_reference --workdir RUN --out_dir DIR

Writes ``DIR/model.nir`` (``tks_jax.export``, the latest checkpoint) and ``DIR/reference.npz``
with the evaluation split as the training config defines it (``config.data.eval_split``,
``max_eval_examples``): ``frames`` uint8 ``[N, T, C, H, W]`` (NIR's per-step NCHW layout;
event counts are small integers), ``labels`` ``[N]`` and tks-jax's ``logits`` ``[N, T, K]``
from ``model.apply(..., train=False)``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=100)
    args = parser.parse_args(argv)

    import nir

    from tks_jax import export
    from tks_jax.training import input_pipeline

    os.makedirs(args.out_dir, exist_ok=True)
    summary = export.export_workdir(args.workdir, os.path.join(args.out_dir, "model.nir"))
    run = export.restore_workdir(args.workdir)
    model, variables, config, t = run["model"], run["variables"], run["config"], run["num_steps"]
    eval_iter, info = input_pipeline.get_dataset(
        config, config.data.eval_split, train=False, batch_size=args.batch_size, num_steps=t,
        seed=config.seed, shard_index=0, shard_count=1)
    if not info.is_event:
        raise SystemExit("dump_reference handles event datasets (frames per step) only.")
    apply = jax.jit(lambda v, x: model.apply(v, x, num_steps=t, train=False))
    frames, labels, logits = [], [], []
    for batch in eval_iter:
        keep = np.asarray(batch["mask"])
        x = np.asarray(batch["image"])  # [T, B, H, W, C]
        if not np.array_equal(x, np.round(x)) or x.min() < 0 or x.max() > 255:
            raise SystemExit("frames are not small event counts; extend dump_reference.")
        logits.append(np.asarray(apply(variables, x))[:, keep].transpose(1, 0, 2))
        frames.append(x[:, keep].transpose(1, 0, 4, 2, 3).astype(np.uint8))
        labels.append(np.asarray(batch["label"])[keep])
    np.savez_compressed(os.path.join(args.out_dir, "reference.npz"),
                        frames=np.concatenate(frames), labels=np.concatenate(labels),
                        logits=np.concatenate(logits))
    meta = {"command": " ".join(["python -m benchmarks.nir_consumer.dump_reference",
                                 *sys.argv[1:]]),
            "workdir": args.workdir, "split": config.data.eval_split,
            "examples": int(sum(len(x) for x in labels)), "num_steps": t,
            "checkpoint_step": summary["step"], "nir_version": nir.version,
            "tks_jax_top1": float(np.mean(np.concatenate(logits).mean(1).argmax(-1)
                                          == np.concatenate(labels)))}
    with open(os.path.join(args.out_dir, "reference.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
