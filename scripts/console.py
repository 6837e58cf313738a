#!/usr/bin/env python
"""Interactive console: the same as ``gpt2load chat [MODEL_OR_PATH]`` (default: gpt2)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt2load.cli import main  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        args = ["gpt2", *args]
    sys.exit(main(["chat", *args]))
