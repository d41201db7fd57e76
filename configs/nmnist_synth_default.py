"""Offline event default: simulated N-MNIST (34x34x2 frames), small VGG-SNN, TKS, T = 10, CPU.

Command:
  python train.py --config configs/nmnist_synth_default.py --workdir runs/nmnist_synth_default
  (needs no download: the recordings are simulated from the offline MNIST on first use)

Exercises the event path (time-major ``[T, B, H, W, C]`` batches, sharded on axis 1) end to
end. Not a paper experiment. Hardware: a laptop / 2 CPU cores.

Expected result and run time: the README ("Training the paper's experiments"), measured
with this command.
"""

import ml_collections

from configs.common import apply_arg, base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config(
        experiment="nmnist_synth_default",
        dataset="nmnist_synth",
        model="vgg_snn",
        num_steps=10,  # T of the paper's event experiments (docs/method.md §11)
        num_classes_hint=10,
        temperature=5.0,  # tau_kd for event data (docs/method.md §4)
        peak=0.3,  # event data (docs/method.md §4)
        norm="tdbn",
        smoke_width=0.125,
    )
    config.model.width = 0.125  # ~145k params: CPU budget
    config.batch_size = 32  # T = 10 costs 2.5x the static default per image
    config.eval_batch_size = 250
    config.num_epochs = 2  # lam 0 then 0.15
    config.data.max_train_examples = 8000  # 2 x 8k recordings fit ~10-15 min on 2 cores
    config.data.max_eval_examples = 2000  # a quarter of the test set keeps eval short
    config.optimizer.base_learning_rate = 0.064  # lr 2e-3 at batch 32
    config.optimizer.warmup_epochs = 0
    config.optimizer.schedule_granularity = "step"
    config.log_every_steps = 20
    config.checkpoint_every_steps = 200
    config.eval_every_epochs = 0
    return apply_arg(config, arg)
