"""The from-scratch model: configs, shapes, loss, and logits equal to transformers'."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gpt2load.config import PRESETS, GPTConfig, canonical_name, preset
from gpt2load.model import GPT
from tests.conftest import TINY_CONFIGS, random_model
from tests.hf_reference import to_hf_model


def test_gpt2_preset_has_published_parameter_count() -> None:
    with torch.device("meta"):
        model = GPT(preset("gpt2"))
    assert model.num_parameters() == 124_439_808
    assert model.out_head.weight is model.tok_emb.weight


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpt2", "gpt2"),
        ("124M", "gpt2"),
        ("gpt2-small", "gpt2"),
        ("355M", "gpt2-medium"),
        ("GPT2-Large", "gpt2-large"),
        ("1558M", "gpt2-xl"),
    ],
)
def test_aliases_resolve_to_presets(name: str, expected: str) -> None:
    assert canonical_name(name) == expected
    assert preset(name) == PRESETS[expected]


def test_unknown_model_name_lists_known_names() -> None:
    with pytest.raises(KeyError, match="gpt2-medium"):
        canonical_name("gpt3")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n_embd": 100, "n_head": 3}, "divisible by n_head"),
        ({"n_layer": 0}, "n_layer must be a positive integer"),
        ({"context_length": -4}, "context_length must be a positive integer"),
        ({"vocab_size": 2.5}, "vocab_size must be a positive integer"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_invalid_configs_are_rejected_clearly(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GPTConfig(**fields)


def test_state_dict_uses_the_book_layout(tiny_model: GPT) -> None:
    keys = set(tiny_model.state_dict())
    for name in (
        "tok_emb.weight",
        "pos_emb.weight",
        "trf_blocks.1.att.W_query.weight",
        "trf_blocks.1.att.W_key.bias",
        "trf_blocks.1.att.W_value.weight",
        "trf_blocks.1.att.out_proj.bias",
        "trf_blocks.1.ff.layers.0.weight",
        "trf_blocks.1.ff.layers.2.bias",
        "trf_blocks.1.norm1.scale",
        "trf_blocks.1.norm2.shift",
        "final_norm.scale",
        "out_head.weight",
    ):
        assert name in keys, name
    assert not any("mask" in k for k in keys), "attention needs no mask buffer"


def test_forward_shapes_and_loss(tiny_model: GPT) -> None:
    idx = torch.randint(0, tiny_model.config.vocab_size, (3, 7))
    logits = tiny_model(idx)
    assert logits.shape == (3, 7, tiny_model.config.vocab_size)
    logits2, loss = tiny_model(idx, idx)
    assert torch.equal(logits, logits2)
    expected = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), idx.view(-1))
    assert torch.allclose(loss, expected)


def test_targets_of_minus_one_are_ignored(tiny_model: GPT) -> None:
    idx = torch.randint(0, 100, (1, 6))
    targets = idx.clone()
    targets[0, 3:] = -1
    _, loss = tiny_model(idx, targets)
    _, loss_prefix = tiny_model(idx[:, :3], idx[:, :3])
    assert torch.allclose(loss, loss_prefix, atol=1e-6)


def test_input_longer_than_context_is_a_clear_error(tiny_model: GPT) -> None:
    n = tiny_model.config.context_length + 1
    with pytest.raises(ValueError, match=r"longer than the model's context of 64"):
        tiny_model(torch.zeros(1, n, dtype=torch.long))


def test_attention_is_causal(tiny_model: GPT) -> None:
    idx = torch.randint(0, 100, (1, 10))
    changed = idx.clone()
    changed[0, -1] = (idx[0, -1] + 1) % 100
    assert torch.allclose(tiny_model(idx)[:, :-1], tiny_model(changed)[:, :-1], atol=1e-6)


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_logits_match_transformers(name: str) -> None:
    config = TINY_CONFIGS[name]
    model = random_model(config, seed=1)
    hf = to_hf_model(model)
    idx = torch.randint(0, config.vocab_size, (2, config.context_length))
    with torch.no_grad():
        ours = model(idx)
        theirs = hf(idx).logits
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_dropout_only_in_training_mode() -> None:
    config = TINY_CONFIGS["tiny"].replace(dropout=0.5)
    model = random_model(config)
    idx = torch.randint(0, 100, (1, 8))
    assert torch.equal(model(idx), model(idx))
    model.train()
    assert not torch.equal(model(idx), model(idx))


@pytest.fixture
def onednn_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The oneDNN path taken as on a non-Intel CPU (on Intel ones MKL's F.linear is faster)."""
    from gpt2load import cpu_matmul

    if cpu_matmul._kernel() is None:
        pytest.skip("this PyTorch has no oneDNN linear kernel: Linear is F.linear everywhere")
    monkeypatch.setattr(cpu_matmul, "_intel_cpu", lambda: False)


@pytest.fixture
def onednn_calls(onednn_path: None, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The shapes of every product that went through the oneDNN kernel, for the test to inspect."""
    from gpt2load import cpu_matmul

    calls: list[tuple[int, ...]] = []
    real = cpu_matmul._matmul_t

    def spy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return real(x, weight, bias)

    monkeypatch.setattr(cpu_matmul, "_matmul_t", spy)
    return calls


@pytest.mark.parametrize("rows", [1, 2, 5, 128, 300])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    ("layout", "through_onednn"),
    [("contiguous", True), ("transposed", True), ("qkv_slice_falls_back", False)],
)
def test_linear_equals_f_linear_with_gradients(
    rows: int, bias: bool, layout: str, through_onednn: bool, onednn_calls: list
) -> None:
    """The CPU float32 path (oneDNN) gives F.linear's outputs and gradients for the weights a
    lean load of Hugging Face's layout leaves (transposed views); a QKV slice of a fused c_attn,
    which oneDNN would have to reorder first, takes F.linear itself."""
    from gpt2load.model import Linear

    torch.manual_seed(0)
    layer = Linear(48, 72, bias=bias)
    if layout == "transposed":  # Conv1D [in, out] storage, as a lean load keeps it
        layer.weight = torch.nn.Parameter(layer.weight.detach().t().contiguous().t())
    elif layout == "qkv_slice_falls_back":  # one third of a fused c_attn [in, 3*out], as a view
        fused = torch.randn(48, 3 * 72)
        layer.weight = torch.nn.Parameter(fused[:, 72:144].t())
    x = torch.randn(2, rows, 48, requires_grad=True)
    got = layer(x)
    (got * torch.linspace(-1, 1, 72)).sum().backward()
    # Forward, then the input's and the weight's gradients: three products, all through oneDNN.
    assert onednn_calls == (
        [(2 * rows, 48), (2 * rows, 72), (72, 2 * rows)] if through_onednn else []
    )
    grads = [t.grad.clone() for t in (x, layer.weight, layer.bias) if t is not None]
    for t in (x, layer.weight, layer.bias):
        if t is not None:
            t.grad = None
    expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
    (expected * torch.linspace(-1, 1, 72)).sum().backward()
    assert got.shape == expected.shape == (2, rows, 72)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    theirs_all = [t.grad for t in (x, layer.weight, layer.bias) if t is not None]
    for mine, theirs in zip(grads, theirs_all, strict=True):
        # Sums over up to 600 rows: float32 rounding relative to the gradient's own scale.
        scale = theirs.abs().max().item()
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6 * scale)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_linear_refuses_a_second_derivative_rather_than_giving_a_wrong_one(
    onednn_path: None,
) -> None:
    from gpt2load.model import Linear

    layer = Linear(8, 6)
    x = torch.randn(3, 8, requires_grad=True)
    (grad,) = torch.autograd.grad(layer(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.sum().backward()


def test_an_intel_cpu_keeps_mkls_f_linear(
    onednn_calls: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MKL runs its AVX-512 kernels on Intel processors, where it beats oneDNN: no product goes
    through oneDNN there, and the results are F.linear's own."""
    from gpt2load import cpu_matmul
    from gpt2load.model import Linear

    monkeypatch.setattr(cpu_matmul, "_intel_cpu", lambda: True)
    layer, x = Linear(48, 72), torch.randn(2, 5, 48, requires_grad=True)
    got = layer(x)
    got.sum().backward()
    assert onednn_calls == [] and not cpu_matmul.use_onednn()
    assert torch.equal(got, torch.nn.functional.linear(x, layer.weight, layer.bias))
    monkeypatch.setattr(cpu_matmul, "_intel_cpu", lambda: False)
    layer(x)
    assert onednn_calls == [(10, 48)] and cpu_matmul.use_onednn()  # elsewhere, oneDNN


def test_the_cpu_vendor_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux's /proc/cpuinfo names the vendor; without it an x86 Mac is Intel, an ARM one is
    not, and Windows names the vendor in its processor string."""
    import platform

    from gpt2load import cpu_matmul

    for vendor, intel in (("GenuineIntel", True), ("AuthenticAMD", False), ("", False)):
        info = tmp_path / f"cpuinfo-{vendor or 'arm'}"
        info.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: 6\n")
        assert cpu_matmul._intel_cpu(str(info)) is intel, vendor
    missing = str(tmp_path / "no-cpuinfo")
    for system, machine, processor, intel in (
        ("Darwin", "x86_64", "i386", True),
        ("Darwin", "arm64", "arm", False),
        ("Windows", "AMD64", "Intel64 Family 6 Model 85 Stepping 7, GenuineIntel", True),
        ("Windows", "AMD64", "AMD64 Family 25 Model 1 Stepping 1, AuthenticAMD", False),
    ):
        monkeypatch.setattr(platform, "system", lambda s=system: s)
        monkeypatch.setattr(platform, "machine", lambda m=machine: m)
        monkeypatch.setattr(platform, "processor", lambda p=processor: p)
        cpu_matmul._intel_cpu.cache_clear()
        assert cpu_matmul._intel_cpu(missing) is intel, (system, processor)
    cpu_matmul._intel_cpu.cache_clear()


def test_a_model_through_onednn_equals_it_through_f_linear(
    onednn_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole model, forward and backward, on the oneDNN path (non-Intel CPUs) and on
    F.linear (Intel CPUs, and what transformers' parity tests compare against elsewhere)."""
    from gpt2load import cpu_matmul

    config = TINY_CONFIGS["odd"]
    idx = torch.randint(0, config.vocab_size, (2, config.context_length))
    results = []
    for intel in (False, True):
        monkeypatch.setattr(cpu_matmul, "_intel_cpu", lambda intel=intel: intel)
        model = random_model(config)
        logits, loss = model(idx, idx)
        loss.backward()
        results.append((logits, [p.grad for p in model.parameters()]))
    (onednn, onednn_grads), (mkl, mkl_grads) = results
    torch.testing.assert_close(onednn, mkl, rtol=1e-5, atol=1e-5)
    scale = max(g.abs().max().item() for g in mkl_grads)  # float32 rounding of sums over rows
    for mine, theirs in zip(onednn_grads, mkl_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6 * scale)


@pytest.mark.slow
def test_compiled_model_trains_on_the_cpu(onednn_path: None) -> None:
    """torch.compile traces F.linear, not the oneDNN op (Inductor cannot lower it with gradients):
    the compiled model gives the eager loss and gradients."""
    config = TINY_CONFIGS["tiny"]
    model = random_model(config)
    idx = torch.randint(0, config.vocab_size, (2, config.context_length))
    _, eager_loss = model(idx, idx)
    eager_loss.backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    _, compiled_loss = torch.compile(model)(idx, idx)
    compiled_loss.backward()
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-5)
    for p, expected in zip(model.parameters(), eager_grads, strict=True):
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-5)
