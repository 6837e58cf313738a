"""How one stored tensor becomes one or more of our parameters, and back.

Every checkpoint layout is described (in ``layouts``) as a table of rules that
each name a transform from this module. A transform knows three things, so the
same table drives loading, exporting and shape checking:

* ``forward``: the stored tensor -> our tensors (views where possible, so a
  tensor that needs no change is never copied),
* ``inverse``: our tensors -> the stored tensor, for writing other formats,
* ``stored_shape``: the shape the stored tensor must have, computed from our
  parameter shapes, so a wrong file is reported before any data is read.

Transposes and splits are exact, which is why round trips are bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Transform:
    name: str
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    inverse: Callable[[Sequence[torch.Tensor]], torch.Tensor]
    stored_shape: Callable[[Sequence[Shape]], Shape]

    def __repr__(self) -> str:
        return f"Transform({self.name})"


def _same_shape(shapes: Sequence[Shape]) -> Shape:
    return tuple(shapes[0])


def _transposed_shape(shapes: Sequence[Shape]) -> Shape:
    return tuple(reversed(shapes[0]))


def _stacked_shape(shapes: Sequence[Shape]) -> Shape:
    first = shapes[0]
    return (sum(s[0] for s in shapes), *first[1:])


def _fused_conv1d_shape(shapes: Sequence[Shape]) -> Shape:
    out_features, in_features = shapes[0]
    return (in_features, out_features * len(shapes))


SAME = Transform(
    name="same",
    forward=lambda x: (x,),
    inverse=lambda parts: parts[0],
    stored_shape=_same_shape,
)

# GPT-2's Conv1D keeps weights as [in, out]; nn.Linear wants [out, in].
CONV1D = Transform(
    name="conv1d-transpose",
    forward=lambda x: (x.t(),),
    inverse=lambda parts: parts[0].t(),
    stored_shape=_transposed_shape,
)

# Query, key and value stacked along the first axis: nanoGPT's fused nn.Linear weight
# [3*out, in] and every fused bias [3*out]. Chunks along dim 0 stay contiguous views.
QKV = Transform(
    name="split-qkv",
    forward=lambda x: tuple(x.chunk(3, dim=0)),
    inverse=lambda parts: torch.cat(list(parts), dim=0),
    stored_shape=_stacked_shape,
)

# GPT-2's fused Conv1D c_attn weight [in, 3*out]: split the columns, transpose each.
CONV1D_QKV = Transform(
    name="split-qkv-conv1d",
    forward=lambda x: tuple(part.t() for part in x.chunk(3, dim=1)),
    inverse=lambda parts: torch.cat([p.t() for p in parts], dim=1),
    stored_shape=_fused_conv1d_shape,
)


def with_leading_one(inner: Transform) -> Transform:
    """The OpenAI TF checkpoint stores every Conv1D weight with an extra leading axis of 1."""
    return Transform(
        name=f"tf-{inner.name}",
        forward=lambda x: inner.forward(x[0]),
        inverse=lambda parts: inner.inverse(parts).unsqueeze(0),
        stored_shape=lambda shapes: (1, *inner.stored_shape(shapes)),
    )


TF_CONV1D = with_leading_one(CONV1D)
TF_CONV1D_QKV = with_leading_one(CONV1D_QKV)
