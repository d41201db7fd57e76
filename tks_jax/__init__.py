"""tks-jax: Temporal Knowledge Sharing for spiking neural networks in JAX/Flax.

The functional core (no Flax, configs or devices) is re-exported here::

    import tks_jax
    schedule = tks_jax.tks_lambda_schedule(peak=0.7, num_epochs=600)
    loss = tks_jax.tks(logits, labels, temperature=3.0, lam=schedule(epoch))
"""

from tks_jax import losses, metrics, spiking
from tks_jax.losses import (
    label_smoothing,
    mean_ce,
    tet,
    tks,
    tks_lambda,
    tks_lambda_schedule,
    tks_teacher,
)
from tks_jax.metrics import (
    accuracy,
    aurc,
    aurc_optimal,
    class_accuracy,
    excess_aurc,
    first_k_accuracy,
    first_k_predictions,
    per_class_accuracy,
    per_step_accuracy,
    per_step_predictions,
    risk_coverage_curve,
    top_k_accuracy,
)
from tks_jax.spiking import SURROGATES, Surrogate, get_surrogate, lif, spike

__version__ = "0.1.0"

__all__ = [
    "spiking",
    "losses",
    "metrics",
    "spike",
    "lif",
    "get_surrogate",
    "Surrogate",
    "SURROGATES",
    "mean_ce",
    "label_smoothing",
    "tet",
    "tks",
    "tks_teacher",
    "tks_lambda",
    "tks_lambda_schedule",
    "top_k_accuracy",
    "accuracy",
    "class_accuracy",
    "per_step_predictions",
    "first_k_predictions",
    "per_step_accuracy",
    "first_k_accuracy",
    "per_class_accuracy",
    "risk_coverage_curve",
    "aurc",
    "aurc_optimal",
    "excess_aurc",
]
