"""The benchmark's rows: what each one times on our side and on the peer's, and the table of
their names, targets and repeats."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from functools import partial
from pathlib import Path

import bench_kit as kit

MFU_GOAL = 0.45  # of the GPU's dense bf16 peak, for 124M at context 1024 (nanoGPT: about a third)
AGREE_TOKENS = 64  # leading greedy tokens the generate row's two sides must share

# ---------------------------------------------------------------- rows: loading
# A child that loads a checkpoint 1 + argv[2] times and prints [seconds of each load, the first
# load's peak RSS above the process's baseline].
_LOAD_CHILD = """
import contextlib, gc, json, sys, time, torch
{imports}
def status(field):
    lines = open("/proc/self/status").read().splitlines()
    return next((int(l.split()[1]) * 1024 for l in lines if l.startswith(field + ":")), 0)
path, times = sys.argv[1], []
for i in range(1 + int(sys.argv[2])):
    gc.collect()
    if i == 0:
        baseline = status("VmRSS")
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak (VmHWM) to the current RSS
    start = time.perf_counter()
    model = {load}
    times.append(time.perf_counter() - start)
    if i == 0:
        peak = status("VmHWM") - baseline
    del model
print(json.dumps([times, peak]))
"""
_LOADERS = [  # ours, then the peer's
    _LOAD_CHILD.format(imports=imports, load=load)
    for imports, load in (
        ("import gpt2load", "gpt2load.load(path)"),
        ("from transformers import GPT2LMHeadModel", "GPT2LMHeadModel.from_pretrained(path)"),
    )
]


def load_safetensors(args, n: int) -> tuple:
    """A warm load's wall time and the first load's peak RSS above the process's baseline, each
    side in its own process."""
    from gpt2load.formats.plan import empty_model

    folder = str(kit.fixture(args, "hub"))
    (ours, ours_peak), (peer, peer_peak) = (
        json.loads(kit.spawn(args, "-c", code, folder, str(n))) for code in _LOADERS
    )
    weight_bytes = 4 * empty_model(kit.model_config(args.model)).num_parameters()
    notes = {
        "ours_peak_rss_over_weights": round(ours_peak / weight_bytes, 3),
        "peer_peak_rss_over_weights": round(peer_peak / weight_bytes, 3),
        "peak_rss_target": "<= 1.3x the fp32 weight bytes above baseline",
        "ours_first_load_s": round(ours[0], 3),
        "peer_first_load_s": round(peer[0], 3),
    }
    ours_s, peer_s = statistics.median(ours[1:]), statistics.median(peer[1:])
    return ours_s, peer_s, {"notes": notes, "extra_ok": ours_peak / weight_bytes <= 1.3}


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

def assign(module, names, arrays):
    for name, array in zip(names, arrays):
        param = getattr(module, name)
        assert param.shape == array.shape, (param.shape, array.shape)
        setattr(module, name, torch.nn.Parameter(torch.tensor(array)))

assign(model.pos_emb, ["weight"], [params["wpe"]])
assign(model.tok_emb, ["weight"], [params["wte"]])
for block, p in zip(model.trf_blocks, params["blocks"]):
    att, mlp = p["attn"], p["mlp"]
    qkv = zip(np.split(att["c_attn"]["w"], 3, axis=-1), np.split(att["c_attn"]["b"], 3, axis=-1))
    for linear, (w, b) in zip([block.att.W_query, block.att.W_key, block.att.W_value], qkv):
        assign(linear, ["weight", "bias"], [w.T, b])
    for linear, tf_layer in [(block.att.out_proj, att["c_proj"]), (block.ff.layers[0], mlp["c_fc"]),
                             (block.ff.layers[2], mlp["c_proj"])]:
        assign(linear, ["weight", "bias"], [tf_layer["w"].T, tf_layer["b"]])
    for norm, ln in [(block.norm1, p["ln_1"]), (block.norm2, p["ln_2"])]:
        assign(norm, ["scale", "shift"], [ln["g"], ln["b"]])
assign(model.final_norm, ["scale", "shift"], [params["g"], params["b"]])
model.out_head.weight = model.tok_emb.weight
print(float(model.tok_emb.weight[0, 0]))
"""
_OURS_TF_LOAD = (
    "import sys, gpt2load\nprint(float(gpt2load.load(sys.argv[1]).tok_emb.weight[0, 0]))"
)


def load_tf(args, n: int) -> tuple:
    """A new process that loads the OpenAI TF checkpoint, imports included."""
    folder = str(kit.fixture(args, "openai"))
    ours, peer = ("-c", _OURS_TF_LOAD, folder), ("-c", _BOOK_TF_LOAD, folder)
    return kit.processes(args, ours, peer, n, "the two loads disagree")


_PIPELINE_FIRST_TOKEN = """
import sys
from transformers import pipeline
generator = pipeline("text-generation", model=sys.argv[1], device=sys.argv[3])
out = generator(sys.argv[2], max_new_tokens=1, do_sample=False)
print(out[0]["generated_text"])
"""


def cold_start(args, n: int) -> tuple:
    """From an empty process to the first generated token printed, on the same local files."""
    folder = str(kit.fixture(args, "hub"))
    if kit.tokenizer_dir() is None:
        raise kit.Skip("needs the GPT-2 tokenizer files (GPT2LOAD_TOKENIZER_DIR or ../shared/data)")
    prompt = "Every effort moves"
    ours = ("-m", "gpt2load", "generate", folder, "--prompt", prompt, "--max-new-tokens", "1")
    ours += ("--temperature", "0", "--device", args.device)
    peer = ("-c", _PIPELINE_FIRST_TOKEN, folder, prompt, args.device)
    return kit.processes(args, ours, peer, n, "the first tokens differ")


# ---------------------------------------------------------------- rows: compute
def train(args, n: int, mfu: bool) -> tuple:
    """One optimizer step (AdamW, grad clip) of finetune's ``Trainer.train_step`` and of
    ``GPT2LMHeadModel`` (fused AdamW, the HF Trainer's default); fp32 on the CPU, bf16 autocast
    on GPUs that have it. ``train_step``: batch 4 x 256 (2 x 64 in the smoke test), tokens per
    second. ``train_mfu``, GPU only: batch 12 x 1024 (nanoGPT's), both compiled, as model FLOPs
    utilisation, ours at least :data:`MFU_GOAL` of the GPU's peak."""
    if mfu and not args.device.startswith("cuda"):
        raise kit.Skip("MFU is a GPU figure (bf16 peak FLOP/s): run with --device cuda")
    import numpy as np
    import torch

    from finetune.config import TrainConfig
    from finetune.data import open_prepared
    from finetune.device import flops_per_token, select_device
    from finetune.modelinit import init_model
    from finetune.plan import single_process_plan
    from finetune.trainer import Trainer

    hub, cpu = kit.fixture(args, "hub"), not args.device.startswith("cuda")
    batch, block = (12, 1024) if mfu else (2, 64) if args.smoke else (4, 256)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        rng = np.random.default_rng(0)
        for split, size in (("train", 200_000), ("val", 20_000)):
            rng.integers(0, 50257, size, dtype=np.uint16).tofile(data / f"{split}.bin")
        meta = {"train_tokens": 200_000, "val_tokens": 20_000, "max_token_id": 50256}
        (data / "meta.json").write_text(json.dumps(meta))
        run = {"out": str(Path(tmp) / "run"), "init": str(hub), "data": [str(data)], "dropout": 0}
        run |= {"batch_size": batch, "block_size": block, "force_cpu": cpu, "device": args.device}
        cfg = TrainConfig(**run, compile=mfu, progress=False, sample_interval=0, wandb=False)
        plan = single_process_plan(cfg, info := select_device(args.device, cpu))
        amp = plan.dtype
        ours = init_model(plan.cfg, log=kit.quiet)  # as finetune loads it (fp32 copies)
        trainer = Trainer(plan, ours, open_prepared(data), log=kit.quiet)

        peer = kit.hf_model(hub, args.device).train()
        groups = [
            {"params": [p for p in peer.parameters() if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in peer.parameters() if p.dim() < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=6e-5, betas=(0.9, 0.95), fused=True)
        forward = torch.compile(peer) if mfu else peer
        x = np.fromfile(data / "train.bin", dtype=np.uint16)[: batch * block].astype(np.int64)
        x = torch.from_numpy(x).view(batch, block).to(args.device)

        def peer_step() -> None:
            with torch.autocast(device_type=info.type, dtype=amp, enabled=amp is not torch.float32):
                loss = forward(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(peer.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        # Compilation happens in the first calls.
        ours_s, peer_s = kit.paired(args, trainer.train_step, peer_step, n, warmup=3 if mfu else 2)
    fmt = {"dtype": str(amp).removeprefix("torch."), "batch": batch, "block": block}
    if not mfu:
        return ours_s, peer_s, {"per": batch * block, "fmt": fmt}
    if info.peak_flops is None:
        raise kit.Skip(f"the bf16 peak of {info.name} is not in finetune.device's table")
    flops = flops_per_token(kit.model_config(args.model), block) * batch * block
    per = 100 * flops / info.peak_flops  # so that per / seconds is the MFU in percent
    got = {"per": per, "fmt": fmt | {"gpu": info.name}, "extra_ok": per / ours_s >= 100 * MFU_GOAL}
    return ours_s, peer_s, got | {"notes": {"mfu_goal_percent": 100 * MFU_GOAL}}


def generate_row(args, n: int) -> tuple:
    """Greedy decoding of 256 new tokens (32 in the smoke test) from a 20-token prompt, batch 1,
    both with a KV cache."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # a training row may have turned it on
    from transformers import GenerationConfig

    from gpt2load.generation import generate
    from gpt2load.loading import load

    hub, new = kit.fixture(args, "hub"), 32 if args.smoke else 256
    ours, peer = load(hub, device=args.device), kit.hf_model(hub, args.device).eval()
    torch.manual_seed(0)
    idx = torch.randint(0, 50257, (1, 20), device=args.device)
    # No end-of-text stop: every run produces exactly `new` tokens on both sides.
    config = GenerationConfig(
        max_new_tokens=new, do_sample=False, use_cache=True, eos_token_id=None, pad_token_id=0
    )
    out = {}

    def peer_run() -> None:
        with torch.inference_mode():
            mask = torch.ones_like(idx)
            out["peer"] = peer.generate(idx, attention_mask=mask, generation_config=config)

    ours_run = lambda: out.update(ours=generate(ours, idx, new, temperature=0))  # noqa: E731
    ours_s, peer_s = kit.paired(args, ours_run, peer_run, n)
    agree = int((out["ours"] == out["peer"]).all(dim=0).cumprod(0).sum()) - idx.size(1)
    # Both sides must decode the same greedy tokens, or one of them is wrong. Random weights give
    # nearly flat logits, where float rounding may flip a late near-tie; the first AGREE_TOKENS
    # must match all the same.
    got = {"per": new, "fmt": {"new": new}, "notes": {"identical_leading_tokens": agree}}
    return ours_s, peer_s, got | {"extra_ok": agree >= min(new, AGREE_TOKENS)}


def prepare(args, n: int) -> tuple:
    """Tokenize Tiny Shakespeare and write train/val bins: ``finetune prepare shakespeare``
    against one thread of ``encode_ordinary`` and a numpy write."""
    import numpy as np

    from finetune.prepare import prepare_shakespeare
    from gpt2load.tokenizer import get_tokenizer

    tok = kit.tokenizer_dir()
    if tok is None or not kit.SHAKESPEARE_TXT.is_file():
        raise kit.Skip("needs ../shared/data (the tokenizer files and Tiny Shakespeare)")
    encoding, txt = get_tokenizer(tok), kit.SHAKESPEARE_TXT
    with tempfile.TemporaryDirectory() as tmp:
        folder, settings = Path(tmp), {"input_path": txt, "encoding": encoding, "force": True}
        bins = (folder / "ours" / "shakespeare", folder)  # where ours and the peer write them

        def peer() -> None:
            text = txt.read_text(encoding="utf-8")
            cut = int(len(text) * 0.9)
            for split, part in (("train", text[:cut]), ("val", text[cut:])):
                ids = np.array(encoding.encode_ordinary(part), dtype=np.uint16)
                ids.tofile(folder / f"{split}.bin")

        ours = lambda: prepare_shakespeare(folder / "ours", **settings, log=kit.quiet)  # noqa: E731
        seconds = kit.paired(args, ours, peer, n)
        for split in ("train", "val"):
            mine, theirs = (np.fromfile(d / f"{split}.bin", np.uint16) for d in bins)
            if not np.array_equal(mine, theirs):
                raise RuntimeError(f"{split}.bin differs from the one-thread reference")
    return *seconds, {}


def kv_cache(args, n: int) -> tuple:
    """Generation of 200 tokens (the length the model issue measures; 32 in the smoke test) from
    the prompt, with and without the KV cache (ours both)."""
    import torch

    from gpt2load.generation import generate
    from gpt2load.model import GPT

    torch.manual_seed(0)
    model = GPT(kit.model_config(args.model)).to(args.device).eval()
    idx = torch.randint(0, 50257, (1, 20), device=args.device)
    new = 32 if args.smoke else 200
    cached = lambda: generate(model, idx, new, temperature=0)  # noqa: E731
    uncached = lambda: generate(model, idx, new, temperature=0, use_cache=False)  # noqa: E731
    return *kit.paired(args, cached, uncached, n), {"fmt": {"new": new}}


# fmt: off
ROWS = {  # key: (name, ours, peer, unit, target, repeats when --quick and not, measure)
    "load_safetensors": ("load {model} from the hub's model.safetensors", "gpt2load.load",
        "GPT2LMHeadModel.from_pretrained", "s", 1.2, (3, 7), load_safetensors),
    "load_tf": ("load {model} from the OpenAI TF checkpoint, new process, imports included",
        "gpt2load.load (no TensorFlow)", "book: tf.train.load_variable per variable", "s", 3.0,
        (1, 3), load_tf),
    "cold_start": ("cold start: new process to the first token of {model}",
        "gpt2load generate --max-new-tokens 1", 'transformers.pipeline("text-generation")', "s",
        1.5, (1, 5), cold_start),
    "train_step": ("training step, {model}, batch {batch} x {block}, AdamW, {dtype}",
        "finetune Trainer.train_step", "GPT2LMHeadModel + fused AdamW", "tok/s", 1.1, (3, 9),
        partial(train, mfu=False)),
    "train_mfu": ("training MFU, {model}, batch {batch} x {block}, {dtype}, torch.compile, {gpu}",
        "finetune Trainer.train_step --compile", "GPT2LMHeadModel compiled + fused AdamW",
        "% MFU", 1.0, (3, 9), partial(train, mfu=True)),
    "generate": ("generate {new} tokens greedy, {model}, batch 1, 20-token prompt",
        "gpt2load.generate (KV cache)", "GPT2LMHeadModel.generate (cache on)", "tok/s", 1.2,
        (1, 5), generate_row),
    "prepare": ("Shakespeare preparation (tokenize + write bins)", "finetune prepare shakespeare",
        "one-thread encode_ordinary + numpy", "s", 1.5, (3, 9), prepare),
    "kv_cache": ("generate {new} tokens, KV cache vs none", "generate (cache)",
        "generate (no cache)", "s", 3.0, (1, 3), kv_cache),
}
# fmt: on


def run_row(args: argparse.Namespace, key: str) -> kit.Row:
    """Row ``key`` of :data:`ROWS`: ``measure(args, repeats)`` (one in the smoke test)
    returns ours' and the peer's seconds and a dict of ``per`` (the work of one run, for a row
    reported as work per second, higher is better), ``fmt`` (fields of the name besides
    ``model``), ``notes`` and ``extra_ok``."""
    name, ours, peer, unit, target, repeats, measure = ROWS[key]
    n = 1 if args.smoke else repeats[0] if args.quick else repeats[1]
    ours_s, peer_s, got = measure(args, n)
    per = got.pop("per", None)
    values = (ours_s, peer_s) if per is None else (per / ours_s, per / peer_s)
    title = name.format(model=args.model, **got.pop("fmt", {}))
    return kit.Row(key, title, ours, peer, unit, *values, target, per is not None, **got)
