"""Reading PyTorch pickles (``.pth``, ``.bin``, nanoGPT's ``ckpt.pt``) without running code:
only ``torch.load(weights_only=True)``, whose unpickler builds tensors and plain containers
and refuses anything that imports or calls; zip files are memory-mapped (``mmap=True``)."""

from __future__ import annotations

import pickle
import pickletools
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from .layouts import LAYOUTS, TIED
from .sources import StoredTensor, TensorSource, read_head

ZIP_MAGIC = b"PK\x03\x04"
# Opcodes that import or call something: the only ones whose refusal means "code", not "damage".
_CODE_OPS = (
    "GLOBAL STACK_GLOBAL REDUCE INST OBJ NEWOBJ NEWOBJ_EX BUILD EXT1 EXT2 EXT4 PERSID BINPERSID"
)
_CODE_OPCODES = {ord(op.code) for op in pickletools.opcodes if op.name in _CODE_OPS.split()}


def looks_like_torch(head: bytes) -> bool:
    """A zip archive (torch.save since 1.6) or a pickle stream (the legacy format)."""
    return head.startswith(ZIP_MAGIC) or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _is_code(detail: str) -> bool:
    """Whether a weights-only refusal is of code (a global, a call) or of damage: torch words
    both "Weights only load failed", but a truncated file is no attack."""
    if re.search(r"GLOBAL|[Gg]lobal|Unsupported class", detail):
        return True
    match = re.search(r"Unsupported operand (\d+)", detail)
    return bool(match) and int(match.group(1)) in _CODE_OPCODES


def _refusal(path: Path, exc: pickle.UnpicklingError) -> str:
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()] or [type(exc).__name__]
    if _is_code(text):
        reason = next((ln for ln in lines if "Unsupported" in ln or "GLOBAL" in ln), lines[-1])
        return (
            f"refusing to load {path}: its pickle would import or call code that is not plain "
            f"tensor data ({reason}). gpt2load only unpickles with "
            f"torch.load(weights_only=True); if you trust the file, re-save its state dict as "
            f"safetensors and load that"
        )
    marker = "WeightsUnpickler error:"  # what follows it (on its line, or the next) says why
    after = text.split(marker, 1)[1].splitlines() if marker in text else lines[-1:]
    reason = next((ln.strip() for ln in after if ln.strip()), "")
    return (
        f"{path} is truncated or corrupt: its pickle stream is damaged ({reason}), "
        f"so it is not a readable PyTorch checkpoint"
    )


def load_pickle(path: Path) -> Any:
    """``torch.load`` with every safety and memory setting, errors turned into plain messages."""
    if is_zip := read_head(path, 4)[0] == ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(
                f"{path} is truncated or corrupt: cannot read it as a PyTorch zip checkpoint ({exc})"
            ) from None
        if not any(n.endswith("data.pkl") for n in names):
            raise CheckpointError(
                f"{path} is a zip archive but not a PyTorch checkpoint (it has no data.pkl)"
            )
    try:
        if path.name.endswith(".safetensors"):
            # torch.load would hand a path with this suffix to safetensors; a file object
            # keeps it on the pickle path (without mmap, which needs a path).
            with open(path, "rb") as handle:
                return torch.load(handle, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_refusal(path, exc)) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is truncated or corrupt: cannot read it with torch.load ({first})"
        ) from None


def _tensors(obj: Any) -> bool:
    all_tensors = isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values())
    return all_tensors and bool(obj)


def _is_plain(value: Any) -> bool:
    """Small JSON-like values (model_args, iter_num) are kept; optimizer states are not."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return isinstance(value, (str, int, float, bool)) or value is None


def _named(state: dict[Any, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """A state dict whose every key is a name: a pickle may key tensors by anything."""
    if odd := [k for k in state if not isinstance(k, str)]:
        raise CheckpointError(
            f"{path} is corrupt: its state dict has the key {odd[0]!r} ({type(odd[0]).__name__}), "
            f"not a tensor name; every key of a state dict must be a string"
        )
    return state


def _state_dict_of(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a plain state dict, or of nanoGPT's ``{"model": ..., "model_args": ...}``."""
    if _tensors(obj):
        return _named(obj, path), {}
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if _tensors(obj.get(key)):
                extras = {k: v for k, v in obj.items() if k != key and _is_plain(v)}
                return _named(obj[key], path), extras
    keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, dict) else ""
    raise CheckpointError(
        f"{path} holds a {type(obj).__name__}{f' with keys {keys}' if keys else ''}, not a "
        f"state dict of tensors (nor a checkpoint dict with a 'model' state dict)"
    )


# Tensors that are not plain strided memory on the CPU, and what to save instead.
_NOT_DENSE: tuple[tuple[Callable[[torch.Tensor], bool], str], ...] = (
    (lambda t: t.is_nested, "a nested tensor, not one array"),
    (lambda t: t.layout != torch.strided, "a sparse tensor; save it with .to_dense()"),
    (lambda t: t.is_quantized, "a quantized tensor; save it with .dequantize()"),
    (lambda t: t.is_meta, "a meta tensor, which holds no data"),
)


def check_dense(path: Path, name: str, tensor: torch.Tensor) -> None:
    """Only plain (strided) tensors with data have the storage, offsets and strides checked
    below; torch refuses even to show a sparse tensor's storage."""
    if kind := next((what for test, what in _NOT_DENSE if test(tensor)), None):
        raise CheckpointError(f"{path}: tensor {name!r} is {kind}")


def _overlaps_itself(tensor: torch.Tensor) -> bool:
    """Whether two of a tensor's elements are one place in memory: with its dimensions ordered
    by stride, each must step past everything the smaller ones span (as views of a tensor do)."""
    dims = sorted((st, n) for n, st in zip(tensor.shape, tensor.stride(), strict=True) if n > 1)
    span = 1
    for st, n in dims:
        if st < span:
            return True
        span = st * n
    return False


def check_extent(path: Path, name: str, tensor: torch.Tensor, file_size: int) -> None:
    """No tensor may claim more elements than its storage holds, nor a storage more bytes than
    the file: stride-0 views let a 2 MB file claim a 2^33-row embedding everything later pays for;
    nor may its elements overlap (``as_strided``), so one update would land on several."""
    itemsize, numel = tensor.element_size(), tensor.numel()
    storage = tensor.untyped_storage().nbytes()
    if numel == 0:
        return
    last = tensor.storage_offset() + sum(
        (n - 1) * st for n, st in zip(tensor.shape, tensor.stride(), strict=True)
    )
    if max(numel, last + 1) * itemsize > storage or any(st < 0 for st in tensor.stride()):
        raise CheckpointError(
            f"{path} is corrupt: tensor {name!r} of shape {list(tensor.shape)} claims "
            f"{numel * itemsize} bytes but its storage holds {storage} (stride-0 or "
            f"overlapping elements)"
        )
    if storage > file_size:
        raise CheckpointError(
            f"{path} is corrupt: tensor {name!r} has a storage of {storage} bytes, more "
            f"than the file's {file_size}"
        )
    if _overlaps_itself(tensor):
        raise CheckpointError(
            f"{path} is corrupt: tensor {name!r} of shape {list(tensor.shape)} has strides "
            f"{list(tensor.stride())}, under which its elements overlap one another"
        )


def _parameter(name: str) -> str | None:
    """Our parameter a stored name is, in the first layout that knows it (None: a buffer or
    a name no GPT-2 has, which the plan reports or skips)."""
    for layout in LAYOUTS:
        bare = layout.strip_prefixes(name)
        if not layout.is_buffer(bare) and (hit := layout.match(bare)) is not None:
            return hit[0].ours[0]
    return None


def _view(t: torch.Tensor) -> tuple:
    """What makes two tensors one: the same elements at the same place."""
    return t.data_ptr(), t.shape, t.stride(), t.dtype


def refuse_shared_memory(path: Path, state: dict[str, torch.Tensor]) -> None:
    """No two parameters may share memory (training would update it twice), as in safetensors;
    only a tied head may be its embedding, as nanoGPT and transformers save them. Byte ranges
    of the mapped storages, sorted: no data is read (a millisecond for GPT-2's 149 tensors)."""
    spans = []
    for name, t in state.items():
        if t.numel() and _parameter(name) is not None:
            last = sum((n - 1) * st for n, st in zip(t.shape, t.stride(), strict=True))
            spans.append((t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size(), name))
    spans.sort()
    furthest, holder = 0, ""  # the end of memory claimed so far, and by which tensor
    for start, end, name in spans:
        if start < furthest:
            tied = {_parameter(holder), _parameter(name)} == {*TIED, *TIED.values()}
            if not (tied and _view(state[holder]) == _view(state[name])):
                raise CheckpointError(
                    f"{path}: tensors {holder!r} and {name!r} share memory, so training one "
                    f"would change the other; save each as a tensor of its own (.clone() it)"
                )
        if end > furthest:
            furthest, holder = end, name


class TorchSource(TensorSource):
    def __init__(self, files: tuple[Path, ...]) -> None:
        super().__init__(files)
        for path in files:
            state, extras = _state_dict_of(load_pickle(path), path)
            self.metadata = extras | self.metadata  # the first file's word wins
            file_size = path.stat().st_size
            for name, t in state.items():
                check_dense(path, name, t)
                check_extent(path, name, t, file_size)
            refuse_shared_memory(path, state)
            for name, t in state.items():
                dtype_name = str(t.dtype).removeprefix("torch.")
                self.add(StoredTensor(name, tuple(t.shape), t.dtype, dtype_name, path), t)
