"""Text sources in, a prepared folder out (see :mod:`finetune.data`), re-used while the
sources hash to the key recorded in it: a second run starts training at once, and an edited
source is noticed. Also Tiny Shakespeare, fetched and checked, and what ``--data`` names."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gpt2load
from gpt2load import atomic_path, atomic_write_text

from .data import (
    BINS,
    GPT2_TOKENIZER_ID,
    META_FILE,
    PreparedData,
    cached_prepared,
    encode_splits,
    is_prepared_folder,
    open_prepared,
    split_documents,
    tokenizer_id,
)
from .errors import ConfigError, DataError

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_BYTES = 1_115_394
SHAKESPEARE = "shakespeare"
PREP_VERSION = 1
TEXT_SUFFIXES = (".txt", ".md")

Log = Callable[[str], None]
PathLike = str | os.PathLike[str]


def check_data_dir(data_dir: PathLike) -> None:
    """Said before any tokenizing, not as a traceback from the ``mkdir`` after it."""
    path = Path(data_dir).expanduser()
    place = next((p for p in (path, *path.parents) if os.path.lexists(p)), None)
    if place is not None and not place.is_dir():
        where = "" if place == path else f" ({place} is a file)"
        raise DataError(
            f"--data-dir {data_dir} is not a folder{where}; give a folder where prepared data "
            f"can be written"
        )


def _is_char(encoding: Any, char_vocab: bool) -> bool:
    """A character vocabulary's ids mean other things than GPT-2's: a folder of their own."""
    return char_vocab or (encoding is not None and encoding.eot_token is None)


def prepare_text(
    paths: Sequence[PathLike],
    data_dir: PathLike = "data",
    *,
    name: str | None = None,
    val_fraction: float = 0.1,
    encoding: Any = None,
    tokenizer_dir: PathLike | None = None,
    char_vocab: bool = False,
    force: bool = False,
    threads: int | None = None,
    log: Log = print,
) -> PreparedData:
    """Text files into ``data_dir/NAME/{train,val}.bin`` unless cached. ``encoding`` (a model's
    :class:`gpt2load.CharTokenizer`) defaults to GPT-2's BPE; ``char_vocab`` makes a vocabulary
    of the text's characters, saved beside the bins as nanoGPT's ``meta.pkl``."""
    check_data_dir(data_dir)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if not paths:
        raise DataError("no data given: pass one or more text files or folders")
    if name:
        check_name(name, data_dir)
    files: list[Path] = []  # in a stable order (folders: their own, sorted)
    for path in (Path(p).expanduser() for p in paths):
        if path.is_file():
            files.append(path)
        elif not path.is_dir():
            raise DataError(f"data path {path} {_what_else(path)}")
        elif found := _folder_texts(path):
            files += found
        else:
            raise DataError(
                f"folder {path} holds no text files ({', '.join(TEXT_SUFFIXES)}); "
                f"point --data at the files themselves or at a folder of them"
            )
    hashes = [gpt2load.sha256_file(f) for f in files]
    docs: list[str] | None = None
    if encoding is None and char_vocab:
        # The vocabulary is the text's, so the key names it: a resume that encodes with the
        # run's own vocabulary finds the same folder.
        docs = _read_documents(files, None, log)
        encoding = gpt2load.CharTokenizer.from_text("".join(docs))
    # GPT-2's tokenizer files are checked against their published hashes, so its id is known
    # without them: a cached preparation is found even where no tokenizer is at hand.
    ident = tokenizer_id(encoding) if encoding is not None else GPT2_TOKENIZER_ID
    # What the folder is built from; any change means preparing again.
    recipe = dict(version=PREP_VERSION, sources=hashes, val_fraction=val_fraction, tokenizer=ident)
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    char = _is_char(encoding, char_vocab)
    if not name:
        # NAME-HASH: the paths' hash keeps a/notes.txt and b/notes.txt from overwriting each
        # other's tokens (and a folder one folder as its files change).
        stem = files[0].stem if len(files) == 1 else files[0].parent.name or files[0].stem
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "data"
        resolved = "\n".join(str(Path(p).expanduser().resolve()) for p in paths)
        digest = hashlib.sha256(resolved.encode()).hexdigest()[:8]
        name = f"{stem}{'_char' if char else ''}-{digest}"
    folder = Path(data_dir).expanduser() / name
    if not force and (hit := cached_prepared(folder, key)) is not None:
        return _reused(hit, log, "; sources unchanged")

    started = time.perf_counter()
    docs = docs or _read_documents(files, encoding, log)
    if encoding is None:
        encoding = gpt2load.get_tokenizer(tokenizer_dir)
    train_docs, val_docs = split_documents(docs, val_fraction)
    train, val = encode_splits(encoding, [train_docs, val_docs], threads)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).unlink(missing_ok=True)  # the folder is incomplete until meta is back
    for arr, filename in zip((train, val), BINS.values(), strict=True):
        with atomic_path(folder / filename) as tmp:
            arr.tofile(tmp)
    if char:
        encoding.save(folder)  # nanoGPT's meta.pkl
    seconds = time.perf_counter() - started
    meta = {
        "version": PREP_VERSION,
        "source_key": key,
        "sources": [
            {"path": str(f.resolve()), "bytes": f.stat().st_size, "sha256": h}
            for f, h in zip(files, hashes, strict=True)
        ],
        "documents": len(docs),
        "tokenizer": tokenizer_id(encoding),
        "eot_id": None if encoding.eot_token is None else int(encoding.eot_token),
        "vocab_size": int(encoding.n_vocab),
        "dtype": train.dtype.name,
        "val_fraction": val_fraction,
        "train_chars": sum(len(d) for d in train_docs),
        "val_chars": sum(len(d) for d in val_docs),
        "train_tokens": int(train.size),
        "val_tokens": int(val.size),
        "max_token_id": int(max(train.max(initial=0), val.max(initial=0))),
        "prepare_seconds": round(seconds, 3),
    }
    atomic_write_text(folder / META_FILE, json.dumps(meta, indent=2) + "\n")
    log(
        f"data: prepared {folder}: {train.size:,} train / {val.size:,} val tokens "
        f"from {len(docs)} document(s) in {seconds:.2f}s"
    )
    return PreparedData(folder, meta)


def check_name(name: str, data_dir: PathLike) -> None:
    """``--name`` is one folder inside ``--data-dir``: ``../x`` or ``/x`` would write (and
    first unlink a ``meta.json``) outside it, ``.`` into ``--data-dir`` itself."""
    if name in (".", "..") or any(sep in name for sep in ("/", "\\", "\0")):
        raise ConfigError(
            f"--name {name} is not a plain folder name; prepared data goes into "
            f"{Path(data_dir) / 'NAME'}: give one folder name (no '/', not '.' or '..'), and "
            f"pick where it goes with --data-dir"
        )


# What a path that is neither a regular file nor a folder is, told instead of "does not exist".
_SPECIAL_FILES = {
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def _what_else(path: Path) -> str:
    """Why ``path`` (not a regular file, not a folder) cannot be data; it is never opened, so
    a FIFO or ``/dev/zero`` cannot hang or feed the tokenizer for ever."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "does not exist"
    kind = next((k for is_kind, k in _SPECIAL_FILES.items() if is_kind(mode)), "a special file")
    return f"is not a regular file or folder ({kind}); give a text file or a folder of them"


def _folder_texts(folder: Path) -> list[Path]:
    """The folder's own text files, sorted, hidden ones left out. A symbolic link may point to
    another file in the folder, never out of it: what a folder holds is what is trained on
    (links to folders are not followed at all)."""
    root = folder.resolve()
    found = []
    for path in folder.rglob("*"):
        if path.suffix.lower() not in TEXT_SUFFIXES:
            continue
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.is_symlink() and not (target := path.resolve()).is_relative_to(root):
            raise DataError(
                f"{path} is a symbolic link to {target}, outside the folder {folder}; only "
                f"the folder's own files are read: copy the file into {folder}, or give it as "
                f"a --data source of its own"
            )
        if path.is_file():
            found.append(path)
    return sorted(found)


def _reused(data: PreparedData, log: Log, note: str = "") -> PreparedData:
    tokens = f"{data.train_tokens:,} train / {data.val_tokens:,} val tokens"
    log(f"data: using prepared {data.folder} ({tokens}{note})")
    return data


def _read_documents(files: Sequence[Path], encoding: Any, log: Log) -> list[str]:
    """The text of each file that holds any; a character a character vocabulary lacks fails."""
    docs: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
            if getattr(encoding, "unknown_characters", None) and encoding.unknown_characters(text):
                encoding.encode(text, what=str(path))  # raises, naming the file and characters
        except UnicodeDecodeError as exc:
            why = f"{exc.reason} at byte {exc.start}"
            raise DataError(f"{path} is not UTF-8 text ({why})") from None
        except ValueError as exc:
            raise DataError(str(exc)) from None
        if text.strip():
            docs.append(text)
        else:
            log(f"data: skipping {path}: it holds no text")
    if not docs:
        shown = ", ".join(str(f) for f in files[:3]) + (" ..." if len(files) > 3 else "")
        raise DataError(f"no text to train on: {shown} {'is' if len(files) == 1 else 'are'} empty")
    return docs


def fetch_shakespeare(
    data_dir: PathLike = "data", *, input_path: PathLike | None = None, log: Log = print
) -> Path:
    """``data_dir/shakespeare/input.txt``, copied from ``input_path`` or downloaded unless it is
    the published file; a copy must be that file too, since the name promises its text."""
    given = Path(input_path).expanduser() if input_path is not None else None
    if given is not None and not given.is_file():
        raise DataError(f"{given} {_what_else(given)}")
    if given is not None and gpt2load.sha256_file(given) != SHAKESPEARE_SHA256:
        raise DataError(
            f"{given} is not Tiny Shakespeare (sha256 differs from {SHAKESPEARE_SHA256}); "
            f"prepare other text with `finetune prepare {given}`"
        )
    dest = Path(data_dir).expanduser() / SHAKESPEARE / "input.txt"
    if dest.is_file() and gpt2load.sha256_file(dest) == SHAKESPEARE_SHA256:
        return dest
    aside = None
    if dest.is_file():
        # Renamed to NAME.bad (NAME.bad.1 ... when taken) instead of deleted: it may be
        # someone's edit, and offline the only copy.
        suffixes = itertools.chain([".bad"], (f".bad.{n}" for n in itertools.count(1)))
        aside = next(a for a in (dest.with_name(dest.name + s) for s in suffixes) if not a.exists())
        os.replace(dest, aside)
        log(
            f"data: {dest} is not the published Tiny Shakespeare (its sha256 differs); "
            f"moved it to {aside} to make room for the original"
        )
    if given is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            shutil.copyfile(given, tmp)
        return dest
    log(f"data: downloading Tiny Shakespeare to {dest}")
    try:
        file = gpt2load.download_file(
            SHAKESPEARE_URL, dest, size=SHAKESPEARE_BYTES, sha256=SHAKESPEARE_SHA256
        )
    except gpt2load.DownloadError as exc:
        kept = f" (the file that was there is kept as {aside})" if aside is not None else ""
        raise DataError(
            f"could not download Tiny Shakespeare ({exc}){kept}; put the file at {dest} "
            f"yourself or pass its path with `finetune prepare shakespeare --input FILE`"
        ) from exc
    return Path(file)


def prepare_shakespeare(
    data_dir: PathLike = "data", *, input_path: PathLike | None = None, **options: Any
) -> PreparedData:
    """Tiny Shakespeare into ``data_dir/shakespeare`` (``shakespeare_char`` for characters):
    301,966 train / 36,059 val tokens; ``options`` as :func:`prepare_text` takes them."""
    check_data_dir(data_dir)  # before the download
    source = fetch_shakespeare(data_dir, input_path=input_path, log=options.get("log", print))
    char = _is_char(options.get("encoding"), options.get("char_vocab", False))
    name = f"{SHAKESPEARE}_char" if char else SHAKESPEARE
    return prepare_text([source], data_dir, name=name, **options)


def check_shakespeare_data(command: str, data: Sequence[str] | None) -> None:
    """``finetune shakespeare --data X`` would train on X under Shakespeare's name."""
    if command == SHAKESPEARE and data and [d.strip().lower() for d in data] != [SHAKESPEARE]:
        others = " ".join(d for d in data if d.strip().lower() != SHAKESPEARE)
        raise ConfigError(
            f"--data {' '.join(data)}: `finetune shakespeare` trains on Tiny Shakespeare only; "
            f"to train on other text use `finetune pretrain --data {others}` (with the same "
            f"other flags)"
        )


def resolve_data(
    data: Sequence[str], data_dir: PathLike = "data", *, log: Log = print, **options: Any
) -> PreparedData:
    """What ``--data`` names, prepared: 'shakespeare', a prepared folder, or text sources."""
    if not data:
        raise DataError("no data given: pass --data with text files or folders, or shakespeare")
    if len(data) == 1 and data[0].strip().lower() == SHAKESPEARE and not Path(data[0]).exists():
        return prepare_shakespeare(data_dir, log=log, **options)
    if len(data) == 1 and is_prepared_folder(data[0]):
        return _reused(open_prepared(data[0]), log)
    return prepare_text(data, data_dir, log=log, **options)
