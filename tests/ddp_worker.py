"""One rank of a test's torchrun launch: train from a JSON config, then dump this rank's weights.

The finetune CLI writes checkpoints from rank 0 only, so the weights the other
rank holds can only be seen from inside the process; this worker saves them as
``OUT/rank{N}.pt`` after the last step for the test to compare. It also records
every gradient all-reduce DDP makes (a communication hook around the default
one) as ``OUT/rank{N}-syncs.json``: [step, bucket] pairs, so the test can see
that each bucket is synced once per optimizer step, not once per micro-batch.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import torch
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from finetune.config import TrainConfig
from finetune.launch import start

SYNCS: list[tuple[int, int]] = []  # (optimizer step, DDP bucket) of every gradient all-reduce
STEP = {"now": 1}


def counting_wrap_ddp(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:  # noqa: ANN001
    ddp = REAL_WRAP_DDP(self, model, device)

    # No annotations: DDP checks them, and this module's are strings (__future__ annotations).
    def hook(state, bucket):  # noqa: ANN001, ANN202
        SYNCS.append((STEP["now"], bucket.index()))
        return allreduce_hook(state, bucket)

    ddp.register_comm_hook(None, hook)
    return ddp


STRATEGY = importlib.import_module("finetune.strategy")
REAL_WRAP_DDP = STRATEGY.DDP.wrap
STRATEGY.DDP.wrap = counting_wrap_ddp


def main() -> int:
    cfg = TrainConfig(**json.loads(Path(sys.argv[1]).read_text()))
    out = Path(sys.argv[2])
    rank = int(os.environ["RANK"])

    def dump_at_end(trainer, record) -> None:  # noqa: ANN001 - a finetune Callback
        STEP["now"] = record["step"] + 1
        if record["step"] == cfg.max_iters:
            (out / f"rank{rank}-syncs.json").write_text(json.dumps(SYNCS))
            state = {k: v.detach().clone() for k, v in trainer.raw_model.state_dict().items()}
            torch.save(state, out / f"rank{rank}.pt")

    torch.set_num_threads(1)
    result = start(cfg, log=print if rank == 0 else lambda _: None, callbacks=[dump_at_end])
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
