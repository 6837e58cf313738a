"""``metrics.jsonl`` (one JSON object per optimizer step) and the ``loss.png`` plot.

The JSON lines file is the record a run is judged by: plain text, appendable,
and readable while training runs. On resume it is cut back to the checkpoint's
step, so steps a crashed run logged after its last save are not listed twice.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from gpt2load.fileio import atomic_path, atomic_write_text

from .errors import SaveError, os_reason

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no nan/inf; keep the fact as text
    return value


class MetricsLog:
    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS_FILE

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (those the checkpoint did not keep)."""
        if not self.path.exists():
            return
        kept = [rec for rec in self.read() if int(rec.get("step", 0)) <= step]
        atomic_write_text(self.path, "".join(json.dumps(rec) + "\n" for rec in kept))

    def append(self, record: dict[str, Any]) -> None:
        append_line(self.path, json.dumps({k: _clean(v) for k, v in record.items()}))

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError:
                        break  # a line cut short by a crash: everything before it is good
        return records


def append_line(path: Path, line: str) -> None:
    """Append one line to a run's log file, never through a link planted at its name.

    A write the file system refuses (disk full, folder made read-only, a folder put in
    the file's place) stops the run with a one-line :class:`SaveError`; the checkpoints
    already written stay as they were.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        from .checkpoint import LAST, find_checkpoint

        what = "a symbolic link" if path.is_symlink() else os_reason(exc)
        run_dir = path.parent
        then = (
            f"`finetune resume {run_dir}`"
            if find_checkpoint(run_dir, LAST) is not None
            else "start the run again"
        )
        raise SaveError(
            f"cannot write {path}: {what}. Fix that (free space, make {run_dir} writable, move "
            f"what is at that name away), then {then}"
        ) from None


def plot_losses(records: list[dict[str, Any]], path: str | os.PathLike[str]) -> Path | None:
    """Train loss per step, and train/val loss at each evaluation; ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    steps, loss = series("train_loss")
    if steps:
        ax.plot(steps, loss, color="tab:blue", alpha=0.35, linewidth=1, label="train (step)")
    for key, color, label in (
        ("eval_train_loss", "tab:blue", "train (eval)"),
        ("val_loss", "tab:orange", "val (eval)"),
    ):
        xs, ys = series(key)
        if xs:
            ax.plot(xs, ys, color=color, marker="o", markersize=3, linewidth=1.5, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
