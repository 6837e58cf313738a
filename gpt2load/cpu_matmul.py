"""``x @ W.T + b`` in float32 on the CPU through oneDNN instead of MKL, with its gradients.

PyTorch's CPU matmuls go to MKL, which picks its fast AVX-512 kernels only on
Intel processors; on others (AMD EPYC, where this was measured) it runs the
AVX2 ones. oneDNN, which PyTorch ships too, picks by instruction set and runs
the same float32 products about 2x faster there: GPT-2's training step takes
0.6x the time, and decoding a token (one row against every weight matrix) is
as fast as MKL's best case without any trick. The arithmetic stays float32 (no
bf16 or tf32 shortcut); results differ from MKL's only by summation order.

The kernel is ``torch.ops.mkldnn._linear_pointwise``, the one torch.compile's
CPU backend uses; it has no autograd formula, so :class:`_OneDnnLinear` gives it
one, made of the same kernel. Where it is missing (a PyTorch built without
oneDNN), :func:`linear` is ``F.linear``; so it is while ``torch.compile`` traces
(Inductor cannot lower this op inside a graph with gradients and chooses its own
matmuls), and for weights that are neither contiguous nor a transposed
contiguous matrix (the query/key/value slices of a fused ``c_attn`` kept as
views of the file), which oneDNN would first reorder, at many times the cost of
the product.
"""

from __future__ import annotations

import functools
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


def _matmul_t(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` for 2-D float32 CPU tensors (any strides)."""
    return _kernel()(x, weight, bias, "none", [], "")


class _OneDnnLinear(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _matmul_t(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable  # the kernel has no formula of its own
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _matmul_t(grad, weight.t(), None)  # grad @ W
        if ctx.needs_input_grad[1]:
            grad_w = _matmul_t(grad.t(), x.t(), None)  # grad.T @ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear``, through oneDNN for float32 on the CPU outside autocast."""
    if (
        x.device.type != "cpu"
        or x.dtype != torch.float32
        or weight.dtype != torch.float32
        or torch.is_autocast_enabled("cpu")
        or torch.compiler.is_compiling()  # Inductor fuses F.linear itself and rejects this op
        or x.numel() == 0
        or not (weight.is_contiguous() or weight.t().is_contiguous())
        or _kernel() is None
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
