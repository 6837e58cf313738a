"""An independent oracle: copy our model's weights into transformers' GPT2LMHeadModel.

Written directly from the two layouts (not through ``gpt2load.formats``) so a bug
in the format tables cannot hide itself in the parity tests.
"""

from __future__ import annotations

import torch

from gpt2load.config import GPTConfig
from gpt2load.model import GPT


def hf_config(config: GPTConfig):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.context_length,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
    )


def to_hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our tensors under transformers' names; Conv1D weights are [in, out], so transpose."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = {
        "transformer.wte.weight": sd["tok_emb.weight"],
        "transformer.wpe.weight": sd["pos_emb.weight"],
        "transformer.ln_f.weight": sd["final_norm.scale"],
        "transformer.ln_f.bias": sd["final_norm.shift"],
        "lm_head.weight": sd["tok_emb.weight"],
    }
    for i in range(model.config.n_layer):
        ours, hf = f"trf_blocks.{i}.", f"transformer.h.{i}."
        att = ours + "att."
        out[hf + "ln_1.weight"] = sd[ours + "norm1.scale"]
        out[hf + "ln_1.bias"] = sd[ours + "norm1.shift"]
        out[hf + "ln_2.weight"] = sd[ours + "norm2.scale"]
        out[hf + "ln_2.bias"] = sd[ours + "norm2.shift"]
        qkv = ("W_query", "W_key", "W_value")
        out[hf + "attn.c_attn.weight"] = torch.cat([sd[att + n + ".weight"].T for n in qkv], dim=1)
        out[hf + "attn.c_attn.bias"] = torch.cat([sd[att + n + ".bias"] for n in qkv])
        out[hf + "attn.c_proj.weight"] = sd[att + "out_proj.weight"].T
        out[hf + "attn.c_proj.bias"] = sd[att + "out_proj.bias"]
        out[hf + "mlp.c_fc.weight"] = sd[ours + "ff.layers.0.weight"].T
        out[hf + "mlp.c_fc.bias"] = sd[ours + "ff.layers.0.bias"]
        out[hf + "mlp.c_proj.weight"] = sd[ours + "ff.layers.2.weight"].T
        out[hf + "mlp.c_proj.bias"] = sd[ours + "ff.layers.2.bias"]
    return {k: v.contiguous() for k, v in out.items()}


def to_hf_model(model: GPT):
    """A ``GPT2LMHeadModel`` (eager attention, eval mode) holding ``model``'s weights."""
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel(hf_config(model.config))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    # Only non-persistent attention buffers may be absent; every weight must arrive.
    assert not unexpected, unexpected
    assert all(k.endswith(("attn.bias", "attn.masked_bias")) for k in missing), missing
    return hf.eval()
