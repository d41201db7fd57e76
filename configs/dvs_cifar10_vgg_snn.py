"""DVS-CIFAR10, VGG-SNN (tdBN), T = 10, TKS (event data, 48x48x2 frames).

Command:
  python train.py --config configs/dvs_cifar10_vgg_snn.py --workdir runs/dvs_cifar10_vgg_snn
  (ablation rows: add --config.loss.name=baseline | ls | tet)
  CPU smoke run: add --config.smoke=True (needs the converted recordings).

Paper (docs/method.md §11, top-1 / AURC x1000 per loss):
  baseline  top-1 83.2 %, AURC x1000 46.14
  ls        top-1 84.0 %, AURC x1000 40.2
  tet       top-1 84.7 %, AURC x1000 43.42
  tks       top-1 85.3 %, AURC x1000 40.18

Temporal generalisation (Fig. 3a): tested with 1 step, TKS stays near 75% (the baseline
loses about 33 points).

Hardware: meant for one GPU; 600 epochs (not measured here).
"""

import ml_collections

from configs.common import apply_arg, base_config, paper_row


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config(
        experiment="dvs_cifar10_vgg_snn",
        dataset="dvs_cifar10",
        model="vgg_snn",
        num_steps=10,  # T (docs/method.md §11)
        num_classes_hint=10,
        temperature=5.0,  # tau_kd for event data (docs/method.md §4)
        peak=0.3,  # event data (docs/method.md §4)
        norm="tdbn",  # docs/method.md §6
        paper=paper_row(
            baseline=(83.2, 46.14),
            ls=(84.0, 40.2),
            tet=(84.7, 43.42),
            tks=(85.3, 40.18),
        ),
    )
    # TET's own event-data script uses lamb = 1e-4; we keep 1e-3 (our choice, docs/method.md §5).
    config.loss.lamb = 1e-3
    # Events -> frames (docs/data.md): equal-duration time bins (docs/method.md §13; 'authors':
    # their tonic fork's bins) on the fixed 128 x 128 DVS128 frame (as the authors).
    config.data.event_frames = ml_collections.ConfigDict({"binning": "equal", "extent": "sensor"})
    return apply_arg(config, arg)
