"""Download every file of a GPT-2 release, plus OpenAI's encoder.json and vocab.bpe where the
release lacks them, verify sizes and sha256, and record the hashes in the folder's manifest.json.
Prints the folder as the last line. Re-running fetches only what is missing or wrong; an interrupted
file resumes. The rasbt source fetches the .safetensors copy of each size (the same tensors as the
.pth, and it loads without unpickling); for the .pth, pass a --manifest naming
https://huggingface.co/rasbt/gpt2-from-scratch-pytorch/resolve/main/gpt2-small-124M.pth (or another
size). A Hugging Face repo id (ORG/NAME, any GPT-2 on the hub) goes into the Hugging Face cache
instead, through huggingface_hub: safetensors preferred, then pytorch_model.bin, with the tokenizer
and the small json files. A failed download exits with code 2 and a one-line error."""

from __future__ import annotations

import argparse

HELP = "download GPT-2 weights and tokenizer files, resumable and checked"


def register(parser: argparse.ArgumentParser) -> None:
    from ..releases import DEFAULT_SOURCE, SOURCES

    add = parser.add_argument
    add(
        "model",
        metavar="MODEL",
        help="gpt2, gpt2-medium, gpt2-large, gpt2-xl or 124M/355M/774M/1558M, or a Hugging "
        "Face repo id ORG/NAME (with --manifest: any name for the folder)",
    )
    add("--revision", metavar="REV", help="for ORG/NAME: the branch, tag or commit (default: main)")
    add(
        "--source",
        choices=SOURCES,
        help=f"where the weights come from (default: {DEFAULT_SOURCE}, whose files have "
        "published sha256); rasbt means its .safetensors files (for its .pth use --manifest)",
    )
    add(
        "--dir",
        help="target folder (default: weights/<model>/<source>/ under the working directory, "
        "or under $GPT2LOAD_WEIGHTS_DIR)",
    )
    add(
        "--mirror",
        metavar="URL",
        help="replace the scheme and host of every URL, keeping the path (also "
        "$GPT2LOAD_MIRROR; $HF_ENDPOINT for Hugging Face files); plain http only this way "
        "(default: $GPT2LOAD_MIRROR, else none)",
    )
    for flag, what in (
        ("--force", "download everything again (default: reuse what is in place)"),
        ("--fast", "trust files already in place by their size alone (default: re-hash them)"),
    ):
        add(flag, action="store_true", help=what)
    add(
        "--manifest",
        metavar="FILE",
        help='download from a JSON manifest {"files": [{"url", "path", "size"?, "sha256"?}]} '
        "instead of a built-in release (default: none; its folder is weights/<MODEL>/custom/)",
    )
    add(
        "--quiet",
        action="store_true",
        help="no progress bars or status lines (waiting for another download's lock is "
        "still reported on stderr; default: show them)",
    )


def run(args: argparse.Namespace) -> int:
    from ..downloads import download
    from ..errors import Gpt2loadError
    from ..hub import is_repo_id, snapshot
    from ..releases import DEFAULT_SOURCE

    if is_repo_id(args.model) and args.manifest is None:
        if args.dir or args.mirror or args.source:
            raise Gpt2loadError(
                "--source, --dir and --mirror are for the published releases; ORG/NAME comes "
                "from the hub into the Hugging Face cache (HF_HUB_CACHE moves it, HF_ENDPOINT "
                "names a mirror)"
            )
        print(snapshot(args.model, args.revision, refresh=True, force=args.force, quiet=args.quiet))
        return 0
    if args.revision:
        raise Gpt2loadError(
            f"--revision is for a Hugging Face repo id (ORG/NAME), not {args.model!r}"
        )
    # A DownloadError (its message says the ways round) reaches gpt2load.cli.main: one line.
    options = {name: getattr(args, name) for name in ("dir", "mirror", "force", "fast")}
    options["source"] = args.source or DEFAULT_SOURCE
    print(download(args.model, manifest=args.manifest, progress=not args.quiet, **options))
    return 0
