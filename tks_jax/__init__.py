"""tks-jax: Temporal Knowledge Sharing for spiking neural networks in JAX/Flax."""

from tks_jax import spiking
from tks_jax.spiking import lif, spike

__version__ = "0.1.0"

__all__ = ["spiking", "lif", "spike"]
