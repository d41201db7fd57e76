"""Export trained spiking networks to NIR (``graph``: the mapping; ``cli``: a run's checkpoint).

See ``tks_jax/export/graph.py`` and ``docs/export.md`` for the mapping and its derivation.
"""

from tks_jax.export.cli import export_workdir, main, restore_workdir
from tks_jax.export.graph import (
    INPUT_LAYOUT,
    NEURON_SEMANTICS,
    READOUT,
    ExportError,
    check_exportable,
    require_nir,
    to_nir,
)

__all__ = [
    "INPUT_LAYOUT", "NEURON_SEMANTICS", "READOUT", "ExportError", "check_exportable",
    "export_workdir", "main", "require_nir", "restore_workdir", "to_nir",
]
