"""Where a run's numbers go, behind one interface: ``metrics.jsonl``, ``samples.jsonl`` and
``loss.png`` in the run folder, a tqdm bar, and Weights & Biases (a convenience, see Wandb).

``metrics.jsonl`` (one JSON object per step) is the record a run is judged by: plain text,
appendable, readable while training runs. It and ``samples.jsonl`` are cut back to the
checkpoint's step on resume: a run stopped between saves wrote records past it, and the resumed
run writes those steps again, so without the cut they would be listed twice."""

from __future__ import annotations

import contextlib
import json
import math
import netrc
import os
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gpt2load import atomic_path, atomic_write_text

from .checkpoint import how_to_continue
from .errors import SaveError, os_reason

Log = Callable[[str], None]
METRICS_FILE, SAMPLES_FILE, PLOT_FILE = "metrics.jsonl", "samples.jsonl", "loss.png"
MAX_SAMPLE_CHARS = 2000
# A loss.png costs ~0.15 s to draw: redrawn at an evaluation only this long after the last one.
REDRAW_EVERY_S = 10.0
# fmt: off
WANDB_NAMES = {  # a record's keys -> W&B's charts
    "train_loss": "train/loss", "val_loss": "val/loss", "eval_train_loss": "train/eval_loss",
    "tokens_per_s": "perf/tokens_per_s", "mfu": "perf/mfu", "lr": "train/lr",
    "grad_norm": "train/grad_norm", "tokens_seen": "train/tokens_seen",
}
# fmt: on


class Sink:
    """What every sink is told; each ignores what it has no use for."""

    def step(self, record: dict[str, Any]) -> None: ...

    def sample(self, step: int, prompt: str, text: str) -> None: ...

    def close(self, summary: dict[str, Any]) -> None: ...


def safe_text(text: str, limit: int = MAX_SAMPLE_CHARS) -> str:
    """Model output made harmless to show: no control or bidi-override characters (a terminal
    escape or a right-to-left override garbles a table cell), bounded length."""
    out = []
    for ch in text.replace("\r\n", "\n"):
        category = unicodedata.category(ch)
        if ch not in "\n\t" and category in ("Cc", "Cf", "Cs", "Co", "Cn"):
            ch = "" if category == "Cf" else "\ufffd"
        out.append(ch)
    cleaned = "".join(out)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "\u2026"


def append_line(path: Path, line: str) -> None:
    """Append one line to a run's log file, never through a link planted at its name; a
    write the file system refuses stops the run with a one-line :class:`SaveError`."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        with os.fdopen(os.open(path, flags, 0o644), "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        what = "a symbolic link" if path.is_symlink() else os_reason(exc)
        raise SaveError(
            f"cannot write {path}: {what}. Fix that (free space, make {path.parent} writable, "
            f"move what is at that name away), then {how_to_continue(path.parent)}"
        ) from None


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a line cut short by a crash ends the good part."""
    records: list[dict[str, Any]] = []
    for line in filter(str.strip, path.read_text("utf-8").splitlines() if path.exists() else []):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


class RunFiles(Sink):
    """The run folder's files; ``loss.png`` is redrawn at evaluations and at the end."""

    def __init__(self, run_dir: Path, resume_step: int | None, log: Log) -> None:
        self.run_dir, self._log, self._drawn = run_dir, log, time.monotonic()
        self.metrics = run_dir / METRICS_FILE
        for path in (self.metrics, run_dir / SAMPLES_FILE) if resume_step is not None else ():
            if path.exists():
                kept = [r for r in read_records(path) if int(r.get("step", 0)) <= resume_step]
                atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    def step(self, record: dict[str, Any]) -> None:
        floats = {k: v for k, v in record.items() if isinstance(v, float)}
        odd = {k: str(v) for k, v in floats.items() if not math.isfinite(v)}  # JSON has no nan/inf
        append_line(self.metrics, json.dumps(record | odd))
        if "val_loss" in record and time.monotonic() - self._drawn >= REDRAW_EVERY_S:
            self.close({})

    def sample(self, step: int, prompt: str, text: str) -> None:
        record = json.dumps({"step": step, "prompt": prompt, "text": text})
        append_line(self.run_dir / SAMPLES_FILE, record)

    def close(self, summary: dict[str, Any]) -> None:
        """Draw ``loss.png``; a plot is never worth a failed run."""
        self._drawn = time.monotonic()
        try:
            fig = loss_figure(read_records(self.metrics), self.run_dir.resolve().name)
            if fig is not None:
                with atomic_path(self.run_dir / PLOT_FILE) as tmp:
                    fig.savefig(tmp, format="png")
        except Exception as exc:
            self._log(f"warning: could not draw {PLOT_FILE}: {exc}")


def loss_figure(records: list[dict[str, Any]], title: str) -> Any:
    """Train loss per step, train and val loss at each evaluation, and the learning rate on an
    axis of its own, over whole steps; None without matplotlib (an optional dependency)."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    fig = Figure(figsize=(8, 4.5), dpi=100)
    loss = fig.add_subplot()
    lr = loss.twinx()
    for axes, key, label, style in (
        (loss, "train_loss", "train (step)", {"color": "tab:blue", "alpha": 0.35}),
        (loss, "eval_train_loss", "train (eval)", {"color": "tab:blue", "marker": "o"}),
        (loss, "val_loss", "val (eval)", {"color": "tab:orange", "marker": "o"}),
        (lr, "lr", "learning rate", {"color": "tab:green", "linestyle": "--"}),
    ):
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if points:
            axes.plot(*zip(*points, strict=True), label=label, linewidth=1, markersize=3, **style)
    loss.set(title=title, xlabel="step", ylabel="loss")
    lr.set(ylabel="learning rate", ylim=(0, None))
    loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss.grid(alpha=0.3)
    if lines := loss.get_lines() + lr.get_lines():
        lr.legend(handles=lines, loc="upper right")
    fig.tight_layout()
    return fig


class ProgressBar(Sink):
    """A tqdm bar of steps with loss, lr, tokens/s and MFU, or what the run is doing now."""

    def __init__(self, total: int, initial: int, name: str, enabled: bool) -> None:
        from tqdm import tqdm

        self.enabled, self.figures = enabled, ""
        options = {"dynamic_ncols": True, "mininterval": 0.5, "unit": "step"}
        self.bar = tqdm(total=total, initial=initial, disable=not enabled, desc=name, **options)

    def status(self, text: str | None) -> None:
        """At once on the bar's line, so a long wait never looks frozen; None: the figures."""
        self.bar.set_postfix_str(self.figures if text is None else text)

    def step(self, record: dict[str, Any]) -> None:
        self.figures = f"loss {record['train_loss']:.4f}, lr {record['lr']:.2e}, "
        self.figures += f"{record['tokens_per_s']:,.0f} tok/s"
        if "mfu" in record:
            self.figures += f", MFU {100 * record['mfu']:.1f}%"
        self.bar.set_postfix_str(self.figures, refresh=False)
        self.bar.update(1)

    def close(self, summary: dict[str, Any]) -> None:
        self.bar.close()


def wandb_mode(requested: str, enabled: bool) -> str:
    """'disabled' unless ``--wandb``; 'auto' is ``$WANDB_MODE``, else online with a login (an
    API key in the environment or in netrc, where W&B finds it)."""
    if not enabled or requested != "auto":
        return requested if enabled else "disabled"
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("online", "offline", "disabled"):
        return env
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
        return "online" if host and netrc.netrc(path).authenticators(host) else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


class Wandb(Sink):
    """A W&B run that can never stop training: the first failure warns and turns it off."""

    def __init__(self, mode: str, run_dir: Path, log: Log, run_id: str | None, **init: Any):
        self._log, self.run, self.mode, self._samples = log, None, mode, []
        if mode == "disabled":
            return
        try:
            import wandb

            directory = os.environ.get("WANDB_DIR") or str(run_dir)
            Path(directory).mkdir(parents=True, exist_ok=True)
            init |= {"dir": directory, "mode": mode, "id": run_id}
            init["resume"] = "allow" if run_id else None
            self.run = wandb.init(settings=wandb.Settings(console="off", quiet=True), **init)
            self._wandb = wandb
        except Exception as exc:
            return self._fail("could not start", exc)
        folder = getattr(self.run, "dir", None)
        self.where = str(Path(folder).parent) if folder else "the wandb folder"
        if mode == "offline":
            log(
                f"wandb: no W&B login found, logging offline to {self.where}; upload later with "
                f"`wandb sync {self.where}` (or `wandb login` first and pass --wandb-mode online)"
            )

    def _fail(self, what: str, exc: BaseException) -> None:
        self._log(f"wandb: {what} ({type(exc).__name__}: {exc}); continuing without W&B")
        run, self.run = self.run, None
        if run is not None:
            with contextlib.suppress(Exception):
                run.finish(exit_code=1)

    def _call(self, what: str, action: Callable[[], Any]) -> None:
        if self.run is not None:
            try:
                action()
            except Exception as exc:
                self._fail(what, exc)

    def step(self, record: dict[str, Any]) -> None:
        metrics = {WANDB_NAMES[k]: v for k, v in record.items() if k in WANDB_NAMES}
        self._call("logging failed", lambda: self.run.log(metrics, step=record["step"]))

    def sample(self, step: int, prompt: str, text: str) -> None:
        """A row more in the samples table, logged whole (W&B tables are immutable)."""

        def log_table() -> None:
            self._samples.append([step, safe_text(prompt, 200), safe_text(text)])
            table = self._wandb.Table(columns=["step", "prompt", "sample"], data=self._samples)
            self.run.log({"samples": table}, step=step)

        self._call("logging a sample failed", log_table)

    def close(self, summary: dict[str, Any]) -> None:
        exit_code = summary.pop("exit_code", 0)
        self._call("writing the summary failed", lambda: self.run.summary.update(summary))
        self._call("finishing the run failed", lambda: self.run.finish(exit_code=exit_code))
        if self.run is not None and self.mode == "offline":
            self._log(f"wandb: offline run saved; upload it with `wandb sync {self.where}`")
        self.run = None
