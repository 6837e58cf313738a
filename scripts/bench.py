#!/usr/bin/env python
"""Side-by-side speed benchmarks: each row times ours and a peer in the same run.

Absolute times drift on shared machines, so every row reports a ratio
(peer time / our time, higher is better) against its target. Random weights
are used throughout: the arithmetic is the same as for the real ones.

    python scripts/bench.py [--device cpu|cuda] [--model gpt2] [--quick] [--only ROW ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@dataclass
class Row:
    name: str
    ours: str
    peer: str
    unit: str
    ours_value: float
    peer_value: float
    target: float
    higher_is_better: bool = False
    notes: dict[str, float | str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """How many times better ours is than the peer (>1 means ours wins)."""
        if self.higher_is_better:
            return self.ours_value / self.peer_value
        return self.peer_value / self.ours_value

    @property
    def ok(self) -> bool:
        return self.ratio >= self.target


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1, sync=None) -> float:
    """Median wall seconds of ``fn`` after warm-up; ``sync`` flushes queued GPU work first."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_kv_cache(args: argparse.Namespace) -> Row:
    """Generation of N tokens from the prompt, with and without the KV cache (ours both)."""
    import torch

    from gpt2load.config import preset
    from gpt2load.generation import generate
    from gpt2load.model import GPT

    torch.manual_seed(0)
    model = GPT(preset(args.model)).to(args.device).eval()
    new_tokens = 50 if args.quick else 200
    idx = torch.randint(0, 50257, (1, 20), device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    repeats = 1 if args.quick else 3
    cached = median_time(
        lambda: generate(model, idx, new_tokens, temperature=0), repeats, sync=sync
    )
    uncached = median_time(
        lambda: generate(model, idx, new_tokens, temperature=0, use_cache=False),
        repeats,
        sync=sync,
    )
    return Row(
        name=f"generate {new_tokens} tokens, KV cache vs none",
        ours="generate (cache)",
        peer="generate (no cache)",
        unit="s",
        ours_value=cached,
        peer_value=uncached,
        target=3.0,
    )


ROWS: dict[str, Callable[[argparse.Namespace], Row]] = {
    "kv_cache": bench_kv_cache,
}


def format_table(rows: list[Row]) -> str:
    lines = [
        "| row | ours | peer | ours | peer | ratio | target | ok |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.ours} | {r.peer} | {r.ours_value:.4g} {r.unit} | "
            f"{r.peer_value:.4g} {r.unit} | {r.ratio:.2f}x | >= {r.target}x | "
            f"{'yes' if r.ok else 'NO'} |"
        )
    return "\n".join(lines)


def machine_description(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    import os

    return f"{platform.processor() or platform.machine()} x{os.cpu_count()} CPU, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="gpt2")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and shorter runs")
    parser.add_argument("--only", nargs="+", choices=sorted(ROWS), help="run only these rows")
    parser.add_argument("--out", default="bench.json", help="where to write the results")
    args = parser.parse_args(argv)

    rows = []
    for key in args.only or ROWS:
        print(f"running {key} ...", file=sys.stderr, flush=True)
        rows.append(ROWS[key](args))
    print(f"machine: {machine_description(args.device)}")
    print(format_table(rows))
    Path(args.out).write_text(
        json.dumps(
            {
                "machine": machine_description(args.device),
                "quick": args.quick,
                "rows": [asdict(r) | {"ratio": r.ratio, "ok": r.ok} for r in rows],
            },
            indent=2,
        )
    )
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
