"""Consumer side of the NIR check: snnTorch imports the exported file and classifies the
same test recordings as tks-jax (run in the consumer venv of requirements.txt).

    python benchmarks/nir_consumer/snntorch_agreement.py --ref_dir DIR --out results.json

``DIR`` comes from ``dump_reference.py`` (``model.nir``, ``reference.npz``). Two snnTorch
networks are built from the same graph:

- ``as_imported``: ``snntorch.import_nir.import_from_nir`` unchanged. It discretises every
  ``nir.LIF`` with a fixed ``dt = 1e-4`` (``beta = 1 - dt / tau``, input weight ``r dt / tau``
  moved into the threshold), ignoring the graph's recorded ``dt = 1``.
- ``dt_from_graph``: the same snnTorch mapping of every node, except that ``nir.LIF`` uses
  the graph's ``metadata['dt']``: ``snn.Leaky(beta = 1 - dt / tau, threshold = v_th tau /
  (r dt), reset_mechanism='zero', reset_delay=False)``, i.e. snnTorch's own formula at the
  recorded time step (its membrane is ``tau`` times NIR's).

snnTorch maps ``nir.Flatten(start_dim=0)`` (NIR types have no batch axis) to
``torch.nn.Flatten(0, -1)``, which would also flatten a batch axis; batches are therefore run
with that module set to ``Flatten(1, -1)``, and the script checks on a few recordings that this
equals the unchanged module run one unbatched recording at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys

import nir
import nirtorch
import numpy as np
import snntorch as snn
import torch
from snntorch import utils as snn_utils
from snntorch.import_nir import _nir_to_snntorch_module, import_from_nir


def _lif_at_graph_dt(dt: float):
    def make(node: nir.LIF) -> torch.nn.Module:
        for key in ("tau", "r", "v_threshold"):
            if np.unique(getattr(node, key)).size != 1:
                raise ValueError(f"LIF {key} differs between neurons; not handled here.")
        if not (np.allclose(node.v_leak, 0) and np.allclose(node.v_reset, 0)):
            raise ValueError("LIF with v_leak or v_reset != 0; not handled here.")
        tau, r = float(node.tau.flat[0]), float(node.r.flat[0])
        vth = float(node.v_threshold.flat[0])
        return snn.Leaky(beta=1 - dt / tau, threshold=vth * tau / (r * dt),
                         reset_mechanism="zero", init_hidden=True, reset_delay=False)

    return make


def build(graph: nir.NIRGraph, variant: str) -> torch.nn.Module:
    if variant == "as_imported":
        with contextlib.redirect_stdout(io.StringIO()):  # its per-layer w_scale warnings
            return import_from_nir(graph)
    dt = float(graph.metadata["dt"])
    node_map = {t: (lambda n: _nir_to_snntorch_module(n, init_hidden=True))
                for t in (nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten, nir.AvgPool2d)}
    node_map[nir.LIF] = _lif_at_graph_dt(dt)
    return nirtorch.nir_to_torch(graph, node_map)


@torch.no_grad()
def run(net: torch.nn.Module, frames: np.ndarray, batched: bool) -> np.ndarray:
    """Per-step outputs ``[N, T, K]`` for ``frames`` ``[N, T, C, H, W]``."""
    if batched:
        net.flatten = torch.nn.Flatten(1, -1)
        snn_utils.reset(net)
        x = torch.from_numpy(frames.astype(np.float32))
        return np.stack([net(x[:, t])[0].numpy() for t in range(x.shape[1])], axis=1)
    outs = []
    for rec in frames:
        snn_utils.reset(net)
        x = torch.from_numpy(rec.astype(np.float32))
        outs.append(np.stack([net(x[t])[0].numpy() for t in range(x.shape[0])]))
    return np.stack(outs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref_dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch_size", type=int, default=100)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)

    path = os.path.join(args.ref_dir, "model.nir")
    ref = np.load(os.path.join(args.ref_dir, "reference.npz"))
    with open(os.path.join(args.ref_dir, "reference.json")) as f:
        ref_meta = json.load(f)
    frames, labels, jax_logits = ref["frames"], ref["labels"], ref["logits"]
    jax_pred = jax_logits.mean(axis=1).argmax(-1)
    graph = nir.read(path)
    result = {
        "command": " ".join(["python", *sys.argv]),
        "reference": ref_meta,
        "graph_metadata": {k: (v.item() if hasattr(v, "item") else v)
                           for k, v in graph.metadata.items()},
        "versions": {"nir": nir.version, "snntorch": snn.__version__,
                     "torch": torch.__version__},
        "examples": int(len(labels)),
        "tks_jax_top1": float((jax_pred == labels).mean()),
        "variants": {},
    }
    for variant in ("as_imported", "dt_from_graph"):
        # The batch adapter equals the unchanged per-recording run (checked on 3 recordings).
        single = run(build(graph, variant), frames[:3], batched=False)
        batched = run(build(graph, variant), frames[:3], batched=True)
        np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)
        net = build(graph, variant)
        spikes = [0.0]
        for module in net.modules():
            if isinstance(module, snn.SpikingNeuron):
                module.register_forward_hook(
                    lambda mod, inp, out, acc=spikes: acc.__setitem__(
                        0, acc[0] + float(out.sum())))
        logits = np.concatenate([run(net, frames[i:i + args.batch_size], batched=True)
                                 for i in range(0, len(frames), args.batch_size)])
        pred = logits.mean(axis=1).argmax(-1)
        result["variants"][variant] = {
            "top1": float((pred == labels).mean()),
            "prediction_agreement_with_tks_jax": float((pred == jax_pred).mean()),
            "max_abs_logit_difference": float(np.abs(logits - jax_logits).max()),
            "mean_abs_logit_difference": float(np.abs(logits - jax_logits).mean()),
            "fraction_of_logits_within_1e-4": float(
                (np.abs(logits - jax_logits) <= 1e-4).mean()),
            "mean_abs_tks_jax_logit": float(np.abs(jax_logits).mean()),
            "distinct_predictions": int(np.unique(pred).size),
            "spikes_per_recording": spikes[0] / len(labels),
        }
        print(variant, json.dumps(result["variants"][variant]))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
