"""Framework-free description of the two benchmarked architectures (docs/method.md §7).

Both sides of the benchmark (tks-jax and the SpikingJelly peer in ``benchmarks/peers``) import
this file, so that they build the same layers, and so that parameter counts and FLOP counts
come from one place. Pure Python: no jax, no torch.

FLOPs count multiply-adds of convolutions and dense layers only (2 FLOPs per multiply-add);
BatchNorm, LIF, pooling and the optimiser are element-wise and left out. A training step is
counted as forward + input gradient + weight gradient (3x the forward), except the first
layer's input gradient, which neither framework computes.
"""

from __future__ import annotations

import dataclasses
import statistics

# Input shape (H, W, C) and number of steps of each benchmarked model (docs/method.md §7).
INPUTS = {"vgg_snn": ((48, 48, 2), 10), "resnet19": ((32, 32, 3), 4)}
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Layer:
    """One weight layer: a square conv (``kernel`` > 0) or a dense layer (``kernel`` == 0).

    ``hw`` is the output spatial size; ``once`` marks layers computed on ``B`` rather than
    ``T*B`` samples (the first conv of a direct-encoded static image).
    """

    name: str
    cin: int
    cout: int
    kernel: int
    stride: int
    hw: int
    bias: bool = False
    bn: bool = True
    once: bool = False

    @property
    def params(self) -> int:
        k2 = self.kernel * self.kernel if self.kernel else 1
        return k2 * self.cin * self.cout + (self.cout if self.bias else 0) + (
            2 * self.cout if self.bn else 0
        )

    def macs_per_sample(self) -> int:
        k2 = self.kernel * self.kernel if self.kernel else 1
        return k2 * self.cin * self.cout * self.hw * self.hw


def _c(width: float, channels: int) -> int:
    # Multiples of 8, at least 8: the rounding of tks_jax.models.layers.scaled_channels.
    if width == 1.0:
        return channels
    return max(8, int(round(channels * width / 8.0)) * 8)


def vgg_snn(width: float = 1.0, num_classes: int = NUM_CLASSES) -> list[Layer]:
    """64C3-128C3-AP2-256C3-256C3-AP2-512C3-512C3-AP2-512C3-512C3-AP2-FC (48x48x2 input)."""
    plan = [64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"]
    layers, cin, hw = [], INPUTS["vgg_snn"][0][2], 48
    for i, item in enumerate(plan):
        if item == "A":
            hw //= 2
            continue
        cout = _c(width, item)
        layers.append(Layer(f"conv{i}", cin, cout, 3, 1, hw))
        cin = cout
    layers.append(Layer("fc", cin * hw * hw, num_classes, 0, 1, 1, bias=True, bn=False))
    return layers


def resnet19(width: float = 1.0, num_classes: int = NUM_CLASSES) -> list[Layer]:
    """conv3x3(3->128), BasicBlocks 128x3, 256x3 (s2), 512x2 (s2), pool, FC 256, FC (CIFAR)."""
    stem = _c(width, 128)
    layers = [Layer("stem", 3, stem, 3, 1, 32, once=True)]
    cin, hw = stem, 32
    for stage, (channels, blocks) in enumerate([(128, 3), (256, 3), (512, 2)]):
        cout = _c(width, channels)
        for b in range(blocks):
            stride = 2 if (stage > 0 and b == 0) else 1
            hw_out = hw // stride
            name = f"s{stage}b{b}"
            layers.append(Layer(f"{name}.conv1", cin, cout, 3, stride, hw_out))
            layers.append(Layer(f"{name}.conv2", cout, cout, 3, 1, hw_out))
            if stride != 1 or cin != cout:
                layers.append(Layer(f"{name}.short", cin, cout, 1, stride, hw_out))
            cin, hw = cout, hw_out
    hidden = _c(width, 256)  # the hidden FC scales with the width, as in tks_jax.models
    layers.append(Layer("fc1", cin, hidden, 0, 1, 1, bias=True, bn=False))
    layers.append(Layer("fc2", hidden, num_classes, 0, 1, 1, bias=True, bn=False))
    return layers


ARCHS = {"vgg_snn": vgg_snn, "resnet19": resnet19}


def num_params(model: str, width: float = 1.0) -> int:
    """Trainable parameters (conv kernels, dense kernels and biases, BN scale and bias)."""
    return sum(layer.params for layer in ARCHS[model](width))


def flops(model: str, width: float, batch: int, train: bool) -> float:
    """FLOPs of one forward (``train=False``) or training step (conv + dense only)."""
    _, num_steps = INPUTS[model]
    total = 0.0
    for i, layer in enumerate(ARCHS[model](width)):
        samples = batch if layer.once else batch * num_steps
        fwd = 2.0 * layer.macs_per_sample() * samples
        total += fwd if not train else (2 * fwd if i == 0 else 3 * fwd)
    return total


def step_rates(
    batch: int, times: list[float], cpus: list[float], model_flops: float
) -> dict[str, float | list[float]]:
    """The timing fields of a train-step record (same keys for every framework).

    Args:
      batch: images per step.
      times: wall seconds of the timed steps.
      cpus: CPU seconds (user + sys, all threads) of the same steps.
      model_flops: FLOPs of one step (``flops(..., train=True)``).
    """
    median = statistics.median(times)
    return {
        "step_s_median": median,
        "step_s_all": [round(t, 4) for t in times],
        "img_per_s": batch / median,
        # CPU seconds per step: robust to other processes' load.
        "cpu_s_median": statistics.median(cpus),
        "gflop_per_step": model_flops / 1e9,
        "gflop_per_s": model_flops / median / 1e9,
    }
