"""The one JSON writer: non-finite numbers as null, arrays as lists, atomic replacement."""

import doctest
import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from tks_jax import json_utils


def test_json_safe_converts_numbers_arrays_and_keys():
    value = {
        "nan": float("nan"), "inf": -math.inf, "np": np.float64(0.25), "jax": jnp.float32(2.0),
        "array": np.array([[1, 2], [3, 4]]), "tuple": (1, np.int64(2)), 7: {"x": [np.nan]},
    }
    assert json_utils.json_safe(value) == {
        "nan": None, "inf": None, "np": 0.25, "jax": 2.0, "array": [[1, 2], [3, 4]],
        "tuple": [1, 2], "7": {"x": [None]},
    }


def test_write_json_round_trips(tmp_path):
    path = tmp_path / "report.json"
    json_utils.write_json(str(path), {"per_class": np.array([0.5, np.nan])})
    assert json.loads(path.read_text()) == {"per_class": [0.5, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "results.json"
    json_utils.write_json(str(path), {"step": 1})
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_utils.write_json(str(path), {"step": object()})
    assert json.loads(path.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_docstring_examples_run():
    result = doctest.testmod(json_utils, raise_on_error=False, verbose=False)
    assert result.attempted >= 1 and result.failed == 0
