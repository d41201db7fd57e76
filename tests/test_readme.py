"""The README's loss-API example runs as written and computes what it says."""

import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md lost its ```python usage example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    # The example's lam is the per-epoch ramp of docs/method.md §4: peak * epoch / num_epochs.
    np.testing.assert_allclose(namespace["lam"], 0.7 * 100 / 600)
    teacher = np.asarray(namespace["teacher"])
    assert teacher.shape == (32, 10)
    np.testing.assert_allclose(teacher.sum(-1), 1.0, rtol=1e-5)
    assert np.isfinite(float(namespace["loss"]))
