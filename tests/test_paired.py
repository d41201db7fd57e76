"""Paired comparisons over seeds and the claims' verdicts, against hand-computed numbers.

Student's t quantiles are taken from printed tables (two-sided 95 %: 12.706 for 1 degree of
freedom, 4.303 for 2, 2.262 for 9), not from the code under test.
"""

import math

import numpy as np
import pytest

from tks_jax.experiments import paired, summary

T_TABLE = {1: 12.706, 2: 4.303, 9: 2.262}


@pytest.mark.parametrize("diffs", [[1.0, 2.0, 3.0], [0.5, -0.1], list(np.linspace(-1, 2, 10))])
def test_paired_interval_matches_the_t_table(diffs):
    r = paired.paired_interval(diffs)
    n = len(diffs)
    mean = sum(diffs) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = T_TABLE[n - 1] * std / math.sqrt(n)
    assert r["n"] == n and r["mean"] == pytest.approx(mean) and r["std"] == pytest.approx(std)
    assert r["low"] == pytest.approx(mean - half, rel=1e-3)
    assert r["high"] == pytest.approx(mean + half, rel=1e-3)


@pytest.mark.parametrize("bad", [[1.0], [], [1.0, float("nan")], [[1.0, 2.0]]])
def test_paired_interval_rejects_bad_input(bad):
    with pytest.raises(ValueError, match=">= 2 finite"):
        paired.paired_interval(bad)
    with pytest.raises(ValueError, match="level"):
        paired.paired_interval([1.0, 2.0], level=1.5)


@pytest.mark.parametrize("low, high, better, expected", [
    (0.1, 0.5, +1, "held"), (-0.5, -0.1, +1, "not held"), (-0.1, 0.5, +1, "not separable"),
    (-0.5, -0.1, -1, "held"), (0.1, 0.5, -1, "not held"), (-0.5, 0.0, -1, "not separable"),
])
def test_verdict(low, high, better, expected):
    assert paired.verdict(low, high, better) == expected


def test_verdict_and_combine_reject_bad_input():
    with pytest.raises(ValueError, match="better"):
        paired.verdict(0.0, 1.0, 0)
    with pytest.raises(ValueError, match="at least one"):
        paired.combine([])
    assert paired.combine(["held", "held"]) == "held"
    assert paired.combine(["held", "not separable"]) == "not separable"
    assert paired.combine(["held", "not separable", "not held"]) == "not held"


def _run(loss, seed, top1, steps=None):
    return {"setting": "s", "num_steps": 4, "loss": loss, "seed": seed, "top1": top1,
            "anytime_mean_steps": steps}


def test_paired_differences_pairs_common_seeds_only():
    runs = {f"{loss}{s}": _run(loss, s, v)
            for loss, values in {"tks": [0.9, 0.8, 0.7, 0.6], "ls": [0.85, 0.8, 0.6]}.items()
            for s, v in enumerate(values)}
    runs["other_T"] = {**_run("ls", 3, 0.0), "num_steps": 8}  # another T: not paired
    rows = paired.paired_differences(runs, "s", 4, others=["ls"],
                                     metrics=[("top1", +1, 100.0, "points")])
    (row,) = rows
    assert row["seeds"] == [0, 1, 2]
    assert row["diffs"] == pytest.approx([5.0, 0.0, 10.0])
    assert row["mean"] == pytest.approx(5.0)
    assert row["high"] - row["mean"] == pytest.approx(T_TABLE[2] * 5.0 / math.sqrt(3), rel=1e-3)
    assert row["verdict"] == "not separable"  # 5 +- 12.4
    # Missing values (a run without anytime data) and too few pairs leave the row out.
    assert paired.paired_differences(runs, "s", 4, others=["ls"],
                                     metrics=[("anytime_mean_steps", -1, 1.0, "")]) == []
    assert paired.paired_differences(runs, "s", 4, others=["ls"], min_seeds=4,
                                     metrics=[("top1", +1, 100.0, "")]) == []


def test_claims_use_paired_intervals(fake_study):
    claims = {(c["claim"].split(":")[0], c["setting"]): c for c in fake_study.results["claims"]}
    # mnist top-1, TKS - X per seed (points): baseline [6, 3, 3], ls [5, 4, 6], tet [3, 0, 3]:
    # ls is held (5 +- 2.48), baseline and tet are not separable -> not separable.
    c = claims[("1a", "mnist")]
    assert c["held"] and c["verdict"] == "not separable"
    assert "TKS - ls: +5.00 [+2.52, +7.48]" in c["evidence"]
    # nmnist: TKS - baseline = -2 points for every seed: an interval of width 0 below 0.
    assert claims[("1a", "nmnist_synth")]["verdict"] == "not held"
    # Per-step (3) has no paired interval: decided by the means, and says so.
    assert claims[("3", "mnist")]["verdict"] == "held"
    assert "(means only)" in claims[("3", "mnist")]["evidence"]


def test_anytime_claims_and_table(fake_study):
    results = fake_study.results
    claims = {(c["claim"].split(":")[0], c["setting"]): c for c in results["claims"]}
    # TKS steps 3.0, 3.2, 3.4: mean 3.2, 95 % interval 3.2 +- 4.303 * 0.2 / sqrt(3) (<= 5);
    # drop 0.2 points on every seed (<= 0.5).
    a1 = claims[("A1", "nmnist_synth")]
    assert a1["verdict"] == "held" and "steps [2.70, 3.70]" in a1["evidence"]
    # TKS - baseline steps: -3.0, -3.3, -3.6 -> -3.3 +- 0.75: held; energy -1.0 each: held.
    a2 = claims[("A2", "nmnist_synth")]
    assert a2["verdict"] == "held" and "-3.30 [-4.05, -2.55]" in a2["evidence"]
    assert claims[("A3", "nmnist_synth")]["verdict"] == "held"
    assert ("A1", "mnist") not in claims  # no anytime data there
    table = summary.format_anytime_table(results["groups"])
    assert "| nmnist_synth (T=10) | tks | 3 | 80.00 ± 2.00 | 79.80 ± 2.00 | 3.20 ± 0.20 |" \
        in table
    assert "mnist (T=4)" not in table
    rows = {(r["other"], r["metric"]): r for r in results["paired"]["nmnist_synth"]}
    assert rows[("baseline", "anytime_mean_steps")]["diffs"] == pytest.approx([-3.0, -3.3, -3.6])
    assert "## Paired differences: nmnist_synth" in open(
        f"{fake_study.out}/README.md").read()
