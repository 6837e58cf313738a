"""The GPT-2 weights on this machine: our weights/ folders (verified when their manifest.json
holds the published sha256 of their files) and the GPT-2 repos in the Hugging Face cache (a
published GPT-2 verified when its blob is named by the published sha256). Reads names and
records only: `gpt2load verify` hashes the bytes."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "list the GPT-2 weights here: weights/ folders and the Hugging Face cache"


def register(parser: argparse.ArgumentParser) -> None:
    """No options."""


def _weights_rows(root: Path) -> list[tuple[str, int, str]]:
    from ..downloads.manifest import RECORD_NAME, read_record

    rows = []
    for folder in sorted(p for p in root.glob("*/*") if (p / RECORD_NAME).is_file()):
        try:
            record = read_record(folder)
        except ValueError:
            rows.append((str(folder.relative_to(root)), 0, f"unreadable {RECORD_NAME}"))
            continue
        published = any(f.expected_sha256 for f in record.files)
        said = "verified (published sha256)" if published else "sha256 recorded (none published)"
        rows.append((str(folder.relative_to(root)), sum(f.size for f in record.files), said))
    return rows


def run(args: argparse.Namespace) -> int:
    from ..downloads import weights_root
    from ..hub import cached_gpt2_repos, settings

    root, cache = weights_root(), settings().cache
    groups = {f"{root}/": _weights_rows(root), f"Hugging Face cache {cache}/": cached_gpt2_repos()}
    width = max((len(row[0]) for rows in groups.values() for row in rows), default=0)
    for title, rows in groups.items():
        print(f"{title}{'' if rows else ' (no GPT-2 weights)'}")
        for where, size, said in rows:
            print(f"  {where:<{width}}  {size / 1e6:9.1f} MB  {said}")
    return 0
