"""What a checkpoint is, without loading it: format, size, dtype, files."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import GPTConfig
from .checkpoint import FORMAT_DESCRIPTIONS, open_checkpoint
from .hints import SIDE_FILES
from .meta import parameter_shapes


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    format: str
    description: str
    config: GPTConfig
    config_source: str  # where the hyper-parameters came from ("config.json", "tensor shapes", ...)
    num_parameters: int
    dtypes: dict[str, int]  # stored dtype -> number of tensors the model uses
    num_tensors: int  # tensors the model uses (a fused QKV counts once)
    ignored: tuple[str, ...]  # known buffers skipped (causal masks)
    has_output_head: bool  # a stored head (checked equal to the embedding on load)
    files: tuple[tuple[Path, int], ...]  # (file, bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "description": self.description,
            "config": self.config.to_dict(),
            "config_source": self.config_source,
            "num_parameters": self.num_parameters,
            "dtypes": dict(self.dtypes),
            "num_tensors": self.num_tensors,
            "ignored": list(self.ignored),
            "has_output_head": self.has_output_head,
            "files": [{"path": str(p), "bytes": n} for p, n in self.files],
        }

    def describe(self) -> str:
        """A human-readable summary, as ``gpt2load info`` prints it."""
        c = self.config
        dtypes = ", ".join(f"{name} ({n} tensors)" for name, n in sorted(self.dtypes.items()))
        lines = [
            f"path        {self.path}",
            f"format      {self.format}: {self.description}",
            f"config      n_layer={c.n_layer} n_head={c.n_head} n_embd={c.n_embd} "
            f"context_length={c.context_length} vocab_size={c.vocab_size} qkv_bias={c.qkv_bias} "
            f"(from {self.config_source})",
            f"parameters  {self.num_parameters:,}",
            f"dtype       {dtypes}",
        ]
        if self.ignored:
            lines.append(f"ignored     {len(self.ignored)} buffers, e.g. {self.ignored[0]}")
        if self.has_output_head:
            lines.append("head        stored separately; must equal the token embedding (tied)")
        width = max(len(str(p)) for p, _ in self.files)
        lines.append("files")
        lines.extend(f"  {str(p):<{width}}  {n:>15,} bytes" for p, n in self.files)
        return "\n".join(lines)


def inspect_checkpoint(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Describe a checkpoint from its headers; raises ``CheckpointError`` if it cannot load."""
    checkpoint = open_checkpoint(path)
    plan, source = checkpoint.plan, checkpoint.source
    entries = source.entries()
    used = [entries[a.stored] for a in plan.assignments]
    shapes = parameter_shapes(plan.config)
    num_parameters = sum(
        _numel(shape) for name, shape in shapes.items() if name != "out_head.weight"
    )
    files = list(source.files)
    for side in SIDE_FILES.get(checkpoint.located.container, ()):
        candidate = checkpoint.located.folder / side
        if checkpoint.hints.origin == side and candidate.is_file():
            files.append(candidate)
    return CheckpointInfo(
        path=Path(path),
        format=checkpoint.format,
        description=FORMAT_DESCRIPTIONS.get(checkpoint.format, plan.layout.description),
        config=plan.config,
        config_source=checkpoint.hints.origin or "tensor shapes",
        num_parameters=num_parameters,
        dtypes=dict(Counter(e.dtype_name for e in used)),
        num_tensors=len(used),
        ignored=tuple(plan.ignored),
        has_output_head=plan.head is not None,
        files=tuple((f, f.stat().st_size) for f in files),
    )


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format name of a checkpoint (``openai-tf``, ``hf-safetensors``, ``native`` ...)."""
    return open_checkpoint(path).format


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
