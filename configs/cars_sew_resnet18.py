"""Stanford Cars, SEW-ResNet-18 (BN, connect ADD), T = 4, TKS, 224x224 (fine-grained).

Command:
  python train.py --config configs/cars_sew_resnet18.py --workdir runs/cars_sew_resnet18
  (ablation rows: add --config.loss.name=baseline | ls | tet)
  CPU smoke run: add --config.smoke=True (needs the prepared data set).

Paper: the fine-grained results are not in docs/method.md §11 (no number to compare with).
Training from scratch; the number of epochs is not in the paper: (choice) 300.

Hardware: meant for one or a few GPUs (224x224 at T = 4); not measured here.
"""

import ml_collections

from configs.common import apply_arg, fine_grained_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = fine_grained_config(
        experiment="cars_sew_resnet18",
        dataset="cars196",
        model="sew_resnet18",
        num_classes_hint=196,
    )
    return apply_arg(config, arg)
