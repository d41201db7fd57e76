"""Shared defaults of every experiment config (docs/method.md §1-2, §4-6, §9).

Each ``configs/<experiment>.py`` calls ``base_config`` with what differs and documents, in its
docstring, the exact command, the paper's number and the hardware it was meant for.

Command-line overrides follow ml_collections: ``--config.loss.name=baseline``,
``--config.smoke=True`` (a few steps on tiny data, for CPU), ``--config.overwrite=True``.
"""

from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder


def base_config(
    *, experiment: str, dataset: str, model: str, num_steps: int, num_classes_hint: int,
    temperature: float, peak: float, norm: str, paper: dict[str, Any] | None = None,
    smoke_width: float = 0.125,
) -> ml_collections.ConfigDict:
    """The defaults of docs/method.md; experiment files override what differs.

    Args:
      experiment: config name (copied into reports).
      dataset: a ``tks_jax.data`` dataset name.
      model: a ``tks_jax.models`` model name.
      num_steps: T, the number of time steps of training (and of evaluation by default).
      num_classes_hint: number of classes (documentation only; the data sets it).
      temperature: TKS distillation temperature tau_kd (docs/method.md §4).
      peak: peak of the TKS lambda ramp, ``lam(epoch) = peak * epoch / num_epochs``
        (docs/method.md §4).
      norm: 'tdbn' | 'tebn' | 'bn' (docs/method.md §6).
      paper: the paper's numbers per loss: ``{loss: {'top1': %, 'aurc': x1000}}``.
      smoke_width: model width multiplier in smoke runs.
    """
    c = ml_collections.ConfigDict()
    c.experiment = experiment
    c.description = ""
    c.seed = 0
    c.num_steps = num_steps  # T
    c.eval_num_steps = placeholder(int)  # None: evaluate at the training T
    c.num_classes_hint = num_classes_hint

    c.data = ml_collections.ConfigDict()
    c.data.name = dataset
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.data_dir = placeholder(str)  # None: $TKS_DATA_DIR or ~/tensorflow_datasets
    c.data.num_workers = 0  # grain worker processes (0: threads in this process)
    c.data.max_train_examples = placeholder(int)  # None: the whole split
    c.data.max_eval_examples = placeholder(int)
    # Examples of the training split held out as split 'validation' (a fixed per-class subset,
    # excluded from training; the anytime exit rule is calibrated there). None: no validation.
    c.data.validation_size = placeholder(int)
    c.data.validation_seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.name = model
    c.model.width = 1.0  # channel multiplier; 1.0 = the paper's widths
    c.model.norm = norm
    c.model.tau = 2.0  # LIF time constant (docs/method.md §1)
    c.model.v_threshold = 0.5  # LIF threshold (docs/method.md §1)
    c.model.surrogate = "qgate"  # Bi-Real Net piecewise quadratic (docs/method.md §2)
    c.model.surrogate_alpha = 2.0  # sharpness: peak 2, area 1 (docs/method.md §2)
    c.model.detach_reset = True  # no gradient through the reset (docs/method.md §1)
    c.model.remat = False  # memory vs compute: chunked / rematerialised units (many steps)
    c.model.dtype = "float32"  # compute dtype; params stay float32
    c.model.conv = "auto"  # auto | winograd | direct: how convolutions are computed (same maths)

    # Keys are the argument names of the loss functions; tks_jax.training.objectives says which
    # loss reads which key.
    c.loss = ml_collections.ConfigDict()
    c.loss.name = "tks"  # baseline | ls | tet | tks
    c.loss.temperature = temperature  # tks: tau_kd (docs/method.md §4)
    c.loss.peak = peak  # tks: lam(epoch) = peak * epoch / num_epochs (tks_lambda_schedule)
    c.loss.detach_teacher = False  # tks: the authors do not detach the teacher (docs/method.md §4)
    c.loss.smoothing = 0.1  # ls: label smoothing eps, (choice) docs/method.md §5
    c.loss.lamb = 1e-3  # tet: MSE weight (docs/method.md §5)
    c.loss.means = 1.0  # tet: MSE target phi (docs/method.md §5)

    c.batch_size = 128  # global batch (docs/method.md §9)
    c.eval_batch_size = 128
    c.num_epochs = 600  # the authors' scripts (docs/method.md §9)
    c.max_train_steps = placeholder(int)  # None: num_epochs full epochs

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"  # adamw | adam | sgd
    c.optimizer.base_learning_rate = 5e-3  # at base_batch_size; lr = 6.25e-4 at batch 128
    c.optimizer.base_batch_size = 1024  # linear scaling rule denominator (docs/method.md §9)
    c.optimizer.weight_decay = 0.01  # on kernels only (docs/method.md §9)
    c.optimizer.b1 = 0.9  # Adam betas/eps: PyTorch/optax defaults
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.momentum = 0.9  # sgd only
    c.optimizer.warmup_epochs = 5  # docs/method.md §9
    c.optimizer.warmup_init_learning_rate = 1e-6  # (choice) timm's warmup_lr default
    c.optimizer.min_learning_rate = 1e-5  # cosine floor (docs/method.md §9)
    c.optimizer.schedule_granularity = "epoch"  # 'epoch' (docs/method.md §9) | 'step'
    c.optimizer.grad_clip_norm = placeholder(float)  # None: no clipping

    c.log_every_steps = 50
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.async_checkpointing = True
    c.eval_every_epochs = 10  # 0: evaluate only at the end
    c.tensorboard = True
    c.distributed = False  # True: jax.distributed.initialize() (multi-host)
    c.overwrite = False  # True: discard a run with a different config in the workdir
    c.resume_with_changes = ""  # e.g. "optimizer.base_learning_rate": resume despite a change
    # Non-empty: the final report adds the anytime exit rule, calibrated on the validation
    # split (needs data.validation_size), e.g. "max_drop=0.005" (python -m tks_jax.evaluate's
    # --anytime takes the same string).
    c.anytime = ""

    c.paper = ml_collections.ConfigDict(paper or {})

    # --config.smoke=True: a few steps on tiny data (CPU), see training.config_lib.apply_smoke.
    c.smoke = False
    c.smoke_settings = ml_collections.ConfigDict(
        dict(batch_size=8, num_epochs=1, max_train_steps=2, max_examples=16)
    )
    c.smoke_model = ml_collections.ConfigDict(dict(width=smoke_width))
    return c


def apply_arg(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """``get_config('smoke')`` (or ``--config=path.py:smoke``) turns the smoke switch on."""
    if arg in (None, ""):
        return config
    if arg in ("smoke", "runlocal"):
        config.smoke = True
        return config
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")


def paper_row(**per_loss: tuple[float | None, float | None]) -> dict[str, Any]:
    """``paper_row(tks=(96.35, 2.76))`` -> ``{'tks': {'top1': 96.35, 'aurc': 2.76}}``."""
    return {k: {"top1": v[0], "aurc": v[1]} for k, v in per_loss.items()}


def fine_grained_config(
    *, experiment: str, dataset: str, model: str, num_classes_hint: int
) -> ml_collections.ConfigDict:
    """The fine-grained experiments (docs/method.md §7-9).

    CUB-200-2011, Stanford Dogs and Stanford Cars: SEW-ResNet-18/34 with plain BN and connect
    ADD at T = 4 on 224x224 crops, TKS with the static-image settings. Trained from scratch;
    the number of epochs is not in the paper: (choice) 300.
    """
    config = base_config(
        experiment=experiment,
        dataset=dataset,
        model=model,
        num_steps=4,  # T
        num_classes_hint=num_classes_hint,
        temperature=3.0,  # tau_kd for fine-grained data (docs/method.md §4)
        peak=0.7,  # static images (docs/method.md §4)
        norm="bn",  # SEW-ResNet uses plain BN (docs/method.md §7)
    )
    config.model.connect = "add"  # SEW connect function ADD (docs/method.md §7)
    config.num_epochs = 300  # (choice) not in the paper
    return config
