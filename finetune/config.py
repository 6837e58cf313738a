"""The one description of a training run: ``TrainConfig``'s fields are the flags, the TOML keys
and the run's record. Each field carries its help text and limits, so a setting is added in
one place and checked the same way from every source (precedence: field defaults < the
sub-command's defaults < the ``--config`` file < flags)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpt2load import DTYPE_ALIASES

from .errors import ConfigError

SCRATCH_SHAPE = {"n_layer": 6, "n_head": 6, "n_embd": 384}
SCRATCH_LR, PRETRAINED_LR = 1e-3, 6e-5
MAX_INT = 2**63 - 1  # torch, numpy and TOML hold 64-bit integers
DTYPES = ("auto", "bfloat16", "float16", "float32")
DTYPE_SPELLINGS = {k: v for k, v in DTYPE_ALIASES.items() if v in DTYPES}  # gpt2load's: bf16 ...
# fmt: off
GROUP_TITLES = {
    "run": "run", "data": "data", "model": "model", "training": "optimisation",
    "eval": "evaluation, samples and checkpoints", "device": "device",
    "distributed": "several processes (torchrun --nproc_per_node=N -m finetune ...)",
    "logging": "logging",
}
# fmt: on


def _setting(group: str, default: Any, help: str, **meta: Any) -> Any:
    meta = {"help": help, "group": group, "choices": (), **meta}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# One maker per help section, so each field below reads as (default, help, limits).
_run, _data, _model, _train, _eval, _device, _dist, _log = (
    functools.partial(_setting, group) for group in GROUP_TITLES
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; saved in the run folder as ``config.toml``."""

    # The settings are a table, laid out by hand: default, help, limits.
    # fmt: off
    out: str = _run("runs/pretrain", "run folder: checkpoints, metrics.jsonl, loss.png",
        metavar="RUN_DIR", path=True)
    init: str = _run("gpt2", "starting weights: gpt2, gpt2-medium, gpt2-large, gpt2-xl (downloaded "
        "on first use), a Hugging Face repo id ORG/NAME (into the HF cache), scratch (random init, "
        "see --n-layer/--n-head/--n-embd), a checkpoint file or folder, or a run folder (its "
        "best/, else its last/)", metavar="MODEL", path=True)
    overwrite: bool = _run(False, "start afresh in an --out folder that already holds a run")
    data: list[str] = _data([], "training text: files, folders of .txt/.md files, a prepared "
        "folder with train.bin and val.bin, or 'shakespeare' (default: none; pretrain needs it)",
        metavar="PATH", path=True)
    data_dir: str = _data("data", "where prepared datasets are written and cached", metavar="DIR",
        path=True)
    val_fraction: float = _data(0.1, "share of the characters held out for validation")
    tokenizer: str = _data("auto", "auto: the --init checkpoint's own (characters when a meta.pkl "
        "lies beside it, as for nanoGPT's shakespeare_char; else GPT-2's BPE); gpt2; char: one "
        "token per character, with --init scratch the characters of the training text",
        choices=("auto", "gpt2", "char"))
    tokenizer_dir: str | None = _data(None, "folder with GPT-2's encoder.json + vocab.bpe (default: "
        "beside --init, else $GPT2LOAD_TOKENIZER_DIR, else downloaded once into weights/tokenizer)",
        metavar="DIR", path=True)
    n_layer: int | None = _model(None, "layers for --init scratch (default: 6)", minimum=1)
    n_head: int | None = _model(None, "attention heads for --init scratch (default: 6)", minimum=1)
    n_embd: int | None = _model(None, "embedding width for --init scratch (default: 384)", minimum=1)
    dropout: float | None = _model(None, "dropout while training (default: the checkpoint's own, "
        "0 for scratch)")
    block_size: int = _train(1024, "tokens per training sequence (at most the model's context)",
        minimum=1)
    batch_size: int = _train(8, "sequences per micro-batch", minimum=1)
    grad_accum: int | None = _train(None, "micro-batches per optimizer step, over all processes "
        "(gradient accumulation; default: one per process, so 1 without torchrun)", minimum=1)
    max_iters: int = _train(2000, "optimizer steps to train for; on resume, the step to reach (the "
        "total, not extra steps)", minimum=1)
    lr: float | None = _train(None, f"peak learning rate (default: {SCRATCH_LR:g} for --init "
        f"scratch, {PRETRAINED_LR:g} when starting from trained weights)", minimum=0.0)
    min_lr: float | None = _train(None, "final learning rate of the cosine (default: lr/10)",
        minimum=0.0)
    lr_schedule: str = _train("cosine", "cosine: warm up then decay to --min-lr; constant: warm up "
        "then hold", choices=("cosine", "constant"))
    warmup_iters: int = _train(100, "steps of linear learning-rate warmup", minimum=0)
    weight_decay: float = _train(0.1, "AdamW weight decay (matrices only)", minimum=0.0)
    beta1: float = _train(0.9, "AdamW beta1", minimum=0.0)
    beta2: float = _train(0.95, "AdamW beta2", minimum=0.0)
    grad_clip: float = _train(1.0, "clip the gradient norm to this (0 turns clipping off)",
        minimum=0.0)
    seed: int = _train(1337, "seed for initialisation, batches, dropout and samples", minimum=0)
    eval_interval: int = _eval(250, "steps between evaluations (and best-checkpoint checks)",
        minimum=1)
    eval_batches: int = _eval(5, "batches per split in each evaluation (fixed, so evals compare)",
        minimum=1)
    patience: int = _eval(0, "stop after this many evaluations without a better val loss (0: "
        "never)", minimum=0)
    sample_interval: int = _eval(500, "steps between printed samples (0: no samples)", minimum=0)
    sample_prompt: str = _eval("\n", "prompt the samples start from", metavar="TEXT")
    sample_tokens: int = _eval(100, "new tokens per sample", minimum=1)
    temperature: float = _eval(0.8, "sampling temperature (0: greedy)", minimum=0.0)
    top_k: int | None = _eval(50, "sample from the k likeliest tokens ('none': all)", minimum=1)
    save_interval: int = _eval(500, "steps between 'last' checkpoints (one is also written at the "
        "end)", minimum=1)
    device: str = _device("cuda", "cuda, cuda:N, mps or cpu", metavar="DEVICE")
    force_cpu: bool = _device(False, "train on the CPU (slow): the way to run on a machine without "
        "a GPU")
    dtype: str = _device("auto", "auto: bf16 where supported, else fp16 with a grad scaler on GPUs, "
        f"fp32 on CPU; gpt2load's spellings too ({', '.join(DTYPE_SPELLINGS)})", choices=DTYPES,
        aliases=DTYPE_SPELLINGS, metavar="{" + ",".join(DTYPES) + "}")
    compile: bool = _device(False, "torch.compile the model")
    memory_check: bool = _device(True, "refuse settings whose estimated memory does not fit the "
        "device")
    fsdp: bool = _dist(False, "under torchrun, shard weights, gradients and optimizer state across "
        "the processes (FSDP) instead of copying the model to each (DDP): for sizes one GPU "
        "cannot hold")
    dist_backend: str = _dist("auto", "under torchrun, how processes talk: auto is nccl on GPUs, "
        "gloo with --force-cpu", choices=("auto", "nccl", "gloo"))
    progress: bool = _log(True, "show a progress bar")
    wandb: bool = _log(False, "log to Weights & Biases")
    wandb_project: str = _log("gpt2load-finetune", "W&B project", metavar="NAME")
    wandb_run_name: str | None = _log(None, "W&B run name (default: the --out folder's name)",
        metavar="NAME")
    wandb_tags: list[str] = _log([], "W&B tags (default: none)", metavar="TAG")
    wandb_mode: str = _log("auto", "auto: online when logged in, else offline; disabled turns W&B "
        "off", choices=("auto", "online", "offline", "disabled"))
    # fmt: on

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        return cls(**coerce_values(data, source=source))

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **coerce_values(changes, source="override"))

    @property
    def is_scratch(self) -> bool:
        return self.init.strip().lower() == "scratch"

    def resolved(self) -> TrainConfig:
        """Fill the defaults that depend on the init, so the record states real values."""
        lr = self.lr if self.lr is not None else SCRATCH_LR if self.is_scratch else PRETRAINED_LR
        min_lr = lr / 10 if self.min_lr is None else self.min_lr
        changes: dict[str, Any] = {"lr": lr, "min_lr": min_lr}
        if self.is_scratch:
            changes.update({k: v for k, v in SCRATCH_SHAPE.items() if getattr(self, k) is None})
            changes["dropout"] = self.dropout or 0.0
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Cross-field checks (single fields are checked when they are set)."""
        if self.min_lr is not None and self.lr is not None and self.min_lr > self.lr:
            raise ConfigError(f"--min-lr ({self.min_lr:g}) is larger than --lr ({self.lr:g})")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if not self.beta1 < 1.0 or not self.beta2 < 1.0:
            raise ConfigError("--beta1 and --beta2 must be below 1")
        if self.is_scratch and self.n_head and self.n_embd and self.n_embd % self.n_head:
            raise ConfigError(
                f"--n-embd ({self.n_embd}) must be a multiple of --n-head ({self.n_head})"
            )
        if not self.data:
            raise ConfigError(
                "no training data: pass --data with text files, folders of them, a prepared "
                "folder (train.bin + val.bin) or 'shakespeare'"
            )


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Settings whose default depends on others (see resolved()); a run records which of them it
# derived, so a resume with another --lr derives --min-lr again.
DERIVED = ("lr", "min_lr")
# What a resumed run may not change: the first group decides which model and data the
# checkpoint belongs to, the second which batches it draws and which fixed batches it
# evaluates on (exact resume and comparable val losses depend on them).
FIXED_MODEL_AND_DATA = ("init", "data", "data_dir", "val_fraction", "out", "overwrite", "tokenizer")
FIXED_MODEL_AND_DATA += ("tokenizer_dir", "n_layer", "n_head", "n_embd")
FIXED_STREAM = ("seed", "batch_size", "block_size", "eval_batches")
FIXED_ON_RESUME = FIXED_MODEL_AND_DATA + FIXED_STREAM
# fmt: off
SUBCOMMAND_DEFAULTS: dict[str, dict[str, Any]] = {
    "pretrain": {},
    "shakespeare": {
        "out": "runs/shakespeare", "data": ["shakespeare"], "max_iters": 500, "warmup_iters": 20,
        "dropout": 0.1, "eval_interval": 25, "patience": 6, "sample_interval": 100,
        "save_interval": 100, "sample_prompt": "ROMEO:",
    },
}
# fmt: on


@functools.cache
def field_type(name: str) -> tuple[type, bool, bool]:
    """(base type, optional, is a list) of a field, from its annotation."""
    tp = typing.get_type_hints(TrainConfig)[name]
    optional = type(None) in typing.get_args(tp)
    if optional:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0], optional, True
    return tp, optional, False


def coerce_value(name: str, value: Any, *, source: str = "config") -> Any:
    """Check one value against its field's type, choices and minimum; return it normalised.
    ``source`` says where it came from (a file, a flag) in the error."""
    key = name.replace("-", "_")
    if key not in FIELDS:
        close = difflib.get_close_matches(key, FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{source}: unknown setting {name!r}{hint}")
    (base, optional, is_list), label = field_type(key), f"{source}: {key}"
    if optional and base is not str and isinstance(value, str) and value.lower() == "none":
        value = None  # TOML has no null; "none" is how an unset number is written
    if value is None and not optional:
        raise ConfigError(f"{label} cannot be empty")
    if value is None or not is_list:
        return value if value is None else _scalar(label, base, value, FIELDS[key].metadata)
    value = [value] if isinstance(value, (str, os.PathLike)) else value
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{label} must be a list of strings, got {value!r}")
    return [_scalar(label, base, v, FIELDS[key].metadata) for v in value]


_KINDS = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}
_WHAT = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _scalar(label: str, base: type, value: Any, meta: Mapping[str, Any]) -> Any:
    value = os.fspath(value) if isinstance(value, os.PathLike) else value
    if isinstance(value, bool) != (base is bool) or not isinstance(value, _KINDS[base]):
        raise ConfigError(f"{label} must be {_WHAT[base]}, got {value!r}")
    if meta.get("path") and not value.strip():  # "" would be the current folder
        raise ConfigError(f"{label} is empty (an unset shell variable?)")
    if base is int and not -MAX_INT <= value <= MAX_INT:
        raise ConfigError(f"{label} must be at most {MAX_INT} (2**63 - 1), got {value}")
    if base is float and not math.isfinite(value):
        raise ConfigError(f"{label} must be finite, got {value!r}")
    if meta.get("aliases"):  # bf16 for bfloat16, as gpt2load takes it
        value = meta["aliases"].get(value.strip().lower(), value.strip().lower())
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(f"{label} must be one of {', '.join(meta['choices'])}; got {value!r}")
    if meta.get("minimum") is not None and value < meta["minimum"]:
        raise ConfigError(f"{label} must be >= {meta['minimum']}, got {value!r}")
    return float(value) if base is float else value


def coerce_values(data: Mapping[str, Any], *, source: str = "config") -> dict[str, Any]:
    return {k.replace("-", "_"): coerce_value(k, v, source=source) for k, v in data.items()}
