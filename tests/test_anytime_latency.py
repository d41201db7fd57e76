"""The anytime latency benchmark's mechanics on a tiny random network (no timing asserted)."""

import json

import numpy as np
import pytest

from benchmarks import anytime_latency
from tks_jax.training.build import init_variables

# Builds and times real networks: part of the full suite, not of `make test-fast`.
pytestmark = pytest.mark.slow


def test_modes_and_exit(tmp_path, capsys):
    out = tmp_path / "latency.jsonl"
    anytime_latency.main([
        "--model", "vgg_snn", "--width", "0.0625", "--num_steps", "3", "--input_shape",
        "16,16,2", "--events", "--images", "5", "--batch", "2", "--repeats", "1",
        "--threshold", "0", "--out", str(out),
    ])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["mode"] for r in rows] == ["full1", "full2", "stream1", "stream2"]
    assert capsys.readouterr().out.count("\n") == 4
    for r in rows:
        assert r["images"] == 5 and r["num_steps"] == 3 and r["seconds_per_image"] > 0
        # threshold 0: every image is sure after one step (never exiting: the test below).
        assert r["mean_steps"] == (3.0 if r["mode"].startswith("full") else 1.0)
    assert rows[2]["batch"] == 1 and rows[3]["batch"] == 2
    # Each streaming mode is compared with the full run at its own batch size.
    for full, stream in ((rows[0], rows[2]), (rows[1], rows[3])):
        assert np.isclose(stream["speedup_vs_full"],
                          full["seconds_per_image"] / stream["seconds_per_image"])


def test_streaming_predictions_match_the_full_run_without_exit():
    """With no early exit, streaming predicts exactly what the full run predicts."""
    import jax

    from tks_jax import models

    model = models.get_model("vgg_snn", num_classes=4, width=0.0625)
    x = (np.random.default_rng(0).random((3, 5, 16, 16, 2)) < 0.3).astype(np.float32)
    variables = init_variables(model, jax.random.PRNGKey(0), x[:, :1], num_steps=3)
    _, full_pred, _ = anytime_latency.run_full(model, variables, x, 3, 2)
    _, stream_pred, steps = anytime_latency.run_stream(model, variables, x, 3, 2, 2.0,
                                                       "softmax")
    np.testing.assert_array_equal(full_pred, stream_pred)
    assert (steps == 3).all()
