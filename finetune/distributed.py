"""Who this process is in a data-parallel run, and the few collectives the loop needs.

``torchrun --nproc_per_node=N -m finetune ...`` starts N copies of the same
command; torchrun tells each one its place through ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE`` and ``LOCAL_WORLD_SIZE``. The training loop is written against
:class:`DistContext`, which is also the single-process case (world size 1),
where every collective here is a no-op, so the single-process path runs exactly
the code it always ran.

Two ways to spread the work, both data parallel (each rank trains on its own
share of every optimizer step's micro-batches):

- DDP (default): every rank holds the whole model; gradients are averaged once
  per optimizer step. Fastest while the model, its gradients and AdamW's two
  moments fit on one GPU (16 bytes per parameter: up to gpt2-large on 24 GB).
- FSDP (``--fsdp``): weights, gradients and optimizer state are sharded across
  the ranks and gathered layer by layer when needed, so gpt2-xl trains on GPUs
  that could not hold it alone.

Checkpoints are always written whole, by rank 0, in the single-process layout,
so a run saved by N processes resumes with any number of processes, one
included, and ``gpt2load.load(run/best)`` reads it like any other.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import ConfigError, DistributedNotSupported

if TYPE_CHECKING:
    from .config import TrainConfig

# Rank 0 alone writes checkpoints and may prepare data while the others wait in a
# collective; gpt2-xl's 19 GB of weights and optimizer state can take minutes to write,
# well past NCCL's default of 10.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
BACKENDS = ("auto", "nccl", "gloo")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only the main rank writes checkpoints, metrics, samples and W&B."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def with_grad_accum(self, cfg: TrainConfig) -> TrainConfig:
        """``cfg`` with ``--grad-accum`` decided: left out, it is one micro-batch per process,
        so plain ``torchrun`` commands run as given and a run records the real number."""
        return cfg if cfg.grad_accum is not None else cfg.replace(grad_accum=self.world_size)

    def local_grad_accum(self, grad_accum: int) -> int:
        """Micro-batches this rank runs per optimizer step (the global count split evenly).

        The global count stays what ``--grad-accum`` says, so a run's tokens per
        step, learning-rate schedule and data order do not depend on how many
        processes share it.
        """
        if grad_accum % self.world_size:
            raise ConfigError(
                f"--grad-accum {grad_accum} must be a multiple of the {self.world_size} "
                f"processes: each optimizer step's micro-batches are split evenly among them "
                f"(try --grad-accum {self.world_size * max(1, round(grad_accum / self.world_size))})"
            )
        return grad_accum // self.world_size

    @classmethod
    def from_env(cls) -> DistContext:
        """The place torchrun gave this process; a plain ``python -m finetune`` is rank 0 of 1."""
        world_size = _env_int("WORLD_SIZE", 1)
        rank = _env_int("RANK", 0)
        local_rank = _env_int("LOCAL_RANK", 0)
        local_world_size = _env_int("LOCAL_WORLD_SIZE", world_size)
        if world_size < 1 or not 0 <= rank < world_size or not 0 <= local_rank < world_size:
            raise ConfigError(
                f"inconsistent torchrun environment: RANK={rank}, LOCAL_RANK={local_rank}, "
                f"WORLD_SIZE={world_size}"
            )
        return cls(rank, local_rank, world_size, max(1, local_world_size))

    # ------------------------------------------------------------ devices
    def device_request(self, requested: str, force_cpu: bool) -> str:
        """``--device`` for this rank: under torchrun, ``cuda`` means the GPU of ``LOCAL_RANK``.

        Several ranks on one GPU would fail inside NCCL with an obscure message,
        so an explicit ``cuda:N`` that is not this rank's own GPU is refused here.
        """
        requested = requested.strip().lower()
        if not self.is_distributed or force_cpu or requested == "cpu":
            return requested
        if requested == "mps":
            raise DistributedNotSupported(
                "training with several processes needs CUDA GPUs (NCCL) or --force-cpu (gloo); "
                "Apple's MPS backend has no collective operations: run a single process"
            )
        if requested == "cuda":
            return f"cuda:{self.local_rank}"
        if requested.startswith("cuda:") and requested != f"cuda:{self.local_rank}":
            raise ConfigError(
                f"--device {requested}: under torchrun each process uses the GPU numbered by its "
                f"LOCAL_RANK, so pass --device cuda (choose the GPUs with CUDA_VISIBLE_DEVICES)"
            )
        return requested

    # ------------------------------------------------------------ collectives
    def barrier(self) -> None:
        if self.is_distributed:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def main_first(self, local: bool = True) -> Iterator[None]:
        """Let the main rank (per machine with ``local``) do a step before the others.

        For work that writes shared files (preparing data, downloading weights):
        the first rank does it, the rest then find it cached. If the first rank
        fails, the others still get past the barrier and meet the same error
        themselves, so every rank stops with the message instead of hanging.
        """
        first = (self.local_rank if local else self.rank) == 0
        if not first:
            self.barrier()
        try:
            yield
        finally:
            if first:
                self.barrier()

    def any_true(self, flags: Sequence[bool], device: torch.device) -> list[bool]:
        """Each flag OR-ed over all ranks, in one collective: how ranks agree to stop."""
        if not self.is_distributed:
            return list(flags)
        values = torch.tensor([float(bool(f)) for f in flags], device=device)
        torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.MAX)
        return [bool(v) for v in values.tolist()]

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over all ranks in place (NaN anywhere makes it NaN everywhere)."""
        if self.is_distributed:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def interleave(self, local: torch.Tensor, count: int) -> torch.Tensor:
        """Rebuild a list that was dealt out round-robin: item ``i`` was computed by rank
        ``i % world_size`` as its local item ``i // world_size``.

        The result holds the same values in the same order as one process computing
        all ``count`` items, so a mean over it is bit-for-bit the single-process mean.
        """
        if not self.is_distributed:
            return local[:count]
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, local.contiguous())
        return torch.stack(parts, dim=1).reshape(-1)[:count]

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.is_distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out


# ---------------------------------------------------------------- process group
def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto``: NCCL between GPUs, gloo between CPU processes."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown --dist-backend {backend!r}: use {', '.join(BACKENDS)}")
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("--dist-backend nccl needs CUDA GPUs; with --force-cpu use gloo")
    return backend


@contextlib.contextmanager
def process_group(ctx: DistContext, device: torch.device, backend: str = "auto") -> Iterator[None]:
    """Join the other ranks for the duration of a run and leave cleanly afterwards.

    Leaving matters: a process that exits without destroying its group makes
    NCCL print warnings and can keep torchrun waiting on the others.
    A single process does nothing here.
    """
    if not ctx.is_distributed:
        yield
        return
    import torch.distributed as dist

    name = resolve_backend(backend, device)
    if not dist.is_available():  # pragma: no cover - builds without distributed
        raise DistributedNotSupported("this PyTorch build has no torch.distributed")
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        kwargs["device_id"] = device
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend=name, timeout=COLLECTIVE_TIMEOUT, **kwargs)
    if dist.get_world_size() != ctx.world_size or dist.get_rank() != ctx.rank:
        raise ConfigError(  # pragma: no cover - torchrun sets both consistently
            f"process group has rank {dist.get_rank()} of {dist.get_world_size()}, but the "
            f"environment says {ctx.rank} of {ctx.world_size}"
        )
    try:
        yield
    finally:
        if owned and dist.is_initialized():
            # The run's DDP wrapper sits in reference cycles (trainer <-> callbacks); free it
            # while its group exists, or its reducer is torn down at exit against a destroyed
            # group and gloo aborts the process ("terminate called without an active exception").
            gc.collect()
            dist.destroy_process_group()


# ---------------------------------------------------------------- wrapping
def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP around ``model``: its constructor copies rank 0's weights to every rank.

    The causal-mask buffers never change, so they are not re-broadcast before
    every forward; gradients are written straight into the all-reduce buckets
    (one copy of the gradients less, which matters for the large sizes).
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    options = inspect.signature(DistributedDataParallel).parameters
    # torch 2.13 renamed broadcast_buffers (and warns on the old name).
    no_buffer_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in options
        else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        gradient_as_bucket_view=True,
        **no_buffer_sync,
    )


def _fully_shard() -> Any:
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # pragma: no cover - torch older than 2.6
        try:
            from torch.distributed._composable.fsdp import fully_shard
        except ImportError:
            raise DistributedNotSupported(
                f"--fsdp needs PyTorch's fully_shard (2.4 or newer); this is {torch.__version__}"
            ) from None
    return fully_shard


def shard_fsdp(model: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """Shard ``model`` in place with FSDP: each transformer block is its own unit, so at
    most one block's full weights are gathered at a time; the root unit keeps the
    embeddings, the final norm and the head (tied to the token embedding, so the
    two must share a unit).

    Returns the same module object (its class is swapped by FSDP). Rank 0's
    weights are broadcast first, as DDP does, so every rank shards the same model.
    """
    from torch.distributed.device_mesh import init_device_mesh

    fully_shard = _fully_shard()
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            torch.distributed.broadcast(tensor, src=0)
    mesh = init_device_mesh(device.type, (world_size,))
    for block in model.trf_blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def reshard(model: nn.Module) -> None:
    """Drop the gathered copies FSDP keeps after a forward without backward.

    After evaluation or sampling the root unit stays gathered; its parameters
    are then plain tensors rather than shards, which the state-dict helpers do
    not recognise (and which waste memory).
    """
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch older than 2.6
        from torch.distributed._composable.fsdp import FSDPModule
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


@contextlib.contextmanager
def gradient_sync(model: nn.Module, *, ddp: bool, fsdp: bool, enabled: bool) -> Iterator[None]:
    """Forward and backward of one micro-batch, syncing gradients only when ``enabled``.

    Gradient accumulation only needs the average at the last micro-batch of an
    optimizer step; syncing on every one would multiply the communication.
    """
    if ddp and not enabled:
        with model.no_sync():
            yield
        return
    if fsdp:
        model.set_requires_gradient_sync(enabled)
    yield


def grad_norm_value(norm: torch.Tensor) -> float:
    """A Python float from ``clip_grad_norm_``'s result, also when FSDP returns a DTensor."""
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


# ---------------------------------------------------------------- state dicts
_FULL = {"full_state_dict": True, "cpu_offload": True}


def full_model_state(model: nn.Module, fsdp: bool) -> dict[str, torch.Tensor] | None:
    """The whole model's tensors for rank 0 to save; ``None`` means "read the module".

    Under FSDP every rank must call this (it gathers the shards); only rank 0
    gets the tensors, on the CPU, so no GPU ever holds a second full copy.
    """
    if not fsdp:
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    reshard(model)
    return get_model_state_dict(model, options=StateDictOptions(**_FULL))


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """Parameter names per optimizer group, in the optimizer's order."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]


def full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool
) -> dict[str, Any]:
    """The optimizer state in ``torch.optim.Optimizer.state_dict()``'s own layout.

    FSDP's gathered state is keyed by parameter name; it is renumbered here as
    a single process numbers it (position across the param groups), so a
    checkpoint reads the same whoever wrote it. Collective under FSDP; the
    result is only meaningful on rank 0.
    """
    if not fsdp:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    reshard(model)
    groups = _param_names(model, optimizer)
    by_name = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(**_FULL))
    if not by_name:  # ranks other than 0
        return {}
    index = {name: i for i, name in enumerate(n for group in groups for n in group)}
    state = {index[name]: value for name, value in by_name["state"].items()}
    param_groups = []
    for saved, names in zip(by_name["param_groups"], groups, strict=True):
        param_groups.append({**saved, "params": [index[n] for n in names]})
    return {"state": state, "param_groups": param_groups}


def load_optimizer_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: Mapping[str, Any],
    fsdp: bool,
    source: str = "the checkpoint",
) -> None:
    """Load a single-process-layout optimizer state (see :func:`full_optimizer_state`).

    ``source`` names the file in the error when the state belongs to another model.
    """
    mismatch = (
        f"the optimizer state in {source} belongs to another model layout (other parameter "
        "groups or shapes); resume it with the model it was saved with, or start a new run"
    )
    if not fsdp:
        try:
            optimizer.load_state_dict(state)
        except ValueError as exc:
            raise ConfigError(f"{mismatch}: {exc}") from None
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    reshard(model)
    groups = _param_names(model, optimizer)
    flat = [n for group in groups for n in group]
    saved_groups = state["param_groups"]
    if len(saved_groups) != len(groups) or any(
        len(s["params"]) != len(g) for s, g in zip(saved_groups, groups, strict=True)
    ):
        raise ConfigError(mismatch)
    by_name = {
        "state": {flat[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [
            {**saved, "params": names} for saved, names in zip(saved_groups, groups, strict=True)
        ],
    }
    set_optimizer_state_dict(
        model, optimizer, by_name, options=StateDictOptions(full_state_dict=True)
    )


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """A dropout seed of its own for each rank, so ranks do not drop the same units."""
    return (seed * 1_000_003 + rank * 7919 + step) % (2**63)
