"""Generation: the KV cache changes speed, never the tokens."""

from __future__ import annotations

import pytest
import torch

from gpt2load.config import GPTConfig
from gpt2load.generation import generate, sample_next_token, stream
from gpt2load.model import GPT
from tests.conftest import TINY_CONFIGS, random_model
from tests.hf_reference import to_hf_model


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_greedy_with_cache_equals_without_cache(name: str) -> None:
    config = TINY_CONFIGS[name]
    model = random_model(config, seed=2)
    idx = torch.randint(0, config.vocab_size, (3, 5))
    # Run well past the context window so the sliding-window path is covered too.
    n = config.context_length + 10
    cached = generate(model, idx, n, temperature=0)
    uncached = generate(model, idx, n, temperature=0, use_cache=False)
    assert cached.shape == (3, 5 + n)
    assert torch.equal(cached, uncached)


def test_sampling_with_cache_equals_without_cache_for_a_seed(tiny_model: GPT) -> None:
    idx = torch.randint(0, 1000, (2, 4))
    kwargs = dict(temperature=0.9, top_k=40, top_p=0.95, seed=11)
    assert torch.equal(
        generate(tiny_model, idx, 25, **kwargs),
        generate(tiny_model, idx, 25, use_cache=False, **kwargs),
    )


@pytest.mark.parametrize("name", ["odd", "small_vocab"])
def test_greedy_matches_transformers_generate(name: str) -> None:
    config = TINY_CONFIGS[name]
    model = random_model(config, seed=3)
    hf = to_hf_model(model)
    idx = torch.randint(0, config.vocab_size, (2, 6))
    n = config.context_length - 6
    ours = generate(model, idx, n, temperature=0)
    theirs = hf.generate(
        idx,
        attention_mask=torch.ones_like(idx),
        max_new_tokens=n,
        do_sample=False,
        pad_token_id=0,
    )
    assert torch.equal(ours, theirs)


def test_cache_step_reads_one_position(tiny_model: GPT) -> None:
    """Each decoding step after the prompt must feed the model one token, not the prefix."""
    lengths: list[int] = []
    hook = tiny_model.tok_emb.register_forward_hook(lambda m, i, o: lengths.append(i[0].shape[1]))
    try:
        generate(tiny_model, torch.zeros(1, 9, dtype=torch.long), 6, temperature=0)
    finally:
        hook.remove()
    assert lengths == [9, 1, 1, 1, 1, 1]


def test_seed_makes_sampling_reproducible_without_touching_global_rng(tiny_model: GPT) -> None:
    idx = torch.zeros(2, 3, dtype=torch.long)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = generate(tiny_model, idx, 20, temperature=1.0, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    b = generate(tiny_model, idx, 20, temperature=1.0, seed=5)
    c = generate(tiny_model, idx, 20, temperature=1.0, seed=6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    largest = 2**63 - 1  # the top of the accepted range works
    assert torch.equal(
        generate(tiny_model, idx, 3, seed=largest), generate(tiny_model, idx, 3, seed=largest)
    )


def test_rows_stop_independently_at_eos() -> None:
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, context_length=32, vocab_size=7)
    model = random_model(config, seed=4)
    idx = torch.tensor([[1], [2], [3], [4]])
    free = generate(model, idx, 12, temperature=1.0, seed=1)
    eos = 6
    out = generate(model, idx, 12, temperature=1.0, seed=1, eos_id=eos)
    for row_free, row in zip(free, out, strict=True):
        hits = (row_free[1:] == eos).nonzero()
        if len(hits) == 0:
            assert torch.equal(row[1:], row_free[1 : len(row)])
            continue
        first = int(hits[0]) + 1
        assert torch.equal(row[: first + 1], row_free[: first + 1])  # same until eos
        assert bool((row[first:] == eos).all())  # then only eos
    # Every row meets eos in the free run, so generation ends right after the last one does.
    first_hits = [int((row[1:] == eos).nonzero()[0]) + 1 for row in free]
    assert out.shape[1] == 1 + max(first_hits) < free.shape[1]
    assert bool((out[:, -1] == eos).all())


def test_vocab_limit_keeps_padded_ids_out() -> None:
    """nanoGPT pads the vocabulary to 50304; ids past the tokenizer's must never come out."""
    logits = torch.zeros(3, 10)
    logits[:, 8:] = 50.0  # the padding rows would win every time
    assert sample_next_token(logits, temperature=0, vocab_limit=8).tolist() == [0, 0, 0]
    g = torch.Generator().manual_seed(0)
    sampled = sample_next_token(logits.repeat(100, 1), vocab_limit=8, generator=g)
    assert int(sampled.max()) < 8 and len(set(sampled.tolist())) > 1
    sampled = sample_next_token(logits, top_k=3, top_p=0.5, vocab_limit=8, generator=g)
    assert int(sampled.max()) < 8
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, context_length=16, vocab_size=12)
    model = random_model(config, seed=1)
    with torch.no_grad():  # make the ids >= 9 the likeliest next token everywhere
        model.final_norm.scale.zero_()
        model.final_norm.shift.fill_(1.0)
        model.tok_emb.weight[9:] = 5.0
    idx = torch.zeros(2, 1, dtype=torch.long)
    assert int(generate(model, idx, 5, temperature=0)[:, 1:].min()) >= 9
    for kwargs in ({"temperature": 0}, {"temperature": 1.0, "seed": 3}):
        out = generate(model, idx, 20, vocab_limit=9, **kwargs)
        assert int(out.max()) < 9, kwargs


def test_generation_ends_early_when_every_row_has_finished() -> None:
    config = GPTConfig(n_layer=1, n_head=1, n_embd=8, context_length=16, vocab_size=5)
    model = random_model(config)
    idx = torch.tensor([[0]])
    first = int(generate(model, idx, 1, temperature=0)[0, 1])
    out = generate(model, idx, 10, temperature=0, eos_id=first)
    assert out.tolist() == [[0, first]]


def test_prompt_longer_than_context_is_cropped_from_the_left(tiny_model: GPT) -> None:
    ctx = tiny_model.config.context_length
    long_prompt = torch.randint(0, 1000, (1, ctx + 20))
    out = generate(tiny_model, long_prompt, 5, temperature=0)
    assert torch.equal(out[:, : ctx + 20], long_prompt)  # the prompt comes back whole
    cropped = generate(tiny_model, long_prompt[:, -ctx:], 5, temperature=0)
    assert torch.equal(out[:, -5:], cropped[:, -5:])


def test_temperature_zero_and_top_k_one_are_greedy() -> None:
    logits = torch.tensor([[0.1, 3.0, 0.2], [5.0, 0.0, 1.0]])
    assert sample_next_token(logits, temperature=0).tolist() == [1, 0]
    assert sample_next_token(logits, temperature=1.0, top_k=1).tolist() == [1, 0]


def test_top_k_and_top_p_never_pick_excluded_tokens() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(500, 1)
    g = torch.Generator().manual_seed(0)
    top_k = sample_next_token(logits, top_k=2, generator=g)
    assert set(top_k.tolist()) == {0, 1}
    top_p = sample_next_token(logits, top_p=0.8, generator=g)  # 0.5 + 0.3 reaches 0.8
    assert set(top_p.tolist()) == {0, 1}
    top_p_wide = sample_next_token(logits, top_p=0.81, generator=g)
    assert 2 in set(top_p_wide.tolist())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**63}, "seed"),
        ({"seed": 99999999999999999999999}, "seed"),
        ({"vocab_limit": 0}, "vocab_limit"),
    ],
)
def test_bad_sampling_arguments_are_rejected(tiny_model: GPT, kwargs: dict, message: str) -> None:
    args = {"max_new_tokens": 3} | kwargs
    with pytest.raises(ValueError, match=message):
        generate(tiny_model, torch.zeros(1, 2, dtype=torch.long), **args)


def test_stream_restores_training_mode(tiny_model: GPT) -> None:
    tiny_model.train()
    list(stream(tiny_model, torch.zeros(1, 2, dtype=torch.long), 3, temperature=0))
    assert tiny_model.training
