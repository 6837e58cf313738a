"""``x @ W.T + b`` in float32 on the CPU through oneDNN instead of MKL, with its gradients: MKL
runs its fast AVX-512 kernels only on Intel processors, oneDNN (shipped with PyTorch) picks by
instruction set and on AMD EPYC runs the same products about 2x faster (results differ only by
summation order). On Intel processors MKL is the faster one, so there ``F.linear`` stays. Its kernel (``mkldnn._linear_pointwise``) has no autograd formula, so
:class:`_OneDnnLinear` gives it one. :func:`linear` falls back to ``F.linear`` without oneDNN,
under ``torch.compile`` and for weights oneDNN would reorder (views into a fused ``c_attn``)."""

from __future__ import annotations

import contextlib
import functools
import platform
from typing import Any

import torch
import torch.nn.functional as F


@functools.cache
def _kernel() -> Any:
    """The oneDNN linear op, or None when this PyTorch cannot run it."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise
        cpu = {"device": "cpu", "dtype": torch.float32}  # whatever the default device is
        probe = op(
            torch.ones(2, 3, **cpu), torch.ones(4, 3, **cpu), torch.zeros(4, **cpu), "none", [], ""
        )
    except Exception:  # a missing op, a build without the kernel: any failure means "use F.linear"
        return None
    return op if torch.equal(probe, torch.full((2, 4), 3.0)) else None


@functools.cache
def _intel_cpu(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Where MKL runs its own AVX-512 kernels: on a Xeon, batch-1 decoding took 44 tok/s through
    MKL against 31 through oneDNN, and oneDNN would lose there. Linux says in ``cpuinfo``;
    elsewhere an x86 Mac is an Intel one, and Windows names the vendor in its processor."""
    with contextlib.suppress(OSError), open(cpuinfo, "rb") as lines:
        return b"GenuineIntel" in lines.read(4096)
    if platform.system() == "Darwin":
        return platform.machine() == "x86_64"
    return "intel" in platform.processor().lower()


def use_onednn() -> bool:
    """Whether float32 CPU products go through oneDNN: it can run, and MKL is not the faster."""
    return _kernel() is not None and not _intel_cpu()


def _matmul_t(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` for 2-D float32 CPU tensors (any strides)."""
    return _kernel()(x, weight, bias, "none", [], "")


class _OneDnnLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Any) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return _matmul_t(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable  # the kernel has no formula of its own
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, Any, Any]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        return (
            _matmul_t(grad, weight.t(), None) if need_x else None,  # grad @ W
            _matmul_t(grad.t(), x.t(), None) if need_w else None,  # grad.T @ x
            grad.sum(0) if need_b else None,  # False without a bias
        )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear``, through oneDNN for float32 on a non-Intel CPU outside autocast."""
    if (
        x.device.type != "cpu"
        or x.dtype != torch.float32
        or weight.dtype != torch.float32
        or torch.is_autocast_enabled("cpu")
        or torch.compiler.is_compiling()  # Inductor fuses F.linear itself and rejects this op
        or x.numel() == 0
        or not (weight.is_contiguous() or weight.t().is_contiguous())
        or not use_onednn()
    ):
        return F.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1]).contiguous()  # odd strides would cost a reorder
    if torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    ):
        out = _OneDnnLinear.apply(flat, weight, bias)
    else:
        out = _matmul_t(flat, weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])
