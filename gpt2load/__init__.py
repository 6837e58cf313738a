"""gpt2load: OpenAI's GPT-2 weights in a from-scratch PyTorch model.

This module is the package's one public front door: everything a program (finetune
included) uses is named here, and the modules behind it may move. Names are imported
lazily, so ``gpt2load --help`` and ``import gpt2load`` do not pay for torch until a
model is actually touched.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # errors: one hierarchy, each the user's to fix (finetune's derive from Gpt2loadError)
    "Gpt2loadError": "gpt2load.errors",
    "CheckpointError": "gpt2load.errors",
    "DownloadError": "gpt2load.errors",
    "ChecksumError": "gpt2load.errors",
    "TokenizerError": "gpt2load.errors",
    "TokenizerNotFoundError": "gpt2load.errors",
    "redact": "gpt2load.errors",
    # the model and its sizes
    "GPT": "gpt2load.model",
    "KVCache": "gpt2load.model",
    "GPTConfig": "gpt2load.config",
    "preset": "gpt2load.config",
    "canonical_name": "gpt2load.config",
    "is_model_name": "gpt2load.config",
    "VOCAB_SIZE": "gpt2load.config",
    "DTYPE_ALIASES": "gpt2load.config",
    # checkpoints: a name or a path, what it is, the model, and back to files
    "resolve": "gpt2load.loading",
    "is_repo_id": "gpt2load.hub",
    "load": "gpt2load.loading",
    "inspect": "gpt2load.formats",
    "CheckpointInfo": "gpt2load.formats",
    "save_native": "gpt2load.native",
    "NATIVE_FILENAME": "gpt2load.native",
    "generation_config": "gpt2load.native",
    "convert": "gpt2load.formats",
    # downloads
    "download": "gpt2load.downloads",
    "download_file": "gpt2load.downloads",
    "weights_root": "gpt2load.downloads",
    "sha256_file": "gpt2load.downloads.digests",
    # one process at a time: a download folder, a finetune run folder
    "exclusive_lock": "gpt2load.downloads.lock",
    "LockHeld": "gpt2load.downloads.lock",
    # tokenizers
    "get_tokenizer": "gpt2load.tokenizer",
    "tokenizer_files": "gpt2load.tokenizer",
    "check_tokenizer_fits": "gpt2load.tokenizer",
    "prompt_ids": "gpt2load.tokenizer",
    "CharTokenizer": "gpt2load.char_tokenizer",
    "META_PKL": "gpt2load.char_tokenizer",
    # generation
    "generate": "gpt2load.generation",
    # writing files: write, then rename (no half-written file where a good one is expected)
    "atomic_path": "gpt2load.fileio",
    "atomic_write_text": "gpt2load.fileio",
    "atomic_write_bytes": "gpt2load.fileio",
    # the command line's one-line errors and warnings, shared with finetune's
    "user_error_line": "gpt2load.cli",
    "warnings_as_lines": "gpt2load.cli",
    "parse_command_line": "gpt2load.cli",
}
_RENAMED = {"inspect": "inspect_checkpoint"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gpt2load' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value
