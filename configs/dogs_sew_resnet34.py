"""Stanford Dogs, SEW-ResNet-34 (BN, connect ADD), T = 4, TKS, 224x224 (fine-grained).

Command:
  python train.py --config configs/dogs_sew_resnet34.py --workdir runs/dogs_sew_resnet34
  (ablation rows: add --config.loss.name=baseline | ls | tet)
  CPU smoke run: add --config.smoke=True (needs the prepared data set).

Paper: the fine-grained results are not in spec section 11 (no number to compare with).
Training from scratch; the number of epochs is not in the spec: (choice) 300.

Hardware: meant for one or a few GPUs (224x224 at T = 4); not measured here.
"""

import ml_collections

from configs.common import apply_arg, base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config(
        experiment="dogs_sew_resnet34",
        dataset="stanford_dogs",
        model="sew_resnet34",
        num_steps=4,  # T
        num_classes_hint=120,
        temperature=3.0,  # tau_kd for fine-grained data (spec section 4)
        lambda_peak=0.7,  # static images (spec section 4)
        norm="bn",  # SEW-ResNet uses plain BN (spec section 7)
    )
    config.model.connect = "add"  # SEW connect function ADD (spec section 7)
    config.num_epochs = 300  # (choice) not in the spec
    return apply_arg(config, arg)
