"""The published GPT-2 releases, as data: where every file lives and what it must be.

Sizes and sha256 are the publishers' own figures (see PRODUCT.md). A file whose
hash was never published carries its size only, and one with neither carries
nothing: the download then trusts the transport's own digests and records what it
got, so that later runs and ``gpt2load verify`` can still notice a change on disk.

Releases that ship no ``encoder.json``/``vocab.bpe`` (the Hugging Face and rasbt
ones) get OpenAI's copies added, so every downloaded folder tokenizes offline.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import OPENAI_SIZE_NAMES, canonical_name

SOURCES: tuple[str, ...] = ("hf", "openai", "rasbt")
DEFAULT_SOURCE = "hf"

OPENAI_HOST = "https://openaipublic.blob.core.windows.net"
HF_HOST = "https://huggingface.co"

ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"


@dataclass(frozen=True)
class FileSpec:
    """One file to fetch: from ``url`` to ``path`` (relative to the target folder).

    ``size`` and ``sha256`` are what the file must be, when someone published it.
    """

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


# The tokenizer files are identical in every OpenAI folder and under encodings/main:
# name -> (size, sha256).
TOKENIZER_FACTS: dict[str, tuple[int, str]] = {
    "encoder.json": (1_042_301, ENCODER_JSON_SHA256),
    "vocab.bpe": (456_318, VOCAB_BPE_SHA256),
}
TOKENIZER_URL = OPENAI_HOST + "/gpt-2/encodings/main/{name}"

SHAKESPEARE = FileSpec(
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    path="input.txt",
    size=1_115_394,
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
)

OPENAI_FILES = (
    "checkpoint",
    "encoder.json",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
    "vocab.bpe",
)

# Published byte counts of the OpenAI TensorFlow files (no hashes were ever published).
_OPENAI_SIZES: dict[str, dict[str, int]] = {
    "124M": {
        "checkpoint": 77,
        "hparams.json": 90,
        "model.ckpt.data-00000-of-00001": 497_759_232,
        "model.ckpt.index": 5_215,
        "model.ckpt.meta": 471_155,
    },
    "355M": {
        "checkpoint": 77,
        "hparams.json": 91,
        "model.ckpt.data-00000-of-00001": 1_419_292_672,
        "model.ckpt.index": 10_399,
        "model.ckpt.meta": 926_519,
    },
}

HF_REPOS = {name: f"openai-community/{name}" for name in OPENAI_SIZE_NAMES}
HF_FILES = ("config.json", "model.safetensors")
_HF_PUBLISHED: dict[tuple[str, str], tuple[int, str]] = {
    ("gpt2", "model.safetensors"): (
        548_105_171,
        "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707",
    ),
}

RASBT_REPO = "rasbt/gpt2-from-scratch-pytorch"
RASBT_STEMS = {
    "gpt2": "gpt2-small-124M",
    "gpt2-medium": "gpt2-medium-355M",
    "gpt2-large": "gpt2-large-774M",
    "gpt2-xl": "gpt2-xl-1558M",
}
# The rasbt repository holds each size as .pth and as .safetensors with the same tensors;
# the release takes the safetensors copy, which loads without unpickling anything.
RASBT_SUFFIX = ".safetensors"
_RASBT_SHA256 = {
    "gpt2-small-124M.pth": "24a9078c5b27137fb2706d2206349c759952a7de8f72ef8e305dc02511bcabf8",
    "gpt2-small-124M.safetensors": "8bb78718496139b351333db1ff791f1be263b46b3d2f3e91cdc8c6bca835cccb",
}

# Every published hash of the 124M weights, whatever the file: seeing one of these
# identifies OpenAI's 124M model, which is what the known-answer check needs.
OFFICIAL_124M_SHA256: dict[str, str] = {
    _HF_PUBLISHED[("gpt2", "model.safetensors")][1]: "hf openai-community/gpt2 model.safetensors",
    "7c5d3f4b8b76583b422fcb9189ad6c89d5d97a094541ce8932dce3ecabde1421": (
        "hf openai-community/gpt2 pytorch_model.bin"
    ),
    _RASBT_SHA256["gpt2-small-124M.pth"]: "rasbt gpt2-small-124M.pth",
    _RASBT_SHA256["gpt2-small-124M.safetensors"]: "rasbt gpt2-small-124M.safetensors",
}


def tokenizer_files() -> tuple[FileSpec, ...]:
    """OpenAI's ``encoder.json`` and ``vocab.bpe``, from the shared encodings folder."""
    return tuple(
        FileSpec(TOKENIZER_URL.format(name=name), name, size, sha)
        for name, (size, sha) in TOKENIZER_FACTS.items()
    )


def check_source(source: str) -> str:
    key = source.strip().lower()
    if key not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of: {', '.join(SOURCES)}")
    return key


def _openai_files(model: str) -> list[FileSpec]:
    size_name = OPENAI_SIZE_NAMES[model]
    sizes = _OPENAI_SIZES.get(size_name, {})
    base = f"{OPENAI_HOST}/gpt-2/models/{size_name}"
    files = []
    for name in OPENAI_FILES:
        size, sha = TOKENIZER_FACTS.get(name, (sizes.get(name), None))
        files.append(FileSpec(f"{base}/{name}", name, size, sha))
    return files


def _hf_files(model: str) -> list[FileSpec]:
    base = f"{HF_HOST}/{HF_REPOS[model]}/resolve/main"
    files = []
    for name in HF_FILES:
        size, sha = _HF_PUBLISHED.get((model, name), (None, None))
        files.append(FileSpec(f"{base}/{name}", name, size, sha))
    return files


def _rasbt_files(model: str) -> list[FileSpec]:
    name = RASBT_STEMS[model] + RASBT_SUFFIX
    url = f"{HF_HOST}/{RASBT_REPO}/resolve/main/{name}"
    return [FileSpec(url, name, None, _RASBT_SHA256.get(name))]


def release(model: str, source: str = DEFAULT_SOURCE) -> Release:
    """The files of one published release of ``model`` (any accepted spelling) from ``source``."""
    name = canonical_name(model)
    source = check_source(source)
    builders = {"openai": _openai_files, "hf": _hf_files, "rasbt": _rasbt_files}
    files = builders[source](name)
    present = {f.path for f in files}
    files += [f for f in tokenizer_files() if f.path not in present]
    return Release(model=name, source=source, files=tuple(files))
