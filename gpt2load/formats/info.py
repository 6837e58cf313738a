"""What a checkpoint is, without loading it: format, size, dtype, files."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import GPTConfig
from .checkpoint import FORMAT_DESCRIPTIONS, open_checkpoint
from .detect import SAFETENSORS, TF, TORCH, Located
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
    files: tuple[tuple[Path, int], ...]  # (file, bytes): weights first, then companions
    roles: tuple[str, ...] = ()  # what each file of ``files`` is ("weights", "tokenizer", ...)

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
            "files": [
                {"path": str(p), "bytes": n, "role": role}
                for (p, n), role in zip(self.files, self._roles(), strict=True)
            ],
        }

    def _roles(self) -> tuple[str, ...]:
        return self.roles if len(self.roles) == len(self.files) else ("",) * len(self.files)

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
            *([f"variant     {_variant_text(c)}"] if c.variant() else []),
            f"parameters  {self.num_parameters:,}",
            f"dtype       {dtypes}",
        ]
        if self.ignored:
            lines.append(f"ignored     {len(self.ignored)} buffers, e.g. {self.ignored[0]}")
        if self.has_output_head:
            lines.append("head        stored separately; must equal the token embedding (tied)")
        width = max(len(str(p)) for p, _ in self.files)
        total = sum(n for _, n in self.files)
        lines.append(f"files       {len(self.files)}, {total:,} bytes")
        lines.extend(
            f"  {str(p):<{width}}  {n:>15,} bytes  {role}".rstrip()
            for (p, n), role in zip(self.files, self._roles(), strict=True)
        )
        return "\n".join(lines)


def _variant_text(config: GPTConfig) -> str:
    """How the model differs from GPT-2, in the config's own words (``bias=False ...``)."""
    return " ".join(f"{k}={v}" for k, v in config.variant().items())


def inspect_checkpoint(
    path: str | os.PathLike[str], *, n_head: int | None = None
) -> CheckpointInfo:
    """Describe a checkpoint from its headers; raises ``CheckpointError`` if it cannot load."""
    checkpoint = open_checkpoint(path, n_head=n_head)
    plan, source = checkpoint.plan, checkpoint.source
    entries = source.entries()
    used = [entries[a.stored] for a in plan.assignments]
    shapes = parameter_shapes(plan.config)
    num_parameters = sum(
        _numel(shape)
        for name, shape in shapes.items()
        if name != "out_head.weight" or not plan.config.tie_head
    )
    files = checkpoint_files(checkpoint.located, source.files)
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
        files=tuple((f, f.stat().st_size) for f, _ in files),
        roles=tuple(role for _, role in files),
    )


# Files that travel with the weights, looked up beside them: (name, role, containers or None).
COMPANIONS: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("checkpoint", "TensorFlow checkpoint state", (TF,)),
    ("hparams.json", "hyper-parameters", None),
    ("config.json", "config", (SAFETENSORS, TORCH)),
    ("generation_config.json", "generation config", (SAFETENSORS, TORCH)),
    ("encoder.json", "tokenizer", None),
    ("vocab.bpe", "tokenizer", None),
    ("vocab.json", "tokenizer", None),
    ("merges.txt", "tokenizer", None),
    ("tokenizer.json", "tokenizer", None),
    ("tokenizer_config.json", "tokenizer", None),
    ("special_tokens_map.json", "tokenizer", None),
    ("info.json", "finetune summary", (SAFETENSORS,)),
    ("trainer.pt", "finetune resume state", (SAFETENSORS,)),
)


def checkpoint_files(located: Located, weights: tuple[Path, ...]) -> list[tuple[Path, str]]:
    """Every file of a checkpoint with its role: the weights, then what comes with them.

    For an OpenAI TensorFlow checkpoint that is the index, the data shards, the
    ``checkpoint`` state file, the ``.meta`` graph and ``hparams.json``; for Hugging
    Face the weights (and a shard index), ``config.json``; for all, the tokenizer files.
    """
    files: list[tuple[Path, str]] = []
    if located.container == TF:  # the reader lists the index, then the data shards
        files += [(weights[0], "TensorFlow index")] + [(f, "weights") for f in weights[1:]]
        prefix = located.files[0]
        meta = prefix.with_name(prefix.name + ".meta")
        if meta.is_file():
            files.append((meta, "TensorFlow graph"))
    else:
        files += [(f, "weights") for f in weights]
        if len(located.files) > 1:
            files += [(f, "shard index") for f in sorted(located.folder.glob("*.index.json"))]
    seen = {f.resolve() for f, _ in files}
    for name, role, containers in COMPANIONS:
        candidate = located.folder / name
        if containers is not None and located.container not in containers:
            continue
        if candidate.is_file() and candidate.resolve() not in seen:
            files.append((candidate, role))
            seen.add(candidate.resolve())
    return files


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format name of a checkpoint (``openai-tf``, ``hf-safetensors``, ``native`` ...)."""
    return open_checkpoint(path).format


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
