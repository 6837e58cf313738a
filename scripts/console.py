#!/usr/bin/env python
"""Interactive console: the same as ``gpt2load chat [MODEL_OR_PATH]`` (default: gpt2)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt2load.cli import main  # noqa: E402


def names_a_model(args: list[str]) -> bool:
    """Whether a word is neither a flag nor a flag's value: every chat flag but --help takes
    one (``--temperature 0.5 MODEL`` names one; ``--temperature 0.5`` does not)."""
    value_next = False
    for arg in args:
        if value_next:
            value_next = False
        elif arg.startswith("-"):
            value_next = "=" not in arg and arg not in ("-h", "--help")
        else:
            return True
    return False


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(["chat", *args] if names_a_model(args) else ["chat", "gpt2", *args]))
