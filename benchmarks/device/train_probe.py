"""Runs ``train.py`` as a user would and records time to accuracy and what ran on the host.

Part of ``benchmarks/device_check.sh`` (stage "train"). Everything after ``--`` goes to
``train.py`` unchanged (``--config``, ``--workdir``, ``--config.*`` overrides). Before that it

- prepares the simulated N-MNIST store (``nmnist_synth``) into the config's data directory,
  timed on its own so that the training time excludes the one-off simulation
  (``--num-train``/``--num-test``: the store's size; default: the data set's own);
- counts calls of ``tks_jax.training.host_memory.release_freed_memory`` (the host heap trim,
  useful on CPU only) by wrapping it wherever a ``tks_jax`` module holds it.

Afterwards it reads ``<workdir>/metrics.jsonl`` and writes one JSON record: exit status,
preparation and training wall time, the ``XLA_FLAGS`` that ``train.py`` ran with, the trim
count, the train ``top1`` logged over wall time, the evaluation results over wall time, and
the first time the logged train top-1 reached each of ``--targets``.

    python -m benchmarks.device.train_probe --out train.json --data-dir DIR -- \
        --config configs/nmnist_synth_default.py --workdir runs/x --config.max_train_steps=600
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import time
from typing import Any

from benchmarks.train_step import REPO_ROOT


def _wrap_heap_trim() -> dict[str, int]:
    """Replaces ``host_memory.release_freed_memory`` by a counting wrapper, in its module and
    in every loaded ``tks_jax`` module that imported the function by name."""
    from tks_jax.training import host_memory

    original = host_memory.release_freed_memory
    calls = {"n": 0}

    def counted() -> bool:
        calls["n"] += 1
        return original()

    host_memory.release_freed_memory = counted
    for name, module in list(sys.modules.items()):
        if name.startswith("tks_jax") and getattr(module, "release_freed_memory", None) is original:
            module.release_freed_memory = counted
    return calls


def read_metrics(path: str) -> list[dict[str, Any]]:
    """Records of ``metrics.jsonl`` (``step``, ``split``, ``time`` and scalars)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def time_to_accuracy(
    records: list[dict[str, Any]], start: float, targets: list[float]
) -> dict[str, Any]:
    """Train top-1 and evaluation results against wall time since ``start`` (seconds).

    Args:
      records: ``metrics.jsonl`` records.
      start: wall-clock time (``time.time()``) at which training was launched.
      targets: train top-1 fractions; for each, the first logged time it was reached.

    Returns:
      ``{'train': [[s, step, top1], ...], 'eval': [[s, step, top1], ...],
      'first_reached': {target: [s, step] | None}}``.
    """
    train = [
        [round(r["time"] - start, 2), r["step"], r["top1"]]
        for r in records
        if r.get("split") == "train" and "top1" in r
    ]
    evals = [
        [round(r["time"] - start, 2), r["step"], r.get("top1")]
        for r in records
        if r.get("split") == "eval"
    ]
    first = {}
    for target in targets:
        hit = next((row for row in train if row[2] >= target), None)
        first[str(target)] = None if hit is None else hit[:2]
    return {"train": train, "eval": evals, "first_reached": first}


def _workdir(train_args: list[str]) -> str:
    for i, a in enumerate(train_args):
        if a.startswith("--workdir="):
            return a.split("=", 1)[1]
        if a == "--workdir" and i + 1 < len(train_args):
            return train_args[i + 1]
    raise SystemExit("train_probe: pass --workdir to train.py (after --).")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: train_probe [options] -- TRAIN.PY ARGS")
    split = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--data-dir", required=True, help="tfds data directory of the store")
    p.add_argument("--num-train", type=int, default=None)
    p.add_argument("--num-test", type=int, default=None)
    p.add_argument("--targets", default="0.8,0.9,0.95", help="train top-1 thresholds")
    args = p.parse_args(argv[:split])
    train_args = argv[split + 1 :]
    # train.py would restart the process for glibc's huge-page tunable; do it here, before the
    # timed data preparation, so that train.py finds it set and runs in this process.
    from tks_jax.training import host_memory

    host_memory.reexec_with_huge_pages()
    workdir = _workdir(train_args)
    record: dict[str, Any] = {"train_py_args": train_args, "status": "started"}

    calls = _wrap_heap_trim()
    t0 = time.time()
    from tks_jax.data import event_datasets

    kwargs = {k: v for k, v in (("num_train", args.num_train), ("num_test", args.num_test))
              if v is not None}
    event_datasets.prepare_event_dataset("nmnist_synth", data_dir=args.data_dir, **kwargs)
    record["prepare_s"] = round(time.time() - t0, 2)
    record["store"] = kwargs or "default"

    start = time.time()
    sys.argv = [os.path.join(REPO_ROOT, "train.py"), *train_args]
    code: Any = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:  # absl's app.run exits with main's return value
        code = e.code
    except Exception as e:  # noqa: BLE001  (recorded: the device check goes on)
        code = f"{type(e).__name__}: {e}"
    record["train_s"] = round(time.time() - start, 2)
    record["exit_code"] = code if isinstance(code, int) or code is None else str(code)[-2000:]
    record["status"] = "ok" if code in (0, None) else "failed"

    import jax

    record["backend"] = jax.default_backend()
    record["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    record["heap_trim_calls"] = calls["n"]
    targets = [float(t) for t in args.targets.split(",") if t]
    record.update(time_to_accuracy(read_metrics(os.path.join(workdir, "metrics.jsonl")),
                                   start, targets))
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print(json.dumps({k: v for k, v in record.items() if k != "train"}))


if __name__ == "__main__":
    main()
