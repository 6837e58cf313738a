"""Reading PyTorch pickles (``.pth``, ``.bin``, nanoGPT's ``ckpt.pt``) without running code.

Only ``torch.load(weights_only=True)`` is ever used: its unpickler builds
tensors and plain containers and nothing else, so a pickle that would import
and call a function is refused. Zip-format files are memory-mapped
(``mmap=True``), so tensors are views of the file until something needs a copy.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .sources import StoredTensor

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = 0x80


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


def load_pickle(path: Path) -> Any:
    """``torch.load`` with every safety and memory setting, errors turned into plain messages."""
    with open(path, "rb") as handle:
        is_zip = handle.read(4) == ZIP_MAGIC
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
        if "weights_only" in str(exc) or "Unsupported" in str(exc):
            raise CheckpointError(_unsafe_pickle_message(path, exc)) from None
        raise CheckpointError(f"{path} is truncated or corrupt: {exc}") from None
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
        return self._tensors[name]

    def release(self, name: str) -> None:
        """torch owns this mapping; its pages go when the last view does."""
