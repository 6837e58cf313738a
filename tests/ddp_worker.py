"""One rank of a test's torchrun launch: train from a JSON config, then dump this rank's weights.

The finetune CLI writes checkpoints from rank 0 only, so the weights the other
rank holds can only be seen from inside the process; this worker saves them as
``OUT/rank{N}.pt`` after the last step for the test to compare.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from finetune.config import TrainConfig
from finetune.launch import start


def main() -> int:
    cfg = TrainConfig(**json.loads(Path(sys.argv[1]).read_text()))
    out = Path(sys.argv[2])
    rank = int(os.environ["RANK"])

    def dump_at_end(trainer, record) -> None:  # noqa: ANN001 - a finetune Callback
        if record["step"] == cfg.max_iters:
            state = {k: v.detach().clone() for k, v in trainer.raw_model.state_dict().items()}
            torch.save(state, out / f"rank{rank}.pt")

    torch.set_num_threads(1)
    result = start(cfg, log=print if rank == 0 else lambda _: None, callbacks=[dump_at_end])
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
