"""Reading PyTorch pickles (``.pth``, ``.bin``, nanoGPT's ``ckpt.pt``) without running code.

Only ``torch.load(weights_only=True)`` is ever used: its unpickler builds
tensors and plain containers and nothing else, so a pickle that would import
and call a function is refused. Zip-format files are memory-mapped
(``mmap=True``), so tensors are views of the file until something needs a copy.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .sources import StoredTensor, read_head, refuse_unusable_dtype

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = 0x80
# Opcodes that import or call something: the only ones whose refusal means "code", not "damage".
_CODE_OPCODES = {
    ord(op.code)
    for op in pickletools.opcodes
    if op.name
    in {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"}
    | {"EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"}
}
_UNSUPPORTED_OPERAND = re.compile(r"Unsupported operand (\d+)")


def looks_like_torch(head: bytes) -> bool:
    """A zip archive (torch.save since 1.6) or a pickle stream (the legacy format)."""
    return head.startswith(ZIP_MAGIC) or (
        len(head) >= 2 and head[0] == PICKLE_PROTO and 2 <= head[1] <= 5
    )


def _unsafe_pickle_message(path: Path, exc: Exception) -> str:
    detail = str(exc)
    lines = [ln.strip() for ln in detail.splitlines() if ln.strip()]
    reason = next(
        (ln for ln in lines if "Unsupported" in ln or "GLOBAL" in ln), lines[-1] if lines else ""
    )
    return (
        f"refusing to load {path}: its pickle would import or call code that is not plain "
        f"tensor data ({reason}). gpt2load only unpickles with torch.load(weights_only=True); "
        f"if you trust the file, re-save its state dict as safetensors and load that"
    )


def _is_code(detail: str) -> bool:
    """Whether torch's weights-only refusal is of code (a global, a call) rather than of bytes
    that are no pickle at all: torch words both "Weights only load failed", but a
    truncated or overwritten file is damage to report, not an attack."""
    if re.search(r"GLOBAL|[Gg]lobal|Unsupported class", detail):
        return True
    match = _UNSUPPORTED_OPERAND.search(detail)
    if match:
        return int(match.group(1)) in _CODE_OPCODES
    return False


def _corrupt_pickle_message(path: Path, exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    marker = "WeightsUnpickler error:"
    reason = next(
        (
            ln.split(marker, 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            for i, ln in enumerate(lines)
            if marker in ln
        ),
        lines[-1] if lines else type(exc).__name__,
    )
    return (
        f"{path} is truncated or corrupt: its pickle stream is damaged ({reason}), "
        f"so it is not a readable PyTorch checkpoint"
    )


def load_pickle(path: Path) -> Any:
    """``torch.load`` with every safety and memory setting, errors turned into plain messages."""
    head, _, _ = read_head(path, 4)
    is_zip = head == ZIP_MAGIC
    if is_zip:
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
        if _is_code(str(exc)):
            raise CheckpointError(_unsafe_pickle_message(path, exc)) from None
        raise CheckpointError(_corrupt_pickle_message(path, exc)) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is truncated or corrupt: cannot read it with torch.load ({first})"
        ) from None


def _state_dict_of(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a plain state dict, or of nanoGPT's ``{"model": ..., "model_args": ...}``."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), {}
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            inner = obj.get(key)
            if (
                isinstance(inner, dict)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                extras = {k: v for k, v in obj.items() if k != key and _is_plain(v)}
                return dict(inner), extras
    kind = type(obj).__name__
    keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, dict) else ""
    raise CheckpointError(
        f"{path} holds a {kind}{f' with keys {keys}' if keys else ''}, not a state dict of tensors "
        f"(nor a checkpoint dict with a 'model' state dict)"
    )


def _is_plain(value: Any) -> bool:
    """Small JSON-like values (model_args, iter_num) are kept; optimizer states are not."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return True
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def check_extent(path: Path, name: str, tensor: torch.Tensor, file_size: int) -> None:
    """A tensor may claim no more elements than its storage holds, and a storage no more
    bytes than the file: stride-0 or overlapping views let a 2 MB file claim a 2^33-row
    embedding, which every later step (shape checks, comparisons, copies) would pay for."""
    itemsize = tensor.element_size()
    storage = tensor.untyped_storage().nbytes()
    numel = tensor.numel()
    if numel == 0:
        return
    last = tensor.storage_offset() + sum(
        (n - 1) * st for n, st in zip(tensor.shape, tensor.stride(), strict=True)
    )
    if (
        numel * itemsize > storage
        or (last + 1) * itemsize > storage
        or any(st < 0 for st in tensor.stride())
    ):
        raise CheckpointError(
            f"{path} is corrupt: tensor {name!r} of shape {list(tensor.shape)} claims "
            f"{numel * itemsize} bytes but its storage holds {storage} (stride-0 or "
            f"overlapping elements)"
        )
    if storage > file_size and tensor.untyped_storage().device.type != "meta":
        raise CheckpointError(
            f"{path} is corrupt: tensor {name!r} has a storage of {storage} bytes, more "
            f"than the file's {file_size}"
        )


class TorchSource:
    container = "torch"

    def __init__(self, files: tuple[Path, ...]) -> None:
        self.files = files
        self.metadata: dict[str, Any] = {}
        self._entries: dict[str, StoredTensor] = {}
        self._tensors: dict[str, torch.Tensor] = {}
        self._duplicates: list[tuple[str, Path, Path]] = []
        for path in files:
            state, extras = _state_dict_of(load_pickle(path), path)
            file_size = path.stat().st_size
            for name, tensor in state.items():
                check_extent(path, name, tensor, file_size)
            for key, value in extras.items():
                self.metadata.setdefault(key, value)
            for name, tensor in state.items():
                if name in self._entries:
                    self._duplicates.append((name, self._entries[name].file, path))
                    continue
                self._entries[name] = StoredTensor(
                    name=name,
                    shape=tuple(tensor.shape),
                    dtype=tensor.dtype,
                    dtype_name=str(tensor.dtype).removeprefix("torch."),
                    file=path,
                )
                self._tensors[name] = tensor

    def entries(self) -> dict[str, StoredTensor]:
        return self._entries

    def duplicates(self) -> list[tuple[str, Path, Path]]:
        return self._duplicates

    def tensor(self, name: str) -> torch.Tensor:
        refuse_unusable_dtype(self._entries[name])
        return self._tensors[name]

    def release(self, name: str) -> None:
        """torch owns this mapping; its pages go when the last view does."""
