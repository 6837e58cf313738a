"""Weights & Biases logging that can never stop a training run.

W&B is a convenience, the run is the product: every call is wrapped, and the
first failure prints one warning and turns W&B off for the rest of the run.
Without a login W&B runs offline and we say how to upload afterwards.
"""

from __future__ import annotations

import contextlib
import netrc
import os
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

Log = Callable[[str], None]
MAX_SAMPLE_CHARS = 2000


def safe_text(text: str, limit: int = MAX_SAMPLE_CHARS) -> str:
    """Model output made harmless to show: no control or bidi-override characters, bounded length.

    Generated text can hold terminal escapes, stray carriage returns or
    right-to-left overrides that garble a table cell; newlines and tabs stay.
    """
    out = []
    for ch in text.replace("\r\n", "\n"):
        if ch in "\n\t":
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            out.append("\ufffd" if unicodedata.category(ch) != "Cf" else "")
        else:
            out.append(ch)
    cleaned = "".join(out)
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1] + "\u2026"
    return cleaned


def has_login() -> bool:
    """Whether W&B would find credentials (an API key in the environment or in netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return bool(host) and netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(requested: str, enabled: bool) -> str:
    """The W&B mode to use: 'disabled' unless ``--wandb``; 'auto' picks online or offline."""
    if not enabled or requested == "disabled":
        return "disabled"
    if requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("online", "offline", "disabled"):
        return env
    return "online" if has_login() else "offline"


class WandbLogger:
    """Thin, failure-proof wrapper over a W&B run; a no-op when W&B is off."""

    def __init__(
        self,
        *,
        enabled: bool,
        mode: str,
        project: str,
        name: str,
        tags: list[str],
        config: dict[str, Any],
        run_dir: Path,
        run_id: str | None = None,
        log: Log = print,
    ) -> None:
        self._log = log
        self.run: Any = None
        self.mode = resolve_mode(mode, enabled)
        self._samples: list[list[Any]] = []
        if self.mode == "disabled":
            return
        try:
            import wandb

            directory = os.environ.get("WANDB_DIR") or str(run_dir)
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=project,
                name=name,
                tags=tags or None,
                config=config,
                dir=directory,
                mode=self.mode,
                id=run_id,
                resume="allow" if run_id else None,
                settings=wandb.Settings(console="off", quiet=True),
            )
            self._wandb = wandb
        except Exception as exc:
            self._fail("could not start", exc)
            return
        if self.mode == "offline":
            log(
                "wandb: no W&B login found, logging offline to "
                f"{self.offline_dir()}; upload later with `wandb sync {self.offline_dir()}` "
                "(or `wandb login` first and pass --wandb-mode online)"
            )

    @property
    def active(self) -> bool:
        return self.run is not None

    @property
    def run_id(self) -> str | None:
        return getattr(self.run, "id", None) if self.run is not None else None

    def offline_dir(self) -> str:
        try:
            return str(Path(self.run.dir).parent)
        except Exception:
            return "the wandb folder"

    def _fail(self, what: str, exc: BaseException) -> None:
        self._log(f"wandb: {what} ({type(exc).__name__}: {exc}); continuing without W&B")
        run, self.run = self.run, None
        if run is not None:
            with contextlib.suppress(Exception):
                run.finish(exit_code=1)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log(metrics, step=step)
        except Exception as exc:
            self._fail("logging failed", exc)

    def log_sample(self, step: int, prompt: str, text: str) -> None:
        """Add a row to the samples table (logged whole each time: W&B tables are immutable)."""
        if self.run is None:
            return
        try:
            self._samples.append([step, safe_text(prompt, 200), safe_text(text)])
            table = self._wandb.Table(columns=["step", "prompt", "sample"], data=self._samples)
            self.run.log({"samples": table}, step=step)
        except Exception as exc:
            self._fail("logging a sample failed", exc)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            for key, value in values.items():
                self.run.summary[key] = value
        except Exception as exc:
            self._fail("writing the summary failed", exc)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        offline = self.mode == "offline"
        where = self.offline_dir()
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as exc:
            self._log(f"wandb: finishing the run failed ({type(exc).__name__}: {exc})")
        self.run = None
        if offline:
            self._log(f"wandb: offline run saved; upload it with `wandb sync {where}`")
