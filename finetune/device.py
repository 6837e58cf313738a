"""Which device to train on, whether the run fits on it, and how fast it can go at best.
Checked before any data is downloaded or any model built: a missing GPU should cost the user
one second, not a 500 MB download followed by a week-long CPU run."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from gpt2load import DTYPE_ALIASES, GPTConfig

from .errors import DeviceError

GIB = 1024**3
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Dense (no sparsity) bf16/fp16 tensor-core peaks in TFLOP/s from the vendors' datasheets,
# matched in this order against the device's name: "H100 PCIe" before "H100", "L40S" before "L4".
# fmt: off
_PEAK_TFLOPS = {
    "H100 PCIe": 756, "H100 NVL": 835, "H100": 989, "GH200": 989, "H200": 989, "A100": 312,
    "A800": 312, "L40S": 362, "L40": 181, "L4": 121, "A10G": 70, "RTX 4090": 165,
    "RTX 3090": 71, "V100": 125, "T4": 65,
}
# fmt: on


@dataclass(frozen=True)
class DeviceInfo:
    device: torch.device
    name: str
    total_memory: int | None  # bytes; None when unknown
    bf16: bool
    peak_flops: float | None = None  # dense bf16/fp16 FLOP/s, for MFU; None when unknown

    @property
    def type(self) -> str:
        return self.device.type

    def describe(self) -> str:
        memory = f", {self.total_memory / GIB:.1f} GiB" if self.total_memory else ""
        return f"{self.name}{memory}, bf16 {'supported' if self.bf16 else 'not supported'}"


def _no_cuda_message(requested: str) -> str:
    if torch.version.cuda is None:
        why = f"this PyTorch ({torch.__version__}) is a CPU-only build"
    elif os.environ.get("CUDA_VISIBLE_DEVICES") == "":
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


def select_device(requested: str = "cuda", force_cpu: bool = False) -> DeviceInfo:
    """Resolve ``--device``/``--force-cpu`` to a device, or raise :class:`DeviceError`."""
    requested = requested.strip().lower()
    memory = None
    if force_cpu or requested == "cpu":
        with contextlib.suppress(ValueError, OSError, AttributeError):  # not POSIX: unknown
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return DeviceInfo(torch.device("cpu"), "CPU", memory, bf16=True)
    if requested == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(
                "--device mps asked for Apple's Metal backend, which this machine or PyTorch "
                "build does not offer; use --device cuda on an NVIDIA GPU or --force-cpu (slow)"
            )
        with contextlib.suppress(Exception):  # older torch: unknown
            memory = int(torch.mps.recommended_max_memory())
        return DeviceInfo(torch.device("mps"), "Apple MPS", memory, bf16=True)
    if not requested.startswith("cuda"):
        raise DeviceError(f"unknown --device {requested!r}: use cuda, cuda:N, mps or cpu")
    if not torch.cuda.is_available():
        raise DeviceError(_no_cuda_message(requested))
    index = torch.device(requested).index
    index = torch.cuda.current_device() if index is None else index
    if index >= torch.cuda.device_count():
        raise DeviceError(
            f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) are visible"
        )
    props, bf16 = torch.cuda.get_device_properties(index), bool(torch.cuda.is_bf16_supported())
    peak = next((tflops * 1e12 for key, tflops in _PEAK_TFLOPS.items() if key in props.name), None)
    return DeviceInfo(torch.device("cuda", index), props.name, props.total_memory, bf16, peak)


def resolve_dtype(dtype: str, info: DeviceInfo) -> torch.dtype:
    """The autocast dtype for ``--dtype`` on this device (float32 means no autocast)."""
    name = DTYPE_ALIASES.get(dtype.strip().lower(), dtype.strip().lower())
    if name == "auto":
        name = "float32" if info.type != "cuda" else "bfloat16" if info.bf16 else "float16"
    if name not in _DTYPES:
        raise DeviceError(f"unknown --dtype {dtype!r}: use auto, bfloat16, float16 or float32")
    if name == "bfloat16" and not info.bf16:
        raise DeviceError(f"{info.name} does not support bfloat16; use --dtype float16")
    return _DTYPES[name]


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
    """A deliberately rough, upper-ish estimate of one micro-step's peak. fp32 weights, grads
    and two AdamW moments are 16 bytes per parameter (FSDP: each shard's share plus one block
    gathered whole); activations kept for backward about 34 values of width ``n_embd`` per token
    per layer with fused attention (Korthikanti et al., 2022); the logits are the spike at the
    end: low-precision logits, their float32 copy for the loss, and its gradient."""
    d, n_layer, vocab = config.n_embd, config.n_layer, config.vocab_size
    block, tokens = 12 * d * d + 13 * d, batch_size * block_size
    params = vocab * d + config.context_length * d + n_layer * block + 2 * d
    half = dtype in (torch.bfloat16, torch.float16)
    activations = 34 * d * n_layer * tokens * (2 if half else 4)
    logits = tokens * vocab * ((2 if half else 0) + 12)
    state = 16 * params if shards == 1 else 16 * params // shards + 4 * block
    return MemoryEstimate(state, activations, logits)


def check_memory(estimate: MemoryEstimate, info: DeviceInfo, batch_size: int) -> None:
    """Refuse a run whose estimate exceeds the device memory, naming the flag to lower."""
    if info.total_memory is None or estimate.total <= info.total_memory:
        return
    if estimate.weights_and_optimizer > 0.9 * info.total_memory:
        advice = (
            "the model alone does not fit: pick a smaller --init, use more GPU memory, or "
            "shard it over several GPUs with torchrun and --fsdp"
        )
    elif batch_size > 1:
        per_sequence = (estimate.activations + estimate.logits) / batch_size
        fits = max(1, int((info.total_memory - estimate.weights_and_optimizer) // per_sequence))
        advice = (
            f"lower --batch-size (about {fits} fits) and raise --grad-accum to keep the same "
            f"tokens per step"
        )
    else:
        advice = "lower --block-size"
    raise DeviceError(
        f"this run needs {estimate.describe()}, more than the {info.total_memory / GIB:.1f} GiB "
        f"of {info.name}; {advice}. (--no-memory-check skips this estimate.)"
    )


def flops_per_token(config: GPTConfig, block_size: int) -> float:
    """Training FLOPs per token: 6 per weight of every matmul plus attention's own. The
    position table is a lookup, not a matmul; the token table counts once, tied to the head."""
    d, n_layer = config.n_embd, config.n_layer
    return 6 * (config.vocab_size * d + n_layer * 12 * d * d) + 12 * n_layer * d * block_size
