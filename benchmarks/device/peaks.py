"""Dense bfloat16 tensor-core peaks of NVIDIA GPUs, and achieved FLOP/s as a fraction of them.

The peaks are the vendors' datasheet numbers for dense bf16 matrix arithmetic (the datasheets
print the 2:4-sparse rate, twice the dense one; the table holds half of it). They are
ceilings, not what a program reaches: the device check also measures a large bf16 matrix
product on the same GPU (``benchmarks/train_step.py`` ``gemm_peak``) and reports both.
"""

from __future__ import annotations

# (substring of the device kind, case-insensitive; first match wins) -> (TFLOP/s, source)
BF16_DENSE_TFLOPS: tuple[tuple[str, float, str], ...] = (
    ("H200", 989.0, "NVIDIA H200 datasheet (SXM): BF16 tensor core 1,979 TFLOPS with sparsity"),
    ("H100 PCIe", 756.0, "NVIDIA H100 datasheet (PCIe): BF16 tensor core 1,513 TFLOPS with "
     "sparsity"),
    ("H100", 989.0, "NVIDIA H100 datasheet (SXM): BF16 tensor core 1,979 TFLOPS with sparsity"),
    ("A100", 312.0, "NVIDIA A100 datasheet: BF16 tensor core 312 TFLOPS (624 with sparsity)"),
)


def bf16_peak(device_kind: str) -> tuple[float, str] | None:
    """``(TFLOP/s, source)`` of the dense bf16 peak of ``device_kind`` (as JAX's
    ``device.device_kind`` or ``torch.cuda.get_device_name`` print it), or None if unknown."""
    kind = (device_kind or "").lower()
    for key, tflops, source in BF16_DENSE_TFLOPS:
        if key.lower() in kind:
            return tflops, source
    return None


def fraction_of_peak(flop_per_step: float, step_s: float, peak_tflops: float) -> float:
    """Achieved FLOP/s (``flop_per_step / step_s``) over ``peak_tflops`` x 1e12.

    Raises:
      ValueError: a non-positive step time or peak (a failed or missing measurement).
    """
    if not step_s > 0 or not peak_tflops > 0:
        raise ValueError(
            f"fraction_of_peak needs step_s > 0 and peak_tflops > 0, got step_s={step_s!r}, "
            f"peak_tflops={peak_tflops!r}."
        )
    return flop_per_step / step_s / (peak_tflops * 1e12)
