"""The anytime part of an evaluation: calibrate the exit rule on validation, report it on test.

``python -m tks_jax.evaluate --workdir W --anytime max_drop=0.005`` calls ``add_to_report``:
per-step logits and per-step costs of the run's validation split (``data.validation_size``,
carved from training data and excluded from training) and of its evaluation split are
collected; ``anytime.calibrate`` picks the threshold on validation; the test split reports the
exit rule's accuracy, mean / median / p90 / p99 steps and energy per image, next to the fixed-k
rule (``docs/method.md`` §14).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tks_jax import anytime, cost

DEFAULTS = {"max_drop": 0.005, "confidence": "softmax", "e_ac_pj": 0.9, "e_mac_pj": 4.6,
            "save_logits": False}
# With ``save_logits=true``: the per-step logits, labels and per-step energy of both splits,
# next to report.json, so that the exit rule can be re-analysed without the network.
LOGITS_NPZ = "anytime_logits.npz"
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def parse_spec(spec: str) -> dict[str, Any]:
    """Parses ``'max_drop=0.005,confidence=softmax'`` (any subset of ``DEFAULTS``' keys;
    ``save_logits`` takes true/false)."""
    out = dict(DEFAULTS)
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in DEFAULTS:
            raise ValueError(
                f"--anytime: expected comma-separated key=value with keys {sorted(DEFAULTS)}, "
                f"got {item!r} (e.g. --anytime max_drop=0.005,confidence=softmax)."
            )
        if key == "confidence":
            if value not in anytime.CONFIDENCES:
                raise ValueError(
                    f"--anytime: confidence must be one of {anytime.CONFIDENCES}, got {value!r}."
                )
            out[key] = value
        elif key == "save_logits":
            if value.strip().lower() not in _TRUE + _FALSE:
                raise ValueError(f"--anytime: save_logits must be true or false, got {value!r}.")
            out[key] = value.strip().lower() in _TRUE
        else:
            try:
                out[key] = float(value)
            except ValueError:
                raise ValueError(f"--anytime: {key} must be a number, got {value!r}.") from None
    if not out["max_drop"] >= 0:
        raise ValueError(f"--anytime: max_drop must be >= 0, got {out['max_drop']}.")
    return out


# Module level, with the network and the constants as static arguments: one executable per
# (network, T, batch shape), shared by the validation and test splits and by the runs of one
# process whose networks are equal (flax modules compare by their fields).
@functools.partial(jax.jit, static_argnames=("model", "num_steps", "input_spikes", "energy"))
def _logits_ops_energy(variables, x, *, model, num_steps: int, input_spikes: bool,
                       energy: cost.EnergyModel):
    logits, ops = cost.layer_ops(model, variables, x, num_steps, input_spikes=input_spikes)
    # Zeros plus the layers' energy (a model without layers.Conv / Linear costs nothing).
    return logits, ops, jnp.zeros(logits.shape[:2]) + cost.energy_per_step(ops, energy)


def collect(
    model, variables: Mapping, batches: Iterable[Mapping[str, np.ndarray]], num_steps: int,
    energy: cost.EnergyModel, *, input_spikes: bool,
) -> dict[str, Any]:
    """Per-step logits, labels, per-step energy and summed op counts of a split (one host).

    Args:
      model, variables: the network.
      batches: eval batches ``{'image', 'label', 'mask'}`` (padding has mask False).
      num_steps: T.
      energy: energy constants.
      input_spikes: whether the model input is spikes (see ``cost.layer_ops``).

    Returns:
      ``{'logits': [T, N, C], 'labels': [N], 'energy': [T, N] pJ, 'ops_sum': {'ac': {layer:
      [T]}, 'mac': {...}}}`` (sums over the N real samples).
    """

    logits, labels, energies = [], [], []
    ops_sum: dict[str, dict[str, np.ndarray]] = {}
    for batch in batches:
        mask = np.asarray(batch["mask"], bool)
        z, ops, e = jax.device_get(_logits_ops_energy(
            variables, batch["image"], model=model, num_steps=num_steps,
            input_spikes=input_spikes, energy=energy))
        logits.append(np.asarray(z)[:, mask])
        labels.append(np.asarray(batch["label"])[mask])
        energies.append(np.asarray(e)[:, mask])
        for kind, layers in ops.items():
            acc = ops_sum.setdefault(kind, {})
            for name, v in layers.items():
                acc[name] = acc.get(name, 0.0) + np.asarray(v)[:, mask].sum(axis=1)
    if not labels or sum(len(y) for y in labels) == 0:
        raise ValueError("The split yielded no examples.")
    return {
        "logits": np.concatenate(logits, axis=1),
        "labels": np.concatenate(labels),
        "energy": np.concatenate(energies, axis=1),
        "ops_sum": ops_sum,
    }


def anytime_metrics(
    validation: Mapping[str, Any], test: Mapping[str, Any], *, max_drop: float,
    confidence: str, energy: cost.EnergyModel,
) -> dict[str, Any]:
    """The report's ``anytime`` section from ``collect`` outputs of validation and test.

    Returns:
      A JSON-able dict: ``threshold`` (calibrated on validation; ``inf`` = never exit early),
      ``confidence``, ``max_drop``, ``validation`` and ``test`` summaries of the exit rule
      (``anytime.summarize``: accuracy, mean / median / p90 / p99 steps), ``full_accuracy``
      (test, all T steps), ``energy_pj_per_image`` (test, exit rule), ``energy_pj_full``,
      ``cost`` (``cost.summarize`` on test: per layer, per k, under the rule),
      ``curve_thresholds`` (test: mean steps and accuracy over every threshold) and
      ``curve_fixed_k`` (test: accuracy of the first k steps, k = 1..T).
    """
    thr = anytime.calibrate(validation["logits"], validation["labels"], max_drop=max_drop,
                            confidence=confidence)
    out: dict[str, Any] = {"threshold": thr, "confidence": confidence, "max_drop": max_drop}
    for name, split in (("validation", validation), ("test", test)):
        pred, steps = anytime.predict(split["logits"], thr, confidence)
        out[name] = anytime.summarize(steps, pred, split["labels"])
        if name == "test":
            test_steps = np.asarray(steps)
    z, y = test["logits"], test["labels"]
    means = np.cumsum(z, axis=0) / np.arange(1, z.shape[0] + 1)[:, None, None]
    first_k = (np.argmax(means, axis=-1) == y[None]).mean(axis=1)
    out["full_accuracy"] = float(first_k[-1])
    summary = cost.summarize(test["ops_sum"], test["energy"], steps=test_steps, energy=energy)
    out["energy_pj_per_image"] = summary["energy_pj_exit"]
    out["energy_pj_full"] = summary["energy_pj_first_k"][-1]
    out["cost"] = summary
    sweep = anytime.threshold_sweep(z, y, confidence)
    out["curve_thresholds"] = {
        "mean_steps": sweep["mean_steps"].tolist(), "accuracy": sweep["accuracy"].tolist(),
    }
    out["curve_fixed_k"] = {
        "mean_steps": list(range(1, z.shape[0] + 1)), "accuracy": first_k.tolist(),
    }
    return out


def save_logits(path: str, validation: Mapping[str, Any], test: Mapping[str, Any]) -> None:
    """Writes ``collect``'s per-step arrays of both splits to ``path`` (``.npz``, float32).

    Keys: ``validation_logits`` / ``test_logits`` ``[T, N, C]``, ``*_labels`` ``[N]`` and
    ``*_energy_pj`` ``[T, N]`` (energy of step t per image). Written to a temporary name and
    renamed, so an interrupted write leaves no partial file.
    """
    arrays = {}
    for name, split in (("validation", validation), ("test", test)):
        arrays[f"{name}_logits"] = np.asarray(split["logits"], np.float32)
        arrays[f"{name}_labels"] = np.asarray(split["labels"], np.int32)
        arrays[f"{name}_energy_pj"] = np.asarray(split["energy"], np.float32)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_logits(path: str) -> dict[str, dict[str, np.ndarray]]:
    """Reads ``save_logits``' file: ``{'validation': {...}, 'test': {...}}`` with keys
    ``logits``, ``labels`` and ``energy`` (the form ``anytime_metrics`` takes, without
    ``ops_sum``)."""
    with np.load(path) as f:
        return {name: {"logits": f[f"{name}_logits"], "labels": f[f"{name}_labels"],
                       "energy": f[f"{name}_energy_pj"]}
                for name in ("validation", "test")}


def restore_run(workdir: str, *, model=None, validation: bool = False):
    """The latest checkpoint of a run: ``(config, model, variables, info)`` (one host).

    Args:
      workdir: the run directory.
      model: optional module replacing ``config.model``.
      validation: require the run's validation split (``data.validation_size``); ``info``
        then describes that split.

    Raises:
      ConfigError: ``validation`` and the run holds out no validation split.
    """
    from tks_jax.training import evaluate_run
    from tks_jax.training import workdir as workdir_lib
    from tks_jax.training.errors import ConfigError

    config = workdir_lib.load_config(workdir)
    if (validation and not config.data.get("validation_size")
            and not config.data.name.startswith("synthetic")):
        raise ConfigError(
            "--anytime calibrates on the validation split carved from the training data, and "
            "this run has none: train with --config.data.validation_size=N (e.g. 5000). The "
            "test split is never used to calibrate."
        )
    run = evaluate_run.restore_run(workdir, model=model,
                                   split="validation" if validation else None)
    return run.config, run.model, run.variables, run.info


def add_to_report(
    workdir: str, rep: dict[str, Any], spec: str | Mapping[str, Any], *,
    num_steps: int | None = None, model=None,
) -> dict[str, Any]:
    """Computes the anytime section of a run and rewrites its report (``rep['report_dir']``).

    Args:
      workdir: the run directory.
      rep: the report of ``loop.evaluate_workdir`` (evaluation split, ``num_steps``).
      spec: ``parse_spec`` input (or its output).
      num_steps: T (default: the report's).
      model: optional module replacing ``config.model`` (tests).

    Raises:
      ValueError: the run has no validation split (``data.validation_size``).
    """
    from tks_jax import report
    from tks_jax.training import input_pipeline

    opts = parse_spec(spec) if isinstance(spec, str) else {**DEFAULTS, **spec}
    energy = cost.EnergyModel(e_ac_pj=opts["e_ac_pj"], e_mac_pj=opts["e_mac_pj"])
    config, model, variables, info = restore_run(workdir, model=model, validation=True)
    t = num_steps or rep["metrics"].get("num_steps") or config.num_steps

    def split_data(split):
        it, _ = input_pipeline.get_dataset(
            config, split, train=False, batch_size=config.eval_batch_size, num_steps=t,
            seed=config.seed, shard_index=0, shard_count=1,
        )
        # Event frames are spikes when binary (counts and resized frames are not).
        first = next(it)
        spikes = info.is_event and bool(np.all(np.isin(first["image"], (0.0, 1.0))))

        def batches():
            yield first
            yield from it

        return collect(model, variables, batches(), t, energy, input_spikes=spikes)

    validation, test = split_data("validation"), split_data(rep["metrics"]["split"])
    section = anytime_metrics(validation, test, max_drop=opts["max_drop"],
                              confidence=opts["confidence"], energy=energy)
    section["energy_constants"] = dataclasses.asdict(energy)
    rep = {**rep, "anytime": section}
    if jax.process_index() == 0:
        if opts["save_logits"]:
            save_logits(os.path.join(rep["report_dir"], LOGITS_NPZ), validation, test)
        report.write_report({k: v for k, v in rep.items() if k != "report_dir"},
                            rep["report_dir"])
    return rep
