#!/usr/bin/env python
"""Side-by-side speed benchmarks: each row times ours and a peer in the same run.

Absolute times drift on shared machines, so every row reports a ratio (how many times better
ours is than the peer; above 1 means ours wins) against its target. In-process rows alternate
ours and the peer, repeat after repeat, and take medians, so a slow spell of the machine hits
both alike. Random weights are used throughout (the arithmetic is the same as for the real
ones); the checkpoint files are built once into a cache folder. ``--model tiny`` is a two-layer
model for a smoke test of the script itself: one repeat, no warm-up, less work, and each side's
child program run in this process rather than a new interpreter; its ratios mean nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from bench_kit import REPO_ROOT, Row, Skip, model_config
from bench_rows import ROWS, run_row


# ---------------------------------------------------------------- report
def format_table(rows: list[Row]) -> str:
    lines = [
        "| row | ours | peer | ours | peer | ratio | target | ok |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        notes, extra = r.notes, ""
        if "ours_peak_rss_over_weights" in notes:
            extra = f" (peak RSS {notes['ours_peak_rss_over_weights']}x weights)"
        elif not r.extra_ok and "identical_leading_tokens" in notes:
            extra = f" (greedy tokens agree with the peer's for only {notes['identical_leading_tokens']})"
        elif not r.extra_ok and "mfu_goal_percent" in notes:
            extra = f" (MFU {r.ours_value:.1f}% is below the {notes['mfu_goal_percent']:.0f}% goal)"
        lines.append(
            f"| {r.name} | {r.ours} | {r.peer} | {r.ours_value:.4g} {r.unit} | "
            f"{r.peer_value:.4g} {r.unit} | {r.ratio:.2f}x{extra} | >= {r.target}x | "
            f"{'yes' if r.ok else 'NO'} |"
        )
    return "\n".join(lines)


def machine_description(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{os.uname().machine} CPU, {cores} cores, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--device", default="cpu", help="cpu or cuda (default: cpu)")
    add("--model", default="gpt2", help="gpt2 ... gpt2-xl, or tiny (smoke test)")
    add("--quick", action="store_true", help="fewer repeats")
    add("--only", nargs="+", choices=sorted(ROWS), help="run only these rows")
    add("--out", default="bench.json", help="where to write the results")
    cache = REPO_ROOT / ".bench_cache"
    add("--cache", type=Path, default=cache, help="where its checkpoint files are built once")
    args = parser.parse_args(argv)
    model_config(args.model)  # a bad name fails here, before any work
    args.smoke = args.model == "tiny"  # one repeat, no warm-up, less work, children in-process
    rows, skipped = [], {}
    for key in args.only or ROWS:
        print(f"running {key} ...", file=sys.stderr, flush=True)
        try:
            rows.append(run_row(args, key))
        except Skip as why:
            skipped[key] = str(why)
            print(f"  skipped: {why}", file=sys.stderr)
        gc.collect()
    machine = machine_description(args.device)
    print(f"machine: {machine}\n{format_table(rows)}")
    report = {"machine": machine, "model": args.model, "quick": args.quick}
    report |= {"rows": [asdict(r) for r in rows], "skipped": skipped}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
