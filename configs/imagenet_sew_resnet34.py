"""ImageNet-1k, SEW-ResNet-34 (BN, connect ADD), T = 4, TKS; Adam with weight decay 0.

Command:
  python train.py --config configs/imagenet_sew_resnet34.py --workdir runs/imagenet_sew_resnet34
  multi-host: add --config.distributed=True on every host (jax.distributed.initialize()).
  CPU smoke run: add --config.smoke=True (needs the prepared data set).

Paper (docs/method.md §11, top-1 %; AURC not reported):
  baseline  top-1 68.61 %, AURC x1000 -
  tet       top-1 68.68 %, AURC x1000 -
  tks       top-1 69.6 %, AURC x1000 -

Hardware: meant for a multi-GPU/TPU machine (8 accelerators or more); batch 128 split over
devices. The number of epochs is not in the paper: (choice) 320, SEW-ResNet's ImageNet schedule.
"""

import ml_collections

from configs.common import apply_arg, base_config, paper_row


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config(
        experiment="imagenet_sew_resnet34",
        dataset="imagenet2012",
        model="sew_resnet34",
        num_steps=4,  # T (docs/method.md §11)
        num_classes_hint=1000,
        temperature=1.0,  # tau_kd for ImageNet (docs/method.md §4)
        peak=0.7,  # static images (docs/method.md §4)
        norm="bn",  # SEW-ResNet uses plain BN (docs/method.md §7)
        paper=paper_row(
            baseline=(68.61, None),
            tet=(68.68, None),
            tks=(69.6, None),
        ),
    )
    config.model.connect = "add"  # SEW connect function ADD (docs/method.md §7)
    config.optimizer.name = "adam"  # ImageNet: Adam (docs/method.md §9)
    config.optimizer.weight_decay = 0.0  # ImageNet: no weight decay (docs/method.md §9)
    config.num_epochs = 320  # (choice) not in the paper; SEW-ResNet's ImageNet schedule
    config.eval_every_epochs = 5  # an ImageNet eval pass is costly
    config.checkpoint_every_steps = 2000
    return apply_arg(config, arg)
