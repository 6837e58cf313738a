"""Matching stored tensors to the model's parameters, before any data is read.

A plan says, for every parameter of the model, which stored tensor fills it
and through which transform. Building it checks everything that can be checked
from names and shapes: each parameter is found exactly once, with exactly the
shape the config demands; nothing unknown is left over. Problems are collected
and reported together, each naming the tensor, its file and the shapes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import PRESETS, GPTConfig, config_from_shapes
from .errors import CheckpointError
from .hints import Hints
from .layouts import LAYOUTS, TIED, Layout, Rule, expand
from .meta import parameter_shapes
from .sources import StoredTensor
from .transforms import Transform

MAX_PROBLEMS_SHOWN = 6


@dataclass(frozen=True)
class Assignment:
    stored: str
    ours: tuple[str, ...]
    transform: Transform


@dataclass
class Plan:
    layout: Layout
    config: GPTConfig
    assignments: list[Assignment] = field(default_factory=list)
    head: str | None = None  # a stored output head, which must equal the stored embedding
    ignored: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    n_head_guessed: bool = False

    def stored_for(self, our_name: str) -> str:
        for a in self.assignments:
            if our_name in a.ours:
                return a.stored
        raise KeyError(our_name)


@dataclass
class _Matching:
    matched: dict[str, tuple[Rule, int | None]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def _match(layout: Layout, names: list[str]) -> _Matching:
    result = _Matching()
    for name in names:
        bare = layout.strip_prefixes(name)
        if layout.is_buffer(bare):
            result.ignored.append(name)
            continue
        hit = layout.match(bare)
        if hit is None:
            result.unexpected.append(name)
        else:
            result.matched[name] = hit
    return result


def _infer_config(
    matching: _Matching, entries: dict[str, StoredTensor], hints: Hints, label: str
) -> tuple[GPTConfig, bool]:
    by_target: dict[str, StoredTensor] = {}
    n_layer = 0
    for name, (rule, index) in matching.matched.items():
        for target in rule.ours:
            by_target.setdefault(expand(target, index), entries[name])
        if index is not None:
            n_layer = max(n_layer, index + 1)
    values = dict(hints.values)
    embedding = by_target.get("tok_emb.weight")
    positions = by_target.get("pos_emb.weight")
    if embedding is None or len(embedding.shape) != 2:
        raise CheckpointError(f"{label}: no token embedding found, so the model size is unknown")
    if positions is None or len(positions.shape) != 2:
        raise CheckpointError(
            f"{label}: no position embedding found, so the context length is unknown"
        )
    values.setdefault("vocab_size", embedding.shape[0])
    values.setdefault("n_embd", embedding.shape[1])
    values.setdefault("context_length", positions.shape[0])
    values.setdefault("n_layer", n_layer)
    values.setdefault("qkv_bias", "trf_blocks.0.att.W_query.bias" in by_target)
    guessed = False
    if "n_head" not in values:
        # Exact for the published widths; a guess (head size 64) for any other.
        guessed = values["n_embd"] not in {c.n_embd for c in PRESETS.values()}
        values["n_head"] = config_from_shapes(
            values["n_layer"], values["n_embd"], values["vocab_size"], values["context_length"]
        ).n_head
    try:
        return GPTConfig.from_dict(values), guessed
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{label}: the stored hyper-parameters do not make a valid model: {exc}"
        ) from None


def _fmt(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def build_plan(
    layout: Layout,
    entries: dict[str, StoredTensor],
    hints: Hints,
    label: str,
    duplicates: Sequence[tuple[str, Path, Path]] = (),
) -> Plan:
    matching = _match(layout, list(entries))
    config, guessed = _infer_config(matching, entries, hints, label)
    shapes = dict(parameter_shapes(config))
    plan = Plan(layout=layout, config=config, ignored=matching.ignored, n_head_guessed=guessed)
    size = (
        f"n_layer={config.n_layer}, n_embd={config.n_embd}, "
        f"vocab_size={config.vocab_size}, context_length={config.context_length}"
    )
    # The label names the file; each problem names it again only when there are several.
    several = len({e.file for e in entries.values()}) > 1

    def where(name: str) -> str:
        return f" in {entries[name].file}" if several else ""

    claimed: dict[str, str] = {}
    for name, first_file, second_file in duplicates:
        plan.problems.append(
            f"tensor {name!r} is stored twice, in {first_file} and in {second_file}"
        )
    for name in matching.unexpected:
        plan.problems.append(f"unexpected tensor {name!r}{where(name)} (not part of a GPT-2)")
    for name, (rule, index) in matching.matched.items():
        entry = entries[name]
        targets = tuple(expand(t, index) for t in rule.ours)
        unknown = [t for t in targets if t not in shapes]
        if unknown:
            plan.problems.append(
                f"unexpected tensor {name!r}{where(name)}: the model ({size}) has no {unknown[0]}"
            )
            continue
        taken = [t for t in targets if t in claimed]
        if taken:
            plan.problems.append(
                f"{taken[0]} is stored twice{where(name)}: as {claimed[taken[0]]!r} and as {name!r}"
            )
            continue
        for t in targets:
            claimed[t] = name
        expected = rule.transform.stored_shape([shapes[t] for t in targets])
        if entry.shape != expected:
            plan.problems.append(
                f"tensor {name!r}{where(name)} has shape {_fmt(entry.shape)}, expected "
                f"{_fmt(expected)} for a GPT-2 with {size}"
            )
        elif entry.dtype is None or not entry.dtype.is_floating_point:
            plan.problems.append(
                f"tensor {name!r}{where(name)} has dtype {entry.dtype_name}, not floating point"
            )
        elif targets[0] in TIED:
            plan.head = name
        else:
            plan.assignments.append(Assignment(name, targets, rule.transform))
    missing: dict[str, tuple[Rule, int | None]] = {}
    for target in shapes:
        if target not in claimed and target not in TIED:
            rule, index = layout.rule_for(target)
            missing.setdefault(expand(rule.stored, index), (rule, index))
    for stored, (rule, index) in missing.items():
        targets = [expand(t, index) for t in rule.ours]
        shape = rule.transform.stored_shape([shapes[t] for t in targets])
        plan.problems.append(
            f"missing tensor {stored!r} (shape {_fmt(shape)}, for {', '.join(targets)})"
        )
    return plan


def choose_plan(
    entries: dict[str, StoredTensor],
    hints: Hints,
    label: str,
    duplicates: Sequence[tuple[str, Path, Path]] = (),
) -> Plan:
    """The plan of the layout that explains the stored names best; raise if it has problems."""
    if not entries:
        raise CheckpointError(f"{label} holds no tensors")
    scored = []
    for layout in LAYOUTS:
        matching = _match(layout, list(entries))
        if matching.matched:
            scored.append((len(matching.matched), layout))
    if not scored:
        sample = ", ".join(repr(n) for n in list(entries)[:4])
        raise CheckpointError(
            f"{label} holds no GPT-2 tensors (it has {len(entries)} tensors, e.g. {sample})"
        )
    best = max(count for count, _ in scored)
    plans = [
        build_plan(layout, entries, hints, label, duplicates)
        for count, layout in scored
        if count == best
    ]
    plan = min(plans, key=lambda p: len(p.problems))
    if plan.problems:
        shown = "; ".join(plan.problems[:MAX_PROBLEMS_SHOWN])
        more = len(plan.problems) - MAX_PROBLEMS_SHOWN
        suffix = f"; and {more} more problems" if more > 0 else ""
        raise CheckpointError(
            f"{label} cannot be loaded as a {plan.layout.description}: {shown}{suffix}"
        )
    if plan.n_head_guessed:
        warnings.warn(
            f"{label} does not store the number of attention heads; assuming "
            f"n_head={plan.config.n_head} (GPT-2's for this width, or head size 64). "
            f"Put a config.json with n_head beside it if that is wrong.",
            stacklevel=3,
        )
    return plan
