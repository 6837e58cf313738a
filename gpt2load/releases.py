"""The published GPT-2 releases as data: where each file lives and, as far as its publisher
says (PRODUCT.md), what it must be. Every release gets OpenAI's tokenizer files, so every
downloaded folder tokenizes offline."""

from __future__ import annotations

from dataclasses import dataclass

from .config import OPENAI_SIZE_NAMES, canonical_name

SOURCES: tuple[str, ...] = ("hf", "openai", "rasbt")
DEFAULT_SOURCE = "hf"
OPENAI_HOST = "https://openaipublic.blob.core.windows.net"
HF_HOST = "https://huggingface.co"


@dataclass(frozen=True)
class FileSpec:
    """A file to fetch from ``url`` to ``path`` (in the folder), and what was published of it."""

    url: str
    path: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Release:
    model: str
    source: str
    files: tuple[FileSpec, ...]

    def file(self, path: str) -> FileSpec | None:
        return next((f for f in self.files if f.path == path), None)


# Identical in every OpenAI folder and under encodings/main: name -> (size, sha256).
TOKENIZER_FACTS: dict[str, tuple[int, str]] = {
    "encoder.json": (1_042_301, "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    "vocab.bpe": (456_318, "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
}
# The OpenAI TensorFlow checkpoint's files, with the byte counts published for some sizes (no
# hashes were ever published).
_TF_FILES = (
    "checkpoint",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
)
_OPENAI_SIZES = {
    "124M": dict(zip(_TF_FILES, (77, 90, 497_759_232, 5_215, 471_155), strict=True)),
    "355M": dict(zip(_TF_FILES, (77, 91, 1_419_292_672, 10_399, 926_519), strict=True)),
}
OPENAI_FILES = tuple(sorted([*_TF_FILES, *TOKENIZER_FACTS]))
_HF_SAFETENSORS_124M = "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"
_HF_SAFETENSORS_124M_SIZE = 548_105_171
RASBT_STEMS = {  # gpt2-small-124M ... gpt2-xl-1558M
    m: f"{m}-small-{n}" if m == "gpt2" else f"{m}-{n}" for m, n in OPENAI_SIZE_NAMES.items()
}
# rasbt publishes each size as .pth and as .safetensors with the same tensors; the release
# takes the safetensors copy, which loads without unpickling anything.
RASBT_SUFFIX = ".safetensors"
_RASBT_SHA256 = {
    "gpt2-small-124M.pth": "24a9078c5b27137fb2706d2206349c759952a7de8f72ef8e305dc02511bcabf8",
    "gpt2-small-124M.safetensors": "8bb78718496139b351333db1ff791f1be263b46b3d2f3e91cdc8c6bca835cccb",
}
# Every published hash of the 124M weights, whatever the file: seeing one identifies OpenAI's
# 124M model, which is what the known-answer check needs.
OFFICIAL_124M_SHA256: dict[str, str] = {
    _HF_SAFETENSORS_124M: "hf openai-community/gpt2 model.safetensors",
    "7c5d3f4b8b76583b422fcb9189ad6c89d5d97a094541ce8932dce3ecabde1421": (
        "hf openai-community/gpt2 pytorch_model.bin"
    ),
    **{sha: f"rasbt {name}" for name, sha in _RASBT_SHA256.items()},
}


def hub_repo(model: str) -> str:
    return f"openai-community/{canonical_name(model)}"


def tokenizer_files() -> tuple[FileSpec, ...]:
    url = OPENAI_HOST + "/gpt-2/encodings/main/"
    return tuple(FileSpec(url + name, name, *facts) for name, facts in TOKENIZER_FACTS.items())


def check_source(source: str) -> str:
    key = source.strip().lower()
    if key not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of: {', '.join(SOURCES)}")
    return key


def release(model: str, source: str = DEFAULT_SOURCE) -> Release:
    """The files of one published release of ``model`` (any accepted spelling) from ``source``."""
    name, source = canonical_name(model), check_source(source)
    if source == "openai":
        base = f"{OPENAI_HOST}/gpt-2/models/{OPENAI_SIZE_NAMES[name]}/"
        sizes = _OPENAI_SIZES.get(OPENAI_SIZE_NAMES[name], {})
        files = [
            FileSpec(base + f, f, *TOKENIZER_FACTS.get(f, (sizes.get(f),))) for f in OPENAI_FILES
        ]
    elif source == "hf":
        base = f"{HF_HOST}/{hub_repo(name)}/resolve/main/"
        weights = (_HF_SAFETENSORS_124M_SIZE, _HF_SAFETENSORS_124M) if name == "gpt2" else ()
        files = [FileSpec(base + "config.json", "config.json")]
        files.append(FileSpec(base + "model.safetensors", "model.safetensors", *weights))
    else:
        file = RASBT_STEMS[name] + RASBT_SUFFIX
        url = f"{HF_HOST}/rasbt/gpt2-from-scratch-pytorch/resolve/main/{file}"
        files = [FileSpec(url, file, None, _RASBT_SHA256.get(file))]
    present = {f.path for f in files}
    files += [f for f in tokenizer_files() if f.path not in present]
    return Release(model=name, source=source, files=tuple(files))
