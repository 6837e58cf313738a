"""Matching stored tensors to the model's parameters, before any data is read.

A plan says, for every parameter of the model, which stored tensor fills it
and through which transform. Building it checks everything that can be checked
from names and shapes: each parameter is found exactly once, with exactly the
shape the config demands; nothing unknown is left over. Problems are collected
and reported together, each naming the tensor, its file and the shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import GPTConfig, published_heads
from .errors import CheckpointError
from .hints import Hints
from .layouts import LAYOUTS, TIED, Layout, Rule, expand
from .meta import parameter_shapes
from .sources import StoredTensor, refuse_unusable_dtype
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


# Hints that must agree with what the tensors show: (config field, our tensor it implies).
_PRESENCE = (("bias", "trf_blocks.0.norm1.shift"), ("qkv_bias", "trf_blocks.0.att.W_query.bias"))


def _ff_width(layout: Layout, by_target: dict[str, StoredTensor], n_embd: int) -> int | None:
    """The MLP width that explains the stored first MLP weight under this layout's transform.

    Conv1D layouts store it [n_embd, width] and nn.Linear ones [width, n_embd], so the
    width is whichever reading reproduces the stored shape.
    """
    stored = by_target.get("trf_blocks.0.ff.layers.0.weight")
    if stored is None:
        return None
    rule, _ = layout.rule_for("trf_blocks.0.ff.layers.0.weight")
    for width in dict.fromkeys(stored.shape):
        if rule.transform.stored_shape([(width, n_embd)]) == stored.shape:
            return width
    return None


def _infer_config(
    layout: Layout, matching: _Matching, entries: dict[str, StoredTensor], hints: Hints, label: str
) -> GPTConfig:
    """The config the stored tensors and the checkpoint's own words describe together.

    Every value a file states is checked against the tensors before any model is built,
    so a claim (10**6 layers, biases that are not there) fails in microseconds.
    """
    by_target: dict[str, StoredTensor] = {}
    blocks: set[int] = set()
    for name, (rule, index) in matching.matched.items():
        for target in rule.ours:
            by_target.setdefault(expand(target, index), entries[name])
        if index is not None:
            blocks.add(index)
    values = {**dict(layout.implies), **hints.values}
    embedding = by_target.get("tok_emb.weight")
    positions = by_target.get("pos_emb.weight")
    if embedding is None or len(embedding.shape) != 2:
        raise CheckpointError(f"{label}: no token embedding found, so the model size is unknown")
    if positions is None or len(positions.shape) != 2:
        raise CheckpointError(
            f"{label}: no position embedding found, so the context length is unknown"
        )
    if blocks and max(blocks) + 1 != len(blocks):
        missing = min(set(range(max(blocks) + 1)) - blocks)
        raise CheckpointError(
            f"{label}: its tensors name blocks up to {max(blocks)} but {len(blocks)} blocks in "
            f"all (block {missing} is missing)"
        )
    seen = {
        "vocab_size": embedding.shape[0],
        "n_embd": embedding.shape[1],
        "context_length": positions.shape[0],
        "n_layer": len(blocks),
        "n_inner": _ff_width(layout, by_target, embedding.shape[1]),
        "bias": _PRESENCE[0][1] in by_target or "final_norm.shift" in by_target,
        "qkv_bias": _PRESENCE[1][1] in by_target,
    }
    origin = hints.said_by
    _check_block_count(layout, matching, values.get("n_layer"), len(blocks), label, origin)
    for key, shown in seen.items():
        if key == "n_layer":
            continue
        stated = values.get(key)
        if stated is None or shown is None:
            continue
        if key in ("bias", "qkv_bias"):
            if stated is not shown:
                what = "holds no such tensors" if stated else "holds them"
                raise CheckpointError(
                    f"{label}: {origin} says {key}={stated}, but the file {what} "
                    f"(e.g. {_PRESENCE[0 if key == 'bias' else 1][1]!r} in our names)"
                )
        elif stated != shown and not (key == "n_inner" and stated == 4 * seen["n_embd"] == shown):
            raise CheckpointError(
                f"{label}: {origin} says {key}={stated!r}, but its tensors show {key}={shown}"
            )
    for key, shown in seen.items():
        if shown is not None:
            values.setdefault(key, shown)
    if "n_head" not in values:
        n_head = published_heads(values["n_embd"])
        if n_head is None:
            raise CheckpointError(
                f"{label} does not record its number of attention heads, and its width "
                f"{values['n_embd']} is not a published GPT-2 width (768, 1024, 1280, 1600); "
                f"put a config.json with n_head (or the book's n_heads) beside it, or pass "
                f"n_head= to gpt2load.load (--n-head N on the command line)"
            )
        values["n_head"] = n_head
    try:
        return GPTConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{label}: the hyper-parameters in {origin} do not make a valid model: {exc}"
        ) from None


def _check_block_count(
    layout: Layout, matching: _Matching, stated: object, shown: int, label: str, origin: str
) -> None:
    """A stated layer count must be the number of blocks stored, checked before a model of
    that many layers is built; the message names the first tensor missing or too many."""
    if stated is None or stated == shown:
        return
    if isinstance(stated, int) and not isinstance(stated, bool) and stated > shown:
        rule, _ = layout.rule_for(f"trf_blocks.{shown}.norm1.scale")
        detail = f"missing tensor {expand(rule.stored, shown)!r} and every block after it"
    elif isinstance(stated, int) and not isinstance(stated, bool) and stated >= 0:
        name, (rule, index) = min(
            ((n, hit) for n, hit in matching.matched.items() if hit[1] == stated),
            key=lambda item: item[0],
        )
        detail = f"unexpected tensor {name!r}: the model has no {expand(rule.ours[0], index)}"
    else:
        raise CheckpointError(f"{label}: {origin} says n_layer={stated!r}, not a layer count")
    raise CheckpointError(
        f"{label}: {origin} says n_layer={stated}, but it stores {shown} blocks: {detail}"
    )


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
    for name in matching.matched:  # a file no model can compute with says so before all else
        refuse_unusable_dtype(entries[name])
    config = _infer_config(layout, matching, entries, hints, label)
    shapes = dict(parameter_shapes(config))
    plan = Plan(layout=layout, config=config, ignored=matching.ignored)
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
        elif targets[0] in TIED and config.tie_head:
            plan.head = name
        else:
            plan.assignments.append(Assignment(name, targets, rule.transform))
    missing: dict[str, tuple[Rule, int | None]] = {}
    for target in shapes:
        if target not in claimed and not (target in TIED and config.tie_head):
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
    plans: list[Plan] = []
    refusals: list[CheckpointError] = []
    for count, layout in scored:
        if count == best:
            try:
                plans.append(build_plan(layout, entries, hints, label, duplicates))
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
