"""How the work is spread: one process (:class:`Strategy`, every collective a no-op), or DDP or
FSDP under torchrun. FSDP shards weights, gradients and AdamW state so gpt2-xl trains on GPUs
that could not hold it alone. Checkpoints are always whole, in the single-process layout, so a
run resumes with any number of processes."""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, DistributedNotSupported

# Rank 0 alone writes checkpoints while the others wait in a collective; gpt2-xl's 19 GB of
# weights and optimizer state can take minutes to write, well past NCCL's default of 10.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


class Strategy:
    """One process (rank 0 of 1); the parallel strategies below override what differs."""

    sharded, name = False, "one process"

    def __init__(self, rank: int = 0, local_rank: int = 0, world: int = 1, local_world: int = 1):
        self.rank, self.local_rank = rank, local_rank
        self.world_size, self.local_world_size = world, local_world

    @classmethod
    def from_env(cls, fsdp: bool = False) -> Strategy:
        """The place torchrun gave this process; a plain ``python -m finetune`` is rank 0 of 1."""
        world, rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0)
        local_rank = _env_int("LOCAL_RANK", 0)
        if world < 1 or not 0 <= rank < world or not 0 <= local_rank < world:
            raise ConfigError(
                f"inconsistent torchrun environment: RANK={rank}, "
                f"LOCAL_RANK={local_rank}, WORLD_SIZE={world}"
            )
        kind = Strategy if world == 1 else FSDP if fsdp else DDP
        return kind(rank, local_rank, world, max(1, _env_int("LOCAL_WORLD_SIZE", world)))

    @property
    def is_main(self) -> bool:
        """Only the main rank writes checkpoints, metrics, samples and W&B."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def local_grad_accum(self, grad_accum: int) -> int:
        """Micro-batches this rank runs per step: the global count split evenly, so a run's
        tokens per step, schedule and data order do not depend on the number of processes."""
        if grad_accum % self.world_size:
            near = self.world_size * max(1, round(grad_accum / self.world_size))
            raise ConfigError(
                f"--grad-accum {grad_accum} must be a multiple of the {self.world_size} "
                f"processes: each optimizer step's micro-batches are split evenly among them "
                f"(try --grad-accum {near})"
            )
        return grad_accum // self.world_size

    def device_request(self, requested: str, force_cpu: bool) -> str:
        """``--device`` for this rank: under torchrun ``cuda`` is the GPU of ``LOCAL_RANK``;
        another rank's GPU is refused (NCCL would fail obscurely with two ranks on one)."""
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
        """The main rank (per machine with ``local``) does a step first, the others then find
        its work cached; if it fails, they still pass the barrier and meet the error too."""
        first = (self.local_rank if local else self.rank) == 0
        if not first:
            self.barrier()
        try:
            yield
        finally:
            if first:
                self.barrier()

    def all_reduce(self, tensor: torch.Tensor, op: str = "SUM") -> torch.Tensor:
        if self.is_distributed:
            torch.distributed.all_reduce(tensor, op=getattr(torch.distributed.ReduceOp, op))
        return tensor

    def any_true(self, flags: Sequence[bool], device: torch.device) -> list[bool]:
        """Each flag OR-ed over all ranks in one collective: how ranks agree to stop."""
        values = torch.tensor([float(bool(f)) for f in flags], device=device)
        return [bool(v) for v in self.all_reduce(values, "MAX").tolist()]

    def interleave(self, local: torch.Tensor, count: int) -> torch.Tensor:
        """Rebuild a list dealt out round-robin (item ``i`` computed by rank ``i % world``), in
        order, so a mean over it is bit-for-bit the single-process mean."""
        if not self.is_distributed:
            return local[:count]
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, local.contiguous())
        return torch.stack(parts, dim=1).reshape(-1)[:count]

    def all_gather_object(self, obj: Any) -> list[Any]:
        out = [obj] * self.world_size
        if self.is_distributed:
            torch.distributed.all_gather_object(out, obj)
        return out

    # ------------------------------------------------------------ the model
    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module that runs forward and backward (``model`` is the one saved)."""
        return model

    @contextlib.contextmanager
    def sync_gradients(self, wrapped: nn.Module, enabled: bool) -> Iterator[None]:
        """One micro-batch's forward and backward, averaging gradients only when ``enabled``
        (the last micro-batch of a step): syncing every one would multiply the traffic."""
        yield

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The whole model's tensors for rank 0 to save; None means "read the module"."""
        return None

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        return optimizer.state_dict()

    def load_optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, state: Mapping, source: str
    ) -> None:
        try:
            optimizer.load_state_dict(state)
        except ValueError as exc:
            raise ConfigError(f"{_MISMATCH.format(source)}: {exc}") from None


_MISMATCH = (
    "the optimizer state in {} belongs to another model layout (other parameter groups or "
    "shapes); resume it with the model it was saved with, or start a new run"
)


class DDP(Strategy):
    """Every rank holds the whole model; gradients are averaged once per optimizer step."""

    name = "DDP"

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DDP copies rank 0's weights to every rank. Buffers never change (no re-broadcast
        before every forward) and gradients live in the all-reduce buckets (one copy less)."""
        from torch.nn.parallel import DistributedDataParallel

        # torch 2.13 renamed broadcast_buffers
        renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        no_buffer_sync = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(
            model, device_ids=ids, gradient_as_bucket_view=True, **no_buffer_sync
        )

    @contextlib.contextmanager
    def sync_gradients(self, wrapped: nn.Module, enabled: bool) -> Iterator[None]:
        with contextlib.nullcontext() if enabled else wrapped.no_sync():
            yield


class FSDP(Strategy):
    """Weights, gradients and AdamW state sharded; each block gathered whole only when used."""

    sharded, name = True, "FSDP (sharded)"

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """Shard ``model`` in place, each transformer block a unit of its own; the root keeps
        the embeddings, final norm and (tied) head. Rank 0's weights are broadcast first."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                torch.distributed.broadcast(tensor, src=0)
        mesh = init_device_mesh(device.type, (self.world_size,))
        for block in model.trf_blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model

    @contextlib.contextmanager
    def sync_gradients(self, wrapped: nn.Module, enabled: bool) -> Iterator[None]:
        wrapped.set_requires_gradient_sync(enabled)
        yield

    @staticmethod
    def reshard(model: nn.Module) -> None:
        """Drop the gathered copies a forward without backward (evaluation, sampling) leaves:
        the state-dict helpers do not recognise them, and they waste memory."""
        from torch.distributed.fsdp import FSDPModule

        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """Collective; only rank 0 gets the tensors, on the CPU (no GPU holds a second copy)."""
        from torch.distributed.checkpoint import state_dict as dcp

        self.reshard(model)
        full = dcp.StateDictOptions(full_state_dict=True, cpu_offload=True)
        return dcp.get_model_state_dict(model, options=full)

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """FSDP's gathered state, keyed by parameter name, renumbered as one process numbers
        it, so a checkpoint reads the same whoever wrote it (meaningful on rank 0 only)."""
        from torch.distributed.checkpoint import state_dict as dcp

        self.reshard(model)
        groups = _param_names(model, optimizer)
        full = dcp.StateDictOptions(full_state_dict=True, cpu_offload=True)
        by_name = dcp.get_optimizer_state_dict(model, optimizer, options=full)
        if not by_name:  # ranks other than 0
            return {}
        index = {name: i for i, name in enumerate(n for group in groups for n in group)}
        return _rekey(by_name, index.get, [[index[n] for n in names] for names in groups])

    def load_optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, state: Mapping, source: str
    ) -> None:
        from torch.distributed.checkpoint import state_dict as dcp

        self.reshard(model)
        groups, saved_groups = _param_names(model, optimizer), state["param_groups"]
        if [len(s["params"]) for s in saved_groups] != [len(g) for g in groups]:
            raise ConfigError(_MISMATCH.format(source))
        flat = [n for group in groups for n in group]
        by_name = _rekey(state, lambda i: flat[int(i)], groups)
        dcp.set_optimizer_state_dict(
            model, optimizer, by_name, options=dcp.StateDictOptions(full_state_dict=True)
        )


def _rekey(state: Mapping, key: Callable[[Any], Any], params: list[list]) -> dict:
    """An optimizer state with its parameters named anew: FSDP's by name, ours by number."""
    groups = zip(state["param_groups"], params, strict=True)
    return {
        "state": {key(k): value for k, value in state["state"].items()},
        "param_groups": [{**saved, "params": names} for saved, names in groups],
    }


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    names = {id(p): name for name, p in model.named_parameters()}
    return [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """A dropout seed of its own for each rank, so ranks do not drop the same units."""
    return (seed * 1_000_003 + rank * 7919 + step) % (2**63)


@contextlib.contextmanager
def process_group(
    strategy: Strategy, device: torch.device, backend: str = "auto"
) -> Iterator[None]:
    """Join the other ranks for the run and leave cleanly (a process that exits without
    destroying its group makes NCCL warn and can keep torchrun waiting)."""
    if not strategy.is_distributed:
        yield
        return
    import torch.distributed as dist

    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    elif backend == "nccl" and device.type != "cuda":
        raise ConfigError("--dist-backend nccl needs CUDA GPUs; with --force-cpu use gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        ids = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT, **ids)
    try:
        yield
    finally:
        if owned and dist.is_initialized():
            # The DDP wrapper sits in reference cycles: free it while its group exists, or gloo
            # aborts at exit ("terminate called without an active exception").
            gc.collect()
            dist.destroy_process_group()
