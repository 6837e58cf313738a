"""Which device to train on, whether the run fits on it, and how fast it can go at best.

The check runs before any data is downloaded or any model is built: a missing
GPU should cost the user one second, not a 500 MB download followed by a
week-long CPU run.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from gpt2load import DTYPE_ALIASES, GPTConfig

from .errors import DeviceError

GIB = 1024**3


@dataclass(frozen=True)
class DeviceInfo:
    device: torch.device
    name: str
    total_memory: int | None  # bytes; None when unknown
    bf16: bool
    peak_flops: float | None  # dense bf16/fp16 FLOP/s, for MFU; None when unknown

    @property
    def type(self) -> str:
        return self.device.type

    def describe(self) -> str:
        memory = f", {self.total_memory / GIB:.1f} GiB" if self.total_memory else ""
        return f"{self.name}{memory}, bf16 {'supported' if self.bf16 else 'not supported'}"


# Dense (no sparsity) bf16/fp16 tensor-core peaks from the vendors' datasheets, matched
# against torch.cuda.get_device_name(). Longest keys first so "H100 PCIe" beats "H100".
_PEAK_FLOPS = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,
    "H200": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "A10G": 70e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,
    "T4": 65e12,
}


def peak_flops(name: str) -> float | None:
    return next(
        (_PEAK_FLOPS[k] for k in sorted(_PEAK_FLOPS, key=len, reverse=True) if k in name), None
    )


def _no_cuda_message(requested: str) -> str:
    if torch.version.cuda is None:
        why = f"this PyTorch ({torch.__version__}) is a CPU-only build"
    elif os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        why = "CUDA_VISIBLE_DEVICES is empty, which hides every GPU"
    else:
        why = (
            f"PyTorch was built for CUDA {torch.version.cuda} but finds no usable GPU "
            f"(driver missing or too old?)"
        )
    return (
        f"no CUDA GPU available for --device {requested}: {why}.\n"
        "Training GPT-2 needs a GPU to finish in reasonable time. Either:\n"
        "  - fix CUDA: `nvidia-smi` should list your GPU, and PyTorch must be a CUDA build "
        "(https://pytorch.org/get-started/locally/);\n"
        "  - on Apple silicon, pass --device mps;\n"
        "  - or pass --force-cpu to train on the CPU anyway (slow)."
    )


def system_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def select_device(requested: str = "cuda", force_cpu: bool = False) -> DeviceInfo:
    """Resolve ``--device``/``--force-cpu`` to a device, or raise :class:`DeviceError`."""
    requested = requested.strip().lower()
    if force_cpu or requested == "cpu":
        return DeviceInfo(torch.device("cpu"), "CPU", system_memory(), bf16=True, peak_flops=None)
    if requested == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(
                "--device mps asked for Apple's Metal backend, which this machine or PyTorch "
                "build does not offer; use --device cuda on an NVIDIA GPU or --force-cpu (slow)"
            )
        total = None
        with contextlib.suppress(Exception):  # older torch: unknown
            total = int(torch.mps.recommended_max_memory())
        return DeviceInfo(torch.device("mps"), "Apple MPS", total, bf16=True, peak_flops=None)
    if not requested.startswith("cuda"):
        raise DeviceError(f"unknown --device {requested!r}: use cuda, cuda:N, mps or cpu")
    if not torch.cuda.is_available():
        raise DeviceError(_no_cuda_message(requested))
    device = torch.device(requested)
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise DeviceError(
            f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) are visible"
        )
    device = torch.device("cuda", index)
    props = torch.cuda.get_device_properties(index)
    return DeviceInfo(
        device,
        props.name,
        int(props.total_memory),
        bf16=bool(torch.cuda.is_bf16_supported()),
        peak_flops=peak_flops(props.name),
    )


def resolve_dtype(dtype: str, info: DeviceInfo) -> torch.dtype:
    """The autocast dtype for ``--dtype`` on this device (float32 means no autocast)."""
    if dtype == "auto":
        if info.type == "cuda":
            return torch.bfloat16 if info.bf16 else torch.float16
        return torch.float32
    resolved = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    name = DTYPE_ALIASES.get(dtype.strip().lower(), dtype.strip().lower())
    if name not in resolved:
        raise DeviceError(f"unknown --dtype {dtype!r}: use auto, bfloat16, float16 or float32")
    if resolved[name] is torch.bfloat16 and not info.bf16:
        raise DeviceError(f"{info.name} does not support bfloat16; use --dtype float16")
    return resolved[name]


# ----------------------------------------------------------------- memory
@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training step needs, in the parts a user can act on."""

    weights_and_optimizer: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return self.weights_and_optimizer + self.activations + self.logits

    def describe(self) -> str:
        return (
            f"~{self.total / GIB:.1f} GiB (weights+grads+AdamW "
            f"{self.weights_and_optimizer / GIB:.1f}, activations {self.activations / GIB:.1f}, "
            f"logits {self.logits / GIB:.1f})"
        )


def estimate_memory(
    config: GPTConfig, batch_size: int, block_size: int, dtype: torch.dtype, shards: int = 1
) -> MemoryEstimate:
    """A deliberately rough upper-ish estimate of the peak memory of one micro-step.

    fp32 master weights, gradients and two AdamW moments are 16 bytes per
    parameter. Activations kept for backward are about 34 values of width
    ``n_embd`` per token per layer with fused attention (Korthikanti et al.,
    2022), at 2 bytes each under autocast and 4 in float32. The logits are the
    spike at the end: low-precision logits, their float32 copy for the loss, and
    its gradient. With FSDP over ``shards`` processes each holds its share of the
    16 bytes per parameter plus one transformer block gathered whole.
    """
    d, n_layer, vocab = config.n_embd, config.n_layer, config.vocab_size
    params = vocab * d + config.context_length * d + n_layer * (12 * d * d + 13 * d) + 2 * d
    half = dtype in (torch.bfloat16, torch.float16)
    act_bytes = 2 if half else 4
    tokens = batch_size * block_size
    activations = int(34 * d * n_layer * tokens * act_bytes)
    logits = tokens * vocab * ((act_bytes if half else 0) + 4 + 4 + 4)
    state = 16 * params
    if shards > 1:
        state = state // shards + 4 * (12 * d * d + 13 * d)
    return MemoryEstimate(state, activations, logits)


def check_memory(
    estimate: MemoryEstimate, info: DeviceInfo, batch_size: int, block_size: int
) -> None:
    """Refuse a run whose estimate exceeds the device memory, naming the flag to lower."""
    if info.total_memory is None or estimate.total <= info.total_memory:
        return
    available = info.total_memory / GIB
    if estimate.weights_and_optimizer > 0.9 * info.total_memory:
        advice = (
            "the model alone does not fit: pick a smaller --init, use more GPU memory, or "
            "shard it over several GPUs with torchrun and --fsdp"
        )
    elif batch_size > 1:
        per_sequence = (estimate.activations + estimate.logits) / batch_size
        room = info.total_memory - estimate.weights_and_optimizer
        fits = max(1, int(room // per_sequence))
        advice = (
            f"lower --batch-size (about {fits} fits) and raise --grad-accum to keep the same "
            f"tokens per step"
        )
    else:
        advice = "lower --block-size"
    raise DeviceError(
        f"this run needs {estimate.describe()}, more than the {available:.1f} GiB of "
        f"{info.name}; {advice}. (--no-memory-check skips this estimate.)"
    )


def flops_per_token(config: GPTConfig, block_size: int) -> float:
    """Training FLOPs per token: 6 per weight of every matmul plus attention's own.

    The position table is a lookup, not a matmul; the token table counts once,
    for the tied output projection.
    """
    d, n_layer = config.n_embd, config.n_layer
    matmul_params = config.vocab_size * d + n_layer * 12 * d * d
    return 6 * matmul_params + 12 * n_layer * d * block_size
