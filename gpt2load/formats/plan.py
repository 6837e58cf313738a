"""Matching stored tensors to the model's parameters, before any data is read: each
parameter found once, shaped as the config demands, nothing unknown left over; the problems
are reported together, each naming the tensor, its file and the shapes."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch.nn import init
from torch.overrides import TorchFunctionMode

from ..config import GPTConfig, published_heads
from ..errors import CheckpointError
from ..model import GPT
from .hints import Hints
from .layouts import LAYOUTS, TIED, Layout, Rule, expand
from .sources import StoredTensor, TensorSource

MAX_PROBLEMS_SHOWN = 6
SIZE_FIELDS = ("n_layer", "n_embd", "vocab_size", "context_length")  # what a message names
_INIT_FUNCTIONS = frozenset(
    {torch.Tensor.normal_, torch.Tensor.uniform_, init.normal_, init.uniform_, init.trunc_normal_}
    | {init.kaiming_uniform_, init.kaiming_normal_, init.xavier_uniform_, init.xavier_normal_}
)


class _SkipMetaInit(TorchFunctionMode):
    """Init calls on meta tensors do nothing: torch runs them through ``torch._dynamo`` (2.5 s
    to import), and every parameter is replaced anyway. Thread-local, as function modes are."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        tensor = args[0] if args else (kwargs or {}).get("tensor")
        if func in _INIT_FUNCTIONS and isinstance(tensor, torch.Tensor) and tensor.is_meta:
            return tensor
        return func(*args, **(kwargs or {}))


def empty_model(config: GPTConfig) -> GPT:
    """A ``GPT`` on the meta device: shapes only, no memory, no initialisation."""
    with torch.device("meta"), _SkipMetaInit():
        return GPT(config)


@functools.lru_cache(maxsize=16)
def parameter_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict entry's shape (the tied head included) for ``config``."""
    return {k: tuple(v.shape) for k, v in empty_model(config).state_dict().items()}


@dataclass
class Plan:
    layout: Layout
    config: GPTConfig
    assignments: list[Rule] = field(default_factory=list)  # with block indices filled in
    head: str | None = None  # a stored output head, which must equal the stored embedding
    ignored: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def stored_for(self, our_name: str) -> str:
        return next(a.stored for a in self.assignments if our_name in a.ours)


Matched = dict[str, tuple[Rule, int | None]]


def _match(layout: Layout, names: list[str]) -> tuple[Matched, list[str], list[str]]:
    """The stored names this layout explains (with rule and block), its buffers, the rest."""
    matched: Matched = {}
    ignored, unexpected = [], []
    for name in names:
        bare = layout.strip_prefixes(name)
        if layout.is_buffer(bare):
            ignored.append(name)
        elif (hit := layout.match(bare)) is None:
            unexpected.append(name)
        else:
            matched[name] = hit
    return matched, ignored, unexpected


# Switches the tensors show by being there: (config field, the tensor that shows it).
_PRESENCE = {"bias": "trf_blocks.0.norm1.shift", "qkv_bias": "trf_blocks.0.att.W_query.bias"}
_FF = "trf_blocks.0.ff.layers.0.weight"


def _infer_config(
    layout: Layout, matched: Matched, entries: dict[str, StoredTensor], hints: Hints, label: str
) -> GPTConfig:
    """The config the tensors and the checkpoint's own words describe together, each stated
    value checked before a model is built: a claim of 10**6 layers fails in microseconds."""
    by_target: dict[str, tuple[int, ...]] = {}
    for name, (rule, index) in matched.items():
        for target in rule.ours:
            by_target.setdefault(expand(target, index), entries[name].shape)
    blocks = {index for _, index in matched.values() if index is not None}
    embedding, positions = by_target.get("tok_emb.weight"), by_target.get("pos_emb.weight")
    if embedding is None or len(embedding) != 2:
        raise CheckpointError(f"{label}: no token embedding found, so the model size is unknown")
    if positions is None or len(positions) != 2:
        raise CheckpointError(
            f"{label}: no position embedding found, so the context length is unknown"
        )
    if blocks and max(blocks) + 1 != len(blocks):
        missing = min(set(range(max(blocks) + 1)) - blocks)
        raise CheckpointError(
            f"{label}: its tensors name blocks up to {max(blocks)} but {len(blocks)} blocks in "
            f"all (block {missing} is missing)"
        )
    # The MLP width: whichever reading of the stored first MLP weight its transform explains.
    ff, ff_shape = by_target.get(_FF, ()), layout.rule_for(_FF)[0].transform.stored_shape
    widths = [w for w in ff if ff_shape([(w, embedding[1])]) == ff]
    seen = {
        "vocab_size": embedding[0],
        "n_embd": embedding[1],
        "context_length": positions[0],
        "n_inner": widths[0] if widths else None,
        "bias": _PRESENCE["bias"] in by_target or "final_norm.shift" in by_target,
        "qkv_bias": _PRESENCE["qkv_bias"] in by_target,
    }
    values = {**dict(layout.implies), **hints.values}
    origin, n_blocks = hints.said_by, len(blocks)
    # A stated layer count is checked before a model that big is built; the message names the
    # first tensor missing or too many.
    stated, layers = values.get("n_layer"), hints.key("n_layer")
    if stated is not None and stated != n_blocks:
        if not isinstance(stated, int) or isinstance(stated, bool) or stated < 0:
            raise CheckpointError(f"{label}: {origin} says {layers}={stated!r}, not a layer count")
        if stated > n_blocks:
            rule, _ = layout.rule_for(f"trf_blocks.{n_blocks}.norm1.scale")
            detail = f"missing tensor {expand(rule.stored, n_blocks)!r} and every block after it"
        else:
            name, (rule, index) = min((n, hit) for n, hit in matched.items() if hit[1] == stated)
            detail = f"unexpected tensor {name!r}: the model has no {expand(rule.ours[0], index)}"
        raise CheckpointError(
            f"{label}: {origin} says {layers}={stated}, but it stores {n_blocks} blocks: {detail}"
        )
    for key, shown in seen.items():
        stated, said = values.get(key), hints.key(key)
        if stated is None or shown is None:
            continue
        if type(stated) is not type(shown):  # "50304" is no 50304, nor "False" False
            kind = "a boolean (true or false)" if isinstance(shown, bool) else "an integer"
            raise CheckpointError(
                f"{label}: {origin} says {said}={stated!r}, but {said} must be {kind}"
            )
        if key in _PRESENCE:
            if stated is not shown:
                what = "holds no such tensors" if stated else "holds them"
                raise CheckpointError(
                    f"{label}: {origin} says {said}={stated}, but the file {what} "
                    f"(e.g. {_PRESENCE[key]!r} in our names)"
                )
        elif stated != shown:
            raise CheckpointError(
                f"{label}: {origin} says {said}={stated!r}, but its tensors show {said}={shown}"
            )
    values = {"n_layer": n_blocks, **{k: v for k, v in seen.items() if v is not None}, **values}
    if "n_head" not in values:
        values["n_head"] = published_heads(values["n_embd"])
        if values["n_head"] is None:
            raise CheckpointError(
                f"{label} does not record its number of attention heads, and its width "
                f"{values['n_embd']} is not a published GPT-2 width (768, 1024, 1280, 1600); "
                f"put a config.json with n_head (or the book's n_heads) beside it, or pass "
                f"n_head= to gpt2load.load (--n-head N on the command line)"
            )
    try:
        return GPTConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{label}: the hyper-parameters in {origin} do not make a valid model: {exc}"
        ) from None


def build_plan(layout: Layout, source: TensorSource, hints: Hints, label: str) -> Plan:
    entries = source.entries()
    matched, ignored, unexpected = _match(layout, list(entries))
    for name in matched:  # a file no model can compute with says so before all else
        entries[name].refuse_unusable_dtype()
    config = _infer_config(layout, matched, entries, hints, label)
    shapes = parameter_shapes(config)
    plan = Plan(layout=layout, config=config, ignored=ignored)
    size = ", ".join(f"{k}={getattr(config, k)}" for k in SIZE_FIELDS)
    # The label names the file; each problem names it again only when there are several.
    several = len({e.file for e in entries.values()}) > 1
    at = {name: f" in {entry.file}" if several else "" for name, entry in entries.items()}

    problems = plan.problems
    problems += [
        f"tensor {n!r} is stored twice, in {a} and in {b}" for n, a, b in source.duplicates
    ]
    problems += [f"unexpected tensor {n!r}{at[n]} (not part of a GPT-2)" for n in unexpected]
    claimed: dict[str, str] = {}
    for name, (rule, index) in matched.items():
        entry, targets = entries[name], tuple(expand(t, index) for t in rule.ours)
        tensor = f"tensor {name!r}{at[name]}"
        if unknown := [t for t in targets if t not in shapes]:
            problems.append(f"unexpected {tensor}: the model ({size}) has no {unknown[0]}")
            continue
        if taken := [t for t in targets if t in claimed]:
            problems.append(
                f"{taken[0]} is stored twice{at[name]}: as {claimed[taken[0]]!r} and as {name!r}"
            )
            continue
        claimed.update(dict.fromkeys(targets, name))
        expected = rule.transform.stored_shape([shapes[t] for t in targets])
        if entry.shape != expected:
            problems.append(
                f"{tensor} has shape {list(entry.shape)}, expected {list(expected)} for a GPT-2 "
                f"with {size}"
            )
        elif not entry.dtype.is_floating_point:
            problems.append(f"{tensor} has dtype {entry.dtype_name}, not floating point")
        elif targets[0] in TIED and config.tie_head:
            plan.head = name
        else:
            plan.assignments.append(Rule(name, targets, rule.transform))
    for target in shapes:
        if target in claimed or (target in TIED and config.tie_head):
            continue
        rule, index = layout.rule_for(target)
        targets = tuple(expand(t, index) for t in rule.ours)
        claimed.update(dict.fromkeys(targets, ""))  # a fused tensor is missed once
        shape = rule.transform.stored_shape([shapes[t] for t in targets])
        stored = expand(rule.stored, index)
        problems.append(
            f"missing tensor {stored!r} (shape {list(shape)}, for {', '.join(targets)})"
        )
    return plan


def choose_plan(source: TensorSource, hints: Hints, label: str) -> Plan:
    """The plan of the layout that explains the stored names best; raise if it has problems."""
    entries = source.entries()
    if not entries:
        raise CheckpointError(f"{label} holds no tensors")
    scored = [(len(_match(layout, list(entries))[0]), layout) for layout in LAYOUTS]
    best = max(count for count, _ in scored)
    if best == 0:
        sample = ", ".join(repr(n) for n in list(entries)[:4])
        raise CheckpointError(
            f"{label} holds no GPT-2 tensors (it has {len(entries)} tensors, e.g. {sample})"
        )
    plans: list[Plan] = []
    refusals: list[CheckpointError] = []
    for count, layout in scored:
        if count == best:
            try:
                plans.append(build_plan(layout, source, hints, label))
            except CheckpointError as exc:  # this reading contradicts the file; another may fit
                refusals.append(exc)
    plan = min(plans, key=lambda p: len(p.problems), default=None)
    if refusals and (plan is None or plan.problems):  # the specific reason beats a list
        raise refusals[0]
    if plan.problems:
        shown = "; ".join(plan.problems[:MAX_PROBLEMS_SHOWN])
        more = len(plan.problems) - MAX_PROBLEMS_SHOWN
        suffix = f"; and {more} more problems" if more > 0 else ""
        raise CheckpointError(
            f"{label} cannot be loaded as a {plan.layout.description}: {shown}{suffix}"
        )
    return plan
