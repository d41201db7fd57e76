"""``python -m tks_jax.export``: the latest checkpoint of a training run as a NIR file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tks_jax.export.graph import check_exportable, require_nir, to_nir


def restore_workdir(workdir: str) -> dict[str, Any]:
    """The model and inference variables of the latest checkpoint of a training run.

    Uses the training code's own restore path (``training.evaluate_run.restore_run``, as
    ``evaluate_workdir`` does) and checks that the model is exportable before restoring.

    Args:
      workdir: a run directory written by ``train.py``.

    Returns:
      ``{'model', 'variables', 'config', 'info', 'step', 'num_steps', 'frame_shape'}`` with
      ``variables = {'params', 'batch_stats'}``, ``num_steps`` the evaluation T and
      ``frame_shape`` one step's ``(H, W, C)``.

    Raises:
      FileNotFoundError: no run or no checkpoint in ``workdir``.
      ExportError: the model has no exact NIR form.
    """
    from tks_jax.training import evaluate_run

    run = evaluate_run.restore_run(workdir, check_model=check_exportable)
    info = run.info
    frame = tuple(int(s) for s in info.input_shape)
    if info.is_event and len(frame) == 4:
        frame = frame[1:]  # [T, H, W, C] -> one step
    return {
        "model": run.model,
        "variables": run.variables,
        "config": run.config,
        "info": info,
        "step": run.step,
        "num_steps": run.num_steps,
        "frame_shape": frame,
    }


def export_workdir(workdir: str, out: str) -> dict[str, Any]:
    """Writes the latest checkpoint of a training run (inference mode) as a NIR file.

    Args:
      workdir: a run directory written by ``train.py``.
      out: path of the ``.nir`` (HDF5) file to write.

    Returns:
      ``{'out', 'step', 'num_steps', 'input_shape', 'nodes', 'edges'}``.
    """
    nir = require_nir()
    run = restore_workdir(workdir)
    graph = to_nir(run["model"], run["variables"], run["frame_shape"],
                   num_steps=run["num_steps"])
    graph.metadata["checkpoint_step"] = run["step"]
    graph.metadata["dataset"] = str(run["config"].data.name)
    graph.metadata["input_encoding"] = (
        "event frames (one per step)" if run["info"].is_event else
        "static image repeated at every step (direct encoding)")
    nir.write(out, graph)
    return {"out": out, "step": run["step"], "num_steps": run["num_steps"],
            "input_shape": run["frame_shape"], "nodes": len(graph.nodes),
            "edges": len(graph.edges)}


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m tks_jax.export",
        description="Export the latest checkpoint of a training run to a NIR file.")
    parser.add_argument("--workdir", required=True, help="run directory written by train.py")
    parser.add_argument("--out", required=True, help="NIR file to write, e.g. model.nir")
    args = parser.parse_args(argv)
    try:
        summary = export_workdir(args.workdir, args.out)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"Wrote {summary['out']}: checkpoint step {summary['step']}, {summary['nodes']} nodes, "
          f"{summary['edges']} edges, input [C, H, W] per step from {summary['input_shape']} "
          f"(H, W, C), T = {summary['num_steps']}.")
    return 0

