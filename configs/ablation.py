"""The ablation study: one config per (setting, budget); the loss is set per run.

Command (the whole study; ``tks_jax/experiments/plan.py`` holds the plan; its measured run time
is stated once, in the README next to this command):
  python -m tks_jax.experiments.ablation --out results/ablation --budget full

One run by hand (the ablation CLI does exactly this for each of its runs):
  python train.py --config configs/ablation.py:mnist,full --workdir runs/abl \
      --config.loss.name=baseline --config.seed=1

Settings (``get_config('<setting>,<budget>')``):
  mnist          static MNIST, T = 4 (the offline default ``configs/mnist_default.py``).
  mnist_hard     static MNIST with a reduced training set, where accuracy stays well below the
                 ~99% ceiling (a harder regime).
  nmnist_synth   the simulated event-camera MNIST, T = 10 (``configs/nmnist_synth_default.py``).
Budgets: ``full`` (the study), ``quick`` (the same plan on ~5x fewer images and 3 epochs),
``smoke`` (a few steps of a tiny model; tests and notebooks).

Everything except ``loss.name``, ``seed`` and (for the Fig. 3b sweep) ``num_steps`` is fixed by
the (setting, budget) pair, so every loss sees the same data, model, optimiser, epochs and seeds.
Nothing is selected on the test split: there is no intermediate evaluation and the last step is
reported.
"""

from __future__ import annotations

import ml_collections

from configs import mnist_default, nmnist_synth_default

SETTINGS = ("mnist", "mnist_hard", "nmnist_synth")
BUDGETS = ("full", "quick", "smoke")

# Per (setting, budget): training examples (the first n of the train split), epochs, test
# examples (the first n of the stored test order; None = the whole 10k test set). The full
# budget was sized from a measured pilot run per data set to fit a run time stated in the README;
# five epochs is the fewest that gives TKS's per-epoch lambda ramp (lam = peak * epoch / epochs)
# five levels, so training sets, not epochs, were cut.
_SIZES = {
    ("mnist", "full"): dict(train=5000, epochs=5, test=None),
    ("mnist_hard", "full"): dict(train=1000, epochs=10, test=None),
    ("nmnist_synth", "full"): dict(train=2000, epochs=5, test=5000),
    ("mnist", "quick"): dict(train=1500, epochs=3, test=2000),
    ("mnist_hard", "quick"): dict(train=500, epochs=12, test=2000),  # 84 steps (see below)
    ("nmnist_synth", "quick"): dict(train=800, epochs=3, test=1000),
    ("mnist", "smoke"): dict(train=64, epochs=1, test=64),
    ("mnist_hard", "smoke"): dict(train=32, epochs=2, test=64),
    ("nmnist_synth", "smoke"): dict(train=32, epochs=1, test=32),
}
# Every run needs >= ~60 steps: BatchNorm's running variance starts at 1 and forgets it by
# 0.9 per step, while some layers' true variance is ~1e-3; after 32 steps (an earlier quick
# mnist_hard of 300 images x 8 epochs) the eval-mode network predicted one class for every input.
# Batches: 64 static images (the offline default); 32 event recordings at T = 10.
_BATCH = {"mnist": 64, "mnist_hard": 64, "nmnist_synth": 32}
# Examples of the training split held out as the validation split (a fixed per-class subset,
# never trained on), on which each run's anytime exit rule is calibrated before the test split
# reports it; the training examples are the first n of what remains.
_VALIDATION = {"full": 2000, "quick": 500, "smoke": 20}
# Every run's final report adds the anytime exit rule (docs/method.md §14) and keeps the
# per-step logits of validation and test (anytime_logits.npz) for analyses without retraining.
ANYTIME = "max_drop=0.005,confidence=softmax,save_logits=true"
_SMOKE_BATCH = 16
_SMOKE_WIDTH = 0.0625  # channels 4-8-16-...: the tiny model of tests and notebooks


def parse_arg(arg: str | None) -> tuple[str, str]:
    """``'mnist,quick'`` -> ``('mnist', 'quick')``; the budget defaults to ``full``."""
    parts = [p.strip() for p in (arg or "mnist").split(",")]
    setting = parts[0]
    budget = parts[1] if len(parts) > 1 else "full"
    if setting not in SETTINGS or budget not in BUDGETS or len(parts) > 2:
        raise ValueError(
            f"Unknown ablation config argument {arg!r}; use '<setting>,<budget>' with setting "
            f"in {list(SETTINGS)} and budget in {list(BUDGETS)}, e.g. 'mnist,quick'."
        )
    return setting, budget


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    setting, budget = parse_arg(arg)
    base = nmnist_synth_default if setting == "nmnist_synth" else mnist_default
    config = base.get_config()
    config.experiment = f"ablation_{setting}_{budget}"
    sizes = _SIZES[(setting, budget)]
    config.batch_size = _SMOKE_BATCH if budget == "smoke" else _BATCH[setting]
    config.eval_batch_size = 250 if budget != "smoke" else _SMOKE_BATCH
    # The learning rate stays the default's per-image rate: lr = base_lr * batch / 1024.
    config.optimizer.base_learning_rate = 2e-3 * 1024 / config.batch_size  # lr 2e-3
    config.num_epochs = sizes["epochs"]
    config.data.max_train_examples = sizes["train"]
    config.data.max_eval_examples = sizes["test"]
    config.data.validation_size = _VALIDATION[budget]
    config.anytime = ANYTIME
    if budget == "smoke":
        config.model.width = _SMOKE_WIDTH
    config.eval_every_epochs = 0  # evaluate once, after the last step: no selection on test
    config.log_every_steps = 10
    config.checkpoint_every_steps = 100_000  # one checkpoint per epoch end (the loop's rule)
    config.keep_checkpoints = 1
    config.async_checkpointing = False
    config.tensorboard = False
    return config
