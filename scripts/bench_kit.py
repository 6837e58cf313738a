"""What every benchmark row uses: the row record, the two timing helpers (in-process and
whole-process) and the checkpoint files both sides read."""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

DEFAULT_TOKENIZER_DIR = REPO_ROOT.parent / "shared" / "data" / "gpt2-tokenizer"
SHAKESPEARE_TXT = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 64}


@dataclass
class Row:
    key: str
    name: str
    ours: str
    peer: str
    unit: str
    ours_value: float
    peer_value: float
    target: float
    higher_is_better: bool = False
    notes: dict[str, float | str] = field(default_factory=dict)
    extra_ok: bool = True  # a second condition of the row (e.g. peak memory)
    ratio: float = field(init=False)  # how many times better ours is (>1 means ours wins)
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        values = (self.ours_value, self.peer_value)
        self.ratio = values[0] / values[1] if self.higher_is_better else values[1] / values[0]
        self.ok = self.ratio >= self.target and self.extra_ok


class Skip(Exception):
    """A row that cannot run here (say why)."""


def quiet(_: str) -> None:
    """A log that drops every line."""


# ---------------------------------------------------------------- timing
def paired(args, ours: Callable, peer: Callable, repeats: int, warmup=1, sync=True) -> tuple:
    """Median seconds of ``ours`` and ``peer``, run alternately after ``warmup`` rounds each
    (none in the smoke test); on a GPU, ``sync`` waits for its work before each clock read."""
    import torch

    sync_fn = torch.cuda.synchronize if sync and args.device.startswith("cuda") else lambda: None

    def once(fn: Callable) -> float:
        sync_fn()
        start = time.perf_counter()
        fn()
        sync_fn()
        return time.perf_counter() - start

    for fn in (ours, peer) * (0 if args.smoke else warmup):
        once(fn)
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(repeats):
        # Alternate who goes first, so neither always runs on a cooler (or hotter) machine.
        for side in (0, 1) if i % 2 == 0 else (1, 0):
            times[side].append(once((ours, peer)[side]))
    return statistics.median(times[0]), statistics.median(times[1])


def spawn(args, *command: str) -> str:
    """Run ``python -c CODE ...`` or ``python -m MODULE ...`` (the repository importable, no
    network for either side); its stdout. In the smoke test the same code runs in this process
    instead, which spares a new interpreter's imports each time."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not args.smoke:
        proc = subprocess.run(
            [sys.executable, *command], capture_output=True, text=True, env=env, cwd=REPO_ROOT
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout
    os.environ.update(env)
    argv, sys.argv = sys.argv, list(command[1:])
    try:  # a nonzero exit leaves the output short, which the caller's comparison catches
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
            if command[0] == "-c":
                exec(command[1], {"__name__": "__main__"})
            else:
                runpy.run_module(command[1], run_name="__main__")
    finally:
        sys.argv = argv
    return out.getvalue()


def processes(args, ours: tuple, peer: tuple, repeats: int, differ: str) -> tuple:
    """Wall seconds of two whole Python commands (interpreter start to exit), alternated; both
    must print the same, or they did not do the same work (``differ`` says what differs)."""
    out: tuple[list[str], list[str]] = ([], [])

    def runner(side: int) -> Callable[[], None]:
        return lambda: out[side].append(spawn(args, *(ours, peer)[side]))

    ours_s, peer_s = paired(args, runner(0), runner(1), repeats, sync=False)
    if out[0][-1].strip() != out[1][-1].strip():
        raise RuntimeError(f"{differ}: {out[0][-1]!r} vs {out[1][-1]!r}")
    return ours_s, peer_s, {}


# ---------------------------------------------------------------- fixtures
def model_config(name: str):
    from gpt2load.config import GPTConfig, preset

    return GPTConfig(**TINY) if name == "tiny" else preset(name)


def tokenizer_dir() -> Path | None:
    dirs = (os.environ.get("GPT2LOAD_TOKENIZER_DIR"), DEFAULT_TOKENIZER_DIR)
    return next((Path(d) for d in dirs if d and (Path(d) / "encoder.json").is_file()), None)


def fixture(args, kind: str) -> Path:
    """``cache/model/hub`` (the hub's model.safetensors layout: no prefix, causal-mask buffers,
    no head) or ``cache/model/openai`` (a TF checkpoint), the same weights and tokenizer; built
    once into a scratch folder renamed into place, so a half-built one is never taken as built."""
    folder = args.cache / args.model / kind
    if folder.is_dir():
        return folder
    import torch
    from safetensors.torch import save_file

    from gpt2load.formats.convert import hf_config, write_openai
    from gpt2load.formats.export import stored_state_dict
    from gpt2load.formats.layouts import HF
    from gpt2load.model import GPT
    from gpt2load.tokenizer import HF_NAMES

    print(f"building {folder} (once) ...", file=sys.stderr, flush=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=folder.parent))
    torch.manual_seed(0)
    gpt = GPT(model_config(args.model)).eval()
    tok = tokenizer_dir()
    if kind == "openai":
        write_openai(gpt, scratch, {name: tok / name for name in HF_NAMES} if tok else {})
    else:
        tensors = stored_state_dict(gpt, HF)
        n = gpt.config.context_length
        mask = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        tensors.update({f"h.{i}.attn.bias": mask.clone() for i in range(gpt.config.n_layer)})
        save_file(tensors, str(scratch / "model.safetensors"), metadata={"format": "pt"})
        (scratch / "config.json").write_text(json.dumps(hf_config(gpt), indent=2))
        for name, hf_name in HF_NAMES.items() if tok else ():
            shutil.copyfile(tok / name, scratch / name)
            shutil.copyfile(tok / name, scratch / hf_name)
    scratch.rename(folder)
    return folder


def hf_model(folder: Path, device: str):
    from transformers import GPT2LMHeadModel

    no_dropout = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    return GPT2LMHeadModel.from_pretrained(folder, **no_dropout).to(device)
