"""An empty ``GPT`` on the meta device: shapes only, no memory, no initialisation.

Building modules on the meta device still runs their ``reset_parameters``, and
torch implements ``normal_`` on meta tensors in Python through a path that
imports ``torch._dynamo`` (about 2.5 s, once per process). Every loaded
parameter is replaced anyway, so the init calls are skipped here with a torch
function mode, which is thread-local: a model built on another thread at the
same time is initialised normally.
"""

from __future__ import annotations

import functools

import torch
from torch.nn import init
from torch.overrides import TorchFunctionMode

from ..config import GPTConfig
from ..model import GPT

_INIT_FUNCTIONS = frozenset(
    {
        torch.Tensor.normal_,
        torch.Tensor.uniform_,
        init.normal_,
        init.uniform_,
        init.trunc_normal_,
        init.kaiming_uniform_,
        init.kaiming_normal_,
        init.xavier_uniform_,
        init.xavier_normal_,
    }
)


class _SkipMetaInit(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _INIT_FUNCTIONS:
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor) and tensor.device.type == "meta":
                return tensor
        return func(*args, **kwargs)


def empty_model(config: GPTConfig) -> GPT:
    with torch.device("meta"), _SkipMetaInit():
        return GPT(config)


@functools.lru_cache(maxsize=16)
def parameter_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict entry's shape (the tied head included) for ``config``."""
    return {k: tuple(v.shape) for k, v in empty_model(config).state_dict().items()}
