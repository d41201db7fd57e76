"""Every model of the zoo learns: a short run on a tiny separable task ends well above chance.

Each of VGG-SNN, ResNet-19, SEW-ResNet-18 and SEW-ResNet-19 (narrow) trains once, and each
norm (tdBN, TEBN, BN) is used by at least one of them (the norm is one shared module, so a norm
that cannot learn fails its run; four runs instead of twelve keep the suite's time). Each
trains with the TKS loss and Adam on 2 classes of 16x16 images (vertical or horizontal stripes
with a random phase, plus noise) at T = 2, then is evaluated in inference mode (BatchNorm
running statistics) on held-out examples. Chance is 50 %; a model whose
gradients, normalisation statistics or read-out are broken stays near it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tks_jax
from tks_jax import models
from tks_jax.training.build import init_variables

pytestmark = pytest.mark.slow

NUM_CLASSES = 2
T = 2
HW = 16
STEPS = 150
STEPS_PER_EPOCH = 30  # the TKS lambda ramps per epoch: 0, 0.06, 0.12, 0.18, 0.24
BATCH = 32


# Stripe orientations of the classes (angle of the wave vector) and the pixel shift along
# which each class's stripes are constant.
ANGLES = (0.0, 90.0)
ALONG_STRIPES = ((1, 0), (0, 1))  # (dy, dx)


def stripes_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``[n, 16, 16, 1]`` in [0, 1] and labels ``[n]``: class k is a grating of
    period 4 pixels at ``ANGLES[k]`` with a random phase, plus uniform noise.

    Orientation is local (any 3x3 patch shows it), so nets with a global average pool, which
    forget where things are, can learn it as well as those that flatten.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % NUM_CLASSES
    rng.shuffle(labels)
    y, x = np.mgrid[:HW, :HW].astype(np.float64)
    theta = np.deg2rad(np.asarray(ANGLES))[labels][:, None, None]
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    wave = np.sin(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / 4.0 + phase)
    images = np.clip(0.5 + 0.4 * wave + 0.2 * (rng.random((n, HW, HW)) - 0.5), 0.0, 1.0)
    return images[..., None].astype(np.float32), labels.astype(np.int32)


def test_stripes_task_is_what_it_says():
    images, labels = stripes_task(64, 0)
    assert images.shape == (64, HW, HW, 1) and np.bincount(labels).tolist() == [32] * 2
    assert images.min() >= 0.0 and images.max() <= 1.0
    # Along its stripes an image barely changes: the direction of least change is the label.
    img = images[..., 0].astype(np.float64)
    energy = []
    for dy, dx in ALONG_STRIPES:
        shifted = np.roll(img, (-dy, -dx), axis=(1, 2))
        energy.append(((shifted - img)[:, 1:-1, 1:-1] ** 2).mean(axis=(1, 2)))
    np.testing.assert_array_equal(np.argmin(np.stack(energy, 1), 1), labels)


def train_and_test(name: str, norm: str) -> float:
    """Test accuracy after ``STEPS`` steps of TKS training (temperature 3, lambda ramped per
    epoch to a peak of 0.3 with ``tks_lambda``, as in training)."""
    options = {"num_steps": T} if norm == "tebn" else {}
    model = models.get_model(name, num_classes=NUM_CLASSES, width=0.0625, norm=norm, **options)
    train_x, train_y = stripes_task(STEPS * BATCH, seed=1)
    test_x, test_y = stripes_task(128, seed=2)
    variables = init_variables(model, jax.random.PRNGKey(0), jnp.asarray(train_x[:BATCH]),
                               num_steps=T)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, batch_stats, opt_state, x, y, lam):
        def loss_fn(p):
            logits, new_state = model.apply({"params": p, "batch_stats": batch_stats}, x,
                                            num_steps=T, train=True, mutable=["batch_stats"])
            return tks_jax.tks(logits, y, temperature=3.0, lam=lam), new_state

        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), new_state.get("batch_stats", {}),
                opt_state, loss)

    losses = []
    for i in range(STEPS):
        sl = slice(i * BATCH, (i + 1) * BATCH)
        lam = tks_jax.tks_lambda(i // STEPS_PER_EPOCH, STEPS // STEPS_PER_EPOCH, 0.3)
        params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state,
                                                    train_x[sl], train_y[sl], jnp.float32(lam))
        losses.append(float(loss))
    assert np.all(np.isfinite(losses)), losses
    logits = jax.jit(lambda v, x: model.apply(v, x, num_steps=T))(
        {"params": params, "batch_stats": batch_stats}, test_x)
    return float(np.mean(np.asarray(logits).mean(0).argmax(-1) == test_y))


@pytest.mark.parametrize("name, norm", [
    ("vgg_snn", "tdbn"),  # the event-data model of the paper
    ("resnet19", "tebn"),  # the paper's TKS* rows
    ("sew_resnet18", "bn"),
    ("sew_resnet19", "tdbn"),
])
def test_zoo_model_learns_a_separable_task(name, norm):
    accuracy = train_and_test(name, norm)
    assert accuracy > 0.9, f"{name} with {norm}: test accuracy {accuracy:.3f} (chance 0.5)"
