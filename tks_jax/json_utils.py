"""Writing results as JSON: one helper for every report, record and results file.

``NaN`` and ``inf`` (e.g. the per-class accuracy of a class absent from the split) become JSON
``null``, NumPy / JAX scalars and arrays become Python numbers and lists, and files are
written atomically (a temporary file in the same folder, then a rename), so a reader never
sees a half-written file and a full disk leaves the previous version in place.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any


def json_safe(x: Any) -> Any:
    """``x`` with non-finite floats as None and array-likes as Python numbers / lists.

    Examples:
      >>> import numpy as np
      >>> json_safe({"top1": np.float32(0.5), "per_class": np.array([1.0, np.nan]), 3: (1, 2)})
      {'top1': 0.5, 'per_class': [1.0, None], '3': [1, 2]}
    """
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        return json_safe(x.item())
    if hasattr(x, "tolist"):
        return json_safe(x.tolist())
    return x


def write_json(path: str, obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> int:
    """Writes ``json_safe(obj)`` to ``path`` atomically (temporary file, fsync, rename).

    Returns:
      The number of bytes written.
    """
    text = json.dumps(json_safe(obj), indent=indent, allow_nan=False, sort_keys=sort_keys)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return len(text.encode())
