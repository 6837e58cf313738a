#!/usr/bin/env python
"""Side-by-side speed benchmarks: each row times ours and a peer in the same run.

Absolute times drift on shared machines, so every row reports a ratio (how
many times better ours is than the peer; above 1 means ours wins) against its
target. In-process rows alternate ours and the peer, repeat after repeat, and
take medians, so a slow spell of the machine hits both alike. Random weights
are used throughout (the arithmetic is the same as for the real ones); the
checkpoint files are built once into a cache folder.

    python scripts/bench.py [--device cpu|cuda] [--model gpt2] [--quick] [--only ROW ...]

``--model tiny`` is a two-layer model for a smoke test of the script itself:
its ratios mean nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

DEFAULT_TOKENIZER_DIR = REPO_ROOT.parent / "shared" / "data" / "gpt2-tokenizer"
SHAKESPEARE_TXT = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
TOKENIZER_FILES = {"encoder.json": "vocab.json", "vocab.bpe": "merges.txt"}
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

    @property
    def ratio(self) -> float:
        """How many times better ours is than the peer (>1 means ours wins)."""
        if self.higher_is_better:
            return self.ours_value / self.peer_value
        return self.peer_value / self.ours_value

    @property
    def ok(self) -> bool:
        return self.ratio >= self.target and self.extra_ok


class Skip(Exception):
    """A row that cannot run here (say why)."""


# ---------------------------------------------------------------- timing
def _sync(device: str) -> Callable[[], None] | None:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return None


def paired_medians(
    ours: Callable[[], object],
    peer: Callable[[], object],
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``peer``, run alternately after ``warmup`` rounds each."""

    def once(fn: Callable[[], object]) -> float:
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        return time.perf_counter() - start

    for _ in range(warmup):
        once(ours)
        once(peer)
    a, b = [], []
    for i in range(repeats):
        # Alternate who goes first, so neither always runs on a cooler (or hotter) machine.
        if i % 2 == 0:
            a.append(once(ours))
            b.append(once(peer))
        else:
            b.append(once(peer))
            a.append(once(ours))
    return statistics.median(a), statistics.median(b)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    # No network for either side: both read the same local files.
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return env


def run_child(code: str, *args: str) -> str:
    """Run ``code`` in a new interpreter; its stdout (the child reports as JSON on it)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=_child_env(),
        cwd=REPO_ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def paired_process_medians(
    ours: list[str], peer: list[str], repeats: int, warmup: int = 1
) -> tuple[float, float, str, str]:
    """Wall seconds of whole commands (interpreter start to exit), alternated; plus the last
    stdout of each, so the caller can check that both did the work."""
    out = {"ours": "", "peer": ""}

    def runner(which: str, command: list[str]) -> Callable[[], None]:
        def go() -> None:
            proc = subprocess.run(
                command, capture_output=True, text=True, env=_child_env(), cwd=REPO_ROOT
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stdout}\n{proc.stderr}")
            out[which] = proc.stdout

        return go

    a, b = paired_medians(runner("ours", ours), runner("peer", peer), repeats, warmup)
    return a, b, out["ours"], out["peer"]


# ---------------------------------------------------------------- fixtures
def model_config(name: str):
    from gpt2load.config import GPTConfig, preset

    if name == "tiny":
        return GPTConfig(**TINY)
    return preset(name)


def tokenizer_dir() -> Path | None:
    for candidate in (os.environ.get("GPT2LOAD_TOKENIZER_DIR"), DEFAULT_TOKENIZER_DIR):
        if candidate and (Path(candidate) / "encoder.json").is_file():
            return Path(candidate)
    return None


def build_fixtures(cache: Path, model: str) -> Path:
    """``cache/model/{hub,openai}``: the hub's ``model.safetensors`` layout (no prefix, causal-mask
    buffers, no head) with ``config.json``, and an OpenAI TF checkpoint; both with the tokenizer
    under OpenAI's and Hugging Face's file names. Built once, into a scratch folder renamed
    into place, so an interrupted build is never mistaken for a finished one."""
    root = cache / model
    if (root / "hub" / "model.safetensors").is_file() and (
        root / "openai" / "checkpoint"
    ).is_file():
        return root
    import torch
    from safetensors.torch import save_file

    from gpt2load.formats.convert import hf_config, write_openai
    from gpt2load.formats.export import stored_state_dict
    from gpt2load.formats.layouts import HF
    from gpt2load.model import GPT

    print(f"building {model} checkpoints in {root} (once) ...", file=sys.stderr, flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{model}-", dir=cache))
    torch.manual_seed(0)
    gpt = GPT(model_config(model)).eval()
    tok = tokenizer_dir()
    tokenizer = {name: tok / name for name in TOKENIZER_FILES} if tok else {}

    hub = scratch / "hub"
    hub.mkdir()
    tensors = stored_state_dict(gpt, HF)
    context = gpt.config.context_length
    mask = torch.tril(torch.ones(context, context)).view(1, 1, context, context)
    for i in range(gpt.config.n_layer):
        tensors[f"h.{i}.attn.bias"] = mask.clone()
    save_file(tensors, str(hub / "model.safetensors"), metadata={"format": "pt"})
    (hub / "config.json").write_text(json.dumps(hf_config(gpt), indent=2))
    for openai_name, hf_name in TOKENIZER_FILES.items():
        if tok:
            shutil.copyfile(tok / openai_name, hub / openai_name)
            shutil.copyfile(tok / openai_name, hub / hf_name)
    write_openai(gpt, scratch / "openai", tokenizer)
    if root.exists():
        shutil.rmtree(root)
    scratch.rename(root)
    return root


# ---------------------------------------------------------------- rows: loading
_RSS_HELPERS = """
import gc, json, sys, time
def _status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0
def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
"""


def _load_child(import_line: str, load_call: str) -> str:
    return (
        _RSS_HELPERS
        + import_line
        + f"""
path, repeats = sys.argv[1], int(sys.argv[2])
gc.collect()
baseline = _status("VmRSS")
_reset_peak()
start = time.perf_counter()
model = {load_call}
first = time.perf_counter() - start
peak = _status("VmHWM") - baseline
del model
gc.collect()
times = []
for _ in range(repeats):
    start = time.perf_counter()
    model = {load_call}
    times.append(time.perf_counter() - start)
    del model
    gc.collect()
print(json.dumps({{"first": first, "times": times, "peak_above_baseline": peak}}))
"""
    )


def bench_load_safetensors(args: argparse.Namespace) -> Row:
    """Loading the hub's model.safetensors: a warm load's wall time and the first load's peak
    RSS above the process's baseline, each side in its own process."""
    folder = build_fixtures(args.cache, args.model) / "hub"
    repeats = 3 if args.quick else 7
    ours_code = _load_child("import torch, gpt2load", "gpt2load.load(path)")
    peer_code = _load_child(
        "import torch\nfrom transformers import GPT2LMHeadModel",
        "GPT2LMHeadModel.from_pretrained(path)",
    )
    ours = json.loads(run_child(ours_code, str(folder), str(repeats)))
    peer = json.loads(run_child(peer_code, str(folder), str(repeats)))
    import torch

    from gpt2load.model import GPT

    with torch.device("meta"):
        weight_bytes = 4 * GPT(model_config(args.model)).num_parameters()
    rss_ratio = ours["peak_above_baseline"] / weight_bytes
    return Row(
        key="load_safetensors",
        name=f"load {args.model} from the hub's model.safetensors",
        ours="gpt2load.load",
        peer="GPT2LMHeadModel.from_pretrained",
        unit="s",
        ours_value=statistics.median(ours["times"]),
        peer_value=statistics.median(peer["times"]),
        target=1.2,
        extra_ok=rss_ratio <= 1.3,
        notes={
            "ours_peak_rss_over_weights": round(rss_ratio, 3),
            "peer_peak_rss_over_weights": round(peer["peak_above_baseline"] / weight_bytes, 3),
            "peak_rss_target": "<= 1.3x the fp32 weight bytes above baseline",
            "ours_first_load_s": round(ours["first"], 3),
            "peer_first_load_s": round(peer["first"], 3),
        },
    )


# The book's way (LLMs-from-scratch, ch. 5): TensorFlow reads each variable, numpy squeezes
# and splits it, and every tensor is assigned into the model as a new parameter.
_BOOK_TF_LOAD = """
import json, os, sys
import numpy as np
import tensorflow as tf
import torch
from gpt2load.config import GPTConfig
from gpt2load.model import GPT

folder = sys.argv[1]
ckpt = tf.train.latest_checkpoint(folder)
hparams = json.load(open(os.path.join(folder, "hparams.json")))
params = {"blocks": [{} for _ in range(hparams["n_layer"])]}
for name, _ in tf.train.list_variables(ckpt):
    array = np.squeeze(tf.train.load_variable(ckpt, name))
    parts = name.split("/")[1:]
    target = params
    if parts[0].startswith("h"):
        target = params["blocks"][int(parts[0][1:])]
    for key in parts[1:-1]:
        target = target.setdefault(key, {})
    target[parts[-1]] = array

config = GPTConfig(n_layer=hparams["n_layer"], n_head=hparams["n_head"], n_embd=hparams["n_embd"],
                   context_length=hparams["n_ctx"], vocab_size=hparams["n_vocab"])
model = GPT(config)

def put(param, array):
    assert param.shape == array.shape, (param.shape, array.shape)
    return torch.nn.Parameter(torch.tensor(array))

model.pos_emb.weight = put(model.pos_emb.weight, params["wpe"])
model.tok_emb.weight = put(model.tok_emb.weight, params["wte"])
for b, block in enumerate(model.trf_blocks):
    p = params["blocks"][b]
    q, k, v = np.split(p["attn"]["c_attn"]["w"], 3, axis=-1)
    block.att.W_query.weight = put(block.att.W_query.weight, q.T)
    block.att.W_key.weight = put(block.att.W_key.weight, k.T)
    block.att.W_value.weight = put(block.att.W_value.weight, v.T)
    qb, kb, vb = np.split(p["attn"]["c_attn"]["b"], 3, axis=-1)
    block.att.W_query.bias = put(block.att.W_query.bias, qb)
    block.att.W_key.bias = put(block.att.W_key.bias, kb)
    block.att.W_value.bias = put(block.att.W_value.bias, vb)
    block.att.out_proj.weight = put(block.att.out_proj.weight, p["attn"]["c_proj"]["w"].T)
    block.att.out_proj.bias = put(block.att.out_proj.bias, p["attn"]["c_proj"]["b"])
    block.ff.layers[0].weight = put(block.ff.layers[0].weight, p["mlp"]["c_fc"]["w"].T)
    block.ff.layers[0].bias = put(block.ff.layers[0].bias, p["mlp"]["c_fc"]["b"])
    block.ff.layers[2].weight = put(block.ff.layers[2].weight, p["mlp"]["c_proj"]["w"].T)
    block.ff.layers[2].bias = put(block.ff.layers[2].bias, p["mlp"]["c_proj"]["b"])
    block.norm1.scale = put(block.norm1.scale, p["ln_1"]["g"])
    block.norm1.shift = put(block.norm1.shift, p["ln_1"]["b"])
    block.norm2.scale = put(block.norm2.scale, p["ln_2"]["g"])
    block.norm2.shift = put(block.norm2.shift, p["ln_2"]["b"])
model.final_norm.scale = put(model.final_norm.scale, params["g"])
model.final_norm.shift = put(model.final_norm.shift, params["b"])
model.out_head.weight = model.tok_emb.weight
print(float(model.tok_emb.weight[0, 0]))
"""

_OURS_TF_LOAD = """
import sys
import gpt2load
model = gpt2load.load(sys.argv[1])
print(float(model.tok_emb.weight[0, 0]))
"""


def bench_load_tf(args: argparse.Namespace) -> Row:
    """A new process that loads the OpenAI TF checkpoint, imports included."""
    folder = str(build_fixtures(args.cache, args.model) / "openai")
    repeats = 1 if args.quick else 3
    ours_s, peer_s, ours_out, peer_out = paired_process_medians(
        [sys.executable, "-c", _OURS_TF_LOAD, folder],
        [sys.executable, "-c", _BOOK_TF_LOAD, folder],
        repeats,
    )
    if ours_out.strip() != peer_out.strip():
        raise RuntimeError(f"the two loads disagree: {ours_out!r} vs {peer_out!r}")
    return Row(
        key="load_tf",
        name=f"load {args.model} from the OpenAI TF checkpoint, new process, imports included",
        ours="gpt2load.load (no TensorFlow)",
        peer="book: tf.train.load_variable per variable",
        unit="s",
        ours_value=ours_s,
        peer_value=peer_s,
        target=3.0,
    )


_PIPELINE_FIRST_TOKEN = """
import sys
from transformers import pipeline
generator = pipeline("text-generation", model=sys.argv[1], device=sys.argv[3])
out = generator(sys.argv[2], max_new_tokens=1, do_sample=False)
print(out[0]["generated_text"])
"""


def bench_cold_start(args: argparse.Namespace) -> Row:
    """From an empty process to the first generated token printed, on the same local files."""
    fixtures = build_fixtures(args.cache, args.model)
    if tokenizer_dir() is None:
        raise Skip("needs the GPT-2 tokenizer files (GPT2LOAD_TOKENIZER_DIR or ../shared/data)")
    folder = str(fixtures / "hub")
    prompt = "Every effort moves"
    repeats = 1 if args.quick else 5
    ours_cmd = [sys.executable, "-m", "gpt2load", "generate", folder, "--prompt", prompt]
    ours_cmd += ["--max-new-tokens", "1", "--temperature", "0", "--device", args.device]
    peer_cmd = [sys.executable, "-c", _PIPELINE_FIRST_TOKEN, folder, prompt, args.device]
    ours_s, peer_s, ours_out, peer_out = paired_process_medians(ours_cmd, peer_cmd, repeats)
    if ours_out.strip() != peer_out.strip():
        raise RuntimeError(f"the first tokens differ: {ours_out!r} vs {peer_out!r}")
    return Row(
        key="cold_start",
        name=f"cold start: new process to the first token of {args.model}",
        ours="gpt2load generate --max-new-tokens 1",
        peer='transformers.pipeline("text-generation")',
        unit="s",
        ours_value=ours_s,
        peer_value=peer_s,
        target=1.5,
    )


# ---------------------------------------------------------------- rows: compute
def _hf_model(folder: Path, device: str, dropout: float = 0.0):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(
        folder, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout
    ).to(device)


def _train_step_pair(
    args: argparse.Namespace, batch: int, block: int, compiled: bool
) -> tuple[float, float, Any, Any]:
    """Median seconds of one optimizer step (AdamW, grad clip) for finetune's
    ``Trainer.train_step`` and for the same step on ``GPT2LMHeadModel`` (fused AdamW, as the
    HF Trainer's default), both under ``torch.compile`` when ``compiled``; fp32 on the CPU,
    bf16 autocast on GPUs that have it. Returns (ours_s, peer_s, dtype, device info)."""
    import numpy as np
    import torch

    from finetune.config import TrainConfig
    from finetune.data import open_prepared
    from finetune.device import resolve_dtype, select_device
    from finetune.modelinit import init_model
    from finetune.train import Trainer

    fixtures = build_fixtures(args.cache, args.model)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        rng = np.random.default_rng(0)
        for split, n in (("train", 200_000), ("val", 20_000)):
            rng.integers(0, 50257, n, dtype=np.uint16).tofile(data_dir / f"{split}.bin")
        (data_dir / "meta.json").write_text(
            json.dumps({"train_tokens": 200_000, "val_tokens": 20_000, "max_token_id": 50256})
        )
        cpu = not args.device.startswith("cuda")
        cfg = TrainConfig(
            out=str(Path(tmp) / "run"),
            init=str(fixtures / "hub"),
            data=[str(data_dir)],
            batch_size=batch,
            block_size=block,
            dropout=0.0,
            force_cpu=cpu,
            device=args.device,
            compile=compiled,
            progress=False,
            sample_interval=0,
            wandb=False,
        )
        info = select_device(args.device, cpu)
        amp = resolve_dtype(cfg.dtype, info)
        ours = init_model(cfg, log=print_none)  # as finetune loads it (contiguous fp32 copies)
        trainer = Trainer(cfg, ours, open_prepared(data_dir), info, log=lambda _: None)

        peer = _hf_model(fixtures / "hub", args.device).train()
        decay = [p for n, p in peer.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in peer.named_parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
            lr=6e-5,
            betas=(0.9, 0.95),
            fused=True,
        )
        forward = torch.compile(peer) if compiled else peer
        x = torch.from_numpy(
            np.fromfile(data_dir / "train.bin", dtype=np.uint16)[: batch * block].astype(np.int64)
        ).view(batch, block)
        x = x.to(args.device)

        def peer_step() -> None:
            with torch.autocast(device_type=info.type, dtype=amp, enabled=amp is not torch.float32):
                loss = forward(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(peer.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        repeats = 3 if args.quick else 9
        warmup = 3 if compiled else 2  # compilation happens in the first calls
        ours_s, peer_s = paired_medians(
            trainer.train_step, peer_step, repeats, warmup=warmup, sync=_sync(args.device)
        )
    return ours_s, peer_s, amp, info


def bench_train_step(args: argparse.Namespace) -> Row:
    """One optimizer step at batch 4 x 256 with AdamW (see :func:`_train_step_pair`)."""
    batch, block = 4, 256
    ours_s, peer_s, amp, _ = _train_step_pair(args, batch, block, compiled=False)
    tokens = batch * block
    return Row(
        key="train_step",
        name=f"training step, {args.model}, batch {batch} x {block}, AdamW, "
        f"{str(amp).removeprefix('torch.')}",
        ours="finetune Trainer.train_step",
        peer="GPT2LMHeadModel + fused AdamW",
        unit="tok/s",
        ours_value=tokens / ours_s,
        peer_value=tokens / peer_s,
        target=1.1,
        higher_is_better=True,
    )


MFU_GOAL = 0.45  # of the GPU's dense bf16 peak, for 124M at context 1024 (nanoGPT: about a third)


def bench_train_mfu(args: argparse.Namespace) -> Row:
    """Model FLOPs utilisation of training on a GPU: bf16 autocast and ``torch.compile``, batch
    12 x 1024 (nanoGPT's), both sides compiled. The ratio compares with transformers; the row
    also needs ours at or above :data:`MFU_GOAL` of the GPU's peak."""
    if not args.device.startswith("cuda"):
        raise Skip("MFU is a GPU figure (bf16 peak FLOP/s): run with --device cuda")
    from finetune.device import flops_per_token

    batch, block = 12, 1024
    ours_s, peer_s, amp, info = _train_step_pair(args, batch, block, compiled=True)
    if info.peak_flops is None:
        raise Skip(f"the bf16 peak of {info.name} is not in finetune.device's table")
    flops_per_step = flops_per_token(model_config(args.model), block) * batch * block
    ours_mfu = flops_per_step / ours_s / info.peak_flops
    peer_mfu = flops_per_step / peer_s / info.peak_flops
    return Row(
        key="train_mfu",
        name=f"training MFU, {args.model}, batch {batch} x {block}, "
        f"{str(amp).removeprefix('torch.')}, torch.compile, {info.name}",
        ours="finetune Trainer.train_step --compile",
        peer="GPT2LMHeadModel compiled + fused AdamW",
        unit="% MFU",
        ours_value=100 * ours_mfu,
        peer_value=100 * peer_mfu,
        target=1.0,
        higher_is_better=True,
        notes={"mfu_goal_percent": 100 * MFU_GOAL},
        extra_ok=ours_mfu >= MFU_GOAL,
    )


AGREE_TOKENS = 64  # leading greedy tokens the generate row's two sides must share


def bench_generate(args: argparse.Namespace) -> Row:
    """Greedy decoding of 256 new tokens from a 20-token prompt, batch 1, both with a KV cache."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # a training row may have turned it on
    from transformers import GenerationConfig

    from gpt2load.generation import generate
    from gpt2load.loading import load

    fixtures = build_fixtures(args.cache, args.model)
    ours = load(fixtures / "hub", device=args.device)
    peer = _hf_model(fixtures / "hub", args.device).eval()
    new = 256
    torch.manual_seed(0)
    idx = torch.randint(0, 50257, (1, 20), device=args.device)
    # No end-of-text stop: every run produces exactly `new` tokens on both sides.
    config = GenerationConfig(
        max_new_tokens=new, do_sample=False, use_cache=True, eos_token_id=None, pad_token_id=0
    )
    results = {}

    def ours_run() -> None:
        results["ours"] = generate(ours, idx, new, temperature=0)

    def peer_run() -> None:
        with torch.inference_mode():
            results["peer"] = peer.generate(
                idx, attention_mask=torch.ones_like(idx), generation_config=config
            )

    repeats = 1 if args.quick else 5
    ours_s, peer_s = paired_medians(ours_run, peer_run, repeats, sync=_sync(args.device))
    agree = int((results["ours"] == results["peer"]).all(dim=0).cumprod(0).sum()) - idx.size(1)
    return Row(
        key="generate",
        name=f"generate {new} tokens greedy, {args.model}, batch 1, 20-token prompt",
        ours="gpt2load.generate (KV cache)",
        peer="GPT2LMHeadModel.generate (cache on)",
        unit="tok/s",
        ours_value=new / ours_s,
        peer_value=new / peer_s,
        target=1.2,
        higher_is_better=True,
        notes={"identical_leading_tokens": agree},
        # Both sides must decode the same greedy tokens, or one of them is wrong. Random
        # weights give nearly flat logits, where float rounding may flip a late near-tie;
        # the first AGREE_TOKENS must match all the same.
        extra_ok=agree >= min(new, AGREE_TOKENS),
    )


def bench_kv_cache(args: argparse.Namespace) -> Row:
    """Generation of N tokens from the prompt, with and without the KV cache (ours both)."""
    import torch

    from gpt2load.generation import generate
    from gpt2load.model import GPT

    torch.manual_seed(0)
    model = GPT(model_config(args.model)).to(args.device).eval()
    new_tokens = 200  # the length the model issue measures
    idx = torch.randint(0, 50257, (1, 20), device=args.device)
    cached, uncached = paired_medians(
        lambda: generate(model, idx, new_tokens, temperature=0),
        lambda: generate(model, idx, new_tokens, temperature=0, use_cache=False),
        1 if args.quick else 3,
        sync=_sync(args.device),
    )
    return Row(
        key="kv_cache",
        name=f"generate {new_tokens} tokens, KV cache vs none",
        ours="generate (cache)",
        peer="generate (no cache)",
        unit="s",
        ours_value=cached,
        peer_value=uncached,
        target=3.0,
    )


def bench_prepare(args: argparse.Namespace) -> Row:
    """Tokenize Tiny Shakespeare and write train/val bins: ``finetune prepare shakespeare``
    against one thread of ``encode_ordinary`` and a numpy write."""
    import numpy as np

    from finetune.data import prepare_shakespeare
    from gpt2load.tokenizer import get_tokenizer

    tok = tokenizer_dir()
    if tok is None or not SHAKESPEARE_TXT.is_file():
        raise Skip("needs ../shared/data (the tokenizer files and Tiny Shakespeare)")
    encoding = get_tokenizer(tok)
    with tempfile.TemporaryDirectory() as tmp:
        ours_dir, peer_dir = Path(tmp) / "ours", Path(tmp) / "peer"
        peer_dir.mkdir()

        def ours() -> None:
            prepare_shakespeare(
                ours_dir, input_path=SHAKESPEARE_TXT, encoding=encoding, force=True, log=print_none
            )

        def peer() -> None:
            text = SHAKESPEARE_TXT.read_text(encoding="utf-8")
            cut = int(len(text) * 0.9)
            for split, part in (("train", text[:cut]), ("val", text[cut:])):
                ids = np.array(encoding.encode_ordinary(part), dtype=np.uint16)
                ids.tofile(peer_dir / f"{split}.bin")

        repeats = 3 if args.quick else 9
        ours_s, peer_s = paired_medians(ours, peer, repeats)
        for split in ("train", "val"):
            mine = np.fromfile(ours_dir / "shakespeare" / f"{split}.bin", dtype=np.uint16)
            theirs = np.fromfile(peer_dir / f"{split}.bin", dtype=np.uint16)
            if not np.array_equal(mine, theirs):
                raise RuntimeError(f"{split}.bin differs from the one-thread reference")
    return Row(
        key="prepare",
        name="Shakespeare preparation (tokenize + write bins)",
        ours="finetune prepare shakespeare",
        peer="one-thread encode_ordinary + numpy",
        unit="s",
        ours_value=ours_s,
        peer_value=peer_s,
        target=1.5,
    )


def print_none(_: str) -> None:
    pass


ROWS: dict[str, Callable[[argparse.Namespace], Row]] = {
    "load_safetensors": bench_load_safetensors,
    "load_tf": bench_load_tf,
    "cold_start": bench_cold_start,
    "train_step": bench_train_step,
    "train_mfu": bench_train_mfu,
    "generate": bench_generate,
    "prepare": bench_prepare,
    "kv_cache": bench_kv_cache,
}


# ---------------------------------------------------------------- report
def format_table(rows: list[Row]) -> str:
    lines = [
        "| row | ours | peer | ours | peer | ratio | target | ok |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        extra = ""
        if "ours_peak_rss_over_weights" in r.notes:
            extra = f" (peak RSS {r.notes['ours_peak_rss_over_weights']}x weights)"
        if not r.extra_ok and "identical_leading_tokens" in r.notes:
            extra = f" (greedy tokens agree with the peer's for only {r.notes['identical_leading_tokens']})"
        if not r.extra_ok and "mfu_goal_percent" in r.notes:
            extra = (
                f" (MFU {r.ours_value:.1f}% is below the {r.notes['mfu_goal_percent']:.0f}% goal)"
            )
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
    return f"{platform.machine()} CPU, {cores} cores, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--model", default="gpt2", help="gpt2 ... gpt2-xl, or tiny (smoke test)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--only", nargs="+", choices=sorted(ROWS), help="run only these rows")
    parser.add_argument("--out", default="bench.json", help="where to write the results")
    parser.add_argument(
        "--cache",
        type=Path,
        default=REPO_ROOT / ".bench_cache",
        help="where the benchmark's own checkpoint files are built once",
    )
    args = parser.parse_args(argv)
    model_config(args.model)  # a bad name fails here, before any work

    rows: list[Row] = []
    skipped: dict[str, str] = {}
    for key in args.only or ROWS:
        print(f"running {key} ...", file=sys.stderr, flush=True)
        try:
            rows.append(ROWS[key](args))
        except Skip as why:
            skipped[key] = str(why)
            print(f"  skipped: {why}", file=sys.stderr)
        gc.collect()
    machine = machine_description(args.device)
    print(f"machine: {machine}")
    print(format_table(rows))
    Path(args.out).write_text(
        json.dumps(
            {
                "machine": machine,
                "model": args.model,
                "quick": args.quick,
                "rows": [asdict(r) | {"ratio": r.ratio, "ok": r.ok} for r in rows],
                "skipped": skipped,
            },
            indent=2,
        )
        + "\n"
    )
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
