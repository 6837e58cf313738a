"""What a checkpoint is, without loading it: format, size, dtype, files."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..config import GPTConfig
from ..native import NATIVE_FILENAME
from ..tokenizer import HF_NAMES, TOKENIZER_JSON
from .checkpoint import OpenCheckpoint, open_checkpoint
from .detect import SAFETENSORS, TF, TORCH
from .plan import empty_model, parameter_shapes

# Any other format is described by its layout (the container is in its name).
NATIVE_DESCRIPTION = "gpt2load native checkpoint (safetensors with config metadata)"
# Files that travel with the weights, looked up beside them: name -> (role, the containers
# it comes with; None: any).
COMPANIONS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "checkpoint": ("TensorFlow checkpoint state", (TF,)),
    "hparams.json": ("hyper-parameters", None),
    "config.json": ("config", (SAFETENSORS, TORCH)),
    "generation_config.json": ("generation config", (SAFETENSORS, TORCH)),
    **dict.fromkeys((*HF_NAMES, *HF_NAMES.values(), TOKENIZER_JSON), ("tokenizer", None)),
    **dict.fromkeys(("tokenizer_config.json", "special_tokens_map.json"), ("tokenizer", None)),
}


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    format: str
    description: str
    config: GPTConfig
    config_source: str  # where the hyper-parameters came from ("config.json", "tensor shapes", ...)
    num_parameters: int
    dtypes: dict[str, int]  # stored dtype -> number of tensors the model uses
    num_tensors: int  # tensors the model uses (a fused QKV counts once)
    model_tensors: int  # entries of the loaded model's state dict, as ``verify`` counts them
    fused_qkv: int  # stored tensors the model splits in three (query, key, value)
    ignored: tuple[str, ...]  # known buffers skipped (causal masks)
    has_output_head: bool  # a stored head (checked equal to the embedding on load)
    files: tuple[tuple[Path, int], ...]  # (file, bytes): weights first, then companions
    roles: tuple[str, ...]  # what each file of ``files`` is ("weights", "tokenizer", ...)

    def _listed(self) -> list[tuple[Path, int, str]]:
        return [(p, n, role) for (p, n), role in zip(self.files, self.roles, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del out["roles"]  # each file says its role
        return out | {
            "path": str(self.path),
            "config": self.config.to_dict(),
            "dtypes": dict(self.dtypes),
            "ignored": list(self.ignored),
            "files": [{"path": str(p), "bytes": n, "role": r} for p, n, r in self._listed()],
        }

    def tensor_counts(self) -> str:
        """The file's count and the model's, which differ for two reasons, said where they do."""
        fused = f"{self.fused_qkv} fused query/key/value tensors are split in three"
        why = [fused] if self.fused_qkv else []
        why += ["the output head shares the token embedding"] if self.config.tie_head else []
        text = f"{self.num_tensors} used from the files, {self.model_tensors} in the model"
        return text + (f" ({'; '.join(why)})" if self.model_tensors != self.num_tensors else "")

    def describe(self) -> str:
        c = self.config
        dtypes = ", ".join(f"{name} ({n} tensors)" for name, n in sorted(self.dtypes.items()))
        variant = " ".join(f"{k}={v}" for k, v in c.variant().items())
        lines = [
            f"path        {self.path}",
            f"format      {self.format}: {self.description}",
            f"config      n_layer={c.n_layer} n_head={c.n_head} n_embd={c.n_embd} "
            f"context_length={c.context_length} vocab_size={c.vocab_size} qkv_bias={c.qkv_bias} "
            f"(from {self.config_source})",
            *([f"variant     {variant}"] if variant else []),
            f"parameters  {self.num_parameters:,}",
            f"dtype       {dtypes}",
            f"tensors     {self.tensor_counts()}",
        ]
        if self.ignored:
            lines.append(f"ignored     {len(self.ignored)} buffers, e.g. {self.ignored[0]}")
        if self.has_output_head:
            lines.append("head        stored separately; must equal the token embedding (tied)")
        width = max(len(str(p)) for p, _ in self.files)
        lines.append(f"files       {len(self.files)}, {sum(n for _, n in self.files):,} bytes")
        lines += [
            f"  {str(p):<{width}}  {n:>15,} bytes  {r}".rstrip() for p, n, r in self._listed()
        ]
        return "\n".join(lines)


def inspect_checkpoint(
    path: str | os.PathLike[str], *, n_head: int | None = None
) -> CheckpointInfo:
    """Describe a checkpoint from its headers; raises ``CheckpointError`` if it cannot load."""
    checkpoint = open_checkpoint(path, n_head=n_head)
    plan, entries = checkpoint.plan, checkpoint.source.entries()
    used = [entries[a.stored] for a in plan.assignments]
    files = checkpoint_files(checkpoint)
    return CheckpointInfo(
        path=Path(path),
        format=checkpoint.format,
        description=NATIVE_DESCRIPTION if checkpoint.hints.native else plan.layout.description,
        config=plan.config,
        config_source=checkpoint.hints.origin or "tensor shapes",
        num_parameters=empty_model(plan.config).num_parameters(),  # a tied head counts once
        dtypes=dict(Counter(e.dtype_name for e in used)),
        num_tensors=len(used),
        model_tensors=len(parameter_shapes(plan.config)),
        fused_qkv=sum(len(a.ours) > 1 for a in plan.assignments),
        ignored=tuple(plan.ignored),
        has_output_head=plan.head is not None,
        files=tuple((f, f.stat().st_size) for f, _ in files),
        roles=tuple(role for _, role in files),
    )


def checkpoint_files(checkpoint: OpenCheckpoint) -> list[tuple[Path, str]]:
    """Every file of a checkpoint with its role: the weights, then the companions beside them."""
    located, weights = checkpoint.located, checkpoint.source.files
    if located.container == TF:  # the reader lists the index, then the data shards
        files = [(weights[0], "TensorFlow index"), *((f, "weights") for f in weights[1:])]
        meta = located.files[0].with_name(located.files[0].name + ".meta")
        files += [(meta, "TensorFlow graph")] if meta.is_file() else []
    else:
        files = [(f, "weights") for f in weights]
        if len(located.files) > 1:
            files += [(f, "shard index") for f in sorted(located.folder.glob("*.index.json"))]
    names = [
        n for n, (_, kinds) in COMPANIONS.items() if kinds is None or located.container in kinds
    ]
    if checkpoint.format == "native" and weights[0].name == NATIVE_FILENAME:
        # A folder that save_native filled is written whole by gpt2load or a program built on
        # it (finetune), so every other file in it belongs to the checkpoint too.
        names += sorted(p.name for p in located.folder.iterdir() if not p.name.startswith("."))
    seen = {f.resolve() for f, _ in files}
    for name in names:
        candidate = located.folder / name
        if candidate.is_file() and candidate.resolve() not in seen:
            files.append((candidate, COMPANIONS.get(name, ("other", None))[0]))
            seen.add(candidate.resolve())
    return files


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format name of a checkpoint (``openai-tf``, ``hf-safetensors``, ``native`` ...)."""
    return open_checkpoint(path).format
